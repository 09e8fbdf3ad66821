"""BicycleGAN training engine (Ignite / MONAI ``Trainer``), with the pix2pix-noise baseline as a flag.

One iteration, in the official order (junyanz/BicycleGAN ``bicycle_gan_model.py``); with batch size 1
(as MTSR-MRI trains) the same (A, B) pair feeds both cycles, and so does any larger batch here:

1. cVAE-GAN: ``mu, logvar = E(B)``, ``z = mu + eps * sigma``, ``fake_enc = G(A, z)``.
   cLR-GAN: ``z_random ~ N(0, I)``, ``fake_rand = G(A, z_random)``.
2. With D and D2 frozen: ``L_EG = GAN(D, fake_enc) + GAN(D2, fake_rand) + lambda_l1 |fake_enc - B|_1 + KL``,
   ``KL = -0.5 * lambda_kl * sum(1 + logvar - mu^2 - exp(logvar))`` (a sum over the code, mean over batch).
3. With E frozen: ``mu2 = E(fake_rand)``, ``L_z = lambda_latent |mu2 - z_random|_1`` (reaches G only).
4. One step of E and G on ``L_EG + L_z``.
5. D on (B, fake_enc.detach()), D2 on (B, fake_rand.detach()); least-squares GAN summed over scales.

``use_encoder=False`` is pix2pix with noise injection: no encoder, no D2, no KL or latent term:
``fake = G(A, z_random)`` trained with ``GAN(D, fake) + lambda_l1 |fake - B|_1``.

Images are in [-1, 1] (tanh output). The output dict holds the scalar losses and the image tensors
``A``, ``B``, ``fake_enc``, ``fake_rand`` for logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from torch.optim import Optimizer

from mtsr_monai.engines.handlers import PrepareBatchPair
from mtsr_monai.engines.paired import grad_scaler, set_requires_grad, training_precision
from mtsr_monai.losses.gan import GanLoss
from mtsr_monai.networks.bicyclegan import reparameterize
from mtsr_monai.precision import autocast


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def sync_gradients(*modules: torch.nn.Module | None) -> None:
    """Average gradients across ranks (no-op when not distributed).

    Used instead of DistributedDataParallel: BicycleGAN runs G twice and E twice (once frozen) per backward,
    which DDP's reducer cannot follow. Missing gradients count as zero so every rank reduces the same tensors.
    """
    if not _distributed():
        return
    world = torch.distributed.get_world_size()
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


def broadcast_parameters(*modules: torch.nn.Module | None) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op when not distributed)."""
    if not _distributed():
        return
    for module in modules:
        if module is not None:
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, src=0)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, I)) summed over the code, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class BicycleGANTrainer(Trainer):
    """BicycleGAN (cVAE-GAN + cLR-GAN) for A -> B translation; ``use_encoder=False`` gives pix2pix + noise."""

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        encoder: torch.nn.Module | None = None,
        discriminator2: torch.nn.Module | None = None,
        e_optimizer: Optimizer | None = None,
        d2_optimizer: Optimizer | None = None,
        use_encoder: bool = True,
        nz: int = 8,
        lambda_l1: float = 10.0,
        lambda_gan: float = 1.0,
        lambda_gan2: float = 1.0,
        lambda_kl: float = 0.01,
        lambda_latent: float = 0.5,
        gan_loss: GanLoss | str = "lsgan",
        input_key: str = "A",
        target_key: str = "B",
        epoch_length: int | None = None,
        amp: bool = False,
        precision: str | None = None,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        if use_encoder and (
            encoder is None or discriminator2 is None or e_optimizer is None or d2_optimizer is None
        ):
            raise ValueError("BicycleGAN needs encoder, discriminator2, e_optimizer and d2_optimizer")
        super().__init__(
            device=torch.device(device),
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=PrepareBatchPair(input_key, target_key),
            handlers=train_handlers,
            # precision and GradScalers are the trainer's own (below): MONAI's amp would only build an
            # unused torch.cuda.amp.GradScaler in run() and print its deprecation warning
            amp=False,
            decollate=False,
        )
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.use_encoder = bool(use_encoder)
        self.encoder = encoder if self.use_encoder else None
        self.discriminator2 = discriminator2 if self.use_encoder else None
        self.e_optimizer = e_optimizer if self.use_encoder else None
        self.d2_optimizer = d2_optimizer if self.use_encoder else None
        self.nz = int(nz)
        self.lambda_l1, self.lambda_gan, self.lambda_gan2 = (
            float(lambda_l1),
            float(lambda_gan),
            float(lambda_gan2),
        )
        self.lambda_kl, self.lambda_latent = float(lambda_kl), float(lambda_latent)
        self.gan_loss = GanLoss(gan_loss) if isinstance(gan_loss, str) else gan_loss
        self.precision = training_precision(amp, precision, device)
        self.g_scaler, self.d_scaler = (
            grad_scaler(self.precision, device),
            grad_scaler(self.precision, device),
        )
        # multi-process training: identical start on every rank, gradients averaged in _iteration
        broadcast_parameters(self.generator, self.encoder, self.discriminator, self.discriminator2)

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resume checkpoint must hold besides the trainer (see ``ResumeCheckpoint``)."""
        objects: dict[str, Any] = {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "g_scaler": self.g_scaler,
            "d_scaler": self.d_scaler,
        }
        if self.use_encoder:
            objects.update(
                encoder=self.encoder,
                discriminator2=self.discriminator2,
                e_optimizer=self.e_optimizer,
                d2_optimizer=self.d2_optimizer,
            )
        return objects

    # GAN losses summed over the discriminator's scales, as the official multi-scale GANLoss
    def _g_gan(self, disc: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
        return sum(self.gan_loss.generator(logits) for logits in disc(fake))

    def _d_gan(self, disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return sum(self.gan_loss.discriminator(r, f) for r, f in zip(disc(real), disc(fake), strict=True))

    def _iteration(self, engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        real_a, real_b = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        device = torch.device(engine.state.device)
        nets = [self.generator, self.discriminator, self.encoder, self.discriminator2]
        for net in nets:
            if net is not None:
                net.train()
        batch = real_a.shape[0]
        z_random = torch.randn(batch, self.nz, device=device)
        out: dict[str, Any] = {"A": real_a, "B": real_b}

        # (1)-(2) E and G objective with both discriminators frozen
        set_requires_grad(self.discriminator, False)
        set_requires_grad(self.discriminator2, False)
        with autocast(device, self.precision):
            fake_rand = self.generator(real_a, z_random)
            if self.use_encoder:
                mu, logvar = self.encoder(real_b)
                mu, logvar = mu.float(), logvar.float()
                z_enc = reparameterize(mu, logvar)
                fake_enc = self.generator(real_a, z_enc)
                gan = self._g_gan(self.discriminator, fake_enc)
                gan2 = self._g_gan(self.discriminator2, fake_rand)
                l1 = (fake_enc.float() - real_b.float()).abs().mean()
                kl = kl_divergence(mu, logvar)
                loss_eg = (
                    self.lambda_gan * gan
                    + self.lambda_gan2 * gan2
                    + self.lambda_l1 * l1
                    + self.lambda_kl * kl
                )
            else:
                fake_enc = fake_rand  # pix2pix + noise: the only output is the random-code one
                gan = self._g_gan(self.discriminator, fake_rand)
                l1 = (fake_rand.float() - real_b.float()).abs().mean()
                loss_eg = self.lambda_gan * gan + self.lambda_l1 * l1

        self.g_optimizer.zero_grad(set_to_none=True)
        if self.use_encoder:
            self.e_optimizer.zero_grad(set_to_none=True)
        has_latent = self.use_encoder and self.lambda_latent > 0
        self.g_scaler.scale(loss_eg).backward(retain_graph=has_latent)

        # (3) latent regression with E frozen: its gradient reaches G only
        if has_latent:
            set_requires_grad(self.encoder, False)
            with autocast(device, self.precision):
                mu2, _ = self.encoder(fake_rand)
                loss_z = self.lambda_latent * (mu2.float() - z_random).abs().mean()
            self.g_scaler.scale(loss_z).backward()
            set_requires_grad(self.encoder, True)
            out["loss_latent"] = loss_z.item()

        # (4) step E and G together
        sync_gradients(self.generator, self.encoder)
        if self.use_encoder:
            self.g_scaler.step(self.e_optimizer)
        self.g_scaler.step(self.g_optimizer)
        self.g_scaler.update()
        set_requires_grad(self.discriminator, True)
        set_requires_grad(self.discriminator2, True)

        # (5) discriminators on detached fakes
        self.d_optimizer.zero_grad(set_to_none=True)
        if self.use_encoder:
            self.d2_optimizer.zero_grad(set_to_none=True)
        with autocast(device, self.precision):
            loss_d = self._d_gan(self.discriminator, real_b, fake_enc.detach())
            loss_d2 = (
                self._d_gan(self.discriminator2, real_b, fake_rand.detach()) if self.use_encoder else None
            )
        self.d_scaler.scale(loss_d if loss_d2 is None else loss_d + loss_d2).backward()
        sync_gradients(self.discriminator, self.discriminator2)
        self.d_scaler.step(self.d_optimizer)
        if loss_d2 is not None:
            self.d_scaler.step(self.d2_optimizer)
        self.d_scaler.update()

        out.update(
            fake_enc=fake_enc.detach(),
            fake_rand=fake_rand.detach(),
            loss_eg=loss_eg.item(),
            loss_gan=gan.item(),
            loss_l1=l1.item(),
            loss_d=loss_d.item(),
        )
        if self.use_encoder:
            out.update(loss_gan2=gan2.item(), loss_kl=kl.item(), loss_d2=loss_d2.item())
        return out


def sample_panels(output: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TensorBoard grid panels (A, B, encoded and random samples) mapped from [-1, 1] to [0, 1]."""
    return {k: (output[k].float() + 1) / 2 for k in ("A", "B", "fake_enc", "fake_rand") if k in output}


