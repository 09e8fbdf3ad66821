"""``mtsr degrade``: make a realistic low-resolution copy of a high-resolution volume."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import (
    MAX_SCALE,
    SEED,
    add_no_progress_argument,
    add_slice_profile_argument,
    file_outputs,
    output_volume,
)

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "degrade"
HELP = "simulate a low-resolution scan (second-order chain, k-space truncation or thick slices)"
DESCRIPTION = (
    "Write a low-resolution copy of a 3D volume whose header states the true voxel size, so that it "
    "overlays the input in any viewer. Modes: second-order (Real-ESRGAN-style blur/resize/noise chain "
    "adapted to MRI, slice by slice in-plane), kspace (central k-space truncation with Gibbs ringing and "
    "Rician noise), thick-slice (2D clinical protocol: slice thickness, gap and profile along --axis). "
    "The same --seed gives the same output, byte for byte."
)

MODES = ("second-order", "kspace", "thick-slice")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", "-i", required=True, type=Path, help="high-resolution volume (.nii/.nii.gz/...)"
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=output_volume,
        help="low-resolution volume to write (.nii.gz, ...)",
    )
    parser.add_argument("--mode", required=True, choices=MODES, help="degradation model")
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="in-plane downsampling factor (integer; default 4 for second-order/kspace, 1 for thick-slice)",
    )
    parser.add_argument(
        "--thickness", type=float, default=None, help="thick-slice: slice thickness in mm (required)"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=None,  # None: not given (refused outside thick-slice, 0 there)
        help="thick-slice: gap between slices in mm (default 0; negative = overlap)",
    )
    add_slice_profile_argument(
        parser,
        "--profile",
        help="thick-slice: slice profile, Gaussian of FWHM = thickness or boxcar (default gaussian)",
        default=None,
    )
    parser.add_argument(
        "--axis",
        default="axial",
        choices=("axial", "coronal", "sagittal"),
        help="slice orientation, resolved from the affine (default axial): the through-plane axis",
    )
    parser.add_argument(
        "--keep-grid", action="store_true", help="kspace: keep the input matrix (zero-filled k-space)"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help="kspace / thick-slice: noise standard deviation as a fraction of the volume's robust range "
        "(default 0.01 for kspace, 0 for thick-slice; second-order draws its own)",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    add_no_progress_argument(parser)


def outputs(args: argparse.Namespace) -> OutputPlan:
    return file_outputs(args.output)


def _check_arguments(args: argparse.Namespace) -> None:
    import math

    from mtsr_monai.errors import InputError

    mode = args.mode
    if args.scale is None:
        args.scale = 1 if mode == "thick-slice" else 4
    lowest = 1 if mode == "thick-slice" else 2
    if not lowest <= args.scale <= MAX_SCALE:
        raise InputError(f"--scale {args.scale} is invalid for --mode {mode} (accepted {lowest}-{MAX_SCALE})")
    if mode != "thick-slice":
        for flag, given in (
            ("--thickness", args.thickness is not None),
            ("--gap", args.gap is not None),
            ("--profile", args.profile is not None),
        ):
            if given:
                raise InputError(f"{flag} applies to --mode thick-slice only")
    else:
        args.gap = 0.0 if args.gap is None else args.gap
        args.profile = args.profile or "gaussian"
        if args.thickness is None:
            raise InputError("--mode thick-slice needs --thickness MM")
        if not args.thickness > 0:
            raise InputError(f"--thickness must be positive, got {args.thickness}")
        if not math.isfinite(args.gap):
            raise InputError(f"--gap must be a finite number of mm, got {args.gap}")
        if not args.thickness + args.gap > 0:
            raise InputError(f"--gap {args.gap} overlaps slices completely (need thickness + gap > 0)")
    if args.keep_grid and mode != "kspace":
        raise InputError("--keep-grid applies to --mode kspace only")
    if args.noise is not None:
        if mode == "second-order":
            raise InputError(
                "--noise does not apply to --mode second-order (its noise is part of the random chain)"
            )
        if not 0 <= args.noise < 1:
            raise InputError(f"--noise must be a fraction in [0, 1), got {args.noise}")


def _degrade(args: argparse.Namespace, volume, affine, through: int):
    """``(lr, lr_affine)`` of the chosen mode (arguments already checked against the volume)."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.io import voxel_sizes
    from mtsr_monai.transforms import degradation as deg

    if args.mode == "second-order":
        return deg.degrade_volume_second_order(volume, affine, args.scale, through, seed=args.seed)
    if args.mode == "kspace":
        noise = 0.01 if args.noise is None else args.noise
        return deg.degrade_volume_kspace(
            volume, affine, args.scale, through, noise=noise, keep_grid=args.keep_grid, seed=args.seed
        )
    spacing = voxel_sizes(affine)
    fov = volume.shape[through] * spacing[through]
    if args.thickness < spacing[through] - 1e-6:
        raise InputError(
            f"--thickness {args.thickness} mm is thinner than the input's {args.axis} spacing "
            f"{spacing[through]:.3f} mm: a thick slice cannot be made from thicker voxels",
            args.input,
        )
    if args.thickness > fov:
        raise InputError(
            f"--thickness {args.thickness} mm exceeds the {args.axis} field of view {fov:.1f} mm", args.input
        )
    count = len(deg.thick_slice_centres(volume.shape[through], spacing[through], args.thickness, args.gap))
    if count < 2:
        raise InputError(
            f"--thickness {args.thickness} mm and --gap {args.gap} mm leave {count} slice in the {args.axis} "
            f"field of view {fov:.1f} mm: a volume needs at least 2",
            args.input,
        )
    noise = 0.0 if args.noise is None else args.noise
    return deg.degrade_volume_thick_slice(
        volume, affine, args.thickness, args.gap, through, args.profile, args.scale, noise, seed=args.seed
    )


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.errors import InputError
    from mtsr_monai.progress import StageBar

    _check_arguments(args)
    with StageBar(3, "degrade", enabled=not args.no_progress) as bar:
        bar.next("read")
        # imported after the bar is up: loading torch and MONAI takes seconds that must not look like a hang
        import numpy as np

        from mtsr_monai.io import load_volume, nifti_space, save_volume, voxel_sizes
        from mtsr_monai.io.geometry import resolve_axis
        from mtsr_monai.transforms.intensity import is_signed

        image = load_volume(args.input)
        volume = image.numpy()
        affine = np.asarray(image.affine, dtype=np.float64)
        through = resolve_axis(affine, args.axis)
        for d in (d for d in range(3) if d != through):
            if volume.shape[d] // args.scale < 2:
                raise InputError(
                    f"--scale {args.scale} leaves < 2 voxels along array axis {d} (size {volume.shape[d]})",
                    args.input,
                )
        bar.next(args.mode)
        # the chains model magnitude images (air at 0, Rician noise taken as a magnitude), which would turn
        # a signed image's negative values positive: such an image (z-scored, all negative) is degraded
        # shifted to a minimum of 0, then shifted back
        offset = float(volume.min()) if is_signed(volume) else 0.0
        lr, lr_affine = _degrade(args, volume - offset, affine, through)
        lr = lr + offset
        bar.next("write")
        save_volume(lr, args.output, affine=lr_affine, space=nifti_space(image))
    new_spacing = ", ".join(f"{s:.3g}" for s in voxel_sizes(lr_affine))
    print(f"wrote {args.output}: shape {tuple(lr.shape)}, voxel size ({new_spacing}) mm")
    return 0
