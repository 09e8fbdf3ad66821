"""Appendix-C evaluation of a translation model on held-out subjects: realism and diversity of its samples.

The pieces ``bundles/mtsr_mt/configs/evaluate.yaml`` declares, run by a MONAI ``SupervisedEvaluator``:

- preprocessing: :class:`LoadSubjectd` (both volumes scaled to [0, 1] by robust percentiles, as
  :func:`~mtsr_monai.data.slices.load_subject` does) and :class:`EvaluationSlicesd` (evenly spaced axial
  slices among those with the most brain, the source masked to the target's brain);
- inferer: :class:`TranslationSamplesInferer` (seeded latent codes, the generator at its training size);
- postprocessing: :class:`ZeroOutsideInputd` and :class:`RestoreTargetScalingd`;
- handler: :class:`TranslationMetricsWriter`, the measures of
  :func:`~mtsr_monai.metrics.perceptual.sample_measures` per subject, their mean, and the JSON report.

:func:`evaluate_translation` runs that config from Python.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform, MaskIntensityd

from mtsr_monai.data.slices import load_subject, spaced_brain_slices
from mtsr_monai.inference.bundle import bundle_parser
from mtsr_monai.inference.heldout import require_subjects
from mtsr_monai.inference.translate import bundle_dir, latent_codes, restore_target_scaling, translate_slices
from mtsr_monai.io import atomic_write_text
from mtsr_monai.io.geometry import AxisOrder, resolve_axis
from mtsr_monai.metrics.perceptual import sample_measures

__all__ = [
    "EvaluationSlicesd",
    "LoadSubjectd",
    "RestoreTargetScalingd",
    "TranslationMetricsWriter",
    "TranslationSamplesInferer",
    "ZeroOutsideInputd",
    "evaluate_translation",
]


# ------------------------------------------------------------------------------------------ preprocessing
class LoadSubjectd(MapTransform):
    """A datalist record -> its ``keys`` volumes as ``(1, X, Y, Z)`` tensors scaled to [0, 1] by robust
    percentiles (:func:`~mtsr_monai.data.slices.load_subject`, no brain mask) and ``affine``."""

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        d.update(load_subject(data, list(self.keys), mask_key=None))
        return d


class EvaluationSlicesd(MapTransform):
    """``slices_per_volume`` evenly spaced axial slices among those whose ``label_key`` brain covers at least
    half the largest brain area -> ``image`` (the ``image_key`` slices, zero outside the target's brain, so
    both show the same region), ``label`` (the target slices), ``slices`` (their indices) and ``subject``.
    Nothing else of the record is kept: the batch holds only what the evaluator uses."""

    def __init__(
        self, image_key: str, label_key: str, slices_per_volume: int = 8, axis: str = "axial"
    ) -> None:
        super().__init__([image_key, label_key])
        self.image_key, self.label_key = image_key, label_key
        self.slices_per_volume, self.axis = int(slices_per_volume), axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        affine = np.asarray(data["affine"], dtype=np.float64)
        # in the training array order, as mtsr translate cuts them: the generators are not flip-invariant
        order, stored_axis = AxisOrder(affine), resolve_axis(affine, self.axis)
        axis = order.axis(stored_axis)

        def reordered(key: str) -> torch.Tensor:
            volume = np.asarray(data[key][0].detach().cpu(), dtype=np.float32)
            return torch.from_numpy(order.apply(volume)).movedim(axis, 0)

        source, target = reordered(self.image_key), reordered(self.label_key)
        picks = spaced_brain_slices(target, self.slices_per_volume)
        chosen = target[picks]
        # the picks as indices of the stored volume's slices (reordering may have flipped them)
        shape = [target.shape[0] if k == stored_axis else 1 for k in range(3)]
        stored = order.apply(np.arange(target.shape[0]).reshape(shape)).reshape(-1)
        # a batch cannot carry None: a record without an id gets load_subject's placeholder
        subject = data.get("subject")
        return {
            "image": torch.where(chosen > 0, source[picks], torch.zeros(())),
            "label": chosen,
            "slices": torch.as_tensor(stored[np.asarray(picks)]),
            "subject": "?" if subject is None else subject,
        }


# ------------------------------------------------------------------------------------------------ inferer
class TranslationSamplesInferer(Inferer):
    """``(B, S, H, W)`` source slices in [0, 1] -> ``(B, N, S, H, W)`` translations, one per latent code of
    :func:`~mtsr_monai.inference.translate.latent_codes` (``samples`` draws seeded by ``seed``, from
    ``code_prior`` when the weights' meta has one), by
    :func:`~mtsr_monai.inference.translate.translate_slices` at ``image_size`` (``native_resolution``:
    padded, never resized). Every subject gets the same codes."""

    def __init__(
        self,
        image_size: int,
        nz: int,
        samples: int = 5,
        seed: int | None = 0,
        code_prior: Mapping[str, Sequence[float]] | None = None,
        native_resolution: bool = False,
    ) -> None:
        super().__init__()
        self.image_size, self.native_resolution = int(image_size), bool(native_resolution)
        self.codes = torch.from_numpy(latent_codes(samples, int(nz), seed, code_prior))

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.stack(
            [
                translate_slices(
                    network, slices, self.codes, self.image_size, native_resolution=self.native_resolution
                )
                for slices in inputs
            ]
        )


# ----------------------------------------------------------------------------------------- postprocessing
class ZeroOutsideInputd(MaskIntensityd):
    """Each key's ``(N, S, H, W)`` samples set to 0 where ``ref_key`` (the ``(S, H, W)`` input) is
    background: the generator paints something everywhere, the truth is 0 outside the brain. MONAI's
    ``MaskIntensityd`` with the input as its mask, given a leading axis of 1: a single-channel mask, which
    MONAI applies to each of the N samples (the input's own leading axis, its S slices, would be taken for
    S channels)."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image") -> None:
        super().__init__(keys, mask_key=ref_key)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        mask = d[self.ref_key][None]
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], mask)
        return d


