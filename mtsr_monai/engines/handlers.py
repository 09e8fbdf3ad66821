"""Ignite handlers shared by the training engines: resume checkpoints, TensorBoard image grids and a
generator moving average updated in a few kernels."""

from __future__ import annotations

import bisect
import json
import logging
import math
import pickle
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from monai.engines.utils import PrepareBatch

from mtsr_monai.engines.run_safety import (
    FolderLock,
    GaplessDiskSaver,
    StopOnSignal,
    resume_checkpoints,
)
from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text

logger = logging.getLogger(__name__)


class PrepareBatchPair(PrepareBatch):
    """Return ``(batch[input_key], batch[target_key])`` on the device, for trainers and evaluators."""

    def __init__(self, input_key: str = "lr", target_key: str = "hr") -> None:
        self.input_key, self.target_key = input_key, target_key

    def __call__(self, batchdata: Mapping[str, Any], device=None, non_blocking: bool = False, **kwargs):
        def move(x):
            return x.to(device=device, non_blocking=non_blocking, **kwargs) if torch.is_tensor(x) else x

        return move(batchdata[self.input_key]), move(batchdata[self.target_key])


class BestScores:
    """The best validation scores of best-model trackers as one object with ``state_dict`` /
    ``load_state_dict``, so that a resume checkpoint carries them (``ResumeCheckpoint(best=...)``).

    Without it a resumed run starts tracking from scratch and its first validation, however bad,
    replaces the best model. Trackers understood:

    - MONAI ``CheckpointSaver(save_key_metric=True)``: Ignite's list of (score, file) of its best model
      (entries whose file has gone are dropped, so a missing file is not deleted again);
    - MONAI workflows (an evaluator): ``state.best_metric`` and ``state.best_metric_epoch``;
    - any object with a numeric ``best`` attribute.

    A checkpoint written before the trackers changed still loads: an entry that does not fit its tracker
    gives way to the first saved entry that does, and the ``best`` of a former validation handler becomes
    an evaluator's best metric (so its export is not replaced by a worse epoch either).
    """

    def __init__(self, trackers: Sequence[Any]) -> None:
        self.trackers = list(trackers)
        for tracker in self.trackers:
            self._state(tracker)  # refuse an unknown tracker now, not at the first save

    @staticmethod
    def _state(tracker: Any) -> dict[str, Any]:
        saver = getattr(tracker, "_key_metric_checkpoint", None)
        if saver is not None:  # plain floats and str: resume checkpoints are read with weights_only=True
            items = saver.state_dict().items()
            return {"key_metric_checkpoint": {k: [(float(p), str(f)) for p, f in v] for k, v in items}}
        if _is_workflow(tracker):
            epoch = int(tracker.state.best_metric_epoch)
            return {"best_metric": float(tracker.state.best_metric), "best_metric_epoch": epoch}
        if hasattr(tracker, "best"):
            return {"best": float(tracker.best)}
        raise TypeError(f"{type(tracker).__name__} keeps no best score that BestScores knows how to save")

    @staticmethod
    def _load(tracker: Any, state: Mapping[str, Any]) -> None:
        if "key_metric_checkpoint" in state:
            saver = tracker._key_metric_checkpoint
            folder = Path(getattr(saver.save_handler, "dirname", "."))
            fixed = getattr(saver.save_handler, "filename", None)  # MONAI's key_metric_filename (model.pt)
            kept = {
                key: [(p, f) for p, f in items if (folder / (fixed or f)).is_file()]
                for key, items in state["key_metric_checkpoint"].items()
            }
            saver.load_state_dict(kept)
        elif _is_workflow(tracker):  # a former handler's best: epoch 0, so the next one must beat it
            tracker.state.best_metric = state.get("best_metric", state.get("best"))
            tracker.state.best_metric_epoch = state.get("best_metric_epoch", 0)
        else:
            tracker.best = state["best"]

    @classmethod
    def _fits(cls, tracker: Any, state: Mapping[str, Any]) -> bool:
        kind = next(iter(cls._state(tracker)))
        return kind in state or (kind == "best_metric" and "best" in state)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): self._state(t) for i, t in enumerate(self.trackers)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        for i, tracker in enumerate(self.trackers):
            candidates = [state_dict[str(i)]] if str(i) in state_dict else []
            candidates += [state_dict[k] for k in sorted(state_dict, key=int) if k != str(i)]
            state = next((c for c in candidates if self._fits(tracker, c)), None)
            if state is not None:
                self._load(tracker, state)


