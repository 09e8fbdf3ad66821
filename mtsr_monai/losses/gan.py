"""Adversarial objectives on discriminator logits.

Modes:
- ``lsgan``: least squares (Mao et al. 2017): D minimises ((D(real)-1)^2 + D(fake)^2) / 2, G (D(fake)-1)^2.
- ``vanilla``: binary cross-entropy with logits (Goodfellow et al. 2014), non-saturating for G.
- ``ragan``: relativistic average GAN as in ESRGAN: each side judges real against the mean fake and back.
- ``critic``: the clinical paper's critic guidance: D trained with BCE; G minimises 1 - E[sigmoid(D(fake))].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MODES = ("lsgan", "vanilla", "ragan", "critic")
#: a logit map, MONAI PatchDiscriminator's ``[features..., logits]`` or a multi-scale list of logit maps
Logits = torch.Tensor | Sequence[torch.Tensor]


def _last(logits):
    # MONAI's PatchDiscriminator returns [features..., logits]
    return logits[-1] if isinstance(logits, (list, tuple)) else logits


def _per_scale(logits) -> bool:
    """A multi-scale discriminator's list of one-channel logit maps (``PooledMultiScaleDiscriminator``), not
    MONAI's ``[features..., logits]``, whose features have many channels."""
    return isinstance(logits, (list, tuple)) and len(logits) > 1 and all(t.shape[1] == 1 for t in logits)


class GanLoss:
    """Discriminator and generator losses for one adversarial ``mode`` (see module docstring)."""

    def __init__(self, mode: str = "lsgan") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown GAN loss {mode!r}; choose from {MODES}")
        self.mode = mode

    @property
    def needs_real_for_generator(self) -> bool:
        return self.mode == "ragan"

    def discriminator(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """D's loss; a multi-scale discriminator's per-scale lists give the sum over scales."""
        if _per_scale(real_logits):
            return sum(self.discriminator(r, f) for r, f in zip(real_logits, fake_logits, strict=True))
        real, fake = _last(real_logits).float(), _last(fake_logits).float()
        if self.mode == "lsgan":
            return 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
        if self.mode in ("vanilla", "critic"):
            return 0.5 * (
                F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
            )
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
        )

    def generator(self, fake_logits: Logits, real_logits: Logits | None = None) -> torch.Tensor:
        """G's loss; a multi-scale discriminator's per-scale lists give the sum over scales."""
        if _per_scale(fake_logits):
            reals = real_logits if real_logits is not None else [None] * len(fake_logits)
            return sum(self.generator(f, r) for f, r in zip(fake_logits, reals, strict=True))
        fake = _last(fake_logits).float()
        if self.mode == "lsgan":
            return ((fake - 1) ** 2).mean()
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        if self.mode == "critic":
            return 1.0 - torch.sigmoid(fake).mean()
        if real_logits is None:
            raise ValueError("the relativistic GAN loss needs the discriminator's logits on real images")
        real = _last(real_logits).float().detach()
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
        )
