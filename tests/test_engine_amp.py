"""amp=True keeps its meaning (precision 'auto') without MONAI's deprecated torch.cuda.amp.GradScaler."""

from __future__ import annotations

import warnings

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


def test_paired_amp_training_prints_no_gradscaler_deprecation():
    trainer = _paired_trainer(amp=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert not [w for w in caught if "GradScaler" in str(w.message)], [str(w.message) for w in caught]
    assert trainer.precision == resolve_precision("auto", "cpu")  # amp=True still means 'auto'


def test_bicyclegan_amp_training_prints_no_gradscaler_deprecation():
    from tests.test_bicyclegan import _trainer

    trainer = _trainer(amp=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert not [w for w in caught if "GradScaler" in str(w.message)], [str(w.message) for w in caught]


def test_cyclegan_amp_training_prints_no_gradscaler_deprecation():
    from tests.test_cyclegan import _trainer

    trainer = _trainer(amp=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert not [w for w in caught if "GradScaler" in str(w.message)], [str(w.message) for w in caught]
