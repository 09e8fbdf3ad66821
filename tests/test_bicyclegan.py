"""BicycleGAN networks and engine: shapes, latent injection, update order, pix2pix-noise flag, resume."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from mtsr_monai.engines.bicyclegan import BicycleGANTrainer, kl_divergence
from mtsr_monai.networks.bicyclegan import (
    LatentUNetGenerator,
    PooledMultiScaleDiscriminator,
    ResNetEncoder,
    build_networks,
)

SIZE = 32


def _loader(n: int = 2):
    g = torch.Generator().manual_seed(0)
    items = [
        {
            "A": torch.rand(1, SIZE, SIZE, generator=g) * 2 - 1,
            "B": torch.rand(1, SIZE, SIZE, generator=g) * 2 - 1,
        }
        for _ in range(n)
    ]
    return torch.utils.data.DataLoader(items, batch_size=1)


def _trainer(use_encoder: bool = True, loader=None, **kwargs) -> BicycleGANTrainer:
    torch.manual_seed(0)
    nets = build_networks(nz=4, ngf=4, nef=4, ndf=4, image_size=SIZE, use_encoder=use_encoder)

    def adam(net):
        return torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999)) if net is not None else None

    return BicycleGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=_loader() if loader is None else loader,
        generator=nets["generator"],
        discriminator=nets["discriminator"],
        encoder=nets["encoder"],
        discriminator2=nets["discriminator2"],
        g_optimizer=adam(nets["generator"]),
        d_optimizer=adam(nets["discriminator"]),
        e_optimizer=adam(nets["encoder"]),
        d2_optimizer=adam(nets["discriminator2"]),
        use_encoder=use_encoder,
        nz=4,
        **kwargs,
    )


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(before: list[torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("size", [32, 128])
def test_generator_keeps_size_and_tanh_range(size):
    g = LatentUNetGenerator(nz=8, ngf=4, image_size=size)
    y = g(torch.randn(2, 1, size, size), torch.randn(2, 8))
    assert y.shape == (2, 1, size, size)
    assert y.abs().max() <= 1.0


def test_latent_code_enters_every_encoder_level():
    g = LatentUNetGenerator(nz=8, ngf=4, image_size=64)
    widths = [1] + [4 * min(2**i, 8) for i in range(5)]
    assert [block.conv.in_channels for block in g.down] == [w + 8 for w in widths]
    x = torch.randn(1, 1, 64, 64)
    assert not torch.allclose(g(x, torch.zeros(1, 8)), g(x, torch.ones(1, 8)))


def test_generator_rejects_non_power_of_two_size():
    with pytest.raises(ValueError, match="power of two"):
        LatentUNetGenerator(image_size=100)


def test_encoder_returns_mu_and_logvar_of_nz():
    mu, logvar = ResNetEncoder(nz=8, nef=4, image_size=128)(torch.randn(3, 1, 128, 128))
    assert mu.shape == logvar.shape == (3, 8)


def test_discriminator_has_full_and_half_resolution_scales():
    out = PooledMultiScaleDiscriminator(ndf=4, image_size=128)(torch.randn(1, 1, 128, 128))
    assert len(out) == 2 and out[1].shape[-1] < out[0].shape[-1]


def test_kl_is_summed_over_the_code():
    mu, logvar = torch.zeros(2, 8), torch.zeros(2, 8)
    assert kl_divergence(mu, logvar).item() == 0.0
    assert kl_divergence(mu + 1, logvar).item() == pytest.approx(4.0)  # 0.5 * 8 dims, mean over batch


def test_bicyclegan_iteration_with_batch_one_updates_all_networks():
    trainer = _trainer()
    before = {
        k: _params(getattr(trainer, k)) for k in ("generator", "encoder", "discriminator", "discriminator2")
    }
    trainer.run()
    out = trainer.state.output
    for key in ("loss_gan", "loss_gan2", "loss_l1", "loss_kl", "loss_latent", "loss_d", "loss_d2"):
        assert torch.isfinite(torch.tensor(out[key])), key
    assert out["fake_enc"].shape == out["fake_rand"].shape == (1, 1, SIZE, SIZE)
    for name, params in before.items():
        assert _changed(params, getattr(trainer, name)), name


def test_latent_regression_updates_generator_not_encoder():
    trainer = _trainer(lambda_l1=0.0, lambda_gan=0.0, lambda_gan2=0.0, lambda_kl=0.0, lambda_latent=0.5)
    g_before, e_before = _params(trainer.generator), _params(trainer.encoder)
    trainer.run()
    assert _changed(g_before, trainer.generator)
    assert not _changed(e_before, trainer.encoder)


def test_pretrain_iterations_train_the_generator_alone_on_l1():
    trainer = _trainer(pretrain_iterations=2)
    others = {k: _params(getattr(trainer, k)) for k in ("encoder", "discriminator", "discriminator2")}
    g_before = _params(trainer.generator)
    trainer.run()
    assert set(trainer.state.output) >= {"loss_l1"} and "loss_gan" not in trainer.state.output
    assert _changed(g_before, trainer.generator)
    for name, params in others.items():
        assert not _changed(params, getattr(trainer, name)), name


def test_mse_warm_start_lowers_the_squared_error_of_a_repeated_batch():
    batch = next(iter(_loader(1)))
    batch["B"] = -batch["A"]  # a map the generator can learn in a few steps
    trainer = _trainer(pretrain_iterations=10, pretrain_loss="mse", loader=[batch] * 10)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss_mse"]))
    trainer.run()
    assert losses[-1] < 0.95 * losses[0]


def test_warm_start_loss_choice_changes_the_generator_update():
    generators = []
    for loss in ("l1", "mse"):
        trainer = _trainer(pretrain_iterations=1, pretrain_loss=loss, loader=[next(iter(_loader(1)))])
        trainer.run()
        generators.append(_params(trainer.generator))
    assert any(not torch.equal(a, b) for a, b in zip(*generators, strict=True))


def test_unknown_pretrain_loss_is_refused():
    with pytest.raises(ValueError, match="pretrain_loss"):
        _trainer(pretrain_loss="huber")


def test_bicyclegan_phase_follows_the_pretrain_iterations():
    trainer = _trainer(pretrain_iterations=1)
    trainer.run()
    assert "loss_gan" in trainer.state.output and trainer.state.iteration == 2


def test_zero_gan_weights_train_the_cvae_without_discriminators():
    trainer = _trainer(lambda_gan=0.0, lambda_gan2=0.0)
    discs = {k: _params(getattr(trainer, k)) for k in ("discriminator", "discriminator2")}
    e_before, g_before = _params(trainer.encoder), _params(trainer.generator)
    trainer.run()
    out = trainer.state.output
    assert out["loss_gan"] == 0 and out["loss_gan2"] == 0 and "loss_d" not in out
    assert out["loss_kl"] > 0 and "loss_latent" in out
    assert _changed(e_before, trainer.encoder) and _changed(g_before, trainer.generator)
    for name, params in discs.items():
        assert not _changed(params, getattr(trainer, name)), name


def test_pix2pix_noise_flag_has_no_encoder_cycle():
    trainer = _trainer(use_encoder=False)
    assert trainer.encoder is None and trainer.discriminator2 is None
    trainer.run()
    out = trainer.state.output
    assert "loss_kl" not in out and "loss_latent" not in out and "loss_d2" not in out
    assert torch.isfinite(torch.tensor(out["loss_l1"]))


def test_resume_continues_from_checkpoint(tmp_path):
    from ignite.engine import Events

    from mtsr_monai.engines.handlers import ResumeCheckpoint

    first = _trainer()
    ResumeCheckpoint(tmp_path, first.checkpoint_objects(), every_n_iterations=1).attach(first)
    first.run()
    saved = {k: v.clone() for k, v in first.generator.state_dict().items()}
    second = _trainer()
    second.state.max_epochs = 2
    ResumeCheckpoint(tmp_path, second.checkpoint_objects(), every_n_iterations=1).attach(second)
    loaded = {}
    second.add_event_handler(
        Events.STARTED,
        lambda e: loaded.update(
            iteration=e.state.iteration,
            same=all(torch.equal(saved[k], v) for k, v in second.generator.state_dict().items()),
        ),
    )
    second.run()
    assert loaded == {"iteration": 2, "same": True}
    assert second.state.iteration == 4


def test_bilinear_upsample_generator_keeps_the_size_and_range_and_loads_by_its_metadata(tmp_path):
    import torch

    from mtsr_monai.engines.bicyclegan import export_generator
    from mtsr_monai.inference.translate import load_translator
    from mtsr_monai.networks.bicyclegan import LatentUNetGenerator

    net = LatentUNetGenerator(nz=4, ngf=8, image_size=32, upsample="bilinear").eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    y = net(x, torch.randn(2, 4))
    assert y.shape == x.shape and y.abs().max() <= 1
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    path = export_generator(
        net, tmp_path / "g.pt", {"nz": 4, "ngf": 8, "image_size": 32, "upsample": "bilinear"}
    )
    loaded, meta = load_translator(path)
    z = torch.zeros(1, 4)
    assert meta["upsample"] == "bilinear"
    assert torch.allclose(loaded(x[:1], z), net.half().float()(x[:1], z), atol=1e-5)
