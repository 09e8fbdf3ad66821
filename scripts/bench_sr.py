#!/usr/bin/env python
"""Benchmark of the SR generator and whole-volume inference (not a test: numbers depend on the machine).

1. Speed of the 12-block (every other) vs the 23-block RRDB generator on the same input, in one run: forward
   passes interleaved, the median of ``--repeats`` timings each, and their ratio.
2. Whole-volume x4 SR with the shipped weights: a real held-out 240x240x155 BraTS volume is degraded x4
   in-plane to 60x60x155 (``--degradation second-order``, the training chain with a fixed seed, or ``area``
   block averaging) and super-resolved back to 240x240x155 by ``super_resolve_file``
   (the CLI's path: read, scale, sliding windows, write); wall time and peak RSS (``resource.getrusage``).
3. PSNR / SSIM of SR and bicubic against the original volume, inside the brain (non-zero voxels), 2D SSIM
   averaged over axial slices, for that held-out volume.

Usage: python scripts/bench_sr.py [--volume PATH] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE = "Brats18_TCIA10_639_1"  # held out from the shipped model's training
DEFAULT_VOLUME = REPO.parent / "shared" / "data" / "brats2018_tcia" / CASE / f"{CASE}_t2.nii.gz"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def generator_speed(repeats: int, size: int, batch: int) -> dict:
    import torch

    from mtsr_monai.networks.rrdb import RRDBNet

    nets = {"rrdb23": RRDBNet().eval(), "rrdb12": RRDBNet(keep_blocks="every_other").eval()}
    x = torch.rand(batch, 1, size, size)
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        for net in nets.values():  # warm-up
            net(x)
        for _ in range(repeats):
            for name, net in nets.items():  # interleaved so load changes hit both alike
                t = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "input": [batch, 1, size, size],
        "repeats": repeats,
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "speedup_12_vs_23": med["rrdb23"] / med["rrdb12"],
        "speedup_12_vs_23_min": min(times["rrdb23"]) / min(times["rrdb12"]),
        "parameters": {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()},
    }


def whole_volume(volume: Path, batch_size: int, degradation: str = "second-order", seed: int = 0) -> dict:
    import numpy as np
    import torch

    from mtsr_monai.inference.super_resolve import super_resolve_file, super_resolve_volume
    from mtsr_monai.io import load_volume, save_volume
    from mtsr_monai.metrics.image import psnr, ssim

    hr = load_volume(volume)
    hr_np = np.asarray(hr, dtype=np.float32)
    if degradation == "area":
        # x4 in-plane area downsampling (the clean LR a 4 mm in-plane acquisition would give)
        lr = torch.nn.functional.avg_pool2d(torch.from_numpy(hr_np).permute(2, 0, 1)[:, None], 4)[:, 0]
        lr_np = lr.permute(1, 2, 0).numpy()
        lr_affine = np.asarray(hr.affine, dtype=np.float64).copy()
        lr_affine[:3, :2] *= 4
        lr_affine[:3, 3] = np.asarray(hr.affine)[:3, :3] @ [1.5, 1.5, 0] + np.asarray(hr.affine)[:3, 3]
    else:  # the training degradation, one seeded draw for the volume (as `mtsr degrade`)
        from mtsr_monai.transforms.degradation import degrade_volume_second_order

        lr_np, lr_affine = degrade_volume_second_order(hr_np, np.asarray(hr.affine), scale=4, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        lr_path, sr_path = Path(tmp) / "lr.nii.gz", Path(tmp) / "sr.nii.gz"
        save_volume(lr_np, lr_path, affine=lr_affine)
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        summary = super_resolve_file(str(lr_path), str(sr_path), batch_size=batch_size, progress=False)
        wall = time.perf_counter() - t
        sr = np.asarray(load_volume(sr_path), dtype=np.float32)
    bicubic, _ = super_resolve_volume(lr_np, lr_affine, method="bicubic", progress=False)
    mask = hr_np > 0
    data_range = float(hr_np[mask].max() - hr_np[mask].min())
    return {
        "volume": str(volume),
        "degradation": degradation if degradation == "area" else f"second-order (seed {seed})",
        "lr_shape": list(lr_np.shape),
        "sr_shape": list(sr.shape),
        "seconds_total": wall,
        "seconds_network": summary["seconds"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_sr": rss_before,
        "batch_size": batch_size,
        "precision": summary["precision"],
        "sr": {"psnr": psnr(sr, hr_np, mask, data_range), "ssim": ssim(sr, hr_np, mask, data_range, axis=2)},
        "bicubic": {
            "psnr": psnr(bicubic, hr_np, mask, data_range),
            "ssim": ssim(bicubic, hr_np, mask, data_range, axis=2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME, help="a held-out 240x240x155 volume")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="LR size of the speed test (default 64)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the speed test (default 4)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch in volume SR")
    parser.add_argument("--skip-volume", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--degradation", default="second-order", choices=["second-order", "area"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the second-order degradation")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads}
    if not args.skip_speed:
        report["generator_speed"] = generator_speed(args.repeats, args.size, args.batch)
        print(json.dumps(report["generator_speed"], indent=1), flush=True)
    if not args.skip_volume:
        report["whole_volume"] = whole_volume(args.volume, args.batch_size, args.degradation, args.seed)
        print(json.dumps(report["whole_volume"], indent=1), flush=True)
    if args.json:
        from mtsr_monai.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
