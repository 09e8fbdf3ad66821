"""What the three degradation models share: the low-resolution grid (centre crop to a multiple of the
scale, block-centred affine), slice-by-slice plumbing of channel-first volumes, noise, and the base of their
array transforms (:class:`RandDegradation`) and of its dictionary wrappers (:class:`RandDegradationd`).

Geometry convention (all models): an input whose in-plane size is not a multiple of ``scale`` is first
centre-cropped to the largest multiple (``floor(n / scale) * scale``), so the output has exactly
``floor(n / scale)`` voxels and low-resolution voxel ``i`` summarises high-resolution voxels
``start + i*scale ... start + i*scale + scale - 1``; its centre sits at the centre of that block. The
returned affine scales the in-plane columns by ``scale`` and moves the origin to that block centre, so the
low-resolution image overlays the input in any viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform
from monai.utils import convert_to_tensor

from mtsr_monai.io.geometry import block_centre_offset, resampled_affine, resolve_axis
from mtsr_monai.transforms.intensity import robust_range
from mtsr_monai.transforms.meta import wrap_like
from mtsr_monai.transforms.wrappers import SharedStreamWrapper, output_keys_for

__all__ = ["RandDegradation", "RandDegradationd", "centre_crop_to_multiple"]


def centre_crop_to_multiple(
    x: torch.Tensor, dims: Sequence[int], scale: int
) -> tuple[torch.Tensor, dict[int, int]]:
    """Centre-crop tensor dims to a multiple of ``scale``; returns the crop and the start index per dim."""
    starts = {}
    for d in dims:
        n = x.shape[d]
        keep = (n // scale) * scale
        if keep < scale:
            raise ValueError(f"size {n} is smaller than the scale {scale}")
        start = (n - keep) // 2
        starts[d] = start
        x = x.narrow(d, start, keep)
    return x, starts


def lr_grid(
    affine: np.ndarray, inplane: Sequence[int], starts: Mapping[int, int], scale: int
) -> tuple[np.ndarray, dict[int, int]]:
    """Affine of the x``scale`` in-plane grid whose voxels summarise HR blocks beginning at ``starts[axis]``,
    and those starts by spatial axis (``starts`` is keyed by tensor axis, channel first)."""
    offsets = {d: starts[d + 1] for d in inplane}
    lr_affine = resampled_affine(
        affine, {d: scale for d in inplane}, {d: block_centre_offset(s, scale) for d, s in offsets.items()}
    )
    return lr_affine, offsets


def noise_generator(rng: np.random.RandomState) -> torch.Generator:
    """A torch generator seeded from ``rng`` (so ``set_random_state`` reproduces the noise)."""
    return torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))


def intensity_range(x: torch.Tensor) -> float:
    """max - min of ``x`` (1 for a constant image): the unit of the noise fractions."""
    r = float(x.max()) - float(x.min())  # in Python floats: an int16 range over 32767 would wrap
    return r if r > 0 else 1.0


def volume_noise_unit(volume: np.ndarray | torch.Tensor) -> float:
    """The unit of a whole volume's noise fractions: its robust range
    (:func:`~mtsr_monai.transforms.intensity.robust_range`), the range a training slice has once scaled;
    max - min would be set by a few outlier voxels."""
    lo, hi = robust_range(volume)
    return hi - lo


def add_noise(x: torch.Tensor, kind: str, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, or Rician: the magnitude of the signal plus complex Gaussian noise."""
    n1 = torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma
    if kind == "gaussian":
        return x + n1
    n2 = torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma
    return torch.sqrt((x + n1) ** 2 + n2**2)


