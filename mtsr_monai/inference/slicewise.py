"""Slice-by-slice volume inference: the batches of slices that hold signal.

The three whole-volume inferences (super-resolution, translation, clinical restoration) run a 2D network
over the slices of a volume in batches and leave the slices holding only background untouched (they stay
background, and a skull-stripped volume has many of them). MONAI's ``SliceInferer`` runs every slice, so
this is where those three choose the slices a batch holds (the GradCAM of ``mtsr explain`` needs every
slice and batches them itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def busy_slices(slices: Any, background: float = 0.0) -> np.ndarray:
    """Indices of the slices (first axis of a numpy array or torch tensor) holding a value above
    ``background``."""
    flat = slices.reshape(len(slices), -1) > background
    return np.flatnonzero(np.asarray(flat.any(1)))


def busy_batches(
    slices: Any,
    batch_size: int,
    background: float = 0.0,
    progress: bool = False,
    desc: str = "slices",
    max_pixels: int | None = None,
    slice_pixels: int | None = None,
) -> Iterable[np.ndarray]:
    """The indices of :func:`busy_slices` in order, in batches of at most ``batch_size``, through a tqdm bar
    (``progress``) of that many batches; the other slices are in no batch (callers leave them background).
    With ``max_pixels`` a batch holds at most that many pixels (``slice_pixels`` a slice, default its own
    size; at least one slice): large slices go fewer at a time, so memory stays bounded and the bar moves."""
    from tqdm import tqdm

    if max_pixels is not None:
        per_slice = slice_pixels or int(np.prod(slices.shape[1:]))
        batch_size = max(1, min(batch_size, max_pixels // per_slice))
    busy = busy_slices(slices, background)
    batches = [busy[i : i + batch_size] for i in range(0, len(busy), batch_size)]
    return tqdm(batches, desc=desc, unit="batch", disable=not progress)
