"""What keeps a training run's folder safe: checks before anything is written, one run per folder,
checkpoints replaced without a gap, and a stop on Ctrl-C / SIGTERM that saves before it exits.

- :func:`check_training_setup`: the first ``initialize`` step of each train.yaml (bad precision, an output
  folder that holds a bundle's shipped weights or cannot be written: exit 2 before any file exists);
- :class:`FolderLock`: a second run on the same folder (a requeued job while the first still runs) is
  refused instead of deleting the first one's checkpoints under it;
- :class:`GaplessDiskSaver`: Ignite deletes the oldest checkpoint before writing the next, so with
  ``n_saved=1`` a kill during the write left none; here the old file goes after the new one is in place;
- :class:`StopOnSignal`: the first SIGINT / SIGTERM ends the run after the current iteration, the
  resume checkpoint is saved (``Events.TERMINATE``), and :func:`exit_if_interrupted` then exits with
  128 + the signal, as a killed process would; a second signal stops at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver

from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text
from mtsr_monai.io.manifest import enclosing_bundle, manifest_entries
from mtsr_monai.io.outputs import lock_file_exclusively
from mtsr_monai.precision import autocast_dtype, resolve_precision

logger = logging.getLogger(__name__)

__all__ = [
    "check_training_setup", "uses_init_checkpoint", "write_recipe", "resume_checkpoints", "RESUME_NAME",
    "FolderLock", "GaplessDiskSaver", "StopOnSignal", "exit_if_interrupted", "shielded_worker_init",
]  # fmt: skip


def _declared_weights(folder: Path) -> list[Path]:
    """Files declared in the ``large_files.yml`` of a bundle that contains ``folder`` (or is it)."""
    bundle = enclosing_bundle(folder)
    return [(bundle / entry["path"]).resolve() for entry in manifest_entries(bundle)] if bundle else []


def check_training_setup(output_dir: str | Path, precision: str, device: str | torch.device) -> str:
    """Refuse, before any file is written, a training run whose ``precision`` is unknown or cannot run on
    ``device`` or whose ``output_dir`` holds a bundle's shipped weights or is not a writable folder
    (:class:`InputError`: exit 2). Logs and returns the precision the run will use (``auto`` resolved)."""
    try:
        resolved = resolve_precision(str(precision), device)
        autocast_dtype(resolved, device)
    except ValueError as err:
        raise InputError(f"precision: {err}") from None
    folder = Path(output_dir).resolve()
    shipped = [p for p in _declared_weights(folder) if p.parent == folder]
    if shipped:
        raise InputError(
            f"holds the shipped weights {shipped[0].name}, which training would overwrite; "
            "give an output_dir outside the bundle's models folder",
            output_dir,
        )
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not existing.is_dir():
        raise InputError(f"cannot be created: {existing} is not a folder", output_dir)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written ({existing} is not writable)", output_dir)
    logger.info("precision: %s -> %s on %s", precision, resolved, torch.device(device).type)
    return resolved


#: the name :class:`~mtsr_monai.engines.handlers.ResumeCheckpoint` gives its files; others there
#: (``checkpoint_best.pt``) are not its own
RESUME_NAME = re.compile(r"checkpoint_(\d+)\.pt")


def resume_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the resume checkpoints (``checkpoint_<iteration>.pt``) in ``directory``,
    by iteration; files of other names are left out."""
    found = []
    for path in Path(directory).glob("checkpoint_*.pt"):
        match = RESUME_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def uses_init_checkpoint(init_checkpoint: str | Path | None, resume_dir: str | Path) -> bool:
    """Whether a run loads its ``init_checkpoint``: only when it starts afresh. A run with resume
    checkpoints continues from them (which would overwrite the initial weights): say so, not silently."""
    if not init_checkpoint:
        return False
    found = resume_checkpoints(resume_dir)
    if found:
        logger.warning(
            "init_checkpoint %s is not used: the run resumes from %s (a new output_dir starts from it)",
            init_checkpoint,
            found[-1][1],
        )
    return not found