def block_mean(x: torch.Tensor, dims: Sequence[int], scale: int) -> torch.Tensor:
    """Average non-overlapping blocks of ``scale`` voxels along ``dims`` (sizes multiples of ``scale``)."""
    for d in dims:
        shape = list(x.shape)
        shape[d : d + 1] = [shape[d] // scale, scale]
        x = x.reshape(shape).mean(dim=d + 1)
    return x


def to_slices(x: torch.Tensor, through: int) -> torch.Tensor:
    """(C, *spatial3) -> (S, C, a, b) with S along spatial axis ``through``."""
    return torch.movedim(x, through + 1, 0)


def from_slices(slices: torch.Tensor, through: int) -> torch.Tensor:
    """The inverse of :func:`to_slices`."""
    return torch.movedim(slices, 0, through + 1)


def map_slices(
    degrade: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, through: int | None
) -> torch.Tensor:
    """Run a 2D ``(N, C, h, w) -> (N, C, h', w')`` degradation on channel-first ``x``: the image itself
    (C, H, W), or every slice of a volume (C, H, W, D) in the plane normal to spatial axis ``through``."""
    if x.ndim == 3:
        return degrade(x[None].float())[0]
    return from_slices(degrade(to_slices(x.float(), through)), through)


def inplane_axes(spatial_ndim: int, through: int | None) -> list[int]:
    """The spatial axes of the slice plane normal to ``through`` (both axes of a 2D slice)."""
    return [d for d in range(spatial_ndim) if d != through] if spatial_ndim == 3 else [0, 1]


def plain_tensor(x: Any) -> torch.Tensor:
    """``x`` (MetaTensor, tensor or array) as a plain tensor."""
    return convert_to_tensor(x, track_meta=False)


def affine_of(x: Any, spatial_ndim: int) -> np.ndarray:
    """The affine of a MetaTensor, else the identity."""
    if isinstance(x, MetaTensor):
        return np.asarray(x.affine.detach().cpu(), dtype=np.float64)
    return np.eye(max(spatial_ndim, 3) + 1)


def through_axis(img: Any, x: torch.Tensor, axis: str | int) -> int | None:
    """The array axis normal to the slice plane of a volume ``(C, H, W, D)`` (None for a 2D slice)."""
    spatial = x.ndim - 1
    if spatial == 2:
        return None
    if spatial != 3:
        raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(x.shape)}")
    return resolve_axis(affine_of(img, 3), axis)


def volume_tensor(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 3D volume as a float32 channel-first tensor ``(1, X, Y, Z)``."""
    v = plain_tensor(volume)
    if v.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {tuple(v.shape)}")
    return v.to(torch.float32)[None]


def skipped_copy(img: Any) -> Any:
    """What a skipped random degradation returns: the input, unchanged (a copy, so keys do not alias)."""
    return img.clone() if isinstance(img, torch.Tensor) else np.array(img, copy=True)


class RandDegradation(RandomizableTransform):
    """Base of the array degradations: ``prob`` means apply or skip (skipped: a copy of the input). A call
    draws whether to apply (unless ``randomize=False``: the last draw is reused), then the noise
    (:meth:`draw_noise`), then degrades (:meth:`degrade_tensor`) a plain tensor of the input, and returns it
    in the input's type: a MetaTensor carries the low-resolution affine."""

    def draw_noise(self) -> Any:
        """The noise of one call: a generator, drawn also when skipped so that the random stream stays in step
        from key to key; None when the transform is skipped."""
        generator = noise_generator(self.R)
        return generator if self._do_transform else None

    def degrade_tensor(self, img: Any, x: torch.Tensor, noise: Any) -> tuple[torch.Tensor, np.ndarray]:
        """The degraded ``x`` (the plain tensor of ``img``) and its affine, with the ``noise`` of
        :meth:`draw_noise`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement degrade_tensor")

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        if randomize:
            self.randomize(None)
        noise = self.draw_noise()
        if noise is None:
            return skipped_copy(img)
        x = plain_tensor(img)
        lr, lr_affine = self.degrade_tensor(img, x, noise)
        return wrap_like(lr, img, lr_affine)


class RandDegradationd(SharedStreamWrapper):
    """Dictionary wrapper of a :class:`RandDegradation` (``degrade``), and base of the models' wrappers: the
    degraded copy of each key goes to ``output_keys`` (default ``key + lr_suffix``), the input stays as the
    target. The array transform holds the logic, ``prob`` and the random state: the wrapper shares its
    ``RandomState`` with it, so one seed reproduces a call byte for byte, and one draw (whether to apply, and
    the model's parameters) serves every key of a call."""

    inner = "degrade"

    def __init__(
        self,
        keys: KeysCollection,
        degrade: RandDegradation,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, degrade, degrade.prob, allow_missing_keys)
        self.output_keys = output_keys_for(self.keys, output_keys, lr_suffix)

    def randomize(self, data: Any = None) -> None:
        self.degrade.randomize(None)
        self._do_transform = self.degrade._do_transform

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        self.randomize()
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.degrade(d[key], randomize=False)
        return d
