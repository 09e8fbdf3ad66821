"""Demo of `mtsr evaluate-clinical` on real BraTS FLAIR scans (run from the repository root).

Builds, under /tmp/mtsr/qc/demo, a reference folder (the real 1 mm FLAIR of N cases), a "trilinear"
baseline (the package's thick-slice model: 5 mm contiguous slices, Gaussian profile, along array x (BraTS z
is no 1 mm reference), trilinear back to the 1 mm grid in physical space) and a stand-in "sharpened" method
(the baseline with an unsharp mask along x: it only exercises the report, it is not a model), then runs the
report. The shared data are read in place.

    .venv/bin/python scripts/qc_real_data.py [--cases 3] [--out /tmp/mtsr/qc/demo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_splits import DATA_ROOT  # noqa: E402  ../shared/data, or $MTSR_SHARED_DATA

DATA = DATA_ROOT / "brats2018_tcia"


def degrade(vol: np.ndarray, affine: np.ndarray, thickness: float = 5.0) -> np.ndarray:
    """The package's thick-slice acquisition (``mtsr degrade --mode thick-slice``: Gaussian profile of FWHM
    = thickness, contiguous slices) along array x, then trilinear back onto the 1 mm grid in physical space.
    Along x, not z: BraTS z was itself interpolated from thick slices, so it is no 1 mm reference."""
    import SimpleITK as sitk

    from mtsr_monai.io.sitk_geometry import array_to_sitk
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice
    from mtsr_monai.transforms.sitk_utils import resample

    thick, thick_affine = degrade_volume_thick_slice(vol, affine, thickness, axis=0)
    grid = array_to_sitk(vol.astype(np.float32), affine)
    up = sitk.GetArrayFromImage(resample(array_to_sitk(thick, thick_affine), grid, float32=True))
    return np.where(vol > 0, np.clip(up.transpose(2, 1, 0), 0, None), 0).astype(np.float32)


def sharpen(vol: np.ndarray, amount: float = 0.6) -> np.ndarray:
    from scipy import ndimage

    out = vol + amount * (vol - ndimage.gaussian_filter(vol, (1.5, 0.0, 0.0)))
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
        base = degrade(vol, img.affine)
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
