"""Reconstruction objectives of the clinical SR network (the paper's L_G): SSIM, binary cross-entropy and
their sums with MAE / MSE from a short spec."""

from __future__ import annotations

import monai.losses
import torch
import torch.nn.functional as F

from mtsr_monai.losses.weighted import WeightedLoss

__all__ = ["BCELoss", "BrightTailL1Loss", "SSIMLoss", "generator_loss"]


class SSIMLoss(monai.losses.SSIMLoss):
    """MONAI's ``SSIMLoss`` of (B, C, H, W) batches (11-tap Gaussian window, sigma 1.5, data range 1),
    computed in fp32 also inside a bf16 / fp16 autocast region: there ``E[x^2] - E[x]^2`` cancels, the
    variances turn negative and the loss becomes inf (as :func:`~mtsr_monai.metrics.image.batch_ssim`)."""

    def __init__(self) -> None:
        super().__init__(spatial_dims=2, data_range=1.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return super().forward(pred.float(), target.float())


class BCELoss(torch.nn.Module):
    """Binary cross-entropy of a [0, 1] prediction against a [0, 1] target (the paper's best L_G), in fp32
    outside autocast: CUDA autocast refuses ``binary_cross_entropy`` whatever the inputs' dtype."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return F.binary_cross_entropy(pred.float().clamp(1e-6, 1 - 1e-6), target.float())


class BrightTailL1Loss(torch.nn.Module):
    """Mean absolute error over the voxels whose target is at least ``threshold`` (0 when there are none).

    A mean loss over all voxels lets the rare brightest ones (FLAIR lesion cores) regress towards their
    surroundings: the shipped 0.2.x outputs keep the median but their 99.5 % level is 3-10 % below the
    reference's. This term gives those voxels a weight of their own. The default threshold sits below the
    training scale's 99.5 % level (1 / headroom = 0.8) and above white matter."""

    def __init__(self, threshold: float = 0.6) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bright = target >= self.threshold
        if not bool(bright.any()):
            return (pred * 0).sum()  # keeps the graph, contributes nothing
        return (pred.float() - target.float()).abs()[bright].mean()


def generator_loss(spec: str = "mae") -> torch.nn.Module:
    """L_G from a spec such as ``"mae"``, ``"bce"``, ``"mae+ssim"`` or ``"mae+ssim+tail"`` (terms summed
    with weight 1; ``tail``: :class:`BrightTailL1Loss`),
    as a :class:`~mtsr_monai.losses.WeightedLoss` that reports each term."""
    table = {
        "mae": torch.nn.L1Loss,
        "mse": torch.nn.MSELoss,
        "bce": BCELoss,
        "ssim": SSIMLoss,
        "tail": BrightTailL1Loss,
    }
    names = [t.strip().lower() for t in spec.split("+") if t.strip()]
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        raise ValueError(f"unknown generator loss terms {unknown or spec!r}; choose from {sorted(table)}")
    return WeightedLoss({n: table[n]() for n in names})
