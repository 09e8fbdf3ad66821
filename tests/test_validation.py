"""The one validation path (a SupervisedEvaluator per family, ExportOnBest): the translation and clinical
evaluators give the metrics their former handlers computed, the export follows the evaluator's best, and
that best survives a resume, also from a checkpoint written by a former validation handler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer

from mtsr_monai.engines.bicyclegan import export_generator
from mtsr_monai.engines.handlers import PrepareBatchPair, ResumeCheckpoint
from mtsr_monai.engines.validation import ExportOnBest, first_items, validation_summary
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator

SIZE, NZ = 32, 4


def _translation_items(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)

    def image() -> torch.Tensor:
        return torch.rand(1, SIZE, SIZE, generator=g) * 2 - 1

    return [{"A": image(), "B": image()} for _ in range(n)]


def _reference_translation_metrics(generator, loader) -> dict[str, float]:
    """The former ``validate_translation``: PSNR / SSIM of G(A, z=0) in [0, 1], L1 of two random samples."""
    from monai.metrics import PSNRMetric, SSIMMetric

    psnr, ssim, diffs = PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=2, data_range=1.0), []
    with torch.no_grad():
        for batch in loader:
            a, b = batch["A"], ((batch["B"] + 1) / 2).clamp(0, 1)
            pred = ((generator(a, torch.zeros(a.shape[0], NZ)) + 1) / 2).clamp(0, 1)
            psnr(pred, b)
            ssim(pred, b)
            samples = [generator(a, torch.randn(a.shape[0], NZ)) for _ in range(2)]
            diffs.append((samples[0] - samples[1]).abs().mean(dim=(1, 2, 3)) / 2)
    return {"psnr": psnr.aggregate().item(), "ssim": ssim.aggregate().item(),
            "sample_l1": torch.cat(diffs).mean().item()}  # fmt: skip


def _bundle_translation_evaluator(generator, loader) -> SupervisedEvaluator:
    """The ``validate#evaluator`` of the mtsr_mt bundle's train.yaml (what ``python -m monai.bundle run
    training`` and scripts/train_mt.py validate with) on ``loader``, without its logging and export."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config("bundles/mtsr_mt/configs/train.yaml")
    parser.update({"generator": generator, "validate#dataloader": loader, "validate#handlers": [],
                   "device": "cpu", "source": "A", "target": "B", "nz": NZ})  # fmt: skip
    return parser.get_parsed_content("validate#evaluator")


def test_the_bundles_translation_evaluator_gives_the_former_validation_metrics():
    torch.manual_seed(0)
    generator = LatentUNetGenerator(nz=NZ, ngf=4, image_size=SIZE)
    loader = torch.utils.data.DataLoader(first_items(_translation_items(5), 4), batch_size=3)
    torch.manual_seed(1)
    expected = _reference_translation_metrics(generator.eval(), loader)
    generator.train()
    evaluator = _bundle_translation_evaluator(generator, loader)
    torch.manual_seed(1)
    evaluator.run()
    got = validation_summary(evaluator.state.metrics)
    assert set(got) == {"psnr", "ssim", "sample_l1"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5)
    assert generator.training  # the evaluator gives the network back in training mode


