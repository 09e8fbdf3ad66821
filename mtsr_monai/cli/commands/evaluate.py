"""``mtsr evaluate``: PSNR, SSIM, MAE, NMSE of a prediction against a reference, whole image and brain."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import add_no_progress_argument, file_outputs

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "evaluate"
HELP = "image fidelity (PSNR, SSIM, MAE, NMSE) of a prediction against a reference on the same grid"
DESCRIPTION = (
    "Compare --pred with --ref (same grid) over the whole image and over the brain: --mask when given, else "
    "ref > 0 when the reference is skull-stripped (a raw scan: give --mask). data_range = ref max - ref min "
    "unless --data-range. "
    "NMSE = sum((p-r)^2)/sum(r^2); nmse_clinical_code = mean((p-r)^2)/sum(r^2), as the clinical paper's code."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="predicted volume (NIfTI, NRRD, MHA)")
    parser.add_argument("--ref", required=True, help="reference volume on the same grid")
    parser.add_argument("--mask", help="brain mask (> 0 = brain) on the same grid")
    parser.add_argument("--json", help="write the metrics here (JSON, atomic)")
    parser.add_argument("--data-range", type=float, help="PSNR/SSIM data range (default: ref max - ref min)")
    parser.add_argument(
        "--ssim",
        choices=["3d", "axial"],
        default="3d",
        help="3D SSIM (default) or mean of 2D axial slice SSIMs",
    )
    add_no_progress_argument(parser)


def outputs(args: argparse.Namespace) -> OutputPlan:
    return file_outputs(args.json or None)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


def _read(args: argparse.Namespace, paths: list) -> tuple:
    """``(pred, ref, mask or None)`` as numpy arrays on one grid, and the SSIM axis (None: 3D)."""
    import numpy as np

    from mtsr_monai.errors import InputError
    from mtsr_monai.io import check_same_grid, load_volume

    pred = load_volume(paths[0], allow_constant=True)  # a collapsed model's output is scored, not refused
    ref = load_volume(paths[1])
    mask = load_volume(paths[2], validate=False) if args.mask else None
    vols = [v for v in (pred, ref, mask) if v is not None]
    check_same_grid(
        [tuple(v.shape) for v in vols],
        [np.asarray(v.affine) for v in vols],
        [str(p) for p in paths],
        hint="a prediction is scored on its reference's grid: resample one onto the other first",
    )
    if mask is not None and not (mask.numpy() > 0).any():
        raise InputError("the mask is empty (no voxel > 0)", paths[2])
    axis = None
    if args.ssim == "axial":
        # the array axis closest to world S (affine in RAS)
        direction = np.abs(np.asarray(ref.affine)[:3, :3])
        axis = int(np.argmax(direction[2] / np.linalg.norm(direction, axis=0)))
    return pred.numpy(), ref.numpy(), None if mask is None else mask.numpy() > 0, axis


def run(args: argparse.Namespace) -> int:
    import json
    import math
    from pathlib import Path

    from mtsr_monai.errors import InputError

    if args.data_range is not None and not 0 < args.data_range < math.inf:
        raise InputError(f"--data-range must be a positive finite number, got {args.data_range}")
    import numpy as np

    from mtsr_monai.io import atomic_write_text
    from mtsr_monai.metrics.image import image_metrics
    from mtsr_monai.progress import StageBar

    paths = [Path(args.pred), Path(args.ref)] + ([Path(args.mask)] if args.mask else [])
    with StageBar(2, "evaluate", enabled=not args.no_progress) as bar:
        bar.next("read")
        pred, ref, mask, axis = _read(args, paths)
        bar.next("PSNR, SSIM, MAE, NMSE")
        result = image_metrics(pred, ref, mask, data_range=args.data_range, ssim_axis=axis)
    result = {"pred": str(paths[0]), "ref": str(paths[1]), "mask_file": args.mask, **result}
    names = ["psnr", "ssim", "mae", "nmse", "nmse_clinical_code"]
    brain = result["brain"]
    print(f"{'metric':<20}{'whole image':>14}{'brain':>14}")
    for n in names:
        b = _fmt(brain[n]) if brain else "-"
        print(f"{n:<20}{_fmt(result['whole'][n]):>14}{b:>14}")
    brain_source = result["mask"] or "none (the reference is not skull-stripped: give --mask)"
    print(f"data range {_fmt(result['data_range'])}; brain = {brain_source}")
    if args.json:
        # json has no inf: identical images give PSNR inf, written as the string "inf"
        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return "inf" if isinstance(x, float) and np.isinf(x) else x

        atomic_write_text(args.json, json.dumps(clean(result), indent=2) + "\n")
    return 0
