"""Outputs of this package's transforms in the type of their input (a MetaTensor keeps its meta and its
transform history), in one place."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

__all__ = ["wrap_like"]


def wrap_like(out: torch.Tensor, like: Any, affine: np.ndarray | None = None, **meta: Any) -> Any:
    """``out`` in the type of ``like``: a MetaTensor with ``like``'s meta (updated by ``meta``), an array, or
    a tensor. On ``like``'s grid (``affine`` None) it keeps ``like``'s transform history, which MONAI's
    ``Invertd`` needs for the transforms before this one; on a new grid (``affine``) none, so that ``Invertd``
    refuses rather than undo a crop or pad of the old grid on the new one."""
    if isinstance(like, MetaTensor):
        new_meta = {**like.meta, **meta}
        history = list(like.applied_operations)
        if affine is not None:
            new_meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
            new_meta["spatial_shape"] = np.asarray(out.shape[1:])
            history = []
        return MetaTensor(out, meta=new_meta, applied_operations=history)
    if isinstance(like, np.ndarray):
        return convert_to_numpy(out)
    return out
