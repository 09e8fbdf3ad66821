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

The bundle's validation (``LatentCodeInferer``, ``code_sample_outputs``) lives here too;
``bundles/mtsr_mt/configs/train.yaml`` assembles it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch.optim import Optimizer

from mtsr_monai.engines.base import (  # noqa: F401 (sync_gradients: public here, as the bundle configs name it)
    AdversarialTrainerBase,
    broadcast_parameters,
    set_requires_grad,
    sync_gradients,
)
from mtsr_monai.io import atomic_output
from mtsr_monai.networks.bicyclegan import reparameterize


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, I)) summed over the code, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class BicycleGANTrainer(AdversarialTrainerBase):
    """BicycleGAN (cVAE-GAN + cLR-GAN) for A -> B translation; ``use_encoder=False`` gives pix2pix + noise.
    ``options``: those of :class:`~mtsr_monai.engines.base.AdversarialTrainerBase` (``gan_loss``,
    ``epoch_length``, ``amp``, ``precision``, ``train_handlers``, ``non_blocking``)."""

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
        pretrain_iterations: int = 0,
        pretrain_loss: str = "l1",
        input_key: str = "A",
        target_key: str = "B",
        **options: Any,
    ) -> None:
        if use_encoder and None in (encoder, discriminator2, e_optimizer, d2_optimizer):
            raise ValueError("BicycleGAN needs encoder, discriminator2, e_optimizer and d2_optimizer")
        super().__init__(device, max_epochs, train_data_loader, input_key, target_key, **options)
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
        # both GAN weights 0: the cVAE + latent regression alone; D and D2 are then neither run nor trained
        self.adversarial = self.lambda_gan > 0 or (self.use_encoder and self.lambda_gan2 > 0)
        self.pretrain_iterations = int(pretrain_iterations)
        if pretrain_loss not in ("l1", "mse"):
            raise ValueError(f"pretrain_loss must be 'l1' or 'mse', not {pretrain_loss!r}")
        # mse: the conditional mean itself, what brain PSNR scores; l1: the conditional median (official)
        self.pretrain_loss = pretrain_loss
        # multi-process training: identical start on every rank, gradients averaged before each step
        broadcast_parameters(self.generator, self.encoder, self.discriminator, self.discriminator2)

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resume checkpoint must hold besides the trainer (see ``ResumeCheckpoint``); the
        encoder side only with ``use_encoder``."""
        return self._objects(
            "generator", "discriminator", "g_optimizer", "d_optimizer", "g_scaler", "d_scaler",
            "encoder", "discriminator2", "e_optimizer", "d2_optimizer",
        )  # fmt: skip

    def _iteration(self, engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        """One step in the official order (``optimize_parameters``): forward, E and G, then D and D2."""
        real_a, real_b = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        for net in (self.generator, self.discriminator, self.encoder, self.discriminator2):
            if net is not None:
                net.train()
        z_random = torch.randn(real_a.shape[0], self.nz, device=torch.device(engine.state.device))
        if engine.state.iteration <= self.pretrain_iterations:
            return self._pretrain_step(real_a, real_b, z_random)
        fakes = self._forward(real_a, real_b, z_random)
        out: dict[str, Any] = {"A": real_a, "B": real_b}
        out.update(self._update_encoder_and_generator(real_b, z_random, fakes))
        if self.adversarial:
            out.update(self._update_discriminators(real_b, fakes))
        out.update(fake_enc=fakes["fake_enc"].detach(), fake_rand=fakes["fake_rand"].detach())
        return out

    def _pretrain_step(self, real_a: torch.Tensor, real_b: torch.Tensor, z_random: torch.Tensor) -> dict:
        """Warm start of G alone: ``L1(G(A, z_random), B)`` (or the squared error, ``pretrain_loss``), as
        ESRGAN's PSNR phase before its GAN phase; E, D and D2 wait for the BicycleGAN phase."""
        with self._autocast():
            fake = self.generator(real_a, z_random)
            error = fake.float() - real_b.float()
            l1, mse = error.abs().mean(), error.square().mean()
        loss = l1 if self.pretrain_loss == "l1" else mse
        self._update(self.lambda_l1 * loss, [self.g_optimizer], self.g_scaler, [self.generator])
        return {
            "A": real_a,
            "B": real_b,
            "fake_rand": fake.detach(),
            "loss_l1": l1.item(),
            "loss_mse": mse.item(),
        }

    def _forward(self, real_a: torch.Tensor, real_b: torch.Tensor, z_random: torch.Tensor) -> dict:
        """(1) ``fake_rand = G(A, z_random)``; with the encoder also ``mu, logvar = E(B)`` and
        ``fake_enc = G(A, z_enc)`` (pix2pix + noise: ``fake_enc`` is ``fake_rand``)."""
        with self._autocast():
            fake_rand = self.generator(real_a, z_random)
            if not self.use_encoder:
                return {"fake_rand": fake_rand, "fake_enc": fake_rand}
            mu, logvar = self.encoder(real_b)
            mu, logvar = mu.float(), logvar.float()
            fake_enc = self.generator(real_a, reparameterize(mu, logvar))
        return {"fake_rand": fake_rand, "fake_enc": fake_enc, "mu": mu, "logvar": logvar}

    def _update_encoder_and_generator(
        self, real_b: torch.Tensor, z_random: torch.Tensor, fakes: dict
    ) -> dict[str, float]:
        """(2)-(4) with D and D2 frozen: the E+G objective, the latent regression with E frozen (its gradient
        reaches G only), then one step of E and G together."""
        set_requires_grad(self.discriminator, False)
        set_requires_grad(self.discriminator2, False)
        with self._autocast():
            terms = self._eg_terms(real_b, fakes)
        self.g_optimizer.zero_grad(set_to_none=True)
        if self.use_encoder:
            self.e_optimizer.zero_grad(set_to_none=True)
        has_latent = self.use_encoder and self.lambda_latent > 0
        self.g_scaler.scale(terms["loss_eg"]).backward(retain_graph=has_latent)
        if has_latent:
            set_requires_grad(self.encoder, False)
            with self._autocast():
                mu2, _ = self.encoder(fakes["fake_rand"])
                terms["loss_latent"] = self.lambda_latent * (mu2.float() - z_random).abs().mean()
            self.g_scaler.scale(terms["loss_latent"]).backward()
            set_requires_grad(self.encoder, True)
        sync_gradients(self.generator, self.encoder)
        if self.use_encoder:
            self.g_scaler.step(self.e_optimizer)
        self.g_scaler.step(self.g_optimizer)
        self.g_scaler.update()
        set_requires_grad(self.discriminator, True)
        set_requires_grad(self.discriminator2, True)
        return {k: v.item() for k, v in terms.items()}

    def _eg_terms(self, real_b: torch.Tensor, fakes: dict) -> dict[str, torch.Tensor]:
        """``loss_eg`` = GAN(D, fake_enc) + GAN(D2, fake_rand) + L1(fake_enc, B) + KL, weighted, and its
        terms (pix2pix + noise: GAN(D, fake_rand) + L1(fake_rand, B))."""
        fake_enc = fakes["fake_enc"]
        gan = self._weighted_gan(self.discriminator, fake_enc, self.lambda_gan)
        l1 = (fake_enc.float() - real_b.float()).abs().mean()
        if not self.use_encoder:
            return {"loss_eg": self.lambda_gan * gan + self.lambda_l1 * l1, "loss_gan": gan, "loss_l1": l1}
        gan2 = self._weighted_gan(self.discriminator2, fakes["fake_rand"], self.lambda_gan2)
        kl = kl_divergence(fakes["mu"], fakes["logvar"])
        loss_eg = self.lambda_gan * gan + self.lambda_gan2 * gan2 + self.lambda_l1 * l1 + self.lambda_kl * kl
        return {"loss_eg": loss_eg, "loss_gan": gan, "loss_l1": l1, "loss_gan2": gan2, "loss_kl": kl}

    def _weighted_gan(self, disc: torch.nn.Module, fake: torch.Tensor, weight: float) -> torch.Tensor:
        """The generator's GAN term against ``disc``; a zero weight skips the discriminator's forward."""
        return self._g_gan(disc, fake) if weight > 0 else fake.new_zeros(())

    def _update_discriminators(self, real_b: torch.Tensor, fakes: dict) -> dict[str, float]:
        """(5) D on (B, fake_enc), D2 on (B, fake_rand), both detached; one step of both."""
        with self._autocast():
            losses = {"loss_d": self._d_gan(self.discriminator, real_b, fakes["fake_enc"].detach())}
            if self.use_encoder:
                losses["loss_d2"] = self._d_gan(self.discriminator2, real_b, fakes["fake_rand"].detach())
        optimizers = [self.d_optimizer] + ([self.d2_optimizer] if self.use_encoder else [])
        self._update(
            sum(losses.values()), optimizers, self.d_scaler, [self.discriminator, self.discriminator2]
        )
        return {k: v.item() for k, v in losses.items()}


