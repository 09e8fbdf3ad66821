"""Demo of `mtsr evaluate-clinical` on real BraTS FLAIR scans (run from the repository root).

Builds, under /tmp/mtsr/qc/demo, a reference folder (the real 1 mm FLAIR of N cases), a "trilinear"
baseline (thick-slice degradation: 5 mm Gaussian slice profile along z, every 5th slice kept, trilinear
back to the 1 mm grid) and a stand-in "sharpened" method (the baseline with an unsharp mask: it only
exercises the report, it is not a model), then runs the report. The shared data are read in place.

    .venv/bin/python scripts/qc_real_data.py [--cases 3] [--out /tmp/mtsr/qc/demo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018_tcia"


def degrade(vol: np.ndarray, factor: int = 5) -> np.ndarray:
    """Thick-slice acquisition along z (Gaussian slice profile, FWHM = factor) then trilinear back."""
    from scipy import ndimage

    sigma = factor / (2 * np.sqrt(2 * np.log(2)))
    thick = ndimage.gaussian_filter1d(vol.astype(np.float32), sigma, axis=2)[:, :, ::factor]
    zoom = vol.shape[2] / thick.shape[2]
    up = ndimage.zoom(thick, (1, 1, zoom), order=1, grid_mode=True, mode="grid-constant")
    up = up[:, :, : vol.shape[2]]
    return np.where(vol > 0, np.clip(up, 0, None), 0).astype(np.float32)


def sharpen(vol: np.ndarray, amount: float = 0.6) -> np.ndarray:
    from scipy import ndimage

    out = vol + amount * (vol - ndimage.gaussian_filter(vol, (0.0, 0.0, 1.5)))
    return np.where(vol > 0, np.clip(out, 0, None), 0).astype(np.float32)


def main() -> int:
    import nibabel as nib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mtsr/qc/demo"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    cases = sorted(p for p in args.data.iterdir() if p.is_dir())[: args.cases]
    for case in cases:
        src = case / f"{case.name}_flair.nii.gz"
        img = nib.load(str(src))
        vol = np.asarray(img.dataobj, np.float32)
        base = degrade(vol)
        for folder, data in (("reference", vol), ("trilinear", base), ("sharpened", sharpen(base))):
            out = args.out / folder / case.name / "flair.nii.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, img.affine), str(out))
    from mtsr_monai.cli import main as mtsr

    return mtsr(
        [
            "evaluate-clinical",
            "--pred-dir",
            str(args.out / "sharpened"),
            "--ref-dir",
            str(args.out / "reference"),
            "--baseline-dir",
            str(args.out / "trilinear"),
            "--labels-dir",
            str(args.data),
            "--output",
            str(args.out / "report"),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
