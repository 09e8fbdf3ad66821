"""``mtsr super-resolve``: x4 in-plane super-resolution of a whole NIfTI volume, slice by slice."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import (
    PRECISIONS,
    SR_METHODS,
    StoreOnce,
    add_device_argument,
    add_roi_size_argument,
    file_outputs,
    output_volume,
)

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "super-resolve"
HELP = "x4 in-plane super-resolution of a NIfTI volume (shipped MTSR model or an interpolation baseline)"
DESCRIPTION = (
    "Super-resolve every slice in the plane normal to --axis (default: the acquisition plane) by 4 with "
    "the MTSR pruned-RRDB model of a MONAI bundle (default: the shipped bundles/mtsr_sr weights) through a "
    "sliding-window inferer, or with an interpolation baseline. The output overlays the input: same field of "
    "view, in-plane voxel size divided by 4, intensities in the input's units (restored contrast can pass "
    "the input's maximum a little). The model expects magnitude images whose air is near 0: a constant "
    "offset added to a scan (air at 1000) is not removed and shifts the output (scale it off first)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, action=StoreOnce, help="low-resolution NIfTI volume")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=output_volume,
        help="super-resolved volume to write (.nii.gz, ...)",
    )
    parser.add_argument(
        "--method",
        default="model",
        choices=SR_METHODS,
        help="default: model",
    )
    parser.add_argument("--bundle", default=None, help="bundle folder or name (default: the shipped mtsr_sr)")
    add_device_argument(parser, choices=("cpu", "cuda"))
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="LR pixels per network call, in 64 x 64 windows: 8 holds 8 BraTS slices at x4 (60 x 60) or one "
        "181 x 181 slice (default 8; raise it on a GPU)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="network arithmetic: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
    )
    add_roi_size_argument(parser)
    parser.add_argument(
        "--axis",
        default="auto",
        help="plane: auto (default: the acquisition plane, from the voxel sizes: the two that agree; "
        "axial when all three do) | axial | coronal | sagittal | array index",
    )


def outputs(args: argparse.Namespace) -> OutputPlan:
    return file_outputs(args.output)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import warnings

    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.defaults import MIN_ROI_SIZE

    if args.batch_size < 1 or args.roi_size < MIN_ROI_SIZE:
        raise InputError(f"--batch-size must be >= 1 and --roi-size >= {MIN_ROI_SIZE}")
    from mtsr_monai.io import fine_input_warning

    axis = int(args.axis) if args.axis.lstrip("-").isdigit() else args.axis
    warning = fine_input_warning(args.input, axis, 4) if args.method == "model" else None
    if warning:
        warnings.warn(warning, stacklevel=1)
    from mtsr_monai.progress import StageBar

    # one stage up before torch, MONAI and the weights load (seconds); the slice batches have their own bar
    with StageBar(1, "super-resolve") as bar:
        bar.next(f"start-up and {args.method}")
        from mtsr_monai.inference.super_resolve import super_resolve_file

        summary = super_resolve_file(
            args.input,
            args.output,
            method=args.method,
            bundle=args.bundle,
            device=args.device,
            batch_size=args.batch_size,
            roi_size=args.roi_size,
            axis=axis,
            precision=args.precision,
        )
    print(json.dumps(summary), file=sys.stderr)
    return 0
