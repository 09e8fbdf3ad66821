import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from mtsr_monai.engines.handlers import ResumeCheckpoint, image_grid
from mtsr_monai.engines.paired import PairedAdversarialTrainer
from mtsr_monai.losses import WeightedLoss


def _toy_loader(n=8):
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(n, 1, 16, 16, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    return DataLoader([{"lr": lr[i], "hr": hr[i]} for i in range(n)], batch_size=2)


def _networks():
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(1, 1, 3, padding=1))
    disc = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 1, 3)
    )
    return gen, disc


def _trainer(max_epochs, ckpt_dir=None, pretrain_epochs=1, pretrain_loss=None, precision=None, **options):
    gen, disc = _networks()
    trainer = PairedAdversarialTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=_toy_loader(),
        generator=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 1e-2),
        generator_loss=WeightedLoss({"l1": torch.nn.L1Loss()}, {"l1": 2.0}),
        discriminator=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 1e-3),
        gan_loss="lsgan",
        critic_steps=2,
        pretrain_epochs=pretrain_epochs,
        pretrain_loss=pretrain_loss,
        precision=precision,
        **options,
    )
    if ckpt_dir is not None:
        ResumeCheckpoint(ckpt_dir, trainer.checkpoint_objects(), every_n_iterations=3).attach(trainer)
    return trainer


def test_pretraining_then_adversarial_phase():
    phases = []
    trainer = _trainer(max_epochs=2)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: phases.append(e.state.output["phase"]))
    trainer.run()
    assert phases == ["pretrain"] * 4 + ["adversarial"] * 4
    assert 0.0 <= trainer.state.output["critic_score"] <= 1.0


def test_grad_clip_bounds_the_norm_of_each_update():
    trainer = _trainer(max_epochs=1, grad_clip=1e-3)  # far below the gradients of this toy problem
    norms = []

    def record_norm(optimizer, *args, **kwargs):  # after clipping, before the step
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.g_optimizer.register_step_pre_hook(record_norm)
    trainer.run()
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)


def test_pretraining_reduces_l1():
    trainer = _trainer(max_epochs=30, pretrain_epochs=30)
    losses = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: losses.append(e.state.output["g_total"]))
    trainer.run()
    assert losses[-1] < 0.8 * losses[0], losses


def test_pretraining_minimises_the_configured_loss():
    trainer = _trainer(max_epochs=1, pretrain_epochs=1, pretrain_loss=torch.nn.MSELoss())
    trainer.run()
    out = trainer.state.output
    expected = torch.nn.functional.mse_loss(out["pred"], out["target"]).item()
    assert abs(out["g_total"] - expected) < 1e-6


def test_resume_continues_from_last_checkpoint(tmp_path):
    first = _trainer(max_epochs=1, ckpt_dir=tmp_path)
    first.run()
    weights = [p.detach().clone() for p in first.generator.parameters()]
    second = _trainer(max_epochs=3, ckpt_dir=tmp_path)
    seen = []
    second.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.iteration))
    second.add_event_handler(
        Events.STARTED,
        lambda e: seen.append(
            all(torch.equal(a, b) for a, b in zip(weights, e.generator.parameters(), strict=True))
        ),
    )
    second.run()
    assert seen[0] is True  # weights restored before the first new iteration
    assert seen[1] == 5 and second.state.iteration == 12 and second.state.max_epochs == 3


def test_image_grid_upsamples_small_panels():
    grid = image_grid({"lr": torch.rand(3, 1, 4, 4), "sr": torch.rand(3, 1, 8, 8)}, max_rows=2)
    assert grid.shape == (1, 16, 16) and grid.min() >= 0 and grid.max() <= 1


def test_terminate_saves_a_checkpoint(tmp_path):
    trainer = _trainer(max_epochs=3, ckpt_dir=tmp_path)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.terminate())
    trainer.run()
    assert (tmp_path / "checkpoint_5.pt").is_file()


def test_bf16_precision_runs_the_generator_in_bfloat16_without_a_scaler():
    trainer = _trainer(max_epochs=2, precision="bf16")
    trainer.run()
    assert trainer.state.output["pred"].dtype == torch.bfloat16
    assert not trainer.g_scaler.is_enabled() and not trainer.d_scaler.is_enabled()


def test_fp32_precision_and_amp_off_keep_float32():
    for trainer in (_trainer(max_epochs=1, precision="fp32"), _trainer(max_epochs=1)):
        trainer.run()
        assert trainer.state.output["pred"].dtype == torch.float32


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16():
    from mtsr_monai.engines.paired import training_precision

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert training_precision(True, None, "cpu") == ("bf16" if native else "fp32")
    assert training_precision(False, None, "cpu") == "fp32"
    assert training_precision(True, "fp32", "cpu") == "fp32"


def test_compiled_training_forward_follows_eager_keeps_state_dict_keys_and_logs_once(caplog):
    caplog.set_level("INFO")
    from torch._dynamo.utils import counters

    eager, compiled = _trainer(max_epochs=2), _trainer(max_epochs=2, compile_mode="default")
    compiled_before = counters["frames"]["ok"]
    for trainer in (eager, compiled):
        trainer.run()
    assert counters["frames"]["ok"] > compiled_before  # dynamo compiled it, not its eager fallback
    assert caplog.text.count("frames compiled") == 1
    assert compiled.train_generator is not compiled.generator
    assert list(compiled.generator.state_dict()) == list(eager.generator.state_dict())
    for a, b in zip(eager.generator.parameters(), compiled.generator.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "graphs"),
    [(None, False), ("default", False), ("reduce-overhead", True), ("max-autotune", True),
     ("max-autotune-no-cudagraphs", False)],
)  # fmt: skip
def test_cuda_graph_steps_follow_inductors_mode_options(mode, graphs):
    assert _trainer(max_epochs=1, compile_mode=mode).cuda_graph_steps is graphs


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile_mode"):
        _trainer(max_epochs=1, compile_mode="fastest")


def test_foreach_ema_matches_ignites_update():
    from ignite.handlers import EMAHandler

    from mtsr_monai.engines.handlers import ForeachEMAHandler

    emas = []
    for handler in (EMAHandler, ForeachEMAHandler):
        trainer = _trainer(max_epochs=2)
        ema = handler(trainer.generator, momentum=0.1)
        ema.attach(trainer)
        trainer.run()
        emas.append(ema.ema_model)
    for a, b in zip(emas[0].parameters(), emas[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.equal(next(emas[1].parameters()), next(_networks()[0].parameters()))


@pytest.mark.parametrize("handle_buffers", ["copy", "update"])
def test_foreach_ema_treats_buffers_as_ignite(handle_buffers):
    from ignite.engine import Engine
    from ignite.handlers import EMAHandler

    from mtsr_monai.engines.handlers import ForeachEMAHandler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    engine = Engine(lambda e, batch: model(batch).mean().backward())  # BN running stats move each step
    handlers = [
        cls(model, momentum=0.3, handle_buffers=handle_buffers) for cls in (EMAHandler, ForeachEMAHandler)
    ]
    for handler in handlers:
        handler.attach(engine)
    engine.run([torch.rand(2, 1, 6, 6) for _ in range(3)])
    ignites, ours = (h.ema_model.state_dict() for h in handlers)
    assert not torch.equal(ignites["1.running_mean"], torch.zeros(2))
    for key, value in ignites.items():
        torch.testing.assert_close(ours[key], value)
