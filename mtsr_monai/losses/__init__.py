"""Losses: adversarial objectives and weighted sums of reconstruction / perceptual terms."""

from mtsr_monai.losses.foreground import ForegroundWeightedLoss
from mtsr_monai.losses.gan import GanLoss
from mtsr_monai.losses.weighted import WeightedLoss

__all__ = ["ForegroundWeightedLoss", "GanLoss", "WeightedLoss"]
