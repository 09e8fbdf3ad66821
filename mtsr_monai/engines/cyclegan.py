"""CycleGAN with noise injection (MTSR-MRI Table 2 baseline), an Ignite / MONAI ``Trainer``.

Two generators ``G_AB``, ``G_BA`` (each the BicycleGAN ``LatentUNetGenerator``, fed a random code ``z`` on
every call, so several outputs can be drawn at inference as for the paper's "with noise" baselines) and two
multi-scale PatchGAN discriminators ``D_B`` (judges B images) and ``D_A``. Training is unpaired: the batch's
A and B come from different slices (see :class:`mtsr_monai.data.unpaired.UnpairedDataset`). One iteration,
in the order of the official CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix ``cycle_gan_model.py``):

1. Both cycles, a fresh ``z ~ N(0, I)`` per generator call:
   ``fake_B = G_AB(A)``, ``rec_A = G_BA(fake_B)``; ``fake_A = G_BA(B)``, ``rec_B = G_AB(fake_A)``.
2. With both discriminators frozen, one step of both generators on
   ``GAN(D_B, fake_B) + GAN(D_A, fake_A) + lambda_cycle (|rec_A - A|_1 + |rec_B - B|_1)``
   ``+ lambda_cycle * lambda_identity (|G_AB(B) - B|_1 + |G_BA(A) - A|_1)`` (identity term only when > 0).
3. ``D_B`` on (B, fake_B.detach()) and ``D_A`` on (A, fake_A.detach()), one step of both.

Least-squares GAN summed over the discriminator scales, as :mod:`mtsr_monai.engines.bicyclegan`. Unlike the
official code there is no 50-image history buffer for the discriminators (each sees the current fakes).
Images are in [-1, 1] (tanh output). The output dict holds the scalar losses and the tensors ``A``, ``B``,
``fake_B``, ``rec_A``, ``fake_A``, ``rec_B`` for logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from mtsr_monai.engines.base import AdversarialTrainerBase, broadcast_parameters, set_requires_grad

__all__ = ["CycleGANTrainer", "cycle_panels"]


class CycleGANTrainer(AdversarialTrainerBase):
    """Unpaired A <-> B translation with cycle consistency; ``generator`` is A -> B (the exported one).

    Args:
        generator, generator_ba: ``G_AB`` and ``G_BA``, called as ``G(x, z)``.
        discriminator, discriminator_a: ``D_B`` (real / fake B) and ``D_A``; each returns a list of logits.
        g_optimizer: over the parameters of both generators; d_optimizer: over both discriminators.
        lambda_cycle: weight of each L1 cycle term (10, as the paper / official code).
        lambda_identity: identity term weight relative to ``lambda_cycle`` (official 0.5; 0 here by default:
            it pulls G_AB(B) towards B, which suits colour / style transfer rather than contrast changes).
        options: those of :class:`~mtsr_monai.engines.base.AdversarialTrainerBase` (``gan_loss``,
            ``epoch_length``, ``precision``: ``auto`` (bf16 on a CPU that has it, fp16 + GradScaler on CUDA) |
            fp32 | bf16 | fp16, ``amp``, ``train_handlers``, ``non_blocking``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        generator_ba: torch.nn.Module,
        discriminator: torch.nn.Module,
        discriminator_a: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        nz: int = 8,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.0,
        input_key: str = "A",
        target_key: str = "B",
        **options: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, input_key, target_key, **options)
        self.generator, self.generator_ba = generator, generator_ba
        self.discriminator, self.discriminator_a = discriminator, discriminator_a
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.nz = int(nz)
        self.lambda_cycle, self.lambda_identity = float(lambda_cycle), float(lambda_identity)
        # multi-process training (torchrun): identical start on every rank, gradients averaged before a step
        broadcast_parameters(self.generator, self.generator_ba, self.discriminator, self.discriminator_a)

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resume checkpoint must hold besides the trainer (see ``ResumeCheckpoint``)."""
        return self._objects(
            "generator", "generator_ba", "discriminator", "discriminator_a",
            "g_optimizer", "d_optimizer", "g_scaler", "d_scaler",
        )  # fmt: skip

    def _z(self, like: torch.Tensor) -> torch.Tensor:
        # noise injection: an independent code for every generator call
        return torch.randn(like.shape[0], self.nz, device=like.device)

    @staticmethod
    def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x.float() - y.float()).abs().mean()

    def _iteration(self, engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        real_a, real_b = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        g_ab, g_ba, d_a, d_b = self.generator, self.generator_ba, self.discriminator_a, self.discriminator
        for net in (g_ab, g_ba, d_a, d_b):
            net.train()

        # (1)-(2) both cycles, then one step of both generators with both discriminators frozen
        set_requires_grad(d_a, False)
        set_requires_grad(d_b, False)
        with self._autocast():
            fake_b = g_ab(real_a, self._z(real_a))
            rec_a = g_ba(fake_b, self._z(real_a))
            fake_a = g_ba(real_b, self._z(real_b))
            rec_b = g_ab(fake_a, self._z(real_b))
            gan_ab, gan_ba = self._g_gan(d_b, fake_b), self._g_gan(d_a, fake_a)
            cycle_a, cycle_b = self._l1(rec_a, real_a), self._l1(rec_b, real_b)
            loss_g = gan_ab + gan_ba + self.lambda_cycle * (cycle_a + cycle_b)
            if self.lambda_identity > 0:
                idt = self._l1(g_ab(real_b, self._z(real_b)), real_b) + self._l1(
                    g_ba(real_a, self._z(real_a)), real_a
                )
                loss_g = loss_g + self.lambda_cycle * self.lambda_identity * idt
        self._update(loss_g, [self.g_optimizer], self.g_scaler, [g_ab, g_ba])
        set_requires_grad(d_a, True)
        set_requires_grad(d_b, True)

        # (3) both discriminators on detached fakes
        with self._autocast():
            loss_d_b = self._d_gan(d_b, real_b, fake_b.detach())
            loss_d_a = self._d_gan(d_a, real_a, fake_a.detach())
        self._update(loss_d_a + loss_d_b, [self.d_optimizer], self.d_scaler, [d_a, d_b])

        images = {
            "A": real_a,
            "B": real_b,
            "fake_B": fake_b,
            "rec_A": rec_a,
            "fake_A": fake_a,
            "rec_B": rec_b,
        }
        losses = {"loss_g": loss_g, "loss_gan_ab": gan_ab, "loss_gan_ba": gan_ba, "loss_cycle_a": cycle_a,
                  "loss_cycle_b": cycle_b, "loss_d_a": loss_d_a, "loss_d_b": loss_d_b}  # fmt: skip
        out: dict[str, Any] = {k: v.detach() for k, v in images.items()}
        out.update({k: v.item() for k, v in losses.items()})
        if self.lambda_identity > 0:
            out["loss_identity"] = idt.item()
        return out


def cycle_panels(output: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TensorBoard grid panels (A, fake_B, rec_A, B, fake_A, rec_B) mapped from [-1, 1] to [0, 1]."""
    names = ("A", "fake_B", "rec_A", "B", "fake_A", "rec_B")
    return {k: (output[k].float() + 1) / 2 for k in names if k in output}
