"""Appendix-C evaluation of a translation model on held-out subjects: realism and diversity of its samples
(:mod:`mtsr_monai.metrics.perceptual` measures them; this module runs the model)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from mtsr_monai.data.slices import load_subject
from mtsr_monai.inference.translate import (
    latent_codes,
    load_translator,
    restore_target_scaling,
    translate_slices,
    volume_settings,
)
from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.metrics.perceptual import load_lpips, sample_measures

__all__ = ["evaluate_translation"]


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
    """Appendix-C style evaluation of one translation model on held-out subjects.

    For each subject: ``slices_per_volume`` evenly spaced axial slices with the most brain (both volumes
    scaled to [0, 1] by robust percentiles), ``samples`` random codes (seeded), the generator at its training
    size; :func:`sample_measures` per subject, then the mean over subjects. LPIPS only with real backbone
    weights (``lpips`` block says which file, or why unavailable).
    """
    generator, meta = load_translator(weights, device)
    metric, status = load_lpips(backbone_path=lpips_backbone)
    codes = torch.from_numpy(latent_codes(samples, int(meta["nz"]), seed, meta.get("code_prior")))
    per_subject = []
    for subject in subjects:
        vol = load_subject(subject, [source, target], mask_key=None)
        axis = resolve_axis(vol["affine"], "axial")
        a = vol[source][0].movedim(axis, 0)
        b = vol[target][0].movedim(axis, 0)
        brain = (b > 0).flatten(1).float().mean(1)
        candidates = torch.nonzero(brain >= 0.5 * brain.max()).flatten()
        picks = candidates[torch.linspace(0, len(candidates) - 1, slices_per_volume).round().long()]
        a_sel = torch.where(b[picks] > 0, a[picks], torch.zeros(()))  # same brain region in both
        settings = volume_settings(meta)
        out = translate_slices(
            generator, a_sel, codes, int(meta["image_size"]), native_resolution=settings["native_resolution"]
        ).numpy()
        # median-scaled models: each sample's 99.5 % level read over these slices (not the whole volume)
        out = out * (a_sel.numpy() > 0)[None]
        out = restore_target_scaling(out, settings["target_scaling"], settings["target_level"])
        measures = sample_measures(out, b[picks].numpy(), lpips_metric=metric)
        per_subject.append({"subject": subject.get("subject"), "slices": picks.tolist(), **measures})
    keys = [k for k, v in per_subject[0].items() if isinstance(v, float)] if per_subject else []
    summary = {k: float(np.mean([s[k] for s in per_subject])) for k in keys}
    return {
        "source": source,
        "target": target,
        "weights": str(weights),
        "method": meta.get("method"),
        "training_iterations": meta.get("iterations"),
        "samples": samples,
        "seed": seed,
        "lpips": status.as_dict(),
        "summary": summary,
        "subjects": per_subject,
    }
