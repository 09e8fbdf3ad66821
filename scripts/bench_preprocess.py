"""Seconds per subject for the full preprocessing of one real 1 mm subject with three modalities.

Runs ``preprocess_subject`` (N4 + affine registration to MNI152 2009a + template brain mask + crop +
percentile scaling, default settings) on one BraTS 2018 case (t1, t2, flair; 240x240x155 at 1 mm) and
prints / writes JSON with the seconds per stage and in total.

    .venv/bin/python scripts/bench_preprocess.py [--case DIR] [--repeats 1] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MTSR_SHARED_DATA", REPO.parent / "shared" / "data"))


def case_files(case: Path) -> dict[str, Path]:
    """The case's T1, T2 and FLAIR (the ones it has, at least a T1), named as BraTS 2018 (``*_t1.nii.gz``),
    the BraTS T1/FLAIR set (``T1.nii.gz``) or the TCGA cases (``t1.nii.gz``): exit 2 without a T1."""
    found = {}
    for m in ("t1", "t2", "flair"):
        names = sorted(p for p in case.glob("*.nii.gz") if re.fullmatch(rf"(.*_)?{m}\.nii\.gz", p.name, re.I))
        if names:
            found[m] = names[0]
    if "t1" not in found:
        print(f"bench_preprocess: error: {case}: no T1 (*_t1, T1 or t1 .nii.gz)", file=sys.stderr)
        sys.exit(2)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", type=Path, default=None, help="BraTS case folder (default: first brats2018_tcia)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    parser.add_argument("--registration", default="affine", choices=["rigid", "affine", "nonlinear", "none"])
    parser.add_argument("--json", type=Path, default=Path("/tmp/mtsr/preprocess/bench_preprocess.json"))
    args = parser.parse_args(argv)

    case = args.case or sorted((SHARED / "brats2018_tcia").iterdir())[0]
    files = case_files(case)
    import SimpleITK as sitk

    from mtsr_monai.data.preprocess import PreprocessConfig, preprocess_subject
    from mtsr_monai.io import atomic_write_text

    if args.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    config = PreprocessConfig(registration=args.registration)
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
            start = time.perf_counter()
            sidecar = preprocess_subject(
                {"subject": case.name, **{k: str(v) for k, v in files.items()}}, tmp, config
            )
            wall = time.perf_counter() - start
        runs.append({**sidecar["seconds"], "wall": round(wall, 3)})
    totals = sorted(r["total"] for r in runs)
    result = {
        "case": str(case),
        "modalities": list(files),
        "input_shape": list(sitk.ReadImage(str(files["t1"])).GetSize()),
        "registration": args.registration,
        "config": config.to_json(),
        "runs": runs,
        "seconds_per_subject_median": statistics.median(totals),
        "machine": {
            "cpu_count": os.cpu_count(),
            "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "versions": sidecar["versions"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    atomic_write_text(args.json, text)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