class RestoreTargetScalingd(MapTransform):
    """Each key's samples back to the robust convention of the truth
    (:func:`~mtsr_monai.inference.translate.restore_target_scaling`; ``target_scaling`` and ``target_level``
    are the weights' meta keys). A median-scaled model's own 99.5 % level is read over the evaluated slices,
    not the whole volume."""

    def __init__(
        self, keys: KeysCollection, target_scaling: str = "robust", target_level: float | None = None
    ) -> None:
        super().__init__(keys)
        self.target_scaling, self.target_level = target_scaling, target_level

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            samples = d[key].detach().cpu().numpy()
            d[key] = torch.from_numpy(restore_target_scaling(samples, self.target_scaling, self.target_level))
        return d


# ------------------------------------------------------------------------------------------------ handler
class TranslationMetricsWriter:
    """Evaluator handler: per subject, :func:`~mtsr_monai.metrics.perceptual.sample_measures` of its
    post-processed samples (``pred``) against the truth (``label``), with LPIPS when ``lpips_metric`` is
    given; at the end of the run ``result`` = ``header`` + ``summary`` (the mean of each scalar measure over
    the subjects) + ``subjects``, written atomically as JSON to ``path`` (None: kept in ``result`` only)."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        header: Mapping[str, Any],
        lpips_metric: torch.nn.Module | None = None,
    ) -> None:
        self.path, self.header, self.lpips_metric = path, dict(header), lpips_metric
        self.subjects: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.measure)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine) -> None:
        self.subjects, self.result = [], None

    def measure(self, engine: Engine) -> None:
        # the evaluator decollates: one item per subject, its record in the batch, its samples in the output
        for item, output in zip(engine.state.batch, engine.state.output, strict=True):
            samples = output["pred"].detach().cpu().numpy()
            truth = output["label"].detach().cpu().numpy()
            measures = sample_measures(samples, truth, lpips_metric=self.lpips_metric)
            self.subjects.append({"subject": item["subject"], "slices": item["slices"].tolist(), **measures})

    def report(self, engine: Engine) -> None:
        keys = [k for k, v in self.subjects[0].items() if isinstance(v, float)] if self.subjects else []
        summary = {k: float(np.mean([s[k] for s in self.subjects])) for k in keys}
        self.result = {**self.header, "summary": summary, "subjects": self.subjects}
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.result, indent=1))


# ------------------------------------------------------------------------------------------- Python entry
def evaluate_translation(
    subjects: list[dict[str, Any]],
    source: str,
    target: str,
    weights: str | os.PathLike,
    samples: int = 5,
    slices_per_volume: int = 8,
    seed: int = 0,
    lpips_backbone: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The report of the MT bundle's ``configs/evaluate.yaml`` (its evaluator, with these settings) for those
    of ``subjects`` (datalist records) that have both contrasts, returned instead of written: per subject
    ``slices_per_volume`` evenly spaced axial slices with the most brain, ``samples`` seeded codes,
    :func:`sample_measures`, then the mean over subjects. LPIPS only with real backbone weights (the
    ``lpips`` block says which file, or why unavailable)."""
    overrides = {
        "split_subjects": [dict(s) for s in subjects],
        "source": source,
        "target": target,
        "checkpoint": str(weights),
        "samples": samples,
        "slices_per_volume": slices_per_volume,
        "seed": seed,
        "lpips_backbone": None if lpips_backbone is None else str(lpips_backbone),
        "device": device,
        "metrics_file": None,
    }
    parser = bundle_parser(bundle_dir(), overrides, config="configs/evaluate.yaml")
    require_subjects(parser.get_parsed_content("subjects"), f"the given list with {source} and {target}")
    parser.get_parsed_content("evaluator").run()
    return parser.get_parsed_content("report").result
