"""Figure of ``mtsr translate`` on a scan with its skull (docs/mt.md): the input with the automatic brain
mask's outline, the translation's mean without a mask and with it, and optionally the subject's real scan
of the target contrast (resampled onto the input's grid, through an ITK transform when the grids differ).

    python scripts/plot_translation_mask.py --input FLAIR.nii.gz --with-mask OUT_auto \
        --without-mask OUT_none --reference T1W.nii.gz --reference-transform T1W_to_FLAIR.txt \
        --output docs/images/figure.png

Axial slices through the mask's centre and 10 mm above it, radiological, with orientation letters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def _reference_on_input_grid(reference: Path, transform: Path | None, grid: Path) -> np.ndarray:
    """The reference resampled (linear) onto ``grid``; ``transform`` maps grid points to reference points."""
    import SimpleITK as sitk

    moving, fixed = sitk.ReadImage(str(reference), sitk.sitkFloat32), sitk.ReadImage(str(grid))
    tfm = sitk.ReadTransform(str(transform)) if transform else sitk.Transform()
    out = sitk.Resample(moving, fixed, tfm, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    # SimpleITK arrays are (z, y, x); nibabel's are (x, y, z)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument(
        "--with-mask", type=Path, required=True, help="mtsr translate output (default --mask auto)"
    )
    parser.add_argument("--without-mask", type=Path, required=True, help="mtsr translate --mask none output")
    parser.add_argument("--reference", type=Path, help="the subject's real scan of the target contrast")
    parser.add_argument("--reference-transform", type=Path, help="ITK transform: input grid -> reference")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    # lazy: matplotlib, torch and MONAI load only once the arguments are read
    from mtsr_monai.reporting.views import centre_point, plane_image, pyplot, save_figure, show_plane
    from mtsr_monai.transforms.intensity import display_range

    image, affine = _load(args.input)
    mask, _ = _load(args.with_mask / "brain_mask.nii.gz")
    columns = [
        ("input (outline: automatic mask)", image),
        ("mean, --mask none", _load(args.without_mask / "mean.nii.gz")[0]),
        ("mean, --mask auto", _load(args.with_mask / "mean.nii.gz")[0]),
    ]
    if args.reference:
        ref = _reference_on_input_grid(args.reference, args.reference_transform, args.input)
        columns.append(("real scan of the target", ref))
    centre = centre_point(mask > 0, affine)
    points = [centre, centre + np.array([0.0, 0.0, 10.0])]
    plt = pyplot()
    fig, axes = plt.subplots(2, len(columns), figsize=(3.2 * len(columns), 6.6), squeeze=False)
    for row, point in enumerate(points):
        for col, (title, volume) in enumerate(columns):
            ax = axes[row, col]
            vmin, vmax = display_range(volume)
            show_plane(ax, volume, affine, "axial", point, vmin=vmin, vmax=vmax)
            if col == 0:  # plane_image gives the mask the same pixels as the image shown
                ax.contour(plane_image(mask, affine, "axial", point)[0], [0.5], colors="red", linewidths=0.8)
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, args.output, dpi=90)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
