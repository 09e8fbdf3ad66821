"""``mtsr explain``: attention-gate maps and the critic's GradCAM for the clinical SR model."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "explain"
HELP = "attention-gate maps and critic GradCAM of the clinical SR model (NIfTI + PNG)"
DESCRIPTION = (
    "Prepares the scans as mtsr clinical-sr does, restores them, and writes every attention gate's "
    "coefficients stretched to the slice size (attention_gate<k>.nii.gz, finest gate first), the critic's "
    "GradCAM on the restored slices (gradcam.nii.gz), its mean score (critic_score.txt) and a PNG montage "
    "(explain.png) with the maps overlaid, next to the restored volumes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t1", type=Path, help="T1-weighted scan")
    parser.add_argument("--t2", type=Path, help="T2-weighted scan")
    parser.add_argument("--flair", type=Path, help="FLAIR scan")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--like", type=Path, help="work on the grid of this volume")
    target.add_argument("--spacing", type=float, help="isotropic voxel size in mm of the grid")
    parser.add_argument("--output-dir", "-o", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--model", type=Path, default=None, help="checkpoint (default: the bundle's model.pt)"
    )
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=None, help="2D slicing axis")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def outputs(args: argparse.Namespace):
    from mtsr_monai.cli.commands.clinical_sr import outputs as clinical_outputs

    return clinical_outputs(args)  # the restored volumes and the maps, as clinical-sr --explain


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.clinical import restore_clinical

    inputs = {m: getattr(args, m) for m in ("flair", "t1", "t2") if getattr(args, m) is not None}
    if not inputs:
        raise InputError("give at least one of --t1, --t2, --flair")
    from mtsr_monai.cli.commands.clinical_sr import check_target

    check_target(args, explain=True)
    written = restore_clinical(
        inputs,
        args.output_dir,
        like=args.like,
        spacing=args.spacing,
        method="model",
        model_path=args.model,
        slice_axis=args.slice_axis,
        device=args.device,
        explain=True,
    )
    for key, path in written.items():
        print(f"{key}: {path}")
    return 0
