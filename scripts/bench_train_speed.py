#!/usr/bin/env python
"""Training speed of the SR generator on this machine, fp32 vs the ``auto`` precision, in one run.

1. Where an iteration's time goes: the data part (cached slice -> random HR patches -> flips, gain jitter and
   the second-order degradation, exactly the bundle's ``train.yaml`` pipeline) timed apart from the step
   (forward, loss, backward, Adam) of the 12-block RRDB from the pretrained Real-ESRGAN start.
2. Steps per second in fp32 and in ``--precision`` (default ``auto``: bf16 on a CPU with AMX / AVX512-BF16),
   alternated in blocks so both see the same machine load, and the ratio; also channels-last, and with
   ``--compile`` channels-last under ``torch.compile`` (its one-off compile time reported apart).
3. Loss curves: the same start, the same batches (precomputed once), ``--iterations`` L1 steps in each
   precision; prints the mean L1 over windows and the largest relative gap between the two curves.

Usage: python scripts/bench_train_speed.py [--iterations 200] [--batch 4] [--threads 2] [--compile]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def make_batches(n: int, batch: int, hr_patch: int = 128, seed: int = 0) -> tuple[list, float]:
    """``n`` (lr, hr) batches from the bundle's training pipeline on training volumes; seconds per batch."""
    import torch
    from monai.transforms import Compose
    from monai.utils import set_determinism
    from shared_splits import volume_datalist

    from mtsr_monai.data.slices import SliceDataset
    from mtsr_monai.inference.bundle import bundle_parser

    set_determinism(seed)
    volumes = volume_datalist("hr")["training"][:4]
    # the bundle's own on-the-fly transforms (flips, gain jitter, second-order degradation), as configured
    config = bundle_parser(REPO / "bundles" / "mtsr_sr", config="configs/train.yaml")
    rand = Compose(config.get_parsed_content("train#random_transforms", instantiate=True))
    ds = SliceDataset(
        volumes, keys=["hr"], mode="patch", patch_size=(hr_patch, hr_patch), patches_per_slice=batch,
        min_brain_fraction=0.1, random_transform=rand, progress=False,
    )  # fmt: skip
    batches, t0 = [], time.perf_counter()
    for i in range(n):
        items = ds[(i * 7919) % len(ds)]
        batches.append(
            (torch.stack([d["lr"] for d in items]).float(), torch.stack([d["hr"] for d in items]).float())
        )
    return batches, (time.perf_counter() - t0) / n


def make_net(channels_last: bool = False):
    import torch

    from mtsr_monai.networks.esrgan_ncnn import realesrgan_state_dict
    from mtsr_monai.networks.rrdb import RRDBNet, load_pruned_state_dict

    net = RRDBNet(keep_blocks="every_other")
    load_pruned_state_dict(net, realesrgan_state_dict())
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def train_steps(net, batches, precision: str, channels_last: bool = False) -> tuple[list[float], float]:
    """L1 steps over ``batches``; returns the losses and the median seconds per step."""
    import torch

    from mtsr_monai.precision import autocast

    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99))
    losses, times = [], []
    for lr, hr in batches:
        if channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with autocast("cpu", precision):
            pred = net(lr)
        loss = torch.nn.functional.l1_loss(pred.float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return losses, statistics.median(times)


def compiled_net(batches, precision: str) -> tuple[object, float]:
    """The channels-last net under ``torch.compile``, warmed up on two steps; the seconds that took (the
    compile cost a training run pays once)."""
    import torch

    net = torch.compile(make_net(channels_last=True))
    t0 = time.perf_counter()
    train_steps(net, batches[:2], precision, channels_last=True)
    return net, time.perf_counter() - t0


def speed(batches, precision: str, blocks: int = 3, per_block: int = 5, compiled=None) -> dict:
    """Alternate fp32 / ``precision`` (and channels-last, and ``compiled``) blocks of steps; median s/step."""
    variants = {"fp32": ("fp32", False), precision: (precision, False), f"{precision}+cl": (precision, True)}
    nets = {name: make_net(cl) for name, (_, cl) in variants.items()}
    if compiled is not None:
        variants[f"{precision}+cl+compile"] = (precision, True)
        nets[f"{precision}+cl+compile"] = compiled
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for b in range(blocks):
        chunk = batches[b * per_block : (b + 1) * per_block]
        for name, (prec, cl) in variants.items():
            seconds[name].append(train_steps(nets[name], chunk, prec, cl)[1])
    return {name: statistics.median(v) for name, v in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    import torch

    from mtsr_monai.precision import resolve_precision

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200, help="steps of each loss curve")
    p.add_argument("--batch", type=int, default=4, help="HR patches (128x128; LR 32x32) per step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true", help="also time channels-last under torch.compile")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, "cpu")
    batches, data_s = make_batches(max(args.iterations, 15), args.batch)
    result: dict = {"precision": precision, "batch": args.batch, "threads": args.threads}
    result["data_s_per_batch"] = data_s
    compiled = None
    if args.compile:
        compiled, result["compile_s"] = compiled_net(batches, precision)
    result["step_s"] = speed(batches, precision, compiled=compiled)
    result["steps_per_s"] = {k: 1.0 / v for k, v in result["step_s"].items()}
    result["speedup_vs_fp32"] = {k: result["step_s"]["fp32"] / v for k, v in result["step_s"].items()}
    start = make_net()
    curves = {}
    for prec in ("fp32", precision):
        curves[prec], _ = train_steps(copy.deepcopy(start), batches[: args.iterations], prec)
    window = max(1, args.iterations // 10)
    result["loss_windows"] = {
        prec: [statistics.fmean(c[i : i + window]) for i in range(0, len(c), window)]
        for prec, c in curves.items()
    }
    pairs = zip(result["loss_windows"]["fp32"], result["loss_windows"][precision], strict=True)
    result["max_relative_gap"] = max(abs(a - b) / a for a, b in pairs)
    result["data_fraction_of_iteration"] = data_s / (data_s + result["step_s"][precision])
    print(json.dumps(result, indent=2))
    if args.json:
        from mtsr_monai.io import atomic_write_text  # creates the folder; no partial file

        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
