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
    """``out`` in the type of ``like``: a MetaTensor with ``like``'s meta (updated by ``meta``), its transform
    history (MONAI's ``Invertd`` needs it for the transforms before this one) and the new ``affine``, an
    array, or a tensor."""
    if isinstance(like, MetaTensor):
        new_meta = {**like.meta, **meta}
        if affine is not None:
            new_meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
            new_meta["spatial_shape"] = np.asarray(out.shape[1:])
        return MetaTensor(out, meta=new_meta, applied_operations=list(like.applied_operations))
    if isinstance(like, np.ndarray):
        return convert_to_numpy(out)
    return out
