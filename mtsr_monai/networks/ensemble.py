"""Geometric self-ensemble of a 2D image-to-image network (EDSR's "+" models): the network is run on the input
turned and flipped by the symmetries of the square, each output turned back, and the outputs averaged.

A convolutional network is not exactly equivariant to these symmetries, so its errors differ between them and
partly cancel in the mean; the function is the same network's, at ``len(symmetries)`` times the cost.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the 8 symmetries of the square as (quarter turns, flip of the last axis first)
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))
#: how many symmetries a self-ensemble may use: the identity, plus a flip, plus the quarter turns
ENSEMBLE_SIZES = (1, 2, 4, 8)


def check_self_ensemble(size: Any) -> int:
    """``size`` as an int of :data:`ENSEMBLE_SIZES`; ValueError otherwise (a bundle config's typo too)."""
    if (
        isinstance(size, bool)
        or not isinstance(size, int | str)
        or str(size).strip() not in map(str, ENSEMBLE_SIZES)
    ):
        raise ValueError(f"self-ensemble size must be one of {ENSEMBLE_SIZES}, got {size!r}")
    return int(size)


def symmetries(size: int) -> tuple[tuple[int, bool], ...]:
    """The symmetries a self-ensemble of ``size`` uses: 1 the identity, 2 and a flip, 4 the quarter turns,
    8 all of them."""
    size = check_self_ensemble(size)
    return {1: ((0, False),), 2: ((0, False), (0, True)), 4: DIHEDRAL[:4], 8: DIHEDRAL}[size]


def transform(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """``x`` (``(..., H, W)``) flipped along W when ``flip``, then turned ``turns`` quarter turns."""
    x = torch.flip(x, (-1,)) if flip else x
    return torch.rot90(x, turns, (-2, -1)) if turns else x


def untransform(y: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`transform`."""
    y = torch.rot90(y, -turns, (-2, -1)) if turns else y
    return torch.flip(y, (-1,)) if flip else y


class SelfEnsemble(nn.Module):
    """``network`` averaged over ``size`` symmetries of the square (see :func:`symmetries`); ``size=1`` is the
    network itself. The input's memory format (channels-last) is kept for every call."""

    def __init__(self, network: nn.Module, size: int = 8) -> None:
        super().__init__()
        self.network, self.ops = network, symmetries(size)
        if hasattr(network, "scale"):  # the SR networks' upsampling factor, checked by their callers
            self.scale = network.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        total = None
        for turns, flip in self.ops:
            y = self.network(transform(x, turns, flip).contiguous(memory_format=layout))
            y = untransform(y.float(), turns, flip)
            total = y if total is None else total + y
        return total / len(self.ops)
