"""Paired image-to-image training with an optional adversarial critic (one engine, two methods).

Serves both MTSR-MRI super-resolution (RRDB + PatchGAN: L1 pre-training, then GAN + 200 VGG + 2 L1)
and the clinical paper's restoration (attention U-Net + DCGAN critic: several critic steps per
generator step, generator loss L_G + lambda_critic (1 - E[D(y_hat)])). MONAI's GanTrainer and
AdversarialTrainer do not fit these (see docs), so this subclasses ``monai.engines.Trainer`` with its
own iteration, as the model-zoo's generative bundles do.

One iteration:
1. ``pred = G(input)`` under autocast: ``precision`` (``auto``: bf16 on a CPU that has it, fp16 + GradScaler
   on CUDA; ``amp=False`` without ``precision`` means fp32).
2. Phase 1 (the first ``pretrain_epochs * epoch_length`` iterations): minimise ``pretrain_loss(pred,
   target)`` only; D is idle.
3. Phase 2: generator loss = ``generator_loss(pred, target)["total"] + adversarial_weight * GAN_G``,
   one G step; then ``critic_steps`` D steps on ``(target, pred.detach())``. With
   ``adversarial_weight == 0`` the critic still trains and its score is logged (a monitor).
The output dict holds every loss term (floats) and the tensors ``input``, ``pred``, ``target``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import default_metric_cmp_fn
from torch.optim import Optimizer

from mtsr_monai.engines.base import (  # noqa: F401 (public here too: scripts and tests import them from here)
    AdversarialTrainerBase,
    compile_for_training,
    compile_report,
    compiles_to_cuda_graphs,
    grad_scaler,
    set_requires_grad,
    training_precision,
)
from mtsr_monai.losses.gan import GanLoss

logger = logging.getLogger(__name__)


class PairedAdversarialTrainer(AdversarialTrainerBase):
    """Ignite trainer for ``G: input -> target`` with pixel/perceptual losses and an optional critic D.
    ``options``: those of :class:`~mtsr_monai.engines.base.AdversarialTrainerBase` (``epoch_length``,
    ``amp``, ``precision``, ``train_handlers``, ``non_blocking``). ``compile_mode``: a ``torch.compile`` mode
    for the generator's training forward (``compile_for_training``), None for eager."""

    relativistic_generator_step = True  # ragan: its generator step scores the targets too

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        g_optimizer: Optimizer,
        generator_loss: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
        discriminator: torch.nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        gan_loss: GanLoss | str = "lsgan",
        adversarial_weight: float = 1.0,
        critic_steps: int = 1,
        pretrain_epochs: int = 0,
        pretrain_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        input_key: str = "lr",
        target_key: str = "hr",
        grad_clip: float | None = None,
        compile_mode: str | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        **options: Any,
    ) -> None:
        if discriminator is not None and d_optimizer is None:
            raise ValueError("a discriminator needs a d_optimizer")
        if critic_steps < 1:
            raise ValueError("critic_steps must be >= 1")
        super().__init__(
            device, max_epochs, train_data_loader, input_key, target_key, gan_loss,
            key_metric=key_train_metric, additional_metrics=additional_metrics, metric_cmp_fn=metric_cmp_fn,
            **options,
        )  # fmt: skip
        self.generator, self.g_optimizer, self.generator_loss = generator, g_optimizer, generator_loss
        self.discriminator, self.d_optimizer = discriminator, d_optimizer
        self.adversarial_weight, self.critic_steps = float(adversarial_weight), int(critic_steps)
        self.pretrain_epochs = int(pretrain_epochs)
        self.pretrain_loss = pretrain_loss or torch.nn.L1Loss()
        self.grad_clip = grad_clip
        # the training forward only: validation and export use the eager generator (or its EMA copy)
        self.compile_mode = compile_mode
        self.train_generator = compile_for_training(generator, compile_mode)
        self.cuda_graph_steps = compiles_to_cuda_graphs(compile_mode)
        if compile_mode is not None:
            self.add_event_handler(Events.ITERATION_COMPLETED, self._report_compilation)

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resume checkpoint must hold besides the trainer (see ``ResumeCheckpoint``); the
        critic side only with a discriminator."""
        critic = ("discriminator", "d_optimizer", "d_scaler") if self.discriminator is not None else ()
        return self._objects("generator", "g_optimizer", "g_scaler", *critic)

    def in_pretraining(self, engine: Engine) -> bool:
        # counted in iterations, which a resume restores exactly: after epochs ended early (a validation
        # interval, a time budget) it recomputes the epoch as iteration // epoch_length, a smaller number
        return (
            self.discriminator is None
            or engine.state.iteration <= self.pretrain_epochs * engine.state.epoch_length
        )

    def _iteration(self, engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        self.generator.train()
        if self.cuda_graph_steps:
            torch.compiler.cudagraph_mark_step_begin()  # each iteration is a new CUDA-graph step
        pretraining = self.in_pretraining(engine)
        pred, logged = (self._pretrain_step if pretraining else self._generator_step)(inputs, targets)
        pred = self._kept(pred)  # detached: the critic's fake and the output
        if not pretraining:
            logged.update(self._critic_steps(pred, targets))
        return {"input": inputs, "target": targets, "pred": pred, **logged}

    def _pretrain_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The pixel-loss phase: the generator loss alone (no critic), or the configured pretrain loss."""
        with self._autocast():
            pred = self.train_generator(inputs)
            if self.discriminator is None:
                terms = self.generator_loss(pred, targets)
            else:
                terms = {"total": self.pretrain_loss(pred.float(), targets.float())}
        self._update(terms["total"], [self.g_optimizer], self.g_scaler, [self.generator], self.grad_clip)
        return pred, {"phase": "pretrain", **{f"g_{k}": v.item() for k, v in terms.items()}}

    def _generator_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The generator against the frozen critic: its loss terms plus the weighted adversarial term."""
        set_requires_grad(self.discriminator, False)
        with self._autocast():
            pred = self.train_generator(inputs)
            terms = self.generator_loss(pred, targets)
            fake_logits = self.discriminator(pred)
            real_logits = self.discriminator(targets) if self.gan_loss.needs_real_for_generator else None
            adversarial = self.gan_loss.generator(fake_logits, real_logits)
            g_total = terms["total"] + self.adversarial_weight * adversarial
        self._update(g_total, [self.g_optimizer], self.g_scaler, [self.generator], self.grad_clip)
        set_requires_grad(self.discriminator, True)
        logged = {f"g_{k}": v.item() for k, v in terms.items()}
        return pred, {
            "phase": "adversarial",
            "g_adversarial": adversarial.item(),
            "g_objective": g_total.item(),
            **logged,
        }

    def _critic_steps(self, fake: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """``critic_steps`` updates of the critic on the detached prediction; its last loss and mean score."""
        for _ in range(self.critic_steps):
            with self._autocast():
                real_logits = self.discriminator(targets)
                fake_logits = self.discriminator(fake)
                d_loss = self.gan_loss.discriminator(real_logits, fake_logits)
            self._update(d_loss, [self.d_optimizer], self.d_scaler, [self.discriminator], self.grad_clip)
        with torch.no_grad():
            last = fake_logits[-1] if isinstance(fake_logits, (list, tuple)) else fake_logits
            critic_score = torch.sigmoid(last.float()).mean().item()
        return {"d_loss": d_loss.item(), "critic_score": critic_score}

    def _report_compilation(self, engine) -> None:
        """Log once, after the first iteration, what compiling gave (a device run cannot be watched)."""
        logger.info("%s (compile_mode %s)", compile_report(), self.compile_mode)
        self.remove_event_handler(self._report_compilation, Events.ITERATION_COMPLETED)

    def _kept(self, pred: torch.Tensor) -> torch.Tensor:
        """``pred`` detached; copied out of a CUDA graph's memory, which the next replay overwrites."""
        return pred.detach().clone() if self.cuda_graph_steps else pred.detach()


def scalar_losses(output: dict[str, Any]) -> dict[str, float]:
    """The float entries of an iteration's output (for StatsHandler / TensorBoardStatsHandler)."""
    return {k: v for k, v in output.items() if isinstance(v, float)}


def sr_panels(output: dict[str, Any], scale: int) -> dict[str, torch.Tensor]:
    """The ``images_fn`` of the SR training's ``ImageGridHandler``: LR input, its bicubic upsampling (the
    baseline to beat), the SR output and the HR target, each ``(B, 1, H, W)``."""
    bicubic = torch.nn.functional.interpolate(output["input"], scale_factor=scale, mode="bicubic")
    return {"lr": output["input"], "bicubic": bicubic, "sr": output["pred"], "hr": output["target"]}
