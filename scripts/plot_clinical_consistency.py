"""Figures of ``mtsr clinical-sr`` on one real routine scan (docs/clinical_sr.md): its data-consistency maps,
and (``--restored-output``) the restored sequences beside the trilinear interpolation.

    python scripts/plot_clinical_consistency.py --input FLAIR.nii.gz --model-dir out_model \
        --trilinear-dir out_trilinear --sequence flair --output docs/images/clinical_sr_consistency.png \
        --restored-output docs/images/clinical_sr_openms.png

Consistency figure: rows are an axial and a coronal plane through the centre of the input grid; columns the
input, the restored output re-acquired on the input's grid (input + residual), the residual of the model's
output and that of the trilinear interpolation, on one symmetric colour scale (input units); titles carry
each map's consistency NRMSE from ``clinical_sr.json``. Restored figure: coronal and axial planes of the
trilinear sequence and of every restored sequence on the 1 mm grid. Both radiological, with orientation
letters (:mod:`mtsr_monai.reporting.views`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PLANES = ("axial", "coronal")


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, float)


def _grid_centre(vol: np.ndarray, affine: np.ndarray) -> np.ndarray:
    from mtsr_monai.reporting.views import centre_point

    return centre_point(np.zeros(vol.shape[:3], bool), affine)  # an empty mask: the whole grid's centre


def _grey(vol: np.ndarray) -> dict:
    """imshow keywords of a grey volume: :func:`~mtsr_monai.transforms.intensity.display_range` of the voxels
    above 0 (the background would pull the window down), so from 0 to their 99.5th percentile."""
    # lazy: torch and MONAI load only once the arguments are read
    from mtsr_monai.transforms.intensity import display_range

    vmin, vmax = display_range(vol, vol > 0)
    return {"cmap": "gray", "vmin": vmin, "vmax": vmax}


def _draw(fig, axes, columns, affine: np.ndarray, point: np.ndarray, bar_label: str | None) -> None:
    """A column per ``(title, volume, imshow keywords)``, a row per plane; colour bars on diverging maps."""
    from mtsr_monai.reporting.views import colour_bar, show_plane

    for c, (title, vol, style) in enumerate(columns):
        for r, plane in enumerate(PLANES):
            ax = axes[r, c]
            shown = show_plane(ax, vol, affine, plane, point, **style)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if r == 0 and bar_label and style.get("cmap") == "coolwarm":  # one scale for both rows
                colour_bar(ax, shown, bar_label)


def consistency_figure(args: argparse.Namespace) -> None:
    from mtsr_monai.reporting.views import pyplot

    plt = pyplot()

    seq = args.sequence
    x, affine = _load(args.input)
    res_model, _ = _load(args.model_dir / f"{seq}_consistency.nii.gz")
    res_tri, _ = _load(args.trilinear_dir / f"{seq}_consistency.nii.gz")
    info = {
        name: json.loads((folder / "clinical_sr.json").read_text())["consistency"][seq]
        for name, folder in (("model", args.model_dir), ("trilinear", args.trilinear_dir))
    }
    grey = _grey(x)
    lim = float(np.percentile(np.abs(res_model[res_model != 0]), 99))
    diverging = {"cmap": "coolwarm", "vmin": -lim, "vmax": lim}
    model_title = f"model residual (NRMSE {info['model']['nrmse']:.3f}, gain {info['model']['gain']:.3f})"
    columns = [
        ("input", x, grey),
        ("model re-acquired", x + res_model, grey),
        (model_title, res_model, diverging),
        (f"trilinear residual (NRMSE {info['trilinear']['nrmse']:.3f})", res_tri, diverging),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(18, 9))
    fig.subplots_adjust(left=0.02, right=0.96, top=0.92, bottom=0.03, wspace=0.25, hspace=0.12)
    _draw(fig, axes, columns, affine, _grid_centre(x, affine), "input units")
    fig.suptitle(f"{args.input.name}: output re-acquired with the input's slice profile minus the input")
    _save(fig, args.output)


def restored_figure(args: argparse.Namespace) -> None:
    from mtsr_monai.reporting.views import pyplot

    plt = pyplot()

    seq = args.sequence
    tri, affine = _load(args.trilinear_dir / f"{seq}.nii.gz")
    columns = [(f"{seq.upper()} trilinear", tri)]
    for path in sorted(args.model_dir.glob("*.nii.gz")):
        name = path.name.removesuffix(".nii.gz")
        if "_" not in name:  # the restored sequences, not their maps
            columns.append((f"{name.upper()} restored", _load(path)[0]))
    styled = [(title, vol, _grey(vol)) for title, vol in columns]
    fig, axes = plt.subplots(
        2, len(styled), figsize=(4.2 * len(styled), 8), layout="constrained", squeeze=False
    )
    _draw(fig, axes, styled, affine, _grid_centre(tri, affine), None)
    fig.suptitle(f"{args.input.name}: restored on the 1 mm grid (axial top, coronal bottom)")
    _save(fig, args.restored_output)


def _save(fig, path: Path) -> None:
    from mtsr_monai.reporting.views import save_figure

    print(save_figure(fig, path, dpi=80))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--trilinear-dir", type=Path, required=True)
    p.add_argument("--sequence", default="flair")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--restored-output", type=Path, default=None)
    args = p.parse_args(argv)
    consistency_figure(args)
    if args.restored_output:
        restored_figure(args)


if __name__ == "__main__":
    main()