def write_recipe(output_dir: str | Path, resume_dir: str | Path | None = None, **recipe: Any) -> Path:
    """``output_dir/recipe.json``: what an export must know of a run and cannot read from its weights (the
    network's settings, SR's global skip, the clinical data recipe's intensity headroom, MT's direction, the
    subjects); read by ``scripts/train_sr.py export``, ``scripts/train_clinical.py export`` and
    ``scripts/device_train.py``.

    A run that will resume (``resume_dir`` holds a resume checkpoint) keeps its recipe: other values would
    describe weights they did not train, and the export would trust them, so they are refused (exit 2)."""
    path = Path(output_dir) / "recipe.json"
    text = json.dumps(recipe, indent=1, default=str)
    if resume_dir is not None and path.is_file() and resume_checkpoints(resume_dir):
        kept, asked = json.loads(path.read_text()), json.loads(text)
        # keys that only one side has: a run of an older version kept fewer
        changed = sorted(k for k in kept.keys() & asked.keys() if kept[k] != asked[k])
        if changed:
            described = "; ".join(f"{k} {kept[k]!r}, asked {asked[k]!r}" for k in changed)
            raise InputError(
                f"resumes a run trained with other settings ({described}): resume it with the run's own "
                "settings (its recipe.json), or give a new output_dir",
                output_dir,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


class FolderLock:
    """An exclusive lock on ``folder/.lock`` for the rest of this process (one per folder and process). The
    lock file lies in the run's folder, not with the command locks in ``$TMPDIR``: a requeued job may start on
    another node of a cluster, which sees the same folder but not this node's temporary folder."""

    _held: dict[Path, int] = {}

    @classmethod
    def acquire(cls, folder: Path) -> None:
        folder = folder.resolve()
        if folder in cls._held:
            return
        try:
            fd = lock_file_exclusively(folder / ".lock")
        except BlockingIOError:
            raise InputError("another training run is writing here; wait for it or give another output_dir",
                             folder) from None  # fmt: skip
        cls._held[folder] = fd


def _sync_to_disk(path: Path) -> None:
    """``path``'s bytes and its name in its folder written through to the disk (a crash of the machine may
    otherwise leave the renamed file empty)."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class GaplessDiskSaver(DiskSaver):
    """Ignite's atomic DiskSaver whose deletions wait until the next checkpoint is written, and which
    tolerates a file already deleted by hand."""

    def __init__(self, dirname: str | Path, **kwargs: Any) -> None:
        super().__init__(str(dirname), require_empty=False, atomic=True, **kwargs)
        self._pending: list[str] = []
        for stale in Path(dirname).glob("tmp*"):  # a write killed half-way (kill -9); the folder is locked
            if stale.is_file():
                stale.unlink(missing_ok=True)

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        written = Path(self.dirname) / filename
        if written.is_file():  # on disk before the previous one goes (only the saving rank wrote it)
            _sync_to_disk(written)
        while self._pending:
            stale = self._pending.pop()
            if stale != filename:  # a step saved again replaced its own file: that is the new one
                (Path(self.dirname) / stale).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        self._pending.append(filename)


class StopOnSignal:
    """On the first SIGINT or SIGTERM, ``engine.terminate()`` after the current iteration (the resume
    checkpoint is saved on ``Events.TERMINATE``); a second one stops at once. Installed only in the main
    thread of a single process: under torch.distributed the ranks would stop at different iterations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.caught: int | None = None
        self._previous: dict[int, Any] = {}
        self._at_epoch_end = False
        self._in_iteration = False
        self._tracking = False  # its event handlers, added once however many runs the engine makes

    def install(self, engine: Engine | None = None) -> None:
        if threading.current_thread() is not threading.main_thread() or torch.distributed.is_initialized():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        if self._tracking:
            return
        self._tracking = True
        # added when the run starts, so this runs after the epoch's validation and checkpoint
        self.engine.add_event_handler(Events.EPOCH_COMPLETED, self._stop_at_epoch_end)
        self.engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_edge, True)
        self.engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_edge, False)

    def _iteration_edge(self, engine: Engine, running: bool) -> None:
        self._in_iteration = running

    def restore(self, engine: Engine | None = None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.caught is not None:  # the second signal: stop now
            self.restore()
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.caught = signum
        name = signal.Signals(signum).name
        state = self.engine.state
        # Ignite's epochs end at multiples of epoch_length, also the first one after a mid-epoch resume
        if self._in_iteration and state.iteration % state.epoch_length == 0:
            # in the epoch's last iteration: stopped here, its validation and export would never run (a
            # resume starts after the epoch), so the stop waits for them
            self._at_epoch_end = True
            logger.warning("%s: stopping after this epoch's validation and checkpoint (again: at once)", name)
            return
        logger.warning("%s: stopping after this iteration and saving a checkpoint (again: at once)", name)
        self.engine.terminate(skip_completed=True)

    def _stop_at_epoch_end(self, engine: Engine) -> None:
        if self._at_epoch_end:
            self._at_epoch_end = False
            engine.terminate(skip_completed=True)


def shielded_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the bundles' DataLoaders: a worker ignores SIGINT / SIGTERM, which reach the
    whole process group (Ctrl-C, a scheduler's stop), so that the main process, which stops after the current
    iteration, still gets its batches and saves its checkpoint; then MONAI's per-worker seeding."""
    from monai.data.utils import worker_init_fn

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker_init_fn(worker_id)


def exit_if_interrupted(engine: Engine) -> None:
    """After ``engine.run()``: exit with 128 + the signal if :class:`StopOnSignal` stopped the run, so that a
    scheduler sees an interrupted job, not a finished one (the ``run`` list of each train.yaml)."""
    caught = getattr(engine, "stopped_by_signal", None)
    if caught is not None:
        raise SystemExit(128 + caught)
