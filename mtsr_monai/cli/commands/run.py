"""``mtsr run``: MTSR-MRI's full method: super-resolve a low-resolution scan, then translate it N times."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import MAX_SCALE, SR_METHODS

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "run"
HELP = "LR scan in modality A -> SR in A -> N plausible HR images in modality B (+ mean, std, montage, JSON)"
DESCRIPTION = (
    "Super-resolve INPUT (x4 in-plane, SR bundle weights when present, else bicubic, recorded in the "
    "summary), "
    "then translate the SR volume --samples times to --target with the MT bundle. Writes OUT/sr.nii.gz, "
    "sample_*.nii.gz, mean.nii.gz, std.nii.gz, montage.png and summary.json; nothing on bad input."
)
#: ``--sr-method``: the SR bundle's weights when present (else bicubic), or an interpolation
SR_CHOICES = ("auto", *(m for m in SR_METHODS if m != "model"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mtsr_monai.cli.commands.translate import add_translation_arguments

    add_translation_arguments(parser, "low-resolution NIfTI in the source modality")
    parser.add_argument("--scale", type=int, default=4, help=f"in-plane SR factor, 2-{MAX_SCALE} (default 4)")
    parser.add_argument(
        "--sr-method",
        default="auto",
        choices=SR_CHOICES,
        help="auto (default: SR bundle weights, else bicubic) or an interpolation",
    )
    parser.add_argument("--weights", type=Path, default=None, help="translation weights file")
    parser.add_argument(
        "--sr-axis",
        default="auto",
        help="plane of the SR: auto (default: the acquisition plane, from the voxel sizes; axial when they "
        "are near-isotropic), axial, coronal, sagittal or an array index",
    )


def outputs(args: argparse.Namespace) -> OutputPlan:
    from mtsr_monai.cli.commands.translate import mask_output, translation_outputs
    from mtsr_monai.inference.brain_mask import RUN_ONLY_OUTPUTS  # lazy: loads when a command runs

    # codes.json too: a run removes one an earlier translate left, so a --codes file there is refused
    return translation_outputs(args.output_dir, (*RUN_ONLY_OUTPUTS, "codes.json", *mask_output(args)))


def run(args: argparse.Namespace) -> int:
    import warnings

    from mtsr_monai.cli.commands.translate import print_mask_note, translation_kwargs
    from mtsr_monai.errors import InputError
    from mtsr_monai.io import fine_input_warning
    from mtsr_monai.progress import StageBar

    if not 2 <= args.scale <= MAX_SCALE:
        raise InputError(f"--scale {args.scale} is invalid (accepted 2-{MAX_SCALE})")
    from mtsr_monai.inference.bundle import declared_sr_scale, sr_scale_refused, sr_weights_path

    # the model's own factor, refused at once rather than after the start-up and the brain mask
    model_scale = declared_sr_scale() if args.sr_method == "auto" and sr_weights_path().is_file() else None
    if model_scale not in (None, args.scale):
        raise sr_scale_refused(model_scale, args.scale)
    # resolve_axis reads an array index given as text ("0") itself
    warning = fine_input_warning(args.input, args.sr_axis, args.scale) if args.sr_method == "auto" else None
    if warning:
        warnings.warn(warning, stacklevel=1)
    with StageBar(5, "run") as bar:
        bar.next("start-up: torch, MONAI, translation weights")  # shown before they load (seconds)
        from mtsr_monai.inference.pipeline import run_pipeline

        summary = run_pipeline(
            args.input,
            args.source.lower(),
            args.target.lower(),
            args.output_dir,
            scale=args.scale,
            sr_method=args.sr_method,
            sr_axis=args.sr_axis,
            mt_weights=args.weights,
            on_stage=bar.next,
            **translation_kwargs(args),
        )
    print_mask_note(summary)
    print(f"SR: {summary['super_resolution']}")
    print(
        f"wrote SR, {len(summary['outputs']['samples'])} {args.target} samples, mean, std, montage and "
        "summary "
        f"to {args.output_dir} in {summary['timings']['total_s']:.1f} s"
    )
    return 0
