"""WallClockStop, the one deadline handler: train.yaml's max_minutes and the GPU job's end time."""

from __future__ import annotations

import json
import time

import pytest
from ignite.engine import Engine, Events

import mtsr_monai.engines.handlers as handlers
from mtsr_monai.engines.handlers import WallClockStop


@pytest.mark.parametrize("minutes, validated", [(2.5 / 60, [3]), (0, [10, 20, 30])])
def test_a_minutes_budget_ends_the_epoch_under_way_validates_it_then_stops(monkeypatch, minutes, validated):
    """max_minutes: the epoch is cut short where the budget runs out, still validated (the export follows
    the validation), and no epoch follows; 0 leaves the run alone."""
    clock = [0.0]  # each iteration takes one second
    monkeypatch.setattr(handlers.time, "time", lambda: clock[0])
    engine = Engine(lambda e, batch: clock.__setitem__(0, clock[0] + 1.0))
    seen: list[int] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(e.state.iteration))
    WallClockStop(minutes=minutes, reserve_validation=False).attach(engine)
    engine.run(range(10), max_epochs=3)
    assert seen == validated and engine.state.iteration == validated[-1]


def test_a_deadline_run_validates_every_interval_and_ends_in_time(tmp_path):
    engine = Engine(lambda e, b: time.sleep(0.005))
    validations = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validations.append(e.state.iteration))
    end_at = time.time() + 3.0  # the margin leaves 0.25 s for a loaded machine's stalls
    WallClockStop(end_at, 0.2, str(tmp_path / "w.json"), val_estimate_s=0.01, margin_s=0.5).attach(engine)
    engine.run(range(10**6), max_epochs=10**6, epoch_length=10**6)
    report = json.loads((tmp_path / "w.json").read_text())
    assert time.time() < end_at and len(validations) >= 2
    assert report["stop_reason"] == "time" and report["iterations"] == engine.state.iteration > 0


@pytest.mark.parametrize("fetch_s, step_s, slow_loader", [(0.02, 0.002, True), (0.0, 0.02, False)])
def test_the_report_gives_the_share_of_time_spent_waiting_for_batches(tmp_path, fetch_s, step_s, slow_loader):
    def batches():
        while True:
            time.sleep(fetch_s)
            yield 0

    engine = Engine(lambda e, b: time.sleep(step_s))
    WallClockStop(time.time() + 60, 10.0, str(tmp_path / "w.json"), val_estimate_s=0.01).attach(engine)
    engine.run(batches(), max_epochs=1, epoch_length=40)
    share = json.loads((tmp_path / "w.json").read_text())["data_wait_share"]
    assert (share > 0.6) if slow_loader else (share < 0.3)


def test_a_minutes_budget_trains_until_it_is_spent_whatever_a_validation_costs(monkeypatch):
    clock = [0.0]  # an iteration takes one second, a validation thirty
    monkeypatch.setattr(handlers.time, "time", lambda: clock[0])
    engine = Engine(lambda e, batch: clock.__setitem__(0, clock[0] + 1.0))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: clock.__setitem__(0, clock[0] + 30.0))
    WallClockStop(minutes=2, reserve_validation=False).attach(engine)
    engine.run(range(10), max_epochs=100)
    assert engine.state.iteration == 30  # 3 x (10 s of training + 30 s of validation) = the 2 minutes
