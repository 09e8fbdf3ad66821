"""A training run's folder stays safe: Ctrl-C saves before it exits, reruns with fewer epochs train nothing
and break nothing, a checkpoint is never deleted before its successor exists, two runs never share a
folder, and bad set-ups are refused before any file is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from mtsr_monai.engines.handlers import ResumeCheckpoint
from mtsr_monai.engines.run_safety import (
    FolderLock,
    GaplessDiskSaver,
    check_training_setup,
    exit_if_interrupted,
    write_recipe,
)
from mtsr_monai.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _run(
    folder: Path, max_epochs: int, on_iteration=None, net: torch.nn.Module | None = None, completed=None
) -> Engine:
    net = net if net is not None else torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        optimizer.zero_grad()
        net(torch.ones(1, 1)).sum().backward()
        optimizer.step()
        if on_iteration is not None:
            on_iteration(engine)

    trainer = Engine(step)
    if completed is not None:  # the epochs whose end ran (validation and export hang there)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: completed.append(e.state.epoch))
    ResumeCheckpoint(folder, {"net": net, "opt": optimizer}, every_n_iterations=100).attach(trainer)
    trainer.run([0, 1, 2, 3], max_epochs=max_epochs)
    return trainer


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint_*.pt"))


def test_ctrl_c_stops_after_the_iteration_saves_it_and_exits_130(tmp_path):
    def interrupt_at_6(engine):
        if engine.state.iteration == 6:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    trainer = _run(tmp_path, max_epochs=5, on_iteration=interrupt_at_6)
    assert trainer.state.iteration == 6
    assert _names(tmp_path)[-1] == "checkpoint_6.pt"  # not only the epoch-end checkpoint_4
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(SystemExit) as stopped:
        exit_if_interrupted(trainer)
    assert stopped.value.code == 130
    assert _run(tmp_path, max_epochs=5).state.iteration == 20  # the same command resumes at 6


def test_a_signal_in_the_last_iteration_of_a_resumed_epoch_waits_for_the_epochs_end(tmp_path):
    def interrupt_at(iteration):
        def send(engine):
            if engine.state.iteration == iteration:
                os.kill(os.getpid(), signal.SIGINT)

        return send

    _run(tmp_path, max_epochs=5, on_iteration=interrupt_at(6))  # mid-epoch 2 (4 iterations an epoch)
    completed: list[int] = []
    trainer = _run(tmp_path, max_epochs=5, on_iteration=interrupt_at(8), completed=completed)
    assert trainer.state.iteration == 8 and completed == [2]  # epoch 2's end ran before the stop


def test_a_rerun_asking_for_fewer_epochs_trains_nothing_and_a_later_run_continues(tmp_path):
    _run(tmp_path, max_epochs=2)
    assert _run(tmp_path, max_epochs=1).state.iteration == 8  # nothing trained, nothing saved
    assert _names(tmp_path) == ["checkpoint_4.pt", "checkpoint_8.pt"]
    assert _run(tmp_path, max_epochs=3).state.iteration == 12  # Ignite refused this checkpoint before


def test_the_old_checkpoint_is_deleted_only_after_the_new_one_is_written(tmp_path, monkeypatch):
    from ignite.handlers import DiskSaver

    saver = GaplessDiskSaver(tmp_path)
    saver({"net": torch.nn.Linear(1, 1).state_dict()}, "checkpoint_1.pt")
    saver.remove("checkpoint_1.pt")  # Ignite's retention (n_saved=1) deletes first, then writes checkpoint_2

    def killed_while_writing(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DiskSaver, "__call__", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        saver({"net": torch.nn.Linear(1, 1).state_dict()}, "checkpoint_2.pt")
    assert _names(tmp_path) == ["checkpoint_1.pt"]  # a run resumes from it


def test_stale_temporary_files_are_cleared_and_a_checkpoint_deleted_by_hand_is_ignored(tmp_path):
    _run(tmp_path, max_epochs=1)
    (tmp_path / "tmpabc123").write_bytes(b"half a checkpoint")
    (tmp_path / "checkpoint_4.pt").unlink()  # the one retention would delete next
    assert _run(tmp_path, max_epochs=3).state.iteration == 12
    assert not (tmp_path / "tmpabc123").exists()
    assert _names(tmp_path) == ["checkpoint_12.pt", "checkpoint_8.pt"]


def test_a_second_process_writing_the_same_run_folder_is_refused(tmp_path):
    holder = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print('locked', flush=True)
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match="another training run"):
            FolderLock.acquire(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.1)
    FolderLock.acquire(tmp_path)  # free again once the other process is gone


def test_resuming_with_other_networks_names_the_checkpoint_and_the_way_out(tmp_path):
    _run(tmp_path, max_epochs=1)
    with pytest.raises(InputError, match=r"checkpoint_4.pt: does not fit .*size mismatch.*new output_dir"):
        _run(tmp_path, max_epochs=2, net=torch.nn.Linear(1, 2))


@pytest.mark.parametrize(
    ("precision", "folder", "problem"),
    [
        ("fp8", "run", "unknown precision 'fp8'"),
        ("fp16", "run", "fp16 needs CUDA"),
        ("auto", "bundle/models", "holds the shipped weights model.pt"),
        ("auto", "a_file/run", "is not a folder"),
    ],
)
def test_training_set_up_is_refused_before_anything_is_written(tmp_path, precision, folder, problem):
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    (tmp_path / "bundle" / "models" / "model.pt").write_bytes(b"shipped")
    (tmp_path / "bundle" / "large_files.yml").write_text("large_files:\n  - path: models/model.pt\n")
    (tmp_path / "a_file").write_text("")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InputError, match=problem):
        check_training_setup(tmp_path / folder, precision, "cpu")
    assert sorted(tmp_path.rglob("*")) == before


def test_training_set_up_accepts_the_bundle_default_run_folder(tmp_path):
    (tmp_path / "large_files.yml").write_text("large_files:\n  - path: models/model.pt\n")
    assert check_training_setup(tmp_path / "runs", "fp32", "cpu") == "fp32"


def test_sigterm_in_a_bundle_training_run_saves_its_iteration_and_its_resume_keeps_the_recipe(tmp_path):
    import numpy as np

    from tests.conftest import write_nifti
    from tests.test_research_run import SR_CONFIGS, TINY_TRAINING

    vol = np.random.default_rng(0).random((48, 48, 12)).astype(np.float32) + 1.0
    t1 = write_nifti(tmp_path / "t1.nii.gz", vol)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"t1": str(t1)}], "validation": [{"t1": str(t1)}]}))
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(SR_CONFIGS / "train.yaml"),
        "--datalist", str(datalist), "--output_dir", str(tmp_path / "run"), *TINY_TRAINING,
        "--modality", "['t1']", "--epoch_length", "10000", "--checkpoint_every", "1000",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env
    )
    try:
        for line in proc.stdout:
            if "Iter: 3/10000" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, rest[-2000:]
    saved = [int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "checkpoints").glob("checkpoint_*.pt")]
    assert saved and max(saved) >= 3  # the periodic checkpoint would be at 1000
    assert "the same command resumes" in rest
    recipe = (tmp_path / "run" / "recipe.json").read_text()
    assert json.loads(recipe)["global_skip"] is None
    # resuming it with another global skip would leave recipe.json describing weights it did not train
    resume = [*cmd, "--global_skip", "bicubic"]
    other = subprocess.run(resume, capture_output=True, text=True, cwd=REPO, env=env)
    assert other.returncode == 2 and "global_skip None, asked 'bicubic'" in other.stderr, other.stderr[-2000:]
    assert (tmp_path / "run" / "recipe.json").read_text() == recipe


def test_a_mistyped_bundle_override_is_named_with_the_key_it_resembles(capsys):
    from mtsr_monai.errors import warn_unknown_overrides

    argv = ["training", "--config_file", str(REPO / "bundles/mtsr_sr/configs/train.yaml"), "--max_epoch", "1",
            "--max_epochs", "2", "--loss_weights#vgg", "0", "--meta_file", "m.json"]  # fmt: skip
    assert warn_unknown_overrides(argv) == ["max_epoch"]
    assert (
        "--max_epoch is not a key of the config: it is ignored (did you mean --max_epochs?)"
        in capsys.readouterr().err
    )


def test_the_log_of_a_stopped_run_keeps_one_line_without_its_traceback():
    import logging

    from mtsr_monai.errors import _QuietStops

    try:
        raise SystemExit(143)
    except SystemExit:
        info = sys.exc_info()
    record = logging.LogRecord("StatsHandler", logging.ERROR, __file__, 1, "Exception: 143", (), info)
    assert _QuietStops().filter(record) and record.exc_info is None
    assert record.getMessage() == "run stopped (exit code 143)"


def _save_cut_by_a_second_ctrl_c():
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:  # torch.save's writer re-raises it as this while closing the file
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None


def test_a_training_script_stopped_by_a_signal_exits_130_or_143_with_one_line(capsys):
    from mtsr_monai.errors import exit_code_of

    def sigterm():
        raise SystemExit(143)

    assert exit_code_of(_save_cut_by_a_second_ctrl_c, "train_sr.py") == 130
    assert exit_code_of(sigterm, "train_sr.py") == 143
    assert capsys.readouterr().err.splitlines() == [
        "train_sr.py: interrupted (Ctrl-C)",
        "train_sr.py: stopped (exit code 143)",
    ]
    with pytest.raises(ValueError):  # a real failure keeps its traceback
        exit_code_of(lambda: int("x"), "train_sr.py")


def test_the_log_keeps_no_traceback_of_an_interruption_re_raised_as_another_error():
    import logging

    from mtsr_monai.errors import _QuietStops

    try:
        _save_cut_by_a_second_ctrl_c()
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord("StatsHandler", logging.ERROR, __file__, 1, "Exception", (), info)
    assert _QuietStops().filter(record) and record.exc_info is None


def test_an_interrupt_is_found_under_monai_wrapping_and_an_error_being_handled():
    from mtsr_monai.errors import _interruption_in

    interrupt = KeyboardInterrupt()
    interrupt.__context__ = ValueError("being handled when Ctrl-C came")
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = interrupt
    assert _interruption_in(wrapped) is interrupt and _interruption_in(ValueError()) is None


@pytest.mark.parametrize("stop", ["complete", "terminate"])
def test_image_grid_handler_closes_its_event_file_when_the_run_ends(tmp_path, stop):
    from ignite.engine import Events

    from mtsr_monai.engines.handlers import ImageGridHandler

    engine = Engine(lambda e, b: {"x": torch.rand(2, 1, 8, 8)})
    grid = ImageGridHandler(tmp_path, images_fn=lambda out: out, every_n_iterations=1)
    grid.attach(engine)
    if stop == "terminate":
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    engine.run(range(4), max_epochs=1)
    assert grid._writer is None and list(tmp_path.glob("events.out.tfevents.*"))


def test_a_recipe_is_rewritten_freely_until_the_run_has_a_resume_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    write_recipe(tmp_path, resume_dir=checkpoints, source="t1", target="flair")
    write_recipe(tmp_path, resume_dir=checkpoints, source="t1", target="t2")  # a refused start wrote nothing
    checkpoints.mkdir()
    (checkpoints / "checkpoint_100.pt").write_bytes(b"")
    write_recipe(tmp_path, resume_dir=checkpoints, source="t1", target="t2", nz=8)  # a key older runs lacked
    with pytest.raises(InputError, match="target 't2', asked 'flair'"):
        write_recipe(tmp_path, resume_dir=checkpoints, source="t1", target="flair", nz=8)
    assert json.loads((tmp_path / "recipe.json").read_text())["target"] == "t2"


def test_the_log_of_a_refused_run_keeps_one_line_without_its_traceback():
    import logging

    from mtsr_monai.errors import InputError, _QuietStops

    try:
        try:
            raise InputError("does not fit this run's networks", "run/checkpoint_9.pt")
        except InputError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression") from err  # as MONAI wraps it
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord("StatsHandler", logging.ERROR, __file__, 1, "Exception: %s", ("x",), info)
    assert _QuietStops().filter(record) and record.exc_info is None
    assert record.getMessage() == "run refused: run/checkpoint_9.pt: does not fit this run's networks"


def test_an_init_checkpoint_is_not_loaded_into_a_run_that_resumes_and_it_says_so(tmp_path, caplog):
    from mtsr_monai.engines.run_safety import uses_init_checkpoint

    assert uses_init_checkpoint("start.pt", tmp_path) and not uses_init_checkpoint(None, tmp_path)
    (tmp_path / "checkpoint_50.pt").write_bytes(b"")
    assert not uses_init_checkpoint("start.pt", tmp_path)
    assert "start.pt is not used: the run resumes from" in caplog.text
