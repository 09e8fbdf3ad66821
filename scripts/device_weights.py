#!/usr/bin/env python
"""Shipped weights made small enough to travel to the device machine, and restored there.

The device call copies the working tree with a 64 MiB limit; the seven shipped weight files alone are about
130 MiB (fp16). For the call they are hidden from the tree (``scripts/device_slim.sh on``) and the four
that the jobs start from travel in ``.device/init/`` at 8 bits (or exact, ``bits=16``, when the call has
room for them): every floating tensor of two or more dimensions as int8 with one fp32 scale per output
channel (symmetric, the largest magnitude at 127), the rest (biases, norms, scalars, metadata) as they are.
On the device, ``unpack`` writes them back as fp16 files at their own paths, in the structure the loaders
read, before any job starts. A fine-tuning run starts from them; the relative weight error is below 0.4 %
(``tests/test_device_payload.py``).

    python scripts/device_weights.py pack OUT_DIR PATH [PATH ...]   (paths relative to the repository)
    python scripts/device_weights.py unpack IN_DIR [--into DIR]     (writes DIR/<path>; DIR: the repository)

A device run returns the weights that do not fit its return limit the same way (``NAME.int8``); ``unpack
RETURNED --into FOLDER`` gives the fp16 file to evaluate here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def quantize_tree(obj: Any) -> Any:
    """``obj`` with each floating tensor of >= 2 dimensions replaced by ``{"int8", "scale", "dtype"}``."""
    if isinstance(obj, dict):
        return {k: quantize_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [quantize_tree(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.is_floating_point() and obj.ndim >= 2:
        flat = obj.detach().float().reshape(obj.shape[0], -1)
        scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(obj.shape)
        return {"__int8__": q, "scale": scale, "dtype": str(obj.dtype).removeprefix("torch.")}
    return obj


def dequantize_tree(obj: Any) -> Any:
    """The inverse of :func:`quantize_tree`, each tensor back in its own dtype."""
    if isinstance(obj, dict) and "__int8__" in obj:
        q = obj["__int8__"]
        values = q.float().reshape(q.shape[0], -1) * obj["scale"][:, None]
        return values.reshape(q.shape).to(getattr(torch, obj["dtype"]))
    if isinstance(obj, dict):
        return {k: dequantize_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [dequantize_tree(v) for v in obj]
    return obj


def pack(
    out_dir: Path, paths: list[str], repo: Path = REPO, bits: int = 8, sources: dict[str, Path] | None = None
) -> list[Path]:
    """Copies of ``paths`` (relative to ``repo``) in ``out_dir``, each named after its path: quantized
    (``bits`` 8) or exact (16: the fp16 tensors as they are; in session 36 the 8-bit copy of a returned SR
    file started 0.044 dB below where its call had ended, on the device's validation). ``sources``
    reads some paths from other files (a previous call's return) that unpack still writes at the path."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rel in paths:
        content = torch.load((sources or {}).get(rel, repo / rel), map_location="cpu", weights_only=True)
        target = out_dir / (rel.replace("/", "__"))
        torch.save({"path": rel, "content": quantize_tree(content) if bits == 8 else content}, target)
        written.append(target)
    return written


def unpack(in_dir: Path, repo: Path = REPO) -> list[Path]:
    """Every packed file of ``in_dir`` (``*.pt``, or ``*.int8`` as returned by a device run) written back
    to ``repo/<its path>``, unless a file is already there: a rehearsal in a full checkout must never
    replace the shipped fp16 weights with 8-bit ones."""
    written = []
    for packed in sorted([*in_dir.glob("*.pt"), *in_dir.glob("*.int8")]):
        record = torch.load(packed, map_location="cpu", weights_only=True)
        target = repo / record["path"]
        if target.exists():
            print(f"unpack: {target} exists, kept")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dequantize_tree(record["content"]), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("out_dir", type=Path)
    pk.add_argument("paths", nargs="*", help="default: the device jobs' start weights (device_train.py)")
    up = sub.add_parser("unpack")
    up.add_argument("in_dir", type=Path)
    up.add_argument("--into", type=Path, default=REPO, help="the folder the paths are relative to")
    args = p.parse_args(argv)
    if args.command == "pack":
        from device_train import START_WEIGHTS

        done = pack(args.out_dir, args.paths or list(dict.fromkeys(START_WEIGHTS.values())))
    else:
        done = unpack(args.in_dir, args.into)
    for path in done:
        print(f"{args.command}: {path} ({path.stat().st_size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
