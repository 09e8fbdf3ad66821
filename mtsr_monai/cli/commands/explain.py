"""``mtsr explain``: attention-gate maps and the critic's GradCAM for the clinical SR model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import add_session_arguments, print_written, session_inputs

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "explain"
HELP = "attention-gate maps and critic GradCAM of the clinical SR model (NIfTI + PNG)"
DESCRIPTION = (
    "Prepares the scans as mtsr clinical-sr does, restores them, and writes every attention gate's "
    "coefficients stretched to the slice size (attention_gate<k>.nii.gz, finest gate first), the critic's "
    "GradCAM on the restored slices (gradcam.nii.gz), its mean score (critic_score.txt) and a PNG montage "
    "(explain.png) with the maps overlaid, next to the restored volumes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_session_arguments(parser)


def outputs(args: argparse.Namespace) -> OutputPlan:
    from mtsr_monai.cli.commands.clinical_sr import outputs as clinical_outputs

    return clinical_outputs(args)  # the restored volumes and the maps, as clinical-sr --explain


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.cli.commands.clinical_sr import check_target
    from mtsr_monai.inference.clinical import restore_clinical

    inputs = session_inputs(args)

    check_target(args, explain=True)
    written = restore_clinical(
        inputs,
        args.output_dir,
        like=args.like,
        spacing=args.spacing,
        method="model",
        model_path=args.model,
        slice_axis=args.slice_axis,
        planes=args.planes,
        device=args.device,
        explain=True,
    )
    return print_written(written)
