"""The second-order degradation of Real-ESRGAN adapted to MRI: blur, resize and noise twice, then a sinc
filter and the final resize.

- :class:`SecondOrderDegradation` holds the chain's parameters and draws one degradation;
  :func:`second_order_degrade` applies a draw to 2D slices ``(N, C, H, W)``;
- :func:`degrade_volume_second_order` degrades a volume slice by slice (``mtsr degrade``);
- :class:`RandSecondOrderDegradation` (array) and :class:`RandSecondOrderDegradationd` (dictionary) for
  on-the-fly training, on a channel-first slice ``(C, H, W)`` or volume ``(C, H, W, D)``.

Randomness comes only from ``self.R`` (``numpy.random.RandomState``) as in MONAI: noise tensors are drawn
from a ``torch.Generator`` seeded by ``R``, so ``set_random_state(seed)`` reproduces outputs byte for byte.
Noise standard deviations are fractions of the intensity range (max - min) of the image handed to the
transform: the 2D slice in training (scaled to [0, 1] there), the robust range of the whole volume in the
CLI, so that one volume gets one noise level, as a scanner gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import RandomizableTransform

from mtsr_monai.io.geometry import resampled_affine, resolve_axis
from mtsr_monai.transforms import kernels
from mtsr_monai.transforms.degradation.common import (
    RandDegradation,
    RandDegradationd,
    add_noise,
    affine_of,
    centre_crop_to_multiple,
    inplane_axes,
    lr_grid,
    map_slices,
    plain_tensor,
    through_axis,
    volume_noise_unit,
    volume_tensor,
)
from mtsr_monai.transforms.degradation.common import intensity_range as intensity_range_of
from mtsr_monai.transforms.meta import wrap_like

RESIZE_MODES = ("area", "bilinear", "bicubic")

__all__ = [
    "RESIZE_MODES",
    "RandSecondOrderDegradation",
    "RandSecondOrderDegradationd",
    "SecondOrderDegradation",
    "degrade_volume_second_order",
    "second_order_degrade",
]


def _filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Convolve every (N, C) plane with one 2D kernel, reflect padding (replicate when too small)."""
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < h and pad < w else "replicate"
    flat = F.pad(x.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode=mode)
    weight = torch.as_tensor(kernel, dtype=x.dtype).reshape(1, 1, k, k)
    return F.conv2d(flat, weight).reshape(n, c, h, w)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


@dataclass(frozen=True)
class StageRanges:
    """The ranges and probabilities one blur-resize-noise stage of the chain draws from."""

    sinc_prob: float
    kernel_probs: Sequence[float]
    sigma: tuple[float, float]
    beta_g: tuple[float, float]
    beta_p: tuple[float, float]
    resize_prob: tuple[float, float, float]
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    blur_prob: float


