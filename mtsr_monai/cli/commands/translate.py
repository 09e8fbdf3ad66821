"""``mtsr translate``: several plausible translations of a volume from one modality to another."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import (
    MASK_AUTO,
    MASK_NONE,
    SAMPLES,
    SEED,
    StoreOnce,
    add_device_argument,
    folder_outputs,
    modality,
)

if TYPE_CHECKING:  # types only; the CLI imports io and torch lazily
    from mtsr_monai.inference.translate import CodesFromFile
    from mtsr_monai.io.outputs import OutputPlan

NAME = "translate"
HELP = "translate a NIfTI volume to another modality: N samples, their mean and per-voxel std"
DESCRIPTION = (
    "Translate INPUT (modality --source) to --target with the MT bundle's BicycleGAN generator, slice by "
    "slice "
    "(axial from the header) at the slices' own voxel size (native-resolution weights, as shipped; older "
    "weights: resized to their training size and back), keeping the input's grid. Writes "
    "OUT/sample_0..N-1.nii.gz, mean.nii.gz, std.nii.gz (per-voxel standard deviation across samples) and "
    "codes.json (the latent codes; pass them back with --codes to reproduce). Outputs are in [0, 1]."
)


def add_translation_arguments(parser: argparse.ArgumentParser, input_help: str) -> None:
    """Arguments shared by ``mtsr translate`` and ``mtsr run`` (input, modalities, samples, codes, mask)."""
    parser.add_argument("--input", "-i", required=True, type=Path, action=StoreOnce, help=input_help)
    parser.add_argument(
        "--source", required=True, type=modality, help="input modality (t1, t2, flair, ...; or T1w, FLAIR)"
    )
    parser.add_argument("--target", required=True, type=modality, help="output modality")
    parser.add_argument("--output-dir", "-o", required=True, type=Path)
    parser.add_argument("--samples", "-n", type=SAMPLES, default=5, help="number of samples (default 5)")
    parser.add_argument("--seed", type=SEED, default=None, help="seed of the latent codes (reproducible)")
    parser.add_argument(
        "--codes",
        type=Path,
        default=None,
        help="JSON file with the latent codes ({'codes': [[...], ...]} or a list); overrides --samples",
    )
    parser.add_argument(
        "--mask",
        default=MASK_AUTO,
        help="brain mask on the input's grid: outside is set to 0 (the models saw skull-stripped brains "
        "only); auto (default): none for a skull-stripped input, else one carried from the MNI152 template "
        "by an affine registration (about 25 s), written as OUT/brain_mask.nii.gz; none: no mask",
    )
    add_device_argument(parser)


def translation_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`add_translation_arguments` for the inference functions."""
    return {
        "samples": args.samples,
        "seed": args.seed,
        "codes": read_codes(args.codes),
        "device": args.device,
        "mask_path": mask_argument(args.mask),
    }


def print_mask_note(summary: dict) -> None:
    """What ``--mask auto`` decided: a line on stdout, or a warning on stderr when it could make no mask for
    an input with its skull."""
    import warnings

    if not summary.get("mask_note"):
        return
    where = f" -> {summary['mask']}" if summary["mask"] else ""
    if summary["mask_failed"]:
        warnings.warn(f"mask: {summary['mask_note']}", stacklevel=1)
    else:
        print(f"mask: {summary['mask_note']}{where}")


def mask_argument(value: str | None) -> str | Path | None:
    """``--mask`` for the inference functions: ``auto`` as is, ``none`` as None, else a path."""
    if value is None or value == MASK_NONE:
        return None
    return value if value == MASK_AUTO else Path(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_translation_arguments(parser, "input NIfTI in the source modality")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights file (default bundles/mtsr_mt/models/<source>_to_<target>.pt)",
    )
    parser.add_argument("--axis", default="axial", help="slice plane: axial (default), coronal, sagittal")
    parser.add_argument(
        "--method",
        choices=("bicyclegan", "tissue-lookup", "identity"),
        default="bicyclegan",
        help="bicyclegan (default: N samples, mean, std); baselines, one deterministic output mean.nii.gz: "
        "tissue-lookup (EM tissue classes of the input painted with their learned target intensities), "
        "identity (the input rescaled to [0, 1])",
    )


