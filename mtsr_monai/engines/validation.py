"""The one validation path of every model family: a MONAI ``SupervisedEvaluator`` run by a
``ValidationHandler`` on the trainer, and :class:`ExportOnBest` writing the network whenever the
evaluator's key metric improves.

Each family supplies its pieces to the evaluator (see the bundles' ``train.yaml``, ``validate`` section):

- super-resolution (``mtsr_sr``): a ``SimpleInferer`` over degraded slices, brain PSNR as the key metric;
- translation (``mtsr_mt``): :class:`~mtsr_monai.engines.bicyclegan.LatentCodeInferer` (``G(A, z=0)`` and
  random-code samples), PSNR / SSIM and the samples' L1 (a diversity monitor);
- clinical (``clinical_sr``): whole volumes restored slice-wise
  (:class:`~mtsr_monai.inference.components.ClinicalSliceInferer`), brain-masked volume metrics.

The best score is the evaluator's own (``state.best_metric``), which ``ResumeCheckpoint(best=[evaluator])``
carries across resumes: a resumed run never replaces an export by a worse epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from mtsr_monai.io import atomic_output

__all__ = ["ExportOnBest", "first_items", "save_state_dict", "validation_summary"]

Writer = Callable[[torch.nn.Module, "str | os.PathLike", Mapping[str, Any]], Any]


def save_state_dict(
    network: torch.nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] = (), key: str | None = None
) -> Path:
    """Write ``network``'s state dict (fp32, as trained) to ``path`` atomically: alone (``meta`` not stored),
    or with ``key`` as ``{key: state dict, **meta}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state if key is None else {key: state, **dict(meta)}, tmp)
    return path


def validation_summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of an evaluator, named without their ``val_`` prefix (``val_psnr`` -> ``psnr``)."""
    summary = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            summary[name.removeprefix("val_")] = float(value)
    return summary


def metrics_printer(label: str) -> Callable[[Engine], None]:
    """A MONAI ``StatsHandler(epoch_print_logger=...)`` that names what was validated: CycleGAN validates
    both directions, whose lines were alike (``Epoch[1] Metrics -- val_psnr: ...`` twice)."""

    def print_metrics(engine: Engine) -> None:
        scores = " ".join(f"{k}: {v:.4f}" for k, v in validation_summary(engine.state.metrics).items())
        logging.getLogger("mtsr_monai.validation").info("validation %s -- %s", label, scores)

    return print_metrics


def first_items(dataset: Sequence, count: int) -> torch.utils.data.Subset:
    """The first ``count`` items of ``dataset`` (all of them if it has fewer): a validation budget that
    stays the same set of items under a ``DistributedSampler``."""
    return torch.utils.data.Subset(dataset, range(min(len(dataset), int(count))))


def _is_rank_zero() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


class ExportOnBest:
    """Evaluator handler: write ``network`` to ``path`` with ``write(network, path, meta)`` whenever the
    evaluator's key metric reaches a new best (MONAI's ``state.best_metric``; rank 0 writes).

    ``meta`` (e.g. the network's arguments) is extended by ``validation`` (the evaluator's metrics, see
    :func:`validation_summary`) and, once :meth:`follow` has named the trainer, ``iterations``. The default
    writer keeps a plain fp32 state dict (:func:`save_state_dict`)."""

    def __init__(
        self,
        network: torch.nn.Module,
        path: str | os.PathLike,
        write: Writer | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.network, self.path = network, Path(path)
        self.write = write or save_state_dict
        self.meta = dict(meta or {})
        self.trainer: Engine | None = None
        self._best_before: tuple[float, int] | None = None

    def follow(self, trainer: Engine) -> None:
        """Name the trainer whose iteration count goes into the metadata (a bundle's ``initialize`` calls
        this: the trainer holds the evaluator through its ``ValidationHandler``: a reference would loop)."""
        self.trainer = trainer

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.EPOCH_STARTED, self._remember_best)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _remember_best(self, evaluator: Engine) -> None:
        self._best_before = (evaluator.state.best_metric, evaluator.state.best_metric_epoch)

    def __call__(self, evaluator: Engine) -> None:
        best = (evaluator.state.best_metric, evaluator.state.best_metric_epoch)
        if best == self._best_before or not _is_rank_zero():
            return
        meta = dict(self.meta)
        if self.trainer is not None:
            meta["iterations"] = int(self.trainer.state.iteration)
        meta["validation"] = validation_summary(evaluator.state.metrics)
        self.write(self.network, self.path, meta)