class SecondOrderDegradation:
    """Parameters and sampler of the MRI-adapted Real-ESRGAN chain (defaults: Real-ESRGAN x4plus's ranges;
    its final sinc's cut-off and the kernels' beta draws depart from it, docs/degradation.md).

    Dropped for MRI: JPEG, 8-bit rounding, Poisson noise, gray-noise (channels are contrasts, their
    noise is independent). Poisson is replaced by Rician noise at the same sigma range. Noise sigmas are
    fractions of the input's intensity range. No clamping: MRI intensities have no fixed range.
    """

    def __init__(
        self,
        scale: int = 4,
        sinc_prob: float = 0.1,
        kernel_probs: Sequence[float] = kernels.KERNEL_PROBS,
        blur_sigma: tuple[float, float] = (0.2, 3.0),
        beta_gaussian: tuple[float, float] = (0.5, 4.0),
        beta_plateau: tuple[float, float] = (1.0, 2.0),
        resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1),
        resize_range: tuple[float, float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: tuple[float, float] = (1 / 255, 30 / 255),
        second_blur_prob: float = 0.8,
        sinc_prob2: float = 0.1,
        blur_sigma2: tuple[float, float] = (0.2, 1.5),
        beta_gaussian2: tuple[float, float] = (0.5, 4.0),
        beta_plateau2: tuple[float, float] = (1.0, 2.0),
        resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3),
        resize_range2: tuple[float, float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: tuple[float, float] = (1 / 255, 25 / 255),
        final_sinc_prob: float = 0.8,
        kernel_sizes: Sequence[int] = kernels.KERNEL_SIZES,
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.kernel_sizes = tuple(kernel_sizes)
        # positional, in the order of the fields of StageRanges: the two stages differ only in their values
        self.stage1 = StageRanges(
            sinc_prob, kernel_probs, blur_sigma, beta_gaussian, beta_plateau, resize_prob, resize_range,
            gaussian_noise_prob, noise_range, blur_prob=1.0,
        )  # fmt: skip
        self.stage2 = StageRanges(
            sinc_prob2, kernel_probs, blur_sigma2, beta_gaussian2, beta_plateau2, resize_prob2, resize_range2,
            gaussian_noise_prob2, noise_range2, blur_prob=second_blur_prob,
        )  # fmt: skip
        self.final_sinc_prob = final_sinc_prob

    def _sample_stage(self, rng: np.random.RandomState, cfg: StageRanges) -> dict[str, Any]:
        kernel = None
        if rng.uniform() < cfg.blur_prob:
            kernel = kernels.random_blur_kernel(
                rng,
                sinc_prob=cfg.sinc_prob,
                sizes=self.kernel_sizes,
                kernel_probs=cfg.kernel_probs,
                sigma_range=cfg.sigma,
                beta_gaussian_range=cfg.beta_g,
                beta_plateau_range=cfg.beta_p,
            )
        updown = ("up", "down", "keep")[rng.choice(3, p=np.asarray(cfg.resize_prob) / sum(cfg.resize_prob))]
        low, high = cfg.resize_range
        factor = {
            "up": lambda: rng.uniform(1, high),
            "down": lambda: rng.uniform(low, 1),
            "keep": lambda: 1.0,
        }[updown]()
        mode = RESIZE_MODES[rng.randint(len(RESIZE_MODES))]
        noise = "gaussian" if rng.uniform() < cfg.gaussian_noise_prob else "rician"
        sigma = float(rng.uniform(*cfg.noise_range))
        return dict(kernel=kernel, factor=float(factor), mode=mode, noise=noise, sigma=sigma)

    def sample(self, rng: np.random.RandomState) -> dict[str, Any]:
        """Draw every random choice of one degradation (kernels, resize factors and modes, noise, order)."""
        params = {
            "stage1": self._sample_stage(rng, self.stage1),
            "stage2": self._sample_stage(rng, self.stage2),
        }
        params["final_resize_first"] = bool(rng.uniform() < 0.5)
        params["final_mode"] = RESIZE_MODES[rng.randint(len(RESIZE_MODES))]
        params["final_sinc"] = (
            kernels.random_sinc_kernel(rng, kernels.random_kernel_size(rng, self.kernel_sizes))
            if rng.uniform() < self.final_sinc_prob
            else None
        )
        params["noise_seed"] = int(rng.randint(0, 2**31 - 1))
        return params


def second_order_degrade(
    x: torch.Tensor, params: Mapping[str, Any], scale: int, intensity_range: float | None = None
) -> torch.Tensor:
    """Apply a sampled second-order degradation to slices ``(N, C, H, W)`` with H, W multiples of ``scale``.

    Returns ``(N, C, H // scale, W // scale)``. The resize of stage 2 is relative to the final size, as in
    Real-ESRGAN. ``intensity_range`` (default: the range of ``x``) converts the noise fractions.
    """
    if x.ndim != 4:
        raise ValueError(f"expected slices (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    out_size = (h // scale, w // scale)
    scale_ref = intensity_range_of(x) if intensity_range is None else intensity_range
    generator = torch.Generator().manual_seed(int(params["noise_seed"]))
    out = x
    for stage, target in (("stage1", None), ("stage2", out_size)):
        p = params[stage]
        if p["kernel"] is not None:
            out = _filter2d(out, p["kernel"])
        if target is None:
            size = (round(out.shape[-2] * p["factor"]), round(out.shape[-1] * p["factor"]))
        else:
            size = (int(target[0] * p["factor"]), int(target[1] * p["factor"]))
        out = _resize(out, size, p["mode"])
        out = add_noise(out, p["noise"], p["sigma"] * scale_ref, generator)
    sinc = params["final_sinc"]
    if params["final_resize_first"]:
        out = _resize(out, out_size, params["final_mode"])
        out = _filter2d(out, sinc) if sinc is not None else out
    else:
        out = _filter2d(out, sinc) if sinc is not None else out
        out = _resize(out, out_size, params["final_mode"])
    return out


def _apply_second_order(
    x: torch.Tensor,
    affine: np.ndarray,
    scale: int,
    through: int | None,
    params: Mapping[str, Any],
    intensity_range: float | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict[int, int]]:
    """Channel-first x (C, H, W) or (C, H, W, D) -> LR tensor, LR affine, crop starts per spatial dim.
    Noise sigmas are fractions of ``intensity_range`` (default: max - min of x)."""
    inplane = inplane_axes(x.ndim - 1, through)
    cropped, starts = centre_crop_to_multiple(x, [d + 1 for d in inplane], scale)
    rng_ref = intensity_range_of(cropped) if intensity_range is None else float(intensity_range)
    lr = map_slices(lambda s: second_order_degrade(s, params, scale, rng_ref), cropped, through)
    return (lr, *lr_grid(affine, inplane, starts, scale))


def degrade_volume_second_order(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    scale: int = 4,
    axis: str | int = "axial",
    seed: int = 0,
    **chain_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Second-order degradation of a 3D volume slice by slice in the plane normal to ``axis``.

    One draw of the chain's parameters for the whole volume (a scanner blurs every slice alike); noise is
    independent per voxel, its sigmas fractions of the volume's robust range (``robust_range``: 0 to the
    99.5th percentile of the brain), the range a training patch has after its volume's scaling; max - min of
    a raw volume is set by a few outlier voxels (up to 2x the robust range here). Returns the float32 LR
    volume and its affine.
    """
    chain = SecondOrderDegradation(scale=scale, **chain_kwargs)
    params = chain.sample(np.random.RandomState(seed))
    through = resolve_axis(affine, axis)
    lr, affine_lr, _ = _apply_second_order(
        volume_tensor(volume), affine, chain.scale, through, params, intensity_range=volume_noise_unit(volume)
    )
    return lr[0].numpy().astype(np.float32), affine_lr


class RandSecondOrderDegradation(RandDegradation):
    """Array transform: the low-resolution copy of a channel-first slice ``(C, H, W)`` or volume
    ``(C, H, W, D)`` (degraded slice by slice normal to ``axis``, found from the affine) by one draw of the
    chain, with probability ``prob`` (skipped: the input is returned unchanged).

    A call with ``randomize=False`` reuses the last draw of the chain with fresh noise: the dictionary
    wrapper degrades co-registered contrasts alike. A MetaTensor output carries the low-resolution affine;
    ``self.crop_starts`` holds the centre crop of the last call (by spatial axis). Chain parameters
    (``sinc_prob``, ``blur_sigma``, ``noise_range``, ...) are those of :class:`SecondOrderDegradation`.
    """

    def __init__(self, scale: int = 4, axis: str | int = "axial", prob: float = 1.0, **chain_kwargs: Any):
        RandomizableTransform.__init__(self, prob)
        self.chain = SecondOrderDegradation(scale=scale, **chain_kwargs)
        self.axis = axis
        self.params: dict[str, Any] | None = None
        self.crop_starts: dict[int, int] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.params = self.chain.sample(self.R) if self._do_transform else None

    def draw_noise(self) -> int | None:
        """The noise seed of one call (independent noise per call), or None when skipped."""
        if self.params is None and self._do_transform:  # MONAI's rule: no call reuses a draw never made
            raise RuntimeError(f"{type(self).__name__}: call randomize() (or call with randomize=True) first")
        if self.params is None:
            self.crop_starts = {}
            return None
        return int(self.R.randint(0, 2**31 - 1))

    def degrade_tensor(self, img: Any, x: torch.Tensor, noise: int) -> tuple[torch.Tensor, np.ndarray]:
        params = {**self.params, "noise_seed": noise}
        affine = affine_of(img, x.ndim - 1)
        lr, affine_lr, self.crop_starts = _apply_second_order(
            x, affine, self.chain.scale, through_axis(img, x, self.axis), params
        )
        return lr.to(torch.float32), affine_lr


class RandSecondOrderDegradationd(RandDegradationd):
    """Dictionary wrapper of :class:`RandSecondOrderDegradation`: the low-resolution copy of each key under
    ``key + lr_suffix`` (or ``output_keys``). One draw per call, shared by all keys (co-registered contrasts
    get the same blur), noise drawn independently; ``prob``: apply or skip (skipped: the outputs are copies
    of the inputs). ``crop_hr=True`` replaces each input by its centre crop to a multiple of ``scale`` so the
    pair aligns; an output key equal to its input key replaces the image by its LR copy.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        axis: str | int = "axial",
        crop_hr: bool = True,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **chain_kwargs: Any,
    ) -> None:
        degrade = RandSecondOrderDegradation(scale, axis, prob, **chain_kwargs)
        super().__init__(keys, degrade, output_keys, lr_suffix, allow_missing_keys)
        self.crop_hr = crop_hr

    @property
    def chain(self) -> SecondOrderDegradation:
        return self.degrade.chain

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        self.randomize()
        scale = self.chain.scale
        for key, out_key in self.key_iterator(d, self.output_keys):
            img = d[key]
            d[out_key] = self.degrade(img, randomize=False)
            starts = self.degrade.crop_starts
            if self.crop_hr and starts and out_key != key:  # degraded in place: no HR left to crop
                hr = plain_tensor(img)
                for k, s in starts.items():
                    hr = hr.narrow(k + 1, s, (hr.shape[k + 1] // scale) * scale)
                offsets = {k: float(s) for k, s in starts.items()}
                affine = resampled_affine(affine_of(img, hr.ndim - 1), {}, offsets)
                d[key] = wrap_like(hr, img, affine)
        return d