class _Scripted(Metric):
    """A key metric whose value at each validation is the next of ``scores``."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output) -> None:
        pass

    def compute(self) -> float:
        return self.scores.pop(0)


def _run(folder, weight: float, scores: list[float], epochs: int, best_entry=None) -> None:
    """Train ``epochs`` epochs (resuming from ``folder``) whose weights are ``weight``, validating with the
    scripted ``scores`` and exporting the generator as the mtsr_mt bundle does."""
    net = torch.nn.Linear(1, 1, bias=False)
    trainer = Engine(lambda engine, batch: torch.nn.init.constant_(net.weight, weight))
    export = ExportOnBest(net, folder / "export.pt", write=export_generator, meta={"source": "t1"})
    evaluator = SupervisedEvaluator(
        "cpu", [{"x": torch.ones(1, 1), "y": torch.ones(1, 1)}], net,
        prepare_batch=PrepareBatchPair("x", "y"), inferer=SimpleInferer(),
        key_val_metric={"val_psnr": _Scripted(scores)}, val_handlers=[export],
    )  # fmt: skip
    export.follow(trainer)
    resume = ResumeCheckpoint(folder / "ckpt", {"net": net}, every_n_iterations=1, best=[evaluator])
    resume.attach(trainer)
    if best_entry is not None:  # a checkpoint written by a former validation handler (``best`` attribute)
        trainer.add_event_handler(
            Events.STARTED, lambda _: resume.objects["best_scores"].load_state_dict(best_entry)
        )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run(engine.state.epoch))
    trainer.run([0], max_epochs=epochs)


def _export(folder) -> tuple[float, dict]:
    saved = torch.load(folder / "export.pt", weights_only=True)
    return float(saved["generator"]["weight"]), saved["meta"]


def test_export_follows_the_best_and_a_worse_epoch_after_resume_keeps_it(tmp_path):
    _run(tmp_path, weight=1.0, scores=[14.0, 12.0], epochs=2)
    weight, meta = _export(tmp_path)
    assert weight == 1.0 and meta == {"source": "t1", "iterations": 1, "validation": {"psnr": 14.0}}
    _run(tmp_path, weight=2.0, scores=[13.0], epochs=3)  # resumed at epoch 2: worse than 14
    assert _export(tmp_path)[0] == 1.0
    _run(tmp_path, weight=3.0, scores=[15.0], epochs=4)
    weight, meta = _export(tmp_path)
    assert weight == 3.0 and meta["iterations"] == 4 and meta["validation"] == {"psnr": 15.0}


def test_best_of_a_former_validation_handler_becomes_the_evaluators_best(tmp_path):
    _run(tmp_path, weight=1.0, scores=[14.0], epochs=1, best_entry={"0": {"best": 20.0}})
    assert not (tmp_path / "export.pt").exists()  # 14 does not beat the former handler's 20


def _pairs(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(n):
        hr = rng.random((2, 12, 12, 6)).astype(np.float32)
        mask = np.zeros((12, 12, 6), bool)
        mask[2:10, 2:10] = True
        lr = np.clip(hr + 0.05 * rng.standard_normal(hr.shape), 0, 1).astype(np.float32)  # as protocol_pair
        pairs.append({"lr": lr, "hr": hr, "mask": mask, "out_scale": np.array([1.0, 1.1], np.float32)})
    return pairs


def test_clinical_evaluator_averages_the_volume_scores_and_logs_the_interpolated_input():
    from monai.bundle import ConfigParser

    from mtsr_monai.inference.clinical import score_against_pair

    pairs = _pairs(3)
    parser = ConfigParser()
    parser.read_config("bundles/clinical_sr/configs/train.yaml")
    section = parser.get("validate")
    for key in ("subjects", "pairs", "export"):
        section.pop(key)
    section["handlers"] = [section["handlers"][0]]
    # a 'network' dimming its input by 10 %: its scores differ from the interpolated input's
    dim = "$torch.nn.Conv2d(2, 2, 1, bias=False).requires_grad_(False)"
    parser.update({"validate": section, "validate#pairs": pairs, "network": dim, "device": "cpu",
                   "mode": "slice"})  # fmt: skip
    network = parser.get_parsed_content("network")
    network.weight.copy_(0.9 * torch.eye(2)[:, :, None, None])
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    metrics = evaluator.state.metrics
    dimmed = [score_against_pair(0.9 * p["lr"], p) for p in pairs]
    interpolated = [score_against_pair(p["lr"], p) for p in pairs]
    for name in ("mae", "nmse", "psnr", "ssim"):
        model_mean = float(np.mean([row[name] for row in dimmed]))
        input_mean = float(np.mean([row[name] for row in interpolated]))
        assert model_mean != pytest.approx(input_mean, rel=1e-4)
        assert metrics[f"val_{name}"] == pytest.approx(model_mean, rel=1e-5)
        assert metrics[f"val_{name}_interpolated"] == pytest.approx(input_mean, rel=1e-6)
    assert evaluator.state.best_metric == pytest.approx(metrics["val_psnr"])


def test_the_metrics_line_names_the_direction_validated(caplog):
    import logging

    from mtsr_monai.engines.validation import metrics_printer

    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = {"val_psnr": torch.tensor(21.5), "val_ssim": 0.75}
    with caplog.at_level(logging.INFO):
        metrics_printer("flair -> t1")(evaluator)
    assert "validation flair -> t1 -- psnr: 21.5000 ssim: 0.7500" in caplog.text
