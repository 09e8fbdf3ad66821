"""The JSON records of an item, written after its images: input IQMs and output sidecars with provenance."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.bids import derivatives as der
from mtsr_monai.bids.quality import consistency, input_masks, input_quality, output_quality
from mtsr_monai.bids.tasks import Item, Product, Task
from mtsr_monai.errors import InputError
from mtsr_monai.io import load_volume
from mtsr_monai.metrics.qc import is_skull_stripped


def _source_quality(
    image_path: Path, modality: str, strict: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """``(data, affine, tissues or None, IQMs or {"error": reason})`` of an input; with ``strict`` (the qc
    task, where the IQMs are the product) a failed segmentation fails the participant instead."""

    volume = load_volume(image_path)
    data, affine = volume.numpy(), np.asarray(volume.affine)
    try:
        iqms, tissues = input_quality(data, affine, modality)
    except ValueError as err:
        if strict:
            raise InputError(f"quality metrics failed: {err}", image_path) from err
        return data, affine, None, {"error": str(err)}
    return data, affine, tissues, iqms


def _product_quality(
    task: Task, product: Product, source: tuple, masks: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """``QualityMetrics`` (and ``Consistency`` when the task keeps the contrast) of one output image;
    ``masks``: the sources' :func:`input_masks` by relative path, filled here on first use."""

    data, affine, tissues, _ = source
    if tissues is None:
        return {"QualityMetrics": {"error": "the source's tissues could not be segmented"}}
    out = load_volume(product.path, validate=False)
    out_data, out_affine = out.numpy(), np.asarray(out.affine)
    if product.source.relpath not in masks:
        masks[product.source.relpath] = input_masks(data)
    try:
        metrics = output_quality(out_data, out_affine, tissues, affine, masks[product.source.relpath])
        record: dict[str, Any] = {"QualityMetrics": metrics}
    except ValueError as err:
        record = {"QualityMetrics": {"error": str(err)}}
    if task.keeps_contrast:
        record["Consistency"] = consistency(data, affine, tissues > 0, out_data, out_affine)
    return record


def write_item_records(
    task: Task,
    item: Item,
    products: Sequence[Product],
    provenance: Mapping[str, Any],
    iqm_targets: Mapping[str, tuple[Path, Mapping[str, Any]]],
    runtime: Mapping[str, Any],
    start: float,
    strict: bool = False,
) -> None:
    """Input IQM files (where not current) and the sidecar of every product, all after the images."""

    need = strict or any(p.quality for p in products)
    sources: dict[str, tuple] = {}
    for s in item.sources:
        path, prov = iqm_targets[s.relpath]
        done = der.is_done(path, prov["ProvenanceHash"])
        if done and not need:
            continue
        sources[s.relpath] = _source_quality(s.path, s.modality, strict)
        if not done:
            data, _, _, iqms = sources[s.relpath]
            record = {
                "Sources": [der.source_uri(s)],
                "SkullStripped": bool(is_skull_stripped(data)),
                "QualityMetrics": iqms,
                "MTSRProvenance": {**prov, "RunTime": dict(runtime)},
            }
            der.write_json(path, record)
    sidecars, masks = [], {}
    for p in products:
        src = sources.get(p.source.relpath)
        uris = [der.source_uri(p.source)] + [der.source_uri(s) for s in item.sources if s != p.source]
        # BIDS's field for the space an image is in: a clinical-sr sequence moved onto its reference's
        data = {
            "Description": p.description,
            "Sources": uris,
            "SpatialReference": der.source_uri(p.space or p.source),
        }
        if src is not None:
            data["SkullStripped"] = bool(is_skull_stripped(src[0]))
        data.update(p.extra)
        if p.quality and src is not None:
            data.update(_product_quality(task, p, src, masks))
        sidecars.append((p, data))
    seconds = round(time.perf_counter() - start, 3)
    for p, data in sidecars:  # the sidecars last: they mark the outputs as done
        data["MTSRProvenance"] = {**provenance, "RunTime": {**runtime, "Seconds": seconds}}
        der.write_json(p.sidecar, data)
