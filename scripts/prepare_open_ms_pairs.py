#!/usr/bin/env python
"""T1 / FLAIR training pairs from the open-MS scans (``open_ms_longitudinal_raw``): one grid, skull-stripped.

Every FLAIR of the BraTS-space sources holds a glioma, and the T1 -> FLAIR model trained on them paints
lesions into brains without one (docs/mt.md, session 32). The open-MS FLAIRs are brains with small
multiple-sclerosis lesions and otherwise normal tissue. Their contrasts are on different grids (clinical 2D
axial, 0.7-0.9 mm in-plane, 3-4 mm slices) with ITK affines to the FLAIR supplied. Per session this script:

1. resamples the FLAIR to 1 mm in-plane (the translation models' native size), keeping its slice spacing;
2. carries the T1 onto that grid through its ``*_T1W_intrastudy_to_FLAIR.txt`` transform;
3. estimates the brain mask from that T1 (``inference.brain_mask.estimate_brain_mask``: the MNI152 template)
   and zeroes both images outside it, as the BraTS volumes are;
4. writes ``<out>/<session>_{t1,flair,brain_mask}.nii.gz`` and ``<out>/pairs.json`` (subject dicts for a
   datalist's ``training`` list).

Usage (the output folder must not be inside the shared data):

    python scripts/prepare_open_ms_pairs.py --out ~/mtsr_runs/open_ms_pairs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared_splits import DATA_ROOT  # noqa: E402

SPACING_MM = 1.0


def in_plane_grid(image: sitk.Image, spacing: float = SPACING_MM) -> sitk.Image:
    """An empty image covering ``image`` with ``spacing`` mm in-plane and the image's own slice spacing."""
    old = np.array(image.GetSpacing())
    new = np.array([spacing, spacing, old[2]])
    size = np.maximum(np.round(np.array(image.GetSize()) * old / new), 1).astype(int)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(tuple(float(s) for s in new))
    grid.SetDirection(image.GetDirection())
    # the first voxel's corner stays where it was
    corner = np.array(image.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, 0.0)))
    axes = np.array(image.GetDirection()).reshape(3, 3)
    grid.SetOrigin(tuple(float(v) for v in corner + axes @ np.array([new[0] / 2, new[1] / 2, 0.0])))
    return grid


def resampled(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform | None = None) -> sitk.Image:
    """``image`` on ``grid`` (linear; 0 outside), through ``transform`` (grid points -> image points)."""
    transform = transform or sitk.Transform()
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0)


def prepare_session(folder: Path, out: Path) -> dict:
    """One open-MS session's skull-stripped T1 / FLAIR / mask on the FLAIR's 1 mm grid; its datalist dict."""
    # lazy: MONAI loads only once the arguments are read
    from mtsr_monai.inference.brain_mask import estimate_brain_mask
    from mtsr_monai.io import load_volume

    flair_path = next(folder.glob("*_FLAIR.nii.gz"))
    t1_path = next(folder.glob("*_T1W.nii.gz"))
    to_flair = sitk.ReadTransform(str(next(folder.glob("*_T1W_intrastudy_to_FLAIR.txt"))))
    flair = sitk.ReadImage(str(flair_path))
    grid = in_plane_grid(flair)
    name = folder.name
    paths = {key: out / f"{name}_{key}.nii.gz" for key in ("t1", "flair", "brain_mask")}
    sitk.WriteImage(resampled(flair, grid), str(paths["flair"]))
    t1 = sitk.ReadImage(str(t1_path))
    sitk.WriteImage(resampled(t1, grid, to_flair), str(paths["t1"]))
    # MONAI's x, y, z array is SimpleITK's z, y, x
    brain = estimate_brain_mask(load_volume(paths["t1"]), "t1").transpose(2, 1, 0)
    # the T1's slab may end before the FLAIR's: the pair is only where both were imaged
    t1_coverage = resampled(t1 * 0 + 1, grid, to_flair)
    brain &= sitk.GetArrayFromImage(t1_coverage) > 0.999
    for key in ("t1", "flair"):
        image = sitk.ReadImage(str(paths[key]))  # as written (float32 header), so the mask's grid is its own
        mask = sitk.GetImageFromArray(brain.astype(np.uint8))
        mask.CopyInformation(image)
        sitk.WriteImage(sitk.Mask(image, mask), str(paths[key]))
    sitk.WriteImage(mask, str(paths["brain_mask"]))
    return {"subject": f"open_ms_{name}", **{key: str(p) for key, p in paths.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DATA_ROOT / "open_ms_longitudinal_raw")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    if out.is_relative_to(DATA_ROOT.resolve()):
        parser.error(f"--out {out} is inside the shared data ({DATA_ROOT}): write elsewhere")
    sessions = sorted(p for p in args.root.glob("patient*") if p.is_dir())
    if not sessions:
        parser.error(f"no patient* folders under {args.root}")
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for folder in sessions:
        pairs.append(prepare_session(folder, out))
        print(f"{folder.name}: written", flush=True)
    (out / "pairs.json").write_text(json.dumps(pairs, indent=1) + "\n")
    print(f"{len(pairs)} pairs in {out / 'pairs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
