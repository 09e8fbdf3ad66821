#!/usr/bin/env python
"""How far an LR volume's inference scaling is from the scaling its HR had in training.

Training scales every HR volume by ``robust_range`` (the 99.5 % level of the brain) and then degrades it, so
the network learns with that level at 1. At inference only the LR volume exists, and its 99.5 % level is
lower: the degradation's blur flattens the bright peaks (CSF on T2, vessels and enhancement on T1ce, lesions
on FLAIR). The input then reaches the network brighter than in training by ``hi(HR) / hi(LR)``. This script
measures that ratio on the volumes of a ``shared_splits`` split, with seeded draws of the second-order x4
degradation (the bench's chain), so that ``train.yaml``'s gain jitter can cover what inference meets.

Usage: python scripts/sr_range_ratio.py [--split training] [--draws 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def range_ratios(path: str, draws: int, first_seed: int) -> list[float]:
    """``hi(HR) / hi(LR)`` of ``robust_range`` for ``draws`` seeded second-order x4 draws on one volume."""
    import numpy as np

    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.degradation import degrade_volume_second_order
    from mtsr_monai.transforms.intensity import robust_range

    hr = load_volume(path)
    hr_np = np.asarray(hr, dtype=np.float32)
    hr_hi = robust_range(hr_np)[1]
    ratios = []
    for seed in range(first_seed, first_seed + draws):
        lr, _ = degrade_volume_second_order(hr_np, np.asarray(hr.affine), scale=4, seed=seed)
        ratios.append(hr_hi / robust_range(np.asarray(lr, dtype=np.float32))[1])
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="training", choices=["training", "validation"])
    parser.add_argument("--draws", type=int, default=2, help="degradation draws per volume")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch
    from shared_splits import volume_datalist

    torch.set_num_threads(args.threads)
    entries = volume_datalist()[args.split]
    if not entries:
        parser.error("no volumes: ../shared/data is absent")
    rows = []
    for index, entry in enumerate(entries):
        ratios = range_ratios(entry["hr"], args.draws, first_seed=1000 + args.draws * index)
        rows.append({"volume": entry["hr"], "modality": entry["modality"], "ratios": ratios})
        print(f"{Path(entry['hr']).name}: {' '.join(f'{r:.3f}' for r in ratios)}", flush=True)
    summary = {}
    for modality in sorted({r["modality"].lower() for r in rows}) + ["all"]:
        values = [x for r in rows if modality in ("all", r["modality"].lower()) for x in r["ratios"]]
        deciles = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else values * 9
        summary[modality] = {
            "n": len(values),
            "mean": statistics.fmean(values),
            "min": min(values),
            "max": max(values),
            "p10": deciles[0],
            "p90": deciles[-1],
        }
    print(json.dumps(summary, indent=1))
    if args.json:
        from mtsr_monai.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"split": args.split, "summary": summary, "volumes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
