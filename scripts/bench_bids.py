"""Throughput of ``mtsr bids`` (participants per hour), super-resolve and qc, 1 process vs 2 torchrun ranks.

    python scripts/bench_bids.py --work /tmp/bench_bids [--subjects 8] [--size-mm 240 240 8] [--factors 4 4 1]
                                 [--modality T1w] [--tasks super-resolve qc] [--json out.json]

Builds a small BIDS tree from ../shared/data (scripts/make_bids_cohort.py's layout), then for each task runs
the participant level into a fresh folder once as one process (``python -m mtsr_monai bids ...``) and once
under ``torchrun --standalone --nproc_per_node 2`` (gloo), each process with one CPU thread, timing the wall
clock of the whole command. From the run log it also reads each rank's time in the participant loop, so the
start-up cost (imports, model load) is separated from the per-participant time; with --baseline it times one
per-file call (``mtsr super-resolve`` / ``mtsr qc`` on the first participant's image in a fresh process),
which pays the start-up cost for every file. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr[-1500:]}")
    return seconds


def _env() -> dict[str, str]:
    # one thread per process everywhere: 1 process vs 2 processes on 2 cores, and no OpenMP spin-waiting
    # between threads when the CPU is shared with other jobs
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _bids_run(task: str, tree: Path, out: Path, ranks: int, extra: list[str]) -> dict:
    env = _env()
    base = ["bids", str(tree), str(out), "participant", "--task", task, "--no-progress", *extra]
    if ranks == 1:
        cmd = [sys.executable, "-m", "mtsr_monai", *base]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        cmd += ["-m", "mtsr_monai", *base]
    shutil.rmtree(out, ignore_errors=True)
    wall = _timed(cmd, env)
    log = json.loads(next((out / "logs" / "runs").glob("*.json")).read_text())
    results = [r for rank in log["ranks"] for r in rank["results"]]
    n = sum(r["status"] == "ok" for r in results)
    loop = max(rank["seconds"] for rank in log["ranks"])
    return {
        "task": task,
        "processes": ranks,
        "participants": n,
        "wall_s": round(wall, 1),
        "per_hour": round(3600 * n / wall, 1),
        "loop_s": round(loop, 1),
        "startup_s": round(wall - loop, 1),
        "mean_participant_s": round(sum(r["seconds"] for r in results) / max(len(results), 1), 2),
    }


def _per_file_baseline(task: str, tree: Path, work: Path, suffix: str) -> float:
    image = sorted(tree.glob(f"sub-*/**/anat/*_{suffix}.nii.gz"))[0]
    env = _env()
    if task == "super-resolve":
        cmd = ["super-resolve", "--input", str(image), "--output", str(work / "baseline_sr.nii.gz")]
    else:
        cmd = ["qc", "--input", str(image), "--json", str(work / "baseline_qc.json")]
    return _timed([sys.executable, "-m", "mtsr_monai", *cmd], env)


def main(argv: list[str] | None = None) -> int:
    from mtsr_monai.bids.convert import shared_cohort, write_bids_tree

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("MTSR_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--size-mm", type=float, nargs=3, default=(240, 240, 8))
    parser.add_argument("--factors", type=int, nargs=3, default=(4, 4, 1))
    parser.add_argument("--modality", default="T1w", help="the one suffix processed (default T1w)")
    parser.add_argument("--tasks", nargs="+", default=["super-resolve", "qc"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--baseline", action="store_true", help="also time one per-file call (a fresh process) per task"
    )
    args = parser.parse_args(argv)
    tree = args.work / "raw"
    shutil.rmtree(tree, ignore_errors=True)
    write_bids_tree(
        shared_cohort(args.shared, args.subjects), tree, size_mm=args.size_mm, factors=args.factors
    )
    rows = []
    for task in args.tasks:
        baseline = _per_file_baseline(task, tree, args.work, args.modality) if args.baseline else None
        for ranks in (1, 2):
            extra = ["--modality", args.modality, "--threads", "1"]
            row = _bids_run(task, tree, args.work / f"out_{task}_{ranks}", ranks, extra)
            rows.append({**row, "per_file_call_s": round(baseline, 1) if baseline else None})
            print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| task | processes | participants | wall (s) | participants / hour | start-up (s) "
        "| mean per participant (s) | one per-file call (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['processes']} | {r['participants']} | {r['wall_s']} | {r['per_hour']} | "
            f"{r['startup_s']} | {r['mean_participant_s']} | {r['per_file_call_s']} |"
        )
    if args.json:
        from mtsr_monai.io import atomic_write_text  # creates the folder; no partial file

        atomic_write_text(
            args.json,
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
