"""``mtsr clinical-sr``: restore routine thick-slice FLAIR / T1 / T2 scans on a fine grid (clinical paper)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import (
    CLINICAL_METHODS,
    SESSION_SEQUENCES,
    add_session_arguments,
    add_slice_profile_argument,
    folder_outputs,
    print_written,
    session_inputs,
)

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "clinical-sr"
HELP = (
    "restore routine thick-slice T1/T2/FLAIR scans on a 1 mm (or --like) grid with the fused attention U-Net"
)
DESCRIPTION = (
    "Takes the routine scans of one session, each on its own grid (raw headers and oblique slabs are fine), "
    "brings them onto the target grid (the grid of --like, or an isotropic --spacing grid covering the "
    "reference scan: FLAIR, else T1, else T2) after rigid registration to the reference, and restores them "
    "with the fused attention-gated U-Net of bundles/clinical_sr (or only interpolates, with --method "
    "trilinear|bspline|sinc: the paper's baselines). Writes one volume per input named after it "
    "(flair.nii.gz, t1.nii.gz, t2.nii.gz) on the target grid, in the input's intensity scale, a "
    "data-consistency map per input (<seq>_consistency.nii.gz: the output re-acquired with the input's "
    "slice profile on the input's grid, minus the input, in input units) and clinical_sr.json (grids, "
    "consistency summaries, intensity gains)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_session_arguments(parser)
    parser.add_argument(
        "--method",
        choices=CLINICAL_METHODS,
        default="model",
        help="restoration: the network (default) or an interpolation baseline",
    )
    parser.add_argument(
        "--full-slices", action="store_true", help="full slices instead of sliding-window patches"
    )
    parser.add_argument("--explain", action="store_true", help="also write attention maps and critic GradCAM")
    parser.add_argument(
        "--no-intensity-gain",
        action="store_true",
        help="skip the data-consistency gain step (one gain per sequence fitting the re-acquired output to "
        "its input)",
    )
    parser.add_argument(
        "--no-intensity-curve",
        action="store_true",
        help="skip the intensity curve step (the monotone map giving the re-acquired output its input's "
        "intensity distribution; it undoes the network's dimming of bright tissue)",
    )
    add_slice_profile_argument(
        parser,
        "--slice-profile",
        help="slice profile of the inputs for the consistency map (default gaussian, FWHM = slice spacing)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="trust the headers (no rigid registration to the reference)",
    )


#: what --explain adds next to the restored volumes
EXPLAIN_FILES = ("attention_gate*.nii.gz", "gradcam.nii.gz", "critic_score.txt", "explain.png")


def outputs(args: argparse.Namespace) -> OutputPlan:
    given = [m for m in SESSION_SEQUENCES if getattr(args, m) is not None]
    names = [f"{m}.nii.gz" for m in given] + [f"{m}_consistency.nii.gz" for m in given] + ["clinical_sr.json"]
    if getattr(args, "explain", True):
        names += EXPLAIN_FILES
    return folder_outputs(args.output_dir, names)


#: explain runs whole slices (padded to a multiple of 16) through the attention U-Net, whose 16-fold
#: bottleneck needs more than one voxel: one in-plane side must exceed 16
EXPLAIN_MIN_SLICE = 17
#: the coarsest attention gate sees the slice at 1/8: a side under 8 voxels leaves it no row to show
EXPLAIN_MIN_SIDE = 8


def check_target(args: argparse.Namespace, explain: bool) -> None:
    """Refuse, before any work, a --spacing outside :data:`mtsr_monai.io.validation.SPACING_RANGE_MM`, a
    --like reference that is no valid 3D grid and, for the explanations, a target grid whose slices are
    smaller than EXPLAIN_MIN_SLICE voxels."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.io import check_spacing, load_volume, validate_grid

    check_spacing(args.spacing)
    like = None
    if args.like is not None:
        like = load_volume(args.like, validate=False)  # any 3D volume gives a grid, even a mask
        validate_grid(like.shape, like.affine, args.like)
    if not explain:
        return
    from mtsr_monai.inference.clinical import isotropic_grid, slice_axis_for, thick_axis_on_grid
    from mtsr_monai.transforms.sitk_utils import metatensor_to_sitk, sitk_affine

    ref_path = next(iter(session_inputs(args).values()))
    ref = metatensor_to_sitk(load_volume(ref_path))
    grid = metatensor_to_sitk(like) if like is not None else isotropic_grid(ref, float(args.spacing))
    thick = thick_axis_on_grid(ref, grid)
    axis = slice_axis_for(thick, sitk_affine(grid)) if args.slice_axis is None else args.slice_axis
    plane = [n for a, n in enumerate(grid.GetSize()) if a != axis]
    if max(plane) < EXPLAIN_MIN_SLICE or min(plane) < EXPLAIN_MIN_SIDE:
        raise InputError(
            f"too small to explain: slices of {plane[0]} x {plane[1]} voxels on the target grid (axis "
            f"{axis}); mtsr explain needs one side of at least {EXPLAIN_MIN_SLICE} and both of at least "
            f"{EXPLAIN_MIN_SIDE} (a finer --spacing or a larger --like grid)",
            ref_path,
        )


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.clinical import restore_clinical

    inputs = session_inputs(args)
    if args.explain and args.method != "model":
        raise InputError("--explain needs --method model")
    check_target(args, args.explain)
    written = restore_clinical(
        inputs,
        args.output_dir,
        like=args.like,
        spacing=args.spacing,
        method=args.method,
        model_path=args.model,
        slice_axis=args.slice_axis,
        planes=args.planes,
        patches=not args.full_slices,
        device=args.device,
        explain=args.explain,
        register=not args.no_register,
        intensity_gain=not args.no_intensity_gain,
        intensity_curve=not args.no_intensity_curve,
        slice_profile=args.slice_profile,
    )
    return print_written(written)
