"""``mtsr bids``: a BIDS App (``mtsr bids BIDS_DIR OUTPUT_DIR participant|group --task ...``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtsr_monai.cli.arguments import (
    CLINICAL_METHODS,
    PRECISIONS,
    SAMPLES,
    SEED,
    SR_METHODS,
    add_device_argument,
    add_no_progress_argument,
    add_roi_size_argument,
    positive_minutes,
    print_written,
)

NAME = "bids"
HELP = "a whole BIDS dataset (BIDS App): SR, clinical SR, translation or QC per participant; group report"
DESCRIPTION = (
    "BIDS App. 'participant' processes every selected participant of the raw BIDS dataset BIDS_DIR "
    "(derivatives/ ignored) with --task and writes BIDS derivatives to OUTPUT_DIR: desc-<label> images, "
    "JSON sidecars with provenance, IQMs of inputs and outputs, dataset_description.json. Participants "
    "already done with the same provenance are skipped; a failing participant is recorded in "
    "OUTPUT_DIR/logs/failures.tsv and the others go on (exit code 1 at the end if any failed; else 3 if a "
    "participant was left busy: another run held it). Under "
    "torchrun each rank takes its share. 'group' writes OUTPUT_DIR/group_report.html and group_iqms.tsv "
    "over all participants. See docs/bids.md."
)
SUFFIXES = ("T1w", "T2w", "FLAIR", "PDw")
#: exit code of a run that left participants to another run holding their lock (the cohort is not done yet)
BUSY = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bids_dir", type=Path, help="raw BIDS dataset (with dataset_description.json)")
    parser.add_argument("output_dir", type=Path, help="derivatives folder (e.g. BIDS_DIR/derivatives/mtsr)")
    parser.add_argument("analysis_level", choices=("participant", "group"))
    parser.add_argument(
        "--task",
        choices=("super-resolve", "clinical-sr", "translate", "qc"),
        help="what to compute (required at the participant level; filters the group report)",
    )
    _add_selection_arguments(parser)
    add_device_argument(
        parser, choices=("cpu", "cuda"), help="cuda: one GPU per rank (cuda:LOCAL_RANK under torchrun)"
    )
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="process the I-th of N strided parts (SLURM: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
    )
    add_no_progress_argument(parser, help="no progress bar")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per process (default: torch's; torchrun sets 1 per rank); match it to the cores "
        "you were given: more threads than free cores make the CPU work much slower",
    )
    parser.add_argument(
        "--dist-timeout-min",
        type=positive_minutes,
        default=1440.0,
        help="how long ranks wait for each other at the end (minutes, default 1440)",
    )
    _add_task_arguments(parser)


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Which participants, sessions and scans a run uses."""
    parser.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process (01 or sub-01; default: all)",
    )
    parser.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        metavar="LABEL",
        help="sessions to process (default: all)",
    )
    parser.add_argument(
        "--bids-filter-file",
        "--bids_filter_file",
        type=Path,
        metavar="FILE",
        help="JSON file choosing the scans of each contrast by their entities, as fMRIPrep reads it, e.g. "
        '{"flair": {"run": 2}, "t1w": {"acquisition": null}} (docs/bids.md)',
    )
    parser.add_argument(
        "--modality",
        nargs="+",
        choices=SUFFIXES,
        help="suffixes to use (default: all the task can use); a participant lacking one fails; at the group "
        "level: reports only images made from them",
    )


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of each task (as their single-file commands have them)."""
    sr = parser.add_argument_group("super-resolve")
    sr.add_argument("--sr-method", default="model", choices=SR_METHODS)
    sr.add_argument("--bundle", default=None, help="SR bundle folder or name (default: the shipped mtsr_sr)")
    sr.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="super-resolve: LR pixels per network call in 64 x 64 windows (as mtsr super-resolve); "
        "clinical-sr: slices per batch (default 8)",
    )
    add_roi_size_argument(sr)
    sr.add_argument(
        "--axis",
        default=None,
        help="slice plane: super-resolve's default auto (the acquisition plane), translate's axial (as the "
        "single-file commands)",
    )
    sr.add_argument("--precision", default="auto", choices=PRECISIONS)
    cl = parser.add_argument_group("clinical-sr")
    cl.add_argument("--clinical-method", default="model", choices=CLINICAL_METHODS)
    cl.add_argument("--spacing", type=float, default=1.0, help="output voxel size in mm (default 1)")
    cl.add_argument("--model", default=None, help="checkpoint (default: bundles/clinical_sr/models/model.pt)")
    cl.add_argument("--full-slices", action="store_true", help="full slices instead of patches")
    cl.add_argument(
        "--planes", type=int, default=2, choices=(1, 2), help="planes through the thick axis (default 2)"
    )
    mt = parser.add_argument_group("translate")
    mt.add_argument("--target", default="FLAIR", choices=SUFFIXES[:3], help="target modality (default FLAIR)")
    mt.add_argument("--samples", type=SAMPLES, default=5, help="samples per image (default 5)")
    mt.add_argument("--seed", type=SEED, default=0, help="seed of the latent codes (default 0)")


def _shard(text: str) -> tuple[int, int]:
    from mtsr_monai.errors import InputError

    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError as err:
        raise InputError(f"--shard must be I/N, got {text!r}") from err
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return index, count


def _task(args: argparse.Namespace, device: str):
    from mtsr_monai.bids.tasks import make_task
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.defaults import MIN_ROI_SIZE
    from mtsr_monai.io import check_spacing

    if args.batch_size < 1 or args.roi_size < MIN_ROI_SIZE:  # --samples: its argparse type (1 to 1000)
        raise InputError(f"--batch-size must be >= 1, --roi-size >= {MIN_ROI_SIZE}")
    check_spacing(args.spacing)
    method = args.clinical_method if args.task == "clinical-sr" else args.sr_method
    return make_task(
        args.task,
        suffixes=args.modality,
        device=device,
        bundle=args.bundle,
        method=method,
        batch_size=args.batch_size,
        roi_size=args.roi_size,
        axis=args.axis or ("axial" if args.task == "translate" else "auto"),  # the single-file defaults
        precision=args.precision,
        model_path=args.model,
        spacing=args.spacing,
        patches=not args.full_slices,
        planes=args.planes,
        target=args.target,
        samples=args.samples,
        seed=args.seed,
    )


def _filters(args: argparse.Namespace) -> dict | None:
    from mtsr_monai.bids.filters import read_bids_filters

    return read_bids_filters(args.bids_filter_file) if args.bids_filter_file else None


def _group(args: argparse.Namespace) -> int:
    import os

    from mtsr_monai.bids.filters import image_filter
    from mtsr_monai.bids.group import group_level
    from mtsr_monai.bids.layout import read_dataset
    from mtsr_monai.io.outputs import OutputLocks

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the group level runs once, on rank 0
        return 0
    # the raw dataset and the labels are checked as at the participant level (bad ones: exit 2)
    keep = image_filter(_filters(args))
    dataset = read_dataset(args.bids_dir, args.participant_label, args.session_label, args.modality, keep)
    participants = sorted(dataset.subjects) if args.participant_label or args.session_label else None
    sessions = [str(x).removeprefix("ses-") for x in args.session_label] if args.session_label else None
    tasks = [args.task] if args.task else None
    # one group level at a time on a folder: two would mix their table, figure and report
    locks = OutputLocks()
    locks.acquire(Path(args.output_dir) / "group_report.html", "mtsr bids group")
    try:
        written = group_level(args.output_dir, tasks, participants, sessions, args.modality)
    finally:
        locks.release()
    return print_written(written)


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.errors import InputError
    from mtsr_monai.io.outputs import OutputPlan, check_not_inputs, check_writable

    # no output plan (its locks would keep torchrun's ranks out of one folder): the checks without locks
    check_not_inputs(OutputPlan(folders=[args.output_dir]), [])  # refuses an output folder that is a file
    check_writable(OutputPlan(folders=[args.output_dir]))
    if args.analysis_level == "group":
        return _group(args)
    if args.task is None:
        raise InputError("the participant level needs --task")
    shard = _shard(args.shard)
    filters = _filters(args)  # a bad file is refused before any work
    from mtsr_monai.bids.runner import participant_level, ranks_from_env

    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    ranks = ranks_from_env(shard, args.dist_timeout_min)
    try:
        device = args.device
        if device == "cuda":  # there: checked with the other arguments (cli.arguments.check_device)
            import torch

            # one GPU per rank; more ranks than GPUs on a node share them round-robin
            index = ranks.local_rank % torch.cuda.device_count()
            torch.cuda.set_device(index)
            device = f"cuda:{index}"
        task = _task(args, device)
        summary = participant_level(
            args.bids_dir,
            args.output_dir,
            task,
            args.participant_label,
            args.session_label,
            ranks,
            progress=not args.no_progress,
            filters=filters,
        )
    finally:
        ranks.close()
    return _report(summary, task.name, ranks.world, args.output_dir) if ranks.rank == 0 else _code(summary)


def _code(summary: dict) -> int:
    """1 when a participant failed; else 3 when one was busy (held by another run: not done yet); else 0."""
    return 1 if summary["failed"] else BUSY if summary["busy"] else 0


def _report(summary: dict, task: str, world: int, output_dir: Path) -> int:
    """The run's last lines on stderr (rank 0 only: the summary covers every rank); returns the exit code."""
    import sys

    counts = ", ".join(f"{summary[k]} {k}" for k in ("ok", "skipped", "failed", "busy") if summary[k])
    print(f"mtsr bids {task}: {counts or 'nothing to do'} (world size {world})", file=sys.stderr)
    if summary["ignored_files"]:
        # a misnamed scan is left out of the cohort: one line here, since few read the run log
        n, log = len(summary["ignored_files"]), summary["run_log"]
        print(
            f"mtsr bids: warning: {n} file(s) ignored for names or places that break the BIDS rules: "
            f"see {log}",
            file=sys.stderr,
        )
    # participants or contrasts a label or filter left out (the ignored files are counted above)
    ignored = tuple(f"{rel}:" for rel in summary["ignored_files"])
    shown = [w for w in summary.get("reader_warnings", []) if not w.startswith(ignored)]
    for text in shown[:10]:
        print(f"mtsr bids: warning: {text}", file=sys.stderr)
    if len(shown) > 10:
        print(f"mtsr bids: {len(shown) - 10} more warning(s): the run log's reader_warnings", file=sys.stderr)
    if summary["input_warnings"]:
        count = len(summary["input_warnings"])
        print(f"{count} input(s) warned about: listed in the run log's input_warnings", file=sys.stderr)
    if summary["failed"]:
        print(
            f"failed participants are listed in {Path(output_dir) / 'logs' / 'failures.tsv'}", file=sys.stderr
        )
    busy = [r["participant_id"] for g in summary["ranks"] for r in g["results"] if r["status"] == "busy"]
    if busy:
        # named, so a pipeline (or its user) knows what the rerun after the other run's end must finish
        print(f"mtsr bids {task}: busy (held by another run): {', '.join(sorted(busy))}", file=sys.stderr)
    return _code(summary)
