"""amp=True keeps its meaning (precision 'auto') without MONAI's deprecated torch.cuda.amp.GradScaler."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from mtsr_monai.engines.paired import PairedAdversarialTrainer
from mtsr_monai.losses import WeightedLoss
from mtsr_monai.precision import resolve_precision


def _paired_trainer(amp: bool) -> PairedAdversarialTrainer:
    torch.manual_seed(0)
    hr = torch.rand(2, 1, 8, 8)
    loader = torch.utils.data.DataLoader(
        [{"lr": torch.nn.functional.avg_pool2d(h, 2), "hr": h} for h in hr], batch_size=2
    )
    gen = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(1, 1, 3, padding=1))
    return PairedAdversarialTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        generator=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 1e-3),
        generator_loss=WeightedLoss({"l1": torch.nn.L1Loss()}, {"l1": 1.0}),
        amp=amp,
    )


def _warnings_of_run(trainer) -> list[str]:
    """The messages of every warning one training run raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    return [str(w.message) for w in caught]


def test_paired_amp_training_prints_no_gradscaler_deprecation():
    trainer = _paired_trainer(amp=True)
    messages = _warnings_of_run(trainer)
    assert not [m for m in messages if "GradScaler" in m], messages
    assert trainer.precision == resolve_precision("auto", "cpu")  # amp=True still means 'auto'


# the MT trainers, built by their own test modules' factories
@pytest.mark.parametrize("factory_module", ["tests.test_bicyclegan", "tests.test_cyclegan"])
def test_mt_amp_training_prints_no_gradscaler_deprecation(factory_module):
    messages = _warnings_of_run(importlib.import_module(factory_module)._trainer(amp=True))
    assert not [m for m in messages if "GradScaler" in m], messages


def test_bf16_on_a_cpu_without_native_bf16_warns_and_auto_picks_fp32(monkeypatch):
    from mtsr_monai import precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_precision("auto", "cpu") == "fp32"
        monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
        assert precision.resolve_precision("auto", "cpu") == "bf16"