@torch.no_grad()
def validate_translation(
    generator: torch.nn.Module,
    loader: Iterable,
    input_key: str,
    target_key: str,
    nz: int,
    device: str | torch.device,
    n_samples: int = 2,
    max_batches: int = 8,
) -> dict[str, float]:
    """PSNR / SSIM in [0, 1] of ``G(A, z=0)`` (the code's mean) against B, and the mean L1 between two
    random-code samples (a weight-free diversity monitor), over up to ``max_batches`` batches."""
    from mtsr_monai.metrics.image import batch_psnr, batch_ssim

    was_training = generator.training
    generator.eval()
    psnrs, ssims, diffs = [], [], []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        a = batch[input_key].to(device)
        b = ((batch[target_key].to(device) + 1) / 2).clamp(0, 1)
        pred = ((generator(a, torch.zeros(a.shape[0], nz, device=device)) + 1) / 2).clamp(0, 1)
        psnrs.append(batch_psnr(pred.float(), b.float()))
        ssims.append(batch_ssim(pred.float(), b.float()))
        samples = [generator(a, torch.randn(a.shape[0], nz, device=device)) for _ in range(n_samples)]
        diffs.append(((samples[0] - samples[1]).abs().mean(dim=(1, 2, 3)) / 2).float())
    generator.train(was_training)
    if not psnrs:
        return {"psnr": float("nan"), "ssim": float("nan"), "sample_l1": float("nan")}
    return {
        "psnr": torch.cat(psnrs).mean().item(),
        "ssim": torch.cat(ssims).mean().item(),
        "sample_l1": torch.cat(diffs).mean().item(),
    }