#: what torch.load raises on a truncated or damaged file, depending on where it was cut
DAMAGED_FILE_ERRORS = (
    EOFError, OSError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
)  # fmt: skip


def read_newest_checkpoint(directory: str | Path) -> tuple[Path, dict] | None:
    """The newest resume checkpoint in ``directory`` that can be read, with its path (None where there is
    none); one left damaged (a machine that crashed while writing it), or no checkpoint at all (a bare
    state dict under its name), is passed over, with a warning, for the one before. InputError when none
    of them can be read: starting afresh would forget the best scores and let a worse model be exported."""
    found = resume_checkpoints(directory)
    for _, path in reversed(found):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        # a permission error is no damage: resuming from an older checkpoint would be wrong
        except PermissionError:
            raise
        except DAMAGED_FILE_ERRORS as err:
            logger.warning("%s cannot be read (%s): resuming from the checkpoint before it", path, err)
            continue
        if isinstance(state, dict) and "trainer" in state:
            return path, state
        logger.warning("%s holds no trainer state: resuming from the checkpoint before it", path)
    if found:
        raise InputError("no resume checkpoint here can be read; move them away to start afresh", directory)
    return None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest resume checkpoint in ``directory`` (highest iteration, not latest written), else None."""
    found = resume_checkpoints(directory)
    return found[-1][1] if found else None


def _is_workflow(tracker: Any) -> bool:
    return hasattr(getattr(tracker, "state", None), "best_metric")


def reseed_after_resume(engine: Engine) -> int:
    """Seed a resumed run's random streams (torch, numpy, Python, its data loader's dataset) from the run's
    seed and the iteration it resumes at: seeded as at its start, it would draw again the samples, crops,
    degradations and latent codes it began with. Returns the seed (a pure function of the two)."""
    import random

    from monai.data.utils import set_rnd

    seed = (torch.initial_seed() + 1_000_003 * int(engine.state.iteration)) % 2**32
    # not monai's set_determinism: it would also switch cuDNN back to deterministic (device_train.fast_cuda)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    dataset = getattr(engine.state.dataloader, "dataset", None)
    if dataset is not None:  # without workers MONAI seeded it once, when the loader was built
        set_rnd(dataset, seed)
    return seed


class ResumeCheckpoint:
    """Save everything needed to resume every ``every_n_iterations`` and at each epoch; reload on start.

    ``objects`` maps names to objects with ``state_dict`` / ``load_state_dict`` (networks, optimizers,
    schedulers, GradScaler, the trainer itself). ``best`` lists best-model trackers whose best score is
    saved too (see :class:`BestScores`), so a resumed run never replaces the best model by a worse one.
    Also saved on completion and on ``terminate()``, which the first Ctrl-C or SIGTERM calls after the
    current iteration (:class:`StopOnSignal`). Files are ``checkpoint_<iteration>.pt`` in ``directory``,
    written atomically, the old one deleted only after the new one is written (:class:`GaplessDiskSaver`);
    the ``n_saved`` newest are kept, those of the runs before a resume included; one process at a time
    may write there (:class:`FolderLock`). On ``Events.STARTED`` the newest is loaded, so running the same
    command again after a crash (even ``kill -9``) continues from there, with the run's own
    ``max_epochs`` kept (MONAI #1757: a loaded trainer state would otherwise impose the old budget), also
    where an earlier call asked for fewer epochs than were done.
    """

    def __init__(
        self,
        directory: str | Path,
        objects: Mapping[str, Any],
        every_n_iterations: int = 100,
        n_saved: int = 2,
        resume: bool = True,
        save_on_rank0_only: bool = True,
        best: Sequence[Any] = (),
    ) -> None:
        self.directory = Path(directory)
        self.objects = dict(objects)
        if best:
            self.objects["best_scores"] = BestScores(best)
        self.every_n_iterations = int(every_n_iterations)
        self.n_saved = n_saved
        self.resume = resume
        self.save_on_rank0_only = save_on_rank0_only
        self._saved_iteration = -1

    def _existing(self) -> list[tuple[int, Path]]:
        return resume_checkpoints(self.directory)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.directory)

    def _adopt_existing(self, checkpoint) -> None:
        """Hand the files of earlier runs to Ignite's retention (it only knows what it saved itself):
        the ``n_saved`` newest join its list, older ones go now."""
        found = self._existing()
        keep = found if self.n_saved is None else found[-self.n_saved :]
        for _, path in found[: len(found) - len(keep)]:
            path.unlink(missing_ok=True)
        key = next(iter(checkpoint.state_dict()))  # "_saved" (Ignite >= 0.5) or "saved"
        checkpoint.load_state_dict({key: [(it, path.name) for it, path in keep]})

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import Checkpoint

        objects = {"trainer": engine, **self.objects}
        rank = 0
        if torch.distributed.is_initialized():
            import ignite.distributed as idist

            # Ignite's Checkpoint reads the rank through idist, whose first use is collective:
            # call it on every rank here, or rank 0 alone would wait for the others forever
            idist.sync()
            rank = torch.distributed.get_rank()
        stop = StopOnSignal(engine)
        handlers = []
        if rank == 0 or not self.save_on_rank0_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            FolderLock.acquire(self.directory)
            checkpoint = Checkpoint(
                objects,
                GaplessDiskSaver(self.directory),
                filename_prefix="",
                n_saved=self.n_saved,
                global_step_transform=lambda eng, _: eng.state.iteration,
                filename_pattern="checkpoint_{global_step}.pt",
                greater_or_equal=True,  # an epoch ended early re-saves its step after its validation
            )
            if self.resume:
                self._adopt_existing(checkpoint)
            every = Events.ITERATION_COMPLETED(every=self.every_n_iterations)
            # also on completion and on terminate (a time budget stop, Ctrl-C), so no iteration is lost
            events = every | Events.EPOCH_COMPLETED | Events.COMPLETED | Events.TERMINATE
            handlers.append((events, self._save_function(checkpoint)))
        handlers.append((Events.TERMINATE | Events.COMPLETED, self._after_run_function(stop)))
        # registered when the run starts, after every other handler, so that an epoch's checkpoint
        # holds what that epoch's validation changed (the best scores)
        engine.add_event_handler(Events.STARTED, self._register_once(handlers))
        engine.add_event_handler(Events.STARTED, stop.install)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._load, objects)

    @staticmethod
    def _register_once(handlers: Sequence[tuple[Any, Callable[[Engine], None]]]) -> Callable[[Engine], None]:
        done = []

        def register(engine: Engine) -> None:
            if not done:
                done.append(True)
                for events, handler in handlers:
                    engine.add_event_handler(events, handler)

        return register

    def _save_function(self, checkpoint) -> Callable[[Engine], None]:
        def save(engine: Engine) -> None:
            state = engine.state
            epoch_end = bool(state.epoch_length) and state.iteration % state.epoch_length == 0
            if engine.last_event_name == Events.ITERATION_COMPLETED and epoch_end:
                return  # the epoch's own save follows, after the epoch's validation (best scores)
            # an epoch's end always saves: an epoch ended early at a checkpoint_every step saved that step
            # before its validation, whose new best scores must be in the checkpoint too
            epoch_save = engine.last_event_name == Events.EPOCH_COMPLETED
            if state.iteration != self._saved_iteration or epoch_save:  # completion, terminate: once
                self._saved_iteration = state.iteration
                checkpoint(engine)

        return save

    @staticmethod
    def _after_run_function(stop: StopOnSignal) -> Callable[[Engine], None]:
        def after_run(engine: Engine) -> None:
            stop.restore()
            engine.stopped_by_signal = stop.caught  # read by exit_if_interrupted
            if stop.caught is not None:
                logger.warning("stopped at iteration %d; the same command resumes", engine.state.iteration)

        return after_run

    def _read_newest(self) -> tuple[Path, dict] | None:
        return read_newest_checkpoint(self.directory)

    def _load(self, engine: Engine, objects: Mapping[str, Any]) -> None:
        from ignite.handlers import Checkpoint

        newest = self._read_newest()
        if newest is None:
            return
        path, state = newest
        max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
        missing = [k for k in objects if k not in state]
        if missing:  # a checkpoint of an older version (before best scores were saved)
            logger.warning("%s has no %s: those start afresh", path, ", ".join(missing))
        saved = state.get("trainer", {})
        if saved.get("epoch_length") and saved.get("iteration") is not None:
            # a run once asked for fewer epochs than it had done stored that; Ignite refuses to load it
            done = saved["iteration"] // saved["epoch_length"]
            saved["max_epochs"] = max(saved.get("max_epochs") or 0, done)
        to_load = _loadable(objects, state)
        configured, milestones = _initial_learning_rates(objects), _milestones(objects)
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=state)
        except RuntimeError as err:
            detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))[:200]
            raise InputError(
                f"does not fit this run's networks ({detail}); resume it with the settings it was trained "
                "with, or give a new output_dir",
                path,
            ) from None
        engine.state.max_epochs = max_epochs
        _keep_configured_learning_rates(objects, configured)
        _keep_configured_milestones(objects, milestones)
        self._saved_iteration = engine.state.iteration  # nothing new to save until an iteration runs
        reseed_after_resume(engine)
        logger.info(
            "resumed from %s at iteration %d (epoch %d)", path, engine.state.iteration, engine.state.epoch
        )
        if epoch_length and engine.state.epoch_length != epoch_length:
            logger.warning("epoch_length %d ignored: the run keeps its checkpoint's %d (a new output_dir "
                           "starts afresh)", epoch_length, engine.state.epoch_length)  # fmt: skip
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            logger.warning("%s is at epoch %d, max_epochs is %d: nothing to train (raise max_epochs to "
                           "continue)", path.name, engine.state.epoch, max_epochs)  # fmt: skip


def _initial_learning_rates(objects: Mapping[str, Any]) -> dict[str, list[float]]:
    """Each optimizer's learning rates as this run configured them (before a checkpoint replaces them)."""
    return {
        name: [group.get("initial_lr", group["lr"]) for group in obj.param_groups]
        for name, obj in objects.items()
        if isinstance(obj, torch.optim.Optimizer)
    }


def _keep_configured_learning_rates(
    objects: Mapping[str, Any], configured: Mapping[str, list[float]]
) -> None:
    """A resumed run trains at the learning rate it is given: loading an optimizer and its scheduler brings
    back the rates of the run's start, which silently overrode a lowered ``learning_rate``. The schedule's
    progress is kept (a rate halved at a milestone stays halved, relative to the new start)."""
    for name, rates in configured.items():
        optimizer = objects[name]
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            start = group.get("initial_lr", group["lr"])
            if math.isclose(start, rate, rel_tol=1e-9):
                continue
            logger.warning(
                "%s: learning rate %g from now on (the checkpoint's run started at %g)", name, rate, start
            )
            group["lr"] = rate * group["lr"] / start
            if "initial_lr" in group:
                group["initial_lr"] = rate
    for obj in objects.values():  # schedulers recompute from base_lrs (MultiStepLR keeps the current ones)
        if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
            obj.base_lrs = [group.get("initial_lr", group["lr"]) for group in obj.optimizer.param_groups]
            obj._last_lr = [group["lr"] for group in obj.optimizer.param_groups]


def _milestones(objects: Mapping[str, Any]) -> dict[str, tuple[list[int], float]]:
    """Each MultiStepLR's milestones and gamma as this run configured them."""
    return {
        name: (sorted(obj.milestones.elements()), obj.gamma)
        for name, obj in objects.items()
        if isinstance(obj, torch.optim.lr_scheduler.MultiStepLR)
    }


def _keep_configured_milestones(
    objects: Mapping[str, Any], configured: Mapping[str, tuple[list[int], float]]
) -> None:
    """A resumed run follows the schedule it is given (a checkpoint's scheduler brought back the milestones
    of the run's start): the rate becomes the new schedule's at this step, from the start rate."""
    for name, (milestones, gamma) in configured.items():
        scheduler = objects[name]
        before = sorted(scheduler.milestones.elements())
        if (before, scheduler.gamma) == (milestones, gamma):
            continue
        logger.warning("%s: milestones %s, gamma %g from now on (the checkpoint's run had %s, %g)", name,
                       milestones, gamma, before, scheduler.gamma)  # fmt: skip
        scheduler.milestones, scheduler.gamma = Counter(milestones), gamma
        passed = bisect.bisect_right(milestones, scheduler.last_epoch)
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * gamma**passed
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _loadable(objects: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """The objects the checkpoint has a state for. A GradScaler saved disabled (a run begun on a CPU, or in
    bf16) stored nothing: one that scales now (fp16 on CUDA) keeps its fresh scale rather than failing."""
    return {
        k: v
        for k, v in objects.items()
        if k in state and not (isinstance(v, torch.amp.GradScaler) and not state[k])
    }


class ImageGridHandler:
    """Write a TensorBoard image grid every ``every_n_iterations`` from ``engine.state.output``.

    ``images_fn(output) -> dict[name, tensor (B, 1, H, W)]``: the panels, shown side by side for
    the first ``max_rows`` items of the batch, each scaled to [0, 1] over the whole grid.
    """

    def __init__(
        self,
        log_dir: str | Path,
        images_fn: Callable[[Any], Mapping[str, torch.Tensor]],
        every_n_iterations: int = 100,
        max_rows: int = 4,
        tag: str = "train/images",
    ) -> None:
        self.log_dir, self.images_fn = str(log_dir), images_fn
        self.every_n_iterations, self.max_rows, self.tag = every_n_iterations, max_rows, tag
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
        # not on EXCEPTION_RAISED: a handler there makes Ignite swallow the exception
        engine.add_event_handler(Events.COMPLETED, self.close)

    def close(self, engine: Engine | None = None) -> None:
        """Close the event file when the run ends (also after ``terminate()``), as MONAI's TensorBoard
        handlers do; a later grid opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(self.log_dir)
        grid = image_grid(self.images_fn(engine.state.output), self.max_rows)
        self._writer.add_image(self.tag, grid, engine.state.iteration)
        self._writer.flush()


def image_grid(panels: Mapping[str, torch.Tensor], max_rows: int = 4) -> torch.Tensor:
    """Panels (B,1,H,W each, possibly of different sizes) -> one (1, rows*H, cols*W) grid in [0, 1].

    Smaller panels (an LR input) are upsampled by nearest neighbour to the largest size, so each
    row compares the same item across panels.
    """
    import torch.nn.functional as F

    tensors = [p.detach().float().cpu()[:max_rows, :1] for p in panels.values()]
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    tensors = [F.interpolate(t, size=(height, width), mode="nearest") for t in tensors]
    rows = torch.cat(tensors, dim=-1)  # B,1,H,cols*W
    grid = torch.cat(list(rows), dim=-2)  # 1, B*H, cols*W
    low, high = grid.min(), grid.max()
    return (grid - low) / (high - low + 1e-8)


class ForeachEMAHandler(EMAHandler):
    """Ignite's ``EMAHandler`` with the parameter update as one multi-tensor lerp.

    Ignite updates each of the 372 tensors of the 12-block RRDB with two kernels; on a GPU, where an SR step
    is bound by launches, that alone is about a fifth of a step's kernels. ``ema += momentum * (p - ema)`` is
    the same update. Buffers are treated as Ignite treats them: copied, or averaged where they are floating.
    """

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        momentum = getattr(engine.state, name)
        with torch.no_grad():
            ema_params, params = list(self.ema_model.parameters()), list(self.model.parameters())
            torch._foreach_lerp_(ema_params, params, momentum)
            if self.handle_buffers == "ema_train":  # the EMA model keeps its own buffers
                return
            for ema_b, model_b in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
                if self.handle_buffers == "update" and ema_b.is_floating_point():
                    ema_b.lerp_(model_b, momentum)
                else:
                    ema_b.copy_(model_b)


class WallClockStop:
    """Trainer handler: stop by a wall-clock deadline without losing the last stretch of training.

    The deadline is ``end_at`` (``time.time()`` seconds; the GPU job's), or ``minutes`` after the run starts
    (``train.yaml``'s ``max_minutes``; the data is cached by then); neither (or ``minutes <= 0``): none.
    Attached after the bundle's own handlers, so at an epoch's end the bundle has validated (and exported a
    better model) and saved before this decides. An epoch is ended early (``terminate_epoch``: validation
    and checkpoints still run) when ``val_every_s`` have passed or the time left only holds one more
    validation; the run ends (``terminate``) at the first epoch end that leaves no room for another. A
    validation's cost is measured at each epoch end (``val_estimate_s`` before the first); ``margin_s`` is
    kept free besides. ``reserve_validation=False`` (``max_minutes``): the deadline ends the training, the
    last validation runs after it (no time is held back for it). With a ``report`` path, progress goes
    there (JSON) at every epoch end, with the share of training time spent waiting for batches
    (``data_wait_share``: near 1, the data loader limits the run).
    """

    def __init__(
        self,
        end_at: float | None = None,
        val_every_s: float = math.inf,
        report: str | None = None,
        val_estimate_s: float = 20.0,
        margin_s: float = 10.0,
        minutes: float = 0.0,
        reserve_validation: bool = True,
    ) -> None:
        self.end_at, self.minutes, self.reserve = end_at, float(minutes), bool(reserve_validation)
        self.val_every_s, self.report = float(val_every_s), Path(report) if report else None
        self.val_cost, self.margin = float(val_estimate_s), float(margin_s)
        self.train_s, self.epoch_start, self.last_iter, self.first_iteration = 0.0, 0.0, 0.0, None
        self.stop_reason = "max_epochs"
        self.data_wait_s, self.wait_start = 0.0, 0.0

    def attach(self, engine: Engine) -> None:
        if self.end_at is None and self.minutes <= 0:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._write)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_asked)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_received)

    def _started(self, engine: Engine) -> None:
        if self.minutes > 0:
            self.end_at = time.time() + 60.0 * self.minutes

    def _batch_asked(self, engine: Engine) -> None:
        self.wait_start = time.time()

    def _batch_received(self, engine: Engine) -> None:
        self.data_wait_s += time.time() - self.wait_start

    def _epoch_started(self, engine: Engine) -> None:
        self.epoch_start = self.last_iter = time.time()
        if self.first_iteration is None:
            self.first_iteration = int(engine.state.iteration)

    def _iteration(self, engine: Engine) -> None:
        now = self.last_iter = time.time()
        late = now + (1.5 * self.val_cost + self.margin / 2 if self.reserve else 0.0) >= self.end_at
        if late or now - self.epoch_start >= self.val_every_s:
            if late and self.stop_reason != "time":
                self.stop_reason = "time"
                logging.getLogger(__name__).info(
                    "wall-clock deadline near at iteration %d: validating, then stopping",
                    engine.state.iteration,
                )
            engine.terminate_epoch()

    def _epoch_completed(self, engine: Engine) -> None:
        now = time.time()
        self.train_s += self.last_iter - self.epoch_start
        self.val_cost = now - self.last_iter  # validation + checkpoints of this epoch end
        self._write(engine)
        room = 2.5 * self.val_cost + self.margin if self.reserve else 0.0
        if self.stop_reason == "time" or now + room >= self.end_at:
            self.stop_reason = "time"
            engine.terminate()

    def _write(self, engine: Engine) -> None:
        if self.report is None:
            return
        iterations = int(engine.state.iteration) - (self.first_iteration or 0)
        per_second = round(iterations / self.train_s, 3) if self.train_s > 0 else None
        wait_share = round(min(self.data_wait_s / self.train_s, 1.0), 3) if self.train_s > 0 else None
        info = {
            "iterations": iterations,
            "epochs": int(engine.state.epoch),
            "train_seconds": round(self.train_s, 2),
            "iterations_per_second": per_second,
            "last_validation_seconds": round(self.val_cost, 2),
            "data_wait_share": wait_share,
            "stop_reason": self.stop_reason,
        }
        atomic_write_text(self.report, json.dumps(info, indent=1))
