"""Held-out evaluation of the clinical SR bundle: the pieces ``bundles/clinical_sr/configs/evaluate.yaml``
declares around the bundle's inference objects, run by two MONAI ``SupervisedEvaluator`` objects.

- preprocessing: :class:`SimulatedPair`, a held-out subject's sequences acquired with the weights' routine
  protocols and interpolated back onto its HR grid (:func:`~mtsr_monai.data.clinical.cached_pairs`), batched
  one pair at a time by :func:`one_pair`;
- inferer: the bundle's :class:`~mtsr_monai.inference.components.ClinicalSliceInferer` for the model, the
  interpolated input itself for the baselines;
- postprocessing: :func:`~mtsr_monai.inference.clinical.score_restoration` (brain-masked MAE, NMSE, PSNR,
  SSIM of :func:`~mtsr_monai.inference.clinical.volume_metrics`, as training's validation scores);
- metrics and handlers: :func:`mean_scores` (each score's mean over the pairs: training's validation metric,
  :func:`~mtsr_monai.inference.clinical.mean_score`), :class:`ScoreRows` (the per-pair rows),
  :class:`EvaluationStage` (the stage on the run's progress bar);
- :func:`heldout_summary`: what ``heldout.json`` holds.

:func:`require_subjects` refuses an empty set of held-out subjects, here and in the MT bundle's evaluation
(:mod:`~mtsr_monai.inference.translation_eval`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignite.engine import Engine, Events
from monai.transforms import Transform

from mtsr_monai.data.clinical import cached_pairs
from mtsr_monai.errors import InputError
from mtsr_monai.inference.clinical import mean_score
from mtsr_monai.progress import StageBar

if TYPE_CHECKING:
    from ignite.metrics import Average

__all__ = [
    "INTERPOLATION_KEY",
    "SCORES",
    "EvaluationStage",
    "ScoreRows",
    "SimulatedPair",
    "SimulatedPaird",
    "heldout_summary",
    "mean_scores",
    "one_pair",
    "require_subjects",
]

#: the scores of :func:`~mtsr_monai.inference.clinical.volume_metrics`, in heldout.json's order
SCORES = ("mae", "nmse", "psnr", "ssim")

#: the key of a record (and of its pair) naming the interpolation that brings the scans onto the HR grid
INTERPOLATION_KEY = "interpolation"


class SimulatedPair(Transform):
    """A held-out subject's record (``subject`` and its sequences' paths; the interpolation under
    :data:`INTERPOLATION_KEY`, default trilinear) -> its pair ``{"subject", "lr", "hr", "mask", "affine",
    "box"}`` and the interpolation: each sequence acquired with its routine protocol (``protocols``; None:
    the defaults), brought back onto the HR grid by ``pairing`` and the interpolation, scaled to [0, 1]
    (:func:`~mtsr_monai.data.clinical.cached_pairs`, stored in ``cache_dir`` when given).

    It maps the whole record, not ``keys`` of it: a plain transform, hence no ``d`` suffix."""

    def __init__(
        self,
        modalities: Sequence[str],
        protocols: Mapping[str, Any] | None = None,
        pairing: str = "header",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.modalities, self.protocols, self.pairing = list(modalities), protocols, pairing
        self.cache_dir = cache_dir

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        method = data.get(INTERPOLATION_KEY, "trilinear")
        # the record as the datalist has it: the cache key of the subject's pairs
        subject = {k: v for k, v in data.items() if k != INTERPOLATION_KEY}
        pairs = cached_pairs(
            [subject], self.cache_dir, self.modalities, self.protocols, self.pairing, method, progress=False
        )
        return {**pairs[0], INTERPOLATION_KEY: method}


#: the name before MONAI's naming (``d`` is for key-based dictionary transforms): bundle evaluate.yaml
#: files copied from clinical_sr before the rename still name it
SimulatedPaird = SimulatedPair


def one_pair(batch: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The DataLoader's ``collate_fn`` (batches of one): the pair itself, its arrays as they are (whole
    volumes of their own sizes, read by :func:`~mtsr_monai.inference.clinical.volume_pair_batch`)."""
    if len(batch) != 1:
        raise ValueError(f"the held-out pairs are evaluated one at a time, not {len(batch)}")
    return batch[0]


def mean_scores(method: str, interpolation: str | None = None) -> dict[str, Average]:
    """``{"<method>_<score>": mean}`` for each of :data:`SCORES`, ``mean`` the score's mean over the pairs (of
    ``interpolation`` only, when given) as training's validation takes it
    (:func:`~mtsr_monai.inference.clinical.mean_score`): an evaluator's metrics, PSNR first: its key metric
    (higher is better, as MONAI's "best metric" log line assumes)."""

    def counts(pair: Mapping[str, Any]) -> bool:
        return interpolation is None or pair.get(INTERPOLATION_KEY) == interpolation

    order = ("psnr", *[score for score in SCORES if score != "psnr"])
    return {f"{method}_{score}": mean_score(score, counts) for score in order}


def require_subjects(
    subjects: Sequence[Mapping[str, Any]], which: str, datalist: str | os.PathLike | None = None
) -> None:
    """:class:`~mtsr_monai.errors.InputError` naming ``datalist`` (when given) and ``which`` of its subjects
    when ``subjects``, the held-out subjects to evaluate, is empty: an evaluator skips an empty run, so
    nothing would say why no report was written."""
    if not subjects:
        raise InputError(f"no held-out subject to evaluate in {which}", datalist)


class ScoreRows:
    """Evaluator handler: per pair, heldout.json's row ``{"subject", "method", **scores}``; ``method``: the
    name of what is evaluated (None: the pair's interpolation, for the baselines)."""

    def __init__(self, method: str | None = None) -> None:
        self.method = method
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)

    def reset(self, engine: Engine) -> None:
        self.rows = []

    def record(self, engine: Engine) -> None:
        pair, scores = engine.state.output["label"], engine.state.output["scores"]
        method = self.method or pair[INTERPOLATION_KEY]
        self.rows.append({"subject": pair["subject"], "method": method, **scores})


class EvaluationStage:
    """Evaluator handler: names ``stage`` on the run's :class:`~mtsr_monai.progress.StageBar` when the
    evaluator starts (its own bar over the pairs is Ignite's ``ProgressBar``)."""

    def __init__(self, stages: StageBar, stage: str) -> None:
        self.stages, self.stage = stages, stage

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.show)

    def show(self, engine: Engine) -> None:
        self.stages.next(self.stage)


def heldout_summary(
    subjects: Sequence[Mapping[str, Any]],
    pairing: str,
    methods: Sequence[str],
    scores: Mapping[str, float],
    model_rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """heldout.json: the subjects, the pairing, the means (``scores``: the evaluators' metrics of
    :func:`mean_scores`) of the model and of each of ``methods``, and the per-pair ``rows`` in the order of
    the earlier reports: each trilinear row followed by the model's row of the same pair (the model restores
    the trilinear pairs, subject by subject in the same order), then the other interpolations' rows.
    The run refuses an empty ``subjects`` first (:func:`require_subjects`)."""
    summary: dict[str, Any] = {"subjects": [str(s.get("subject")) for s in subjects], "pairing": pairing}
    for method in ("model", *methods):
        summary[method] = {score: scores[f"{method}_{score}"] for score in SCORES}
    model = iter(model_rows)
    rows: list[Mapping[str, Any]] = []
    for row in baseline_rows:
        rows.append(row)
        if row["method"] == "trilinear":
            rows.append(next(model))
    summary["rows"] = rows
    return summary