class TranslationValidationHandler:
    """Every ``interval`` epochs: :func:`validate_translation` on ``loader``; logs to TensorBoard and keeps
    ``history``; with ``export_path`` also writes the generator (fp16) when the validation PSNR improves."""

    def __init__(
        self,
        loader: Iterable,
        input_key: str,
        target_key: str,
        nz: int,
        log_dir: str | None = None,
        interval: int = 1,
        export_path: str | None = None,
        export_meta: dict | None = None,
    ) -> None:
        self.loader, self.input_key, self.target_key, self.nz = loader, input_key, target_key, int(nz)
        self.log_dir, self.interval = log_dir, int(interval)
        self.export_path, self.export_meta = export_path, dict(export_meta or {})
        self.history: list[dict[str, float]] = []
        self.best = -float("inf")

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        generator = engine.generator
        metrics = validate_translation(
            generator, self.loader, self.input_key, self.target_key, self.nz, engine.state.device
        )
        self.history.append({**metrics, "iteration": engine.state.iteration})
        engine.logger.info("validation %s", metrics)
        if self.log_dir:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(self.log_dir) as writer:
                for key, value in metrics.items():
                    writer.add_scalar(f"val/{key}", value, engine.state.iteration)
        if self.export_path and metrics["psnr"] > self.best:
            from mtsr_monai.inference.translate import export_generator

            self.best = metrics["psnr"]
            meta = {**self.export_meta, "iterations": int(engine.state.iteration), "validation": metrics}
            export_generator(generator, self.export_path, meta)
