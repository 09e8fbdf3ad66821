"""Numeric precision for training and inference: ``auto`` | ``fp32`` | ``bf16`` | ``fp16``.

``auto`` is fp16 (with a GradScaler when training) on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 /
AMX: training steps about 1.9x and inference about 2x faster here than fp32), fp32 otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

__all__ = [
    "PRECISIONS", "native_cpu_bf16", "auto_precision", "resolve_precision", "autocast_dtype", "autocast",
]  # fmt: skip

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=1)
def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 / AMX), as oneDNN sees it; asked once a process,
    as the engines resolve their precision at every autocast."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def auto_precision(device: str | torch.device) -> str:
    """fp16 on CUDA; bf16 on a CPU with native bf16; fp32 otherwise."""
    if torch.device(device).type == "cuda":
        return "fp16"
    return "bf16" if native_cpu_bf16() else "fp32"


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` (one of ``PRECISIONS``) with ``auto`` replaced by :func:`auto_precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if precision == "bf16" and torch.device(device).type == "cpu" and not native_cpu_bf16():
        # emulated bf16 on an AVX2-only CPU, the SR network: inference 7x slower than fp32 (channels-last),
        # a training step about 13x, and over 400x in the default memory layout: a run would look hung
        warnings.warn(
            "bf16 was asked for, but this CPU has no native bf16 (AVX512-BF16 / AMX): it is emulated and "
            "many times slower than fp32 here; use precision 'auto' or 'fp32'",
            RuntimeWarning,
            stacklevel=2,
        )
    return auto_precision(device) if precision == "auto" else precision


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: fp32, no autocast)."""
    precision = resolve_precision(precision, device)
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device``, or a null context for fp32."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
