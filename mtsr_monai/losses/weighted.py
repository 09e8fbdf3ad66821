"""A weighted sum of named loss terms that reports every term, for logging and for configs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch

logger = logging.getLogger(__name__)


class WeightedLoss(torch.nn.Module):
    """``total = sum(weight[name] * loss[name](pred, target))``; terms of weight 0 are not computed.

    Calling it returns a dict with each weighted term under its name and their sum under ``"total"``,
    so an engine can log the parts. A term whose weight is 0 is skipped (and said so once in the log),
    which is how a run without VGG weights disables the perceptual term explicitly.
    """

    def __init__(self, losses: Mapping[str, Callable], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = set(weights) - set(losses)
        if unknown:
            raise ValueError(f"weights given for unknown loss terms {sorted(unknown)}")
        self.weights = {name: float(weights.get(name, 1.0)) for name in losses}
        modules = {k: v for k, v in losses.items() if isinstance(v, torch.nn.Module)}
        self.modules_by_name = torch.nn.ModuleDict(modules)  # moves with .to(device)
        self.losses = dict(losses)
        for name, weight in self.weights.items():
            if weight == 0:
                logger.info("loss term %r has weight 0: disabled", name)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for name, fn in self.losses.items():
            if self.weights[name] != 0:
                terms[name] = self.weights[name] * fn(pred, target)
        if not terms:
            raise ValueError("every loss term has weight 0")
        terms["total"] = torch.stack([t.float() for t in terms.values()]).sum()
        return terms
