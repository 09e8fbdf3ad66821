"""A stopped and resumed run loses nothing and repeats nothing: an epoch's last iteration interrupted is
still validated, an epoch ended early keeps its new best score, a resume draws new samples, the pixel phase
is counted in iterations, a damaged newest checkpoint is passed over, data workers outlive a Ctrl-C."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.transforms import Randomizable
from monai.utils import set_determinism

from mtsr_monai.engines.handlers import ResumeCheckpoint
from mtsr_monai.engines.paired import PairedAdversarialTrainer
from mtsr_monai.engines.run_safety import shielded_worker_init
from mtsr_monai.errors import InputError


class _Score:
    """A best-score stand-in: changed by an epoch's validation, saved in the checkpoint."""

    def __init__(self) -> None:
        self.value = 0

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class _Draws(torch.utils.data.Dataset, Randomizable):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return int(self.R.randint(10**9))


def _trainer(folder: Path, score: _Score, on_iteration=None) -> Engine:
    engine = Engine(lambda e, batch: on_iteration(e) if on_iteration else None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(score, "value", e.state.iteration))
    ResumeCheckpoint(folder, {"score": score}, every_n_iterations=2).attach(engine)
    return engine


def test_a_signal_in_an_epochs_last_iteration_stops_after_its_validation_and_checkpoint(tmp_path):
    score = _Score()
    kill = lambda e: os.kill(os.getpid(), signal.SIGINT) if e.state.iteration == 4 else None  # noqa: E731
    engine = _trainer(tmp_path, score, kill)
    engine.run(range(4), max_epochs=3)
    assert engine.state.iteration == 4 and score.value == 4 and engine.stopped_by_signal == signal.SIGINT
    assert torch.load(tmp_path / "checkpoint_4.pt", weights_only=True)["score"] == {"value": 4}


def test_an_epoch_ended_early_at_a_checkpoint_step_saves_its_validation(tmp_path):
    score = _Score()
    engine = _trainer(tmp_path, score, lambda e: e.terminate_epoch() if e.state.iteration == 2 else None)
    engine.run(range(4), max_epochs=1)
    assert torch.load(tmp_path / "checkpoint_2.pt", weights_only=True)["score"] == {"value": 2}


def _draws(folder: Path, max_epochs: int) -> list[int]:
    set_determinism(seed=0)  # as each bundle run starts
    loader = DataLoader(_Draws(), batch_size=1)
    engine = Engine(lambda e, batch: int(batch[0]))
    seen: list[int] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    ResumeCheckpoint(folder, {"score": _Score()}, every_n_iterations=100).attach(engine)
    engine.run(loader, max_epochs=max_epochs)
    set_determinism(seed=None)
    return seen


def test_a_resumed_run_draws_new_samples_not_its_first_ones_again(tmp_path):
    first = _draws(tmp_path / "a", max_epochs=1)
    resumed = _draws(tmp_path / "a", max_epochs=2)
    assert len(resumed) == 4 and not set(resumed) & set(first)
    again = tmp_path / "c"
    _draws(again, max_epochs=1)
    assert _draws(again, max_epochs=2) == resumed  # the new stream is a function of the seed and step


def test_the_pixel_phase_is_counted_in_iterations_whatever_the_epoch_number():
    trainer = SimpleNamespace(discriminator=object(), pretrain_epochs=2)
    early_ended = SimpleNamespace(state=SimpleNamespace(iteration=9, epoch=2, epoch_length=4))
    assert not PairedAdversarialTrainer.in_pretraining(trainer, early_ended)
    within = SimpleNamespace(state=SimpleNamespace(iteration=8, epoch=5, epoch_length=4))
    assert PairedAdversarialTrainer.in_pretraining(trainer, within)


def test_a_damaged_newest_checkpoint_is_passed_over_for_the_one_before(tmp_path):
    score = _Score()
    _trainer(tmp_path, score).run(range(4), max_epochs=2)
    (tmp_path / "checkpoint_8.pt").write_bytes(b"")  # a machine crash during its write
    resumed = _trainer(tmp_path, _Score())
    starts = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: starts.append(e.state.iteration))
    resumed.run(range(4), max_epochs=3)
    assert starts[0] == 7 and resumed.state.iteration == 12  # resumed after checkpoint_6


class _Handlers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> np.ndarray:
        ignored = [signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]
        return np.array(ignored)


def test_data_workers_ignore_the_stop_signals_the_main_process_handles():
    loader = DataLoader(_Handlers(), batch_size=1, num_workers=1, worker_init_fn=shielded_worker_init)
    assert next(iter(loader)).tolist() == [[True, True]]


def test_a_signal_between_epochs_stops_before_the_next_epoch_runs(tmp_path):
    engine = _trainer(tmp_path, _Score())
    kill = lambda e: os.kill(os.getpid(), signal.SIGINT) if e.state.epoch == 2 else None  # noqa: E731
    engine.add_event_handler(Events.EPOCH_STARTED, kill)
    engine.run(range(4), max_epochs=3)
    assert engine.state.iteration <= 5 and engine.stopped_by_signal == signal.SIGINT


def test_a_folder_whose_checkpoints_all_fail_to_read_is_refused_not_restarted(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint_{step}.pt").write_bytes(b"")
    with pytest.raises(InputError, match="can be read"):
        _trainer(tmp_path, _Score()).run(range(4), max_epochs=2)
