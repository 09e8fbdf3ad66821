"""Training resume keeps what matters: the best validation score (model.pt is never replaced by a worse
epoch after a resume) and the retention of resume checkpoints (n_saved), across resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from mtsr_monai.engines.handlers import ResumeCheckpoint, latest_checkpoint


def _trainer(net: torch.nn.Module) -> Engine:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        optimizer.zero_grad()
        loss = net(torch.ones(1, 1)).sum()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    trainer.optimizer = optimizer
    return trainer


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint_*.pt"))


def test_resume_keeps_only_n_saved_checkpoints_including_the_one_resumed_from(tmp_path):
    for epochs in (2, 4, 6):  # three runs, each resuming the previous one
        net = torch.nn.Linear(1, 1)
        trainer = _trainer(net)
        objects = {"net": net, "opt": trainer.optimizer}
        ResumeCheckpoint(tmp_path, objects, every_n_iterations=1, n_saved=2).attach(trainer)
        trainer.run([0, 1, 2], max_epochs=epochs)
    assert trainer.state.iteration == 18
    assert _checkpoints(tmp_path) == ["checkpoint_17.pt", "checkpoint_18.pt"]  # not 6 and 12 too


class _ScriptedValidation:
    """Runs a MONAI CheckpointSaver(save_key_metric=True) with scripted validation scores."""

    def __init__(self, folder: Path, net: torch.nn.Module, scores: list[float]) -> None:
        from monai.handlers import CheckpointSaver

        self.scores = list(scores)
        self.evaluator = Engine(lambda engine, batch: None)
        self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = -1.0, -1

        @self.evaluator.on(Events.EPOCH_COMPLETED)
        def score(engine):
            engine.state.metrics["val_psnr"] = self.scores.pop(0)

        self.saver = CheckpointSaver(
            str(folder),
            {"model": net},
            save_key_metric=True,
            key_metric_name="val_psnr",
            key_metric_filename="model.pt",
        )
        self.saver.attach(self.evaluator)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.evaluator.run([0], max_epochs=1))


def _train_once(folder: Path, weight: float, scores: list[float], epochs: int, keep_best: bool) -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    trainer = Engine(lambda engine, batch: torch.nn.init.constant_(net.weight, weight))
    validation = _ScriptedValidation(folder, net, scores)
    best = [validation.saver, validation.evaluator] if keep_best else []
    ResumeCheckpoint(folder / "ckpt", {"net": net}, every_n_iterations=1, best=best).attach(trainer)
    validation.attach(trainer)
    trainer.run([0], max_epochs=epochs)


def _best_weight(folder: Path) -> float:
    return float(torch.load(folder / "model.pt", weights_only=True)["weight"])


@pytest.mark.parametrize("keep_best", [True, False])
def test_a_worse_epoch_after_resume_does_not_replace_the_best_model(tmp_path, keep_best):
    _train_once(tmp_path, weight=1.0, scores=[14.32], epochs=1, keep_best=keep_best)
    assert _best_weight(tmp_path) == 1.0
    _train_once(tmp_path, weight=2.0, scores=[11.89], epochs=2, keep_best=keep_best)
    # without the best score in the resume checkpoint, the worse epoch 2 replaces model.pt (the bug)
    assert _best_weight(tmp_path) == (1.0 if keep_best else 2.0)


def test_a_better_epoch_after_resume_still_replaces_the_best_model(tmp_path):
    _train_once(tmp_path, weight=1.0, scores=[14.32], epochs=1, keep_best=True)
    _train_once(tmp_path, weight=3.0, scores=[15.0], epochs=2, keep_best=True)
    assert _best_weight(tmp_path) == 3.0
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["model.pt"]


def test_best_attribute_of_validation_handlers_survives_a_resume(tmp_path):
    class Handler:
        best = -float("inf")

    first = Handler()
    net = torch.nn.Linear(1, 1)
    trainer = _trainer(net)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: setattr(first, "best", 14.32))
    ResumeCheckpoint(tmp_path, {"net": net}, every_n_iterations=1, best=[first]).attach(trainer)
    trainer.run([0], max_epochs=1)
    second = Handler()
    trainer = _trainer(net)
    ResumeCheckpoint(tmp_path, {"net": net}, every_n_iterations=1, best=[second]).attach(trainer)
    trainer.run([0], max_epochs=1)  # already complete: loads the checkpoint, trains nothing
    assert second.best == 14.32


def test_unknown_best_tracker_is_refused_at_construction(tmp_path):
    with pytest.raises(TypeError, match="no best score"):
        ResumeCheckpoint(tmp_path, {}, best=[object()])


def test_the_newest_checkpoint_is_the_highest_iteration_and_other_names_are_ignored(tmp_path):
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "absent") is None
    for name in ("checkpoint_best.pt", "checkpoint_9.pt", "checkpoint_10.pt", "checkpoint_11.pt.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_10.pt"  # 10 > 9, though "1" < "9"
    assert ResumeCheckpoint(tmp_path, {}).latest() == tmp_path / "checkpoint_10.pt"


def test_a_run_saved_without_loss_scaling_resumes_with_an_active_grad_scaler(tmp_path):
    # a run begun on a CPU (or in bf16) saves a disabled scaler's empty state; fp16 on CUDA then scales
    net = torch.nn.Linear(1, 1)
    trainer = _trainer(net)
    saved = {"net": net, "opt": trainer.optimizer, "scaler": torch.amp.GradScaler("cpu", enabled=False)}
    ResumeCheckpoint(tmp_path, saved, every_n_iterations=1).attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    resumed = _trainer(torch.nn.Linear(1, 1))
    objects = {"net": torch.nn.Linear(1, 1), "opt": resumed.optimizer, "scaler": scaler}
    ResumeCheckpoint(tmp_path, objects, every_n_iterations=1).attach(resumed)
    resumed.run([0, 1], max_epochs=2)
    assert resumed.state.iteration == 4 and scaler.get_scale() == 1024.0


def test_a_newest_checkpoint_cut_short_inside_its_tensors_is_passed_over(tmp_path):
    # torch.load raises OSError, not RuntimeError, for a file cut inside its tensor data
    net = torch.nn.Linear(1, 20000)
    trainer = _trainer(net)
    ResumeCheckpoint(tmp_path, {"net": net}, every_n_iterations=1).attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    newest = tmp_path / "checkpoint_2.pt"
    newest.write_bytes(newest.read_bytes()[:16384])
    resumed = _trainer(torch.nn.Linear(1, 20000))
    ResumeCheckpoint(tmp_path, {"net": torch.nn.Linear(1, 20000)}, every_n_iterations=1).attach(resumed)
    starts = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: starts.append(e.state.iteration))
    resumed.run([0, 1], max_epochs=2)
    assert starts[0] == 2  # after checkpoint_1


def test_a_newest_file_that_holds_no_trainer_state_is_passed_over_not_resumed_at_iteration_0(tmp_path):
    net = torch.nn.Linear(1, 1)
    trainer = _trainer(net)
    ResumeCheckpoint(tmp_path, {"net": net}, every_n_iterations=1).attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    torch.save(net.state_dict(), tmp_path / "checkpoint_2.pt")  # a bare state dict under the name
    resumed = _trainer(torch.nn.Linear(1, 1))
    ResumeCheckpoint(tmp_path, {"net": torch.nn.Linear(1, 1)}, every_n_iterations=1).attach(resumed)
    starts = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: starts.append(e.state.iteration))
    resumed.run([0, 1], max_epochs=2)
    assert starts[0] == 2  # after checkpoint_1, not from 0


def _scheduled_run(
    folder: Path, lr: float, epochs: int, milestones: tuple[int, ...] = (2,)
) -> tuple[Engine, torch.optim.Optimizer]:
    trainer = _trainer(torch.nn.Linear(1, 1))
    optimizer = trainer.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.5)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: scheduler.step())
    objects = {"opt": optimizer, "scheduler": scheduler}
    ResumeCheckpoint(folder, objects, every_n_iterations=1).attach(trainer)
    trainer.run([0, 1], max_epochs=epochs)
    return trainer, optimizer


def test_a_run_resumed_with_a_lower_learning_rate_trains_at_it_on_the_same_schedule(tmp_path):
    _scheduled_run(tmp_path, lr=0.1, epochs=2)  # 4 iterations: halved at 2
    resumed, optimizer = _scheduled_run(tmp_path, lr=0.01, epochs=3)
    assert resumed.state.iteration == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # not 0.05: the checkpoint's start
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.01)


def test_a_run_resumed_with_later_milestones_follows_them(tmp_path):
    _scheduled_run(tmp_path, lr=0.1, epochs=1)  # 2 iterations: halved at 2
    resumed, optimizer = _scheduled_run(tmp_path, lr=0.1, epochs=2, milestones=(3,))
    assert resumed.state.iteration == 4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # once, at 3: not 0.025, nor 0.1
    _, optimizer = _scheduled_run(tmp_path, lr=0.1, epochs=3, milestones=(100,))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # no milestone passed yet
