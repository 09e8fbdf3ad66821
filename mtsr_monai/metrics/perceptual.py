"""LPIPS realism / diversity (MTSR-MRI appendix C) and weight-free diversity measures for translation samples.

LPIPS (Zhang et al. 2018, PyPI ``lpips``, version 0.1 linear heads) needs the torchvision ImageNet backbone
(``alexnet-owt-7be5be79.pth`` for AlexNet), which cannot be downloaded here. :func:`load_lpips` builds the
metric with a *randomly initialised* trunk (so ``lpips`` never tries to download) and then loads the real
backbone weights from torch.hub's cache (``$TORCH_HOME/hub/checkpoints/``, :func:`hub_checkpoint_path`) or
an explicit path; when the file is absent it returns ``None`` with the missing file named, and callers report
LPIPS as unavailable. A random-backbone LPIPS is never returned (its numbers would compare with nothing
published).

- realism: LPIPS(sample, ground truth), averaged (lower = closer to the truth).
- diversity: LPIPS between consecutive samples (5 samples -> 4 pairs), averaged (higher = more diverse).
- weight-free, always reported: PSNR / SSIM of each sample and of the mean against the truth, mean pairwise
  (1 - SSIM) and mean pairwise L1 between samples.
Grayscale slices in [0, 1] are mapped to [-1, 1] and repeated to 3 channels, as LPIPS expects.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from mtsr_monai.metrics.image import psnr as image_psnr
from mtsr_monai.metrics.image import ssim as image_ssim

BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def hub_checkpoint_path(filename: str) -> Path:
    """Where torch.hub keeps a downloaded weights file: ``<torch.hub.get_dir()>/checkpoints/<filename>``, so
    ``torch.hub.set_dir``, ``$TORCH_HOME`` and ``$XDG_CACHE_HOME`` are honoured as torch itself does
    (``~/.cache/torch/hub/checkpoints`` by default)."""
    import torch  # lazy: this module's import stays free of torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def default_backbone_path(net: str = "alex") -> Path:
    """torch.hub's cache of the torchvision backbone of LPIPS ``net`` (:func:`hub_checkpoint_path`)."""
    return hub_checkpoint_path(BACKBONE_FILES[net])


@dataclass
class LpipsStatus:
    available: bool
    net: str
    backbone: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "net": self.net,
            "version": "0.1",
            "backbone": self.backbone,
            "reason": self.reason,
        }


def load_lpips(
    net: str = "alex", backbone_path: str | os.PathLike | None = None
) -> tuple[torch.nn.Module | None, LpipsStatus]:
    """``(metric or None, LpipsStatus)``: LPIPS v0.1 with the real ImageNet backbone read from a file."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(BACKBONE_FILES)}")
    path = Path(backbone_path) if backbone_path else default_backbone_path(net)
    if not path.is_file():
        return None, LpipsStatus(False, net, str(path), f"backbone weights not found: {path}")
    import warnings

    import torch
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lpips

        # pnet_rand=True: the package builds an untrained trunk and downloads nothing; we fill it below
        metric = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    builder = {
        "alex": torchvision.models.alexnet,
        "vgg": torchvision.models.vgg16,
        "squeeze": torchvision.models.squeezenet1_1,
    }[net]
    reference = builder(weights=None)
    try:
        reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, OSError, EOFError) as err:
        return None, LpipsStatus(False, net, str(path), f"unreadable backbone weights {path}: {err}")
    features = reference.features
    copied = 0
    for part in metric.net.children():
        for name, module in part.named_children():
            module.load_state_dict(features[int(name)].state_dict())
            copied += 1
    return metric.eval(), LpipsStatus(True, net, str(path))


def _to_lpips_batch(x: Any):
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim == 2:
        t = t[None]
    t = t[:, None].clamp(0, 1) * 2 - 1
    return t.repeat(1, 3, 1, 1)


def lpips_distance(metric: torch.nn.Module, a: Any, b: Any) -> np.ndarray:
    """Per-slice LPIPS between (S, H, W) (or (H, W)) images in [0, 1]."""
    import torch

    with torch.inference_mode():
        return metric(_to_lpips_batch(a), _to_lpips_batch(b)).flatten().numpy()


def consecutive_pairs(n: int) -> list[tuple[int, int]]:
    """(0, 1), (1, 2), ...: the appendix-C diversity pairs (5 samples -> 4 pairs)."""
    return [(i, i + 1) for i in range(n - 1)]


def sample_measures(
    samples: np.ndarray,
    truth: np.ndarray | None = None,
    lpips_metric: torch.nn.Module | None = None,
    mask: np.ndarray | None = None,
    slice_axis: int = 0,
) -> dict[str, Any]:
    """Realism / diversity of N samples (N, S, H, W) of 2D slices in [0, 1] against ``truth`` (S, H, W).

    Weight-free: per-sample and mean-image PSNR and SSIM, mean pairwise (1 - SSIM) and L1 over all sample
    pairs, each by :mod:`mtsr_monai.metrics.image`: PSNR of the error pooled over all slices, SSIM the mean
    of the 2D SSIMs of the slices along ``slice_axis`` (so a sample may be any 3D layout). With ``mask`` (the
    shape of a sample) every measure is taken inside it, without it over whole slices (SSIM without the
    window's border, as scikit-image). With ``lpips_metric`` (whole slices, ``slice_axis`` 0): realism
    (LPIPS to the truth, mean over samples and slices) and diversity (LPIPS over consecutive pairs).
    """
    import torch

    s = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    n = s.shape[0]
    out: dict[str, Any] = {"n_samples": int(n)}

    boolean = None if mask is None else torch.as_tensor(np.asarray(mask, bool))
    inside = None if boolean is None else boolean.numpy()

    def ssim(a: torch.Tensor, b: torch.Tensor) -> float:  # mean over the slices (inside the mask)
        return image_ssim(a.numpy(), b.numpy(), inside, 1.0, axis=slice_axis)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:  # one PSNR of the pooled error (inside the mask)
        return image_psnr(a.numpy(), b.numpy(), inside, 1.0)

    def l1(a: torch.Tensor, b: torch.Tensor) -> float:
        diff = (a - b).abs()
        return float((diff[boolean] if boolean is not None else diff).double().mean())

    pairs = list(itertools.combinations(range(n), 2))
    if pairs:
        out["pairwise_1_minus_ssim"] = float(np.mean([1.0 - ssim(s[i], s[j]) for i, j in pairs]))
        out["pairwise_l1"] = float(np.mean([l1(s[i], s[j]) for i, j in pairs]))
    if truth is not None:
        t = torch.as_tensor(np.asarray(truth, dtype=np.float32))
        out["psnr_samples"] = [psnr(s[i], t) for i in range(n)]
        out["ssim_samples"] = [ssim(s[i], t) for i in range(n)]
        mean = s.mean(0)
        out["psnr_mean"] = psnr(mean, t)
        out["ssim_mean"] = ssim(mean, t)
    if lpips_metric is not None:
        if truth is not None:
            out["lpips_realism"] = float(
                np.mean([lpips_distance(lpips_metric, s[i], truth).mean() for i in range(n)])
            )
        if n > 1:
            out["lpips_diversity"] = float(
                np.mean([lpips_distance(lpips_metric, s[i], s[j]).mean() for i, j in consecutive_pairs(n)])
            )
    return out