def sample_panels(output: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TensorBoard grid panels (A, B, encoded and random samples) mapped from [-1, 1] to [0, 1]."""
    return {k: (output[k].float() + 1) / 2 for k in ("A", "B", "fake_enc", "fake_rand") if k in output}


def aggregate_code_prior(encoder: torch.nn.Module, targets: Iterable[torch.Tensor]) -> dict[str, list[float]]:
    """Per-dimension ``mean`` and ``std`` of the encoder's aggregate posterior, q(z) = the average over real
    targets x of N(mu(x), sigma(x)^2), from batches ``(B, 1, H, W)`` in the encoder's [-1, 1] range. Its
    variance is the spread of the means plus the mean posterior variance. Translation draws its codes from
    it when a weights file's meta holds it as ``code_prior`` (``inference.translate.latent_codes``)."""
    means, variances = [], []
    encoder.eval()
    with torch.inference_mode():
        for batch in targets:
            mu, logvar = encoder(batch)
            means.append(mu.float())
            variances.append(logvar.float().exp())
    mu, var = torch.cat(means), torch.cat(variances)
    std = (mu.var(0, unbiased=False) + var.mean(0)).sqrt()
    return {"mean": mu.mean(0).tolist(), "std": std.tolist()}


def export_generator(generator: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``{"generator": fp16 state dict, "meta": meta}`` atomically (small shipped weights; read by
    :func:`mtsr_monai.inference.translate.load_translator`)."""
    state = {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.cpu())
        for k, v in generator.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save({"generator": state, "meta": dict(meta)}, tmp)
    return path


class LatentCodeInferer(Inferer):
    """The validation prediction of a latent-code generator ``G(x, z)``: ``G(A, z=0)`` (the code's mean)
    followed by ``n_samples`` outputs of random codes, stacked as channels ``(B, 1 + n_samples, H, W)``
    (:func:`code_sample_outputs` splits them for the metrics)."""

    def __init__(self, nz: int, n_samples: int = 2) -> None:
        super().__init__()
        self.nz, self.n_samples = int(nz), int(n_samples)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        batch, device = inputs.shape[0], inputs.device
        codes = [torch.zeros(batch, self.nz, device=device)]
        codes += [torch.randn(batch, self.nz, device=device) for _ in range(self.n_samples)]
        return torch.cat([network(inputs, z) for z in codes], dim=1)


def code_sample_outputs(item: dict[str, Any]) -> dict[str, Any]:
    """Evaluator postprocessing of one item of :class:`LatentCodeInferer`: ``pred`` = ``G(A, z=0)`` and
    ``label`` = B, both mapped from [-1, 1] to [0, 1] and clamped (PSNR / SSIM), and ``sample_<i>`` = the
    random-code samples mapped to [0, 1] (their mean absolute difference: the diversity monitor)."""
    out = dict(item)
    pred = item["pred"].float()
    out["pred"] = ((pred[:1] + 1) / 2).clamp(0, 1)
    out["label"] = ((item["label"].float() + 1) / 2).clamp(0, 1)
    for i in range(1, pred.shape[0]):
        out[f"sample_{i - 1}"] = (pred[i : i + 1] + 1) / 2
    return out
