"""What the dictionary wrappers of random array transforms share: one random stream with the array
transform they hold, and output keys beside the input keys."""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["SharedStreamWrapper", "output_keys_for"]


def output_keys_for(keys: tuple, output_keys: KeysCollection | None, suffix: str) -> tuple:
    """One output key per input key: ``output_keys`` as given, or each key with ``suffix`` appended."""
    if output_keys is None:
        return tuple(f"{k}{suffix}" for k in keys)
    out = (output_keys,) if isinstance(output_keys, str) else tuple(output_keys)
    if len(out) != len(keys):
        raise ValueError("output_keys must name one output per key")
    return out


class SharedStreamWrapper(RandomizableTransform, MapTransform):
    """Base of a dictionary wrapper that holds its random array transform in the attribute named by
    ``inner``: both draw from the wrapper's ``RandomState``, so one seed reproduces a call byte for byte (two
    streams seeded alike would repeat each other's draws)."""

    inner: str

    def __init__(self, keys: KeysCollection, transform: Any, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        setattr(self, self.inner, transform)
        transform.set_random_state(state=self.R)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> SharedStreamWrapper:
        super().set_random_state(seed, state)
        getattr(self, self.inner).set_random_state(state=self.R)
        return self
