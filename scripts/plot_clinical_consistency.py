"""Figure of ``mtsr clinical-sr``'s data-consistency maps on one real routine scan (docs/clinical_sr.md).

    python scripts/plot_clinical_consistency.py --input FLAIR.nii.gz --model-dir out_model \
        --trilinear-dir out_trilinear --sequence flair --output docs/images/clinical_sr_consistency.png

Rows: an in-plane slice of the input grid and a reformat across the slices (stretched to the slice
spacing). Columns: the input; the restored output re-acquired on the input's grid (input + residual); the
residual of the model's output; the residual of the trilinear interpolation, on one symmetric colour scale
(input units). Titles carry each map's consistency NRMSE from ``clinical_sr.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.header.get_zooms()[:3], float)


def _views(vol: np.ndarray, zooms: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """An axial slice (in-plane for an axial protocol) and a coronal reformat, with their aspect ratios."""
    z = vol.shape[2] // 2
    y = vol.shape[1] // 2
    return [(np.rot90(vol[:, :, z]), zooms[1] / zooms[0]), (np.rot90(vol[:, y, :]), zooms[2] / zooms[0])]


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--trilinear-dir", type=Path, required=True)
    p.add_argument("--sequence", default="flair")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    seq = args.sequence
    x, zooms = _load(args.input)
    res_model, _ = _load(args.model_dir / f"{seq}_consistency.nii.gz")
    res_tri, _ = _load(args.trilinear_dir / f"{seq}_consistency.nii.gz")
    info = {
        name: json.loads((folder / "clinical_sr.json").read_text())["consistency"][seq]
        for name, folder in (("model", args.model_dir), ("trilinear", args.trilinear_dir))
    }
    hi = float(np.percentile(x[x > 0], 99.5))
    lim = float(np.percentile(np.abs(res_model[res_model != 0]), 99))
    columns = [
        ("input", x, "gray", (0, hi)),
        ("model re-acquired", x + res_model, "gray", (0, hi)),
        (
            f"model residual (NRMSE {info['model']['nrmse']:.3f}, gain {info['model']['gain']:.3f})",
            res_model,
            "coolwarm",
            (-lim, lim),
        ),
        (f"trilinear residual (NRMSE {info['trilinear']['nrmse']:.3f})", res_tri, "coolwarm", (-lim, lim)),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.5))
    for c, (title, vol, cmap, (lo, hi_c)) in enumerate(columns):
        for r, (img, aspect) in enumerate(_views(vol, zooms)):
            ax = axes[r, c]
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi_c, aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, fontsize=9)
        if cmap == "coolwarm":
            fig.colorbar(im, ax=axes[:, c], shrink=0.6, label="input units")
    fig.suptitle(f"{args.input.name}: output re-acquired with the input's slice profile minus the input")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80)
    print(args.output)


if __name__ == "__main__":
    main()