def translation_outputs(out: Path, extra: tuple[str, ...] = ()) -> OutputPlan:
    """The files ``mtsr translate`` (and with ``extra`` names, ``mtsr run``) writes into ``out``."""
    return folder_outputs(out, ("sample_*.nii.gz", "mean.nii.gz", "std.nii.gz", *extra))


def mask_output(args: argparse.Namespace) -> tuple[str, ...]:
    """The estimated mask's name, an output only with ``--mask auto`` (a mask of an earlier run given as
    ``--mask OUT/brain_mask.nii.gz`` is an input, kept)."""
    return ("brain_mask.nii.gz",) if str(args.mask) == MASK_AUTO else ()


def outputs(args: argparse.Namespace) -> OutputPlan:
    # lazy: the inference package loads when a command runs, not for its --help
    from mtsr_monai.inference.brain_mask import RUN_ONLY_OUTPUTS

    # an earlier mtsr run's summary, montage and SR there are removed: outputs too (never an input)
    return translation_outputs(args.output_dir, ("codes.json", *RUN_ONLY_OUTPUTS, *mask_output(args)))


def read_codes(path: Path | None) -> CodesFromFile | None:
    """Latent codes from a JSON file (a list of vectors, or a dict with ``codes``), or None."""
    from mtsr_monai.errors import InputError

    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read latent codes: {err}", path) from err
    from mtsr_monai.inference.translate import CodesFromFile, checked_codes  # lazy: loads torch

    # checked here, where the file can be named; the width against the model's nz once it is loaded, which
    # still names the file
    codes = checked_codes(data["codes"] if isinstance(data, dict) and "codes" in data else data, None, path)
    return CodesFromFile.of(codes, path)


def warn_ignored_sampling(args: argparse.Namespace) -> None:
    """A baseline ``--method`` makes one deterministic image: say so when sampling options were given."""
    import warnings

    given = [
        name
        for name, value, default in (("--samples", args.samples, 5), ("--seed", args.seed, None),
                                     ("--codes", args.codes, None), ("--weights", args.weights, None))
        if value != default
    ]  # fmt: skip
    if args.method != "bicyclegan" and given:
        ignored = ", ".join(given)
        warnings.warn(f"--method {args.method} is deterministic: {ignored} ignored", stacklevel=1)


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.progress import StageBar

    warn_ignored_sampling(args)
    # one stage up before torch, MONAI and the weights load (seconds); the slice batches have their own bar
    with StageBar(1, "translate") as bar:
        bar.next(f"start-up and {args.method}")
        if args.method != "bicyclegan":
            from mtsr_monai.inference.tissue_lookup import baseline_translate_file

            source, target = args.source.lower(), args.target.lower()
            summary = baseline_translate_file(
                args.input,
                source,
                target,
                args.output_dir,
                args.method,
                mask_argument(args.mask),
                progress=True,
            )
        else:
            from mtsr_monai.inference.translate import translate_file

            summary = translate_file(
                args.input,
                args.source.lower(),
                args.target.lower(),
                args.output_dir,
                weights=args.weights,
                axis=args.axis,
                **translation_kwargs(args),
            )
    print_mask_note(summary)
    if args.method != "bicyclegan":
        print(f"wrote {summary['outputs']['mean']} ({args.method})")
        return 0
    n = len(summary["outputs"]["samples"])
    print(
        f"wrote {n} samples, mean and std to {args.output_dir} "
        f"(mean std in foreground {summary['mean_std_in_foreground']:.4f})"
    )
    return 0
