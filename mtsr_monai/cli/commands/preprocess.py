"""``mtsr preprocess``: N4, registration to a template, brain mask, crop and [0, 1] scaling per subject."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import SEED, add_no_progress_argument, integer_in

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "preprocess"
HELP = "bias-correct, register to MNI (or a template), mask, crop and scale every subject of a datalist"
DESCRIPTION = (
    "For each subject of --datalist (all of training, validation, test): N4 bias-field correction, "
    "registration of the reference modality to the template (other modalities aligned rigidly to the "
    "reference first, then moved with one transform), brain mask from the template, optional skull "
    "stripping, crop to the template's intracranial box, robust percentile scaling to [0, 1] inside the "
    "mask. Writes DIR/<subject>/<modality>.nii.gz, brain_mask.nii.gz, transform_<modality>.tfm and "
    "preprocess.json (every parameter, versions, timings), plus DIR/datalist.json of the outputs. "
    "Subjects already done with the same settings are skipped. With --registration none the images stay "
    "on the reference's native grid and an affine registration is computed, not applied, to carry the "
    "template mask to native space."
)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--datalist", required=True, help="datalist JSON (training / validation / test lists)"
    )
    parser.add_argument("--output", "-o", required=True, help="output folder (one sub-folder per subject)")
    parser.add_argument(
        "--registration",
        default="affine",
        choices=["rigid", "affine", "nonlinear", "none"],
        help="to the template: rigid (6 DoF), affine (12 DoF, default), nonlinear (affine + B-spline), none",
    )
    parser.add_argument(
        "--template", default=None, help="template image (default: MNI152 2009a 1 mm T1, nilearn)"
    )
    parser.add_argument(
        "--template-mask", default=None, help="intracranial mask of --template (default: from the template)"
    )
    parser.add_argument(
        "--reference", default="t1", help="reference modality registered to the template (t1)"
    )
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    parser.add_argument("--n4-shrink", type=integer_in(1), default=4, help="N4 shrink factor (default 4)")
    parser.add_argument(
        "--n4-iterations", type=_ints, default=(50, 50, 30, 20), help="N4 iterations per level (50,50,30,20)"
    )
    parser.add_argument(
        "--iterations",
        type=integer_in(1),
        default=200,
        help="optimizer iterations per pyramid level (default 200)",
    )
    parser.add_argument(
        "--shrink-factors", type=_ints, default=(4, 2), help="registration pyramid shrink factors (4,2)"
    )
    parser.add_argument("--skull-strip", action="store_true", help="multiply the images by the brain mask")
    parser.add_argument("--no-crop", action="store_true", help="keep the full template (or native) grid")
    parser.add_argument(
        "--crop-margin", type=integer_in(0), default=2, help="voxels around the intracranial box (2)"
    )
    parser.add_argument(
        "--k-divisible", type=integer_in(1), default=1, help="make the cropped size a multiple of k (1)"
    )
    parser.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=[0.5, 99.5],
        metavar=("LOW", "HIGH"),
        help="robust intensity range inside the mask mapped to [0, 1] (default 0.5 99.5)",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the registration's voxel sampling (0)")
    parser.add_argument(
        "--threads", type=integer_in(1), default=None, help="SimpleITK threads (default: all cores)"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo subjects already done")
    add_no_progress_argument(parser, help="no progress bar")


def _listed_subjects(args: argparse.Namespace, masks: list[str] | None = None) -> list[dict]:
    """The datalist's subjects (its unused brain masks added to ``masks``), none where it cannot be read (the
    run refuses it with its own message); read quietly: the run reads it again and says once what it leaves
    out."""
    import warnings

    # lazy: the command's checks and plans run before any heavy import
    from mtsr_monai.data.preprocess import read_datalist
    from mtsr_monai.errors import InputError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_datalist(args.datalist, masks)
    except InputError:
        return []


def inputs(args: argparse.Namespace) -> list:
    """The files listed in the datalist, its unused brain masks too (an unreadable datalist is refused by the
    run itself)."""
    masks: list[str] = []
    subjects = _listed_subjects(args, masks)
    return [v for s in subjects for k, v in s.items() if k not in ("subject", "split")] + masks


def outputs(args: argparse.Namespace) -> OutputPlan:
    """Per subject DIR/<subject>/<key>.nii.gz, brain_mask, transforms and sidecar; DIR/datalist.json."""
    from pathlib import Path

    from mtsr_monai.io.outputs import OutputPlan

    out = Path(args.output)
    files = [out / "datalist.json"]
    for subject in _listed_subjects(args):
        folder = out / subject["subject"]
        keys = [k for k in subject if k not in ("subject", "split")]
        files += [folder / f"{k}.nii.gz" for k in keys] + [folder / f"transform_{k}.tfm" for k in keys]
        files += [folder / "brain_mask.nii.gz", folder / "preprocess.json"]
    return OutputPlan(files=files, folders=[out])


def _check_reference(args: argparse.Namespace) -> None:
    """Refuse a ``--reference`` that a subject lacks: the template's contrast is chosen from it and each
    subject's record names it, so a silent fallback to another image would register a T1 to a T2 template
    and record a false reference."""
    from mtsr_monai.data.preprocess import LABEL_KEYS
    from mtsr_monai.errors import InputError

    for subject in _listed_subjects(args):
        images = [k for k in subject if k not in ("subject", "split", *LABEL_KEYS)]
        if args.reference not in images:
            raise InputError(
                f"--reference {args.reference}: subject {subject['subject']} has no such image (it has "
                f"{', '.join(images)}); name one every subject has",
                args.datalist,
            )


def _check_sizes(args: argparse.Namespace) -> None:
    """Refuse, before any work, images too small for the registration pyramid (the minimum size of
    mtsr preprocess: 4 voxels per axis at the coarsest shrink factor, 16 with the default 4,2)."""
    from mtsr_monai.data.preprocess import LABEL_KEYS
    from mtsr_monai.errors import InputError
    from mtsr_monai.io import image_shape
    from mtsr_monai.transforms.registration import check_registrable

    for subject in _listed_subjects(args):
        for key, path in subject.items():
            if key in ("subject", "split", *LABEL_KEYS):
                continue
            shape = image_shape(path)
            if shape is not None and len(shape) == 3:
                check_registrable(shape, args.shrink_factors, f"{key} image", path)
                if not args.no_n4 and min(shape) < 2 * args.n4_shrink:  # N4 fits on the shrunk image
                    raise InputError(
                        f"--n4-shrink {args.n4_shrink}: the {key} image ({' x '.join(map(str, shape))} "
                        f"voxels) needs {2 * args.n4_shrink} voxels per axis; give a smaller --n4-shrink",
                        path,
                    )


def _check_template_mask(args: argparse.Namespace) -> None:
    """Refuse a --template-mask that covers nothing of the template (the crop would find no brain)."""
    import SimpleITK as sitk

    from mtsr_monai.errors import InputError
    from mtsr_monai.io.template import template_path

    if args.template_mask is None:
        return
    images = []
    for option, path in (
        ("--template", args.template or template_path("t1")),
        ("--template-mask", args.template_mask),
    ):
        try:
            images.append(sitk.ReadImage(str(path)))
        except RuntimeError:
            raise InputError(f"{option}: unreadable image", path) from None
    mask = sitk.Resample(images[1], images[0], sitk.Transform(), sitk.sitkNearestNeighbor)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(
            "--template-mask covers no voxel of the template (another space?)", args.template_mask
        )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mtsr_monai.data.preprocess import PreprocessConfig, preprocess_datalist
    from mtsr_monai.errors import InputError

    low, high = args.percentiles
    if not 0 <= low < high <= 100:
        raise InputError(f"--percentiles must satisfy 0 <= LOW < HIGH <= 100, got {low} {high}")
    for option in ("template", "template_mask"):
        value = getattr(args, option)
        if value is not None and not Path(value).is_file():
            raise InputError(f"--{option.replace('_', '-')}: no such file", value)
    _check_reference(args)
    from mtsr_monai.progress import StageBar

    # the size check loads SimpleITK, torch and MONAI: seconds (minutes on a loaded machine) before the
    # subjects' own bar
    with StageBar(1, "preprocess", enabled=not args.no_progress) as bar:
        bar.next("start-up: image sizes, SimpleITK and MONAI")
        _check_sizes(args)
        _check_template_mask(args)
    if args.threads:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    config = PreprocessConfig(
        registration=args.registration,
        template=None if args.template is None else str(Path(args.template).resolve()),
        template_mask=None if args.template_mask is None else str(Path(args.template_mask).resolve()),
        reference=args.reference,
        n4=not args.no_n4,
        n4_shrink_factor=args.n4_shrink,
        n4_iterations=tuple(args.n4_iterations),
        iterations=args.iterations,
        shrink_factors=tuple(args.shrink_factors),
        smoothing_sigmas=tuple(float(max(0, s // 2)) for s in args.shrink_factors),
        seed=args.seed,
        skull_strip=args.skull_strip,
        crop=not args.no_crop,
        crop_margin=args.crop_margin,
        k_divisible=args.k_divisible,
        lower_percentile=low,
        upper_percentile=high,
        registration_threads=args.threads,  # recorded in each sidecar (1: identical reruns)
    )
    summary = preprocess_datalist(
        args.datalist, args.output, config, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(
        json.dumps(
            {
                "processed": len(summary["processed"]),
                "skipped": len(summary["skipped"]),
                "output": summary["output"],
            }
        )
    )
    return 0
