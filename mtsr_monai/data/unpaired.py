"""Unpaired samples from a paired slice dataset, for CycleGAN-style training (MTSR-MRI Table 2 baseline).

The shared data are co-registered multi-contrast scans, so a paired dataset would let an "unpaired" method
see aligned (A, B) pairs. :class:`UnpairedDataset` returns the source of item ``i`` with the target of a
random item ``j`` of **another subject** (another slice when the data hold a single subject), drawn anew on
every access: training never sees an aligned pair, nor even the same anatomy when there are two subjects.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["UnpairedDataset"]


def _item_ids(data: Sequence, subject_key: str, slice_key: str) -> list[tuple[str, Any]]:
    """(subject, slice) of every item: ``data.slice_index`` when it has one (a ``SliceDataset``: no loading),
    else read from the items."""
    ids = getattr(data, "slice_index", None)
    if ids is not None:
        return [(str(s), k) for s, k in ids]
    out = []
    for i in range(len(data)):
        item = data[i]
        out.append((str(item.get(subject_key, i)), item.get(slice_key, i)))
    return out


class UnpairedDataset(torch.utils.data.Dataset):
    """Items of ``data`` (dicts) whose ``target_key`` comes from another subject's (or slice's) item.

    Args:
        data: a map-style dataset of dicts holding the source and ``target_key`` (e.g. a ``SliceDataset``).
        target_key: the key replaced by the partner item's.
        subject_key, slice_key: keys (or the ``slice_index`` attribute) identifying where an item comes from.

    Each returned item also holds ``target_subject`` and ``target_slice_index``, the partner's origin. The
    partner is drawn with torch's generator, so ``monai.utils.set_determinism`` makes it reproducible and
    each DataLoader worker draws its own.
    """

    def __init__(
        self,
        data: Sequence,
        target_key: Hashable,
        subject_key: str = "subject",
        slice_key: str = "slice_index",
    ) -> None:
        self.data, self.target_key = data, target_key
        self.ids = _item_ids(data, subject_key, slice_key)
        if len(set(self.ids)) < 2:
            raise ValueError("unpaired sampling needs at least two distinct slices")
        subjects = np.array([s for s, _ in self.ids])
        # partners of item i: the items of other subjects, or of other slices when there is one subject
        if len(set(subjects.tolist())) > 1:
            self._others = {s: np.flatnonzero(subjects != s) for s in set(subjects.tolist())}
        else:
            self._others = None

    def __len__(self) -> int:
        return len(self.data)

    def partner(self, index: int) -> int:
        """A random index whose item is not aligned with item ``index``."""
        if self._others is not None:
            candidates = self._others[self.ids[index][0]]
        else:
            candidates = np.array([j for j, key in enumerate(self.ids) if key != self.ids[index]])
        return int(candidates[int(torch.randint(len(candidates), ()).item())])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.data[index]
        if not isinstance(item, Mapping):
            raise TypeError(f"UnpairedDataset needs dict items, got {type(item).__name__}")
        j = self.partner(index)
        out = dict(item)
        out[self.target_key] = self.data[j][self.target_key]
        out["target_subject"], out["target_slice_index"] = self.ids[j]
        return out
