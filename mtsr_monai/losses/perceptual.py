"""VGG19 feature loss as in ESRGAN: L1 distance of conv5_4 features taken before the ReLU.

The ImageNet weights (torchvision's ``vgg19-dcbb9e9d.pth``) are read from ``weights_path`` or from
torch.hub's cache (``<torch.hub.get_dir()>/checkpoints``, ``$TORCH_HOME/hub/checkpoints``) and never
downloaded: a missing file raises :class:`FileNotFoundError` naming the file and where it was looked for, so
a run without them must set the VGG weight to 0 explicitly. One-channel MRI is repeated to three channels
and normalised with the ImageNet mean and standard deviation, assuming inputs scaled to about [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mtsr_monai.errors import InputError
from mtsr_monai.metrics.perceptual import hub_checkpoint_path

VGG19_FILE = "vgg19-dcbb9e9d.pth"
#: index of conv5_4 in torchvision's ``vgg19().features`` (the ReLU after it is index 35)
CONV5_4 = 34
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["VGG19_FILE", "VGGFeatureLoss", "default_vgg19_path"]


def default_vgg19_path() -> Path:
    """torch.hub's cache of torchvision's VGG19 (:func:`~mtsr_monai.metrics.perceptual.hub_checkpoint_path`:
    ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` unless ``torch.hub.set_dir`` moved it)."""
    return hub_checkpoint_path(VGG19_FILE)


class VGGFeatureLoss(nn.Module):
    """``criterion(phi(pred), phi(target))`` with ``phi`` = VGG19 up to conv5_4 (pre-activation), frozen.

    Args:
        weights_path: the VGG19 state dict; ``None`` -> :func:`default_vgg19_path`.
        layer: last ``features`` index kept (34 = conv5_4, before its ReLU).
        criterion: ``"l1"`` (ESRGAN) or ``"l2"``.
    """

    def __init__(
        self, weights_path: str | os.PathLike | None = None, layer: int = CONV5_4, criterion: str = "l1"
    ) -> None:
        super().__init__()
        from torchvision.models import vgg19

        path = Path(weights_path) if weights_path else default_vgg19_path()
        if not path.is_file():
            place = "the given weights_path" if weights_path else "torch.hub's checkpoints folder"
            # bad input (exit 2 in a bundle run), named with its place and the two ways out
            raise InputError(
                f"VGG19 ImageNet weights not found (expected torchvision's {VGG19_FILE}; "
                f"looked for {place}). Put the file there or pass its path, or set the VGG loss weight "
                "to 0 (--loss_weights#vgg 0); nothing is downloaded",
                path,
            )
        features = vgg19(weights=None).features[: layer + 1]
        state = torch.load(path, map_location="cpu", weights_only=True)
        # only the convolutional part is used: a file holding just ``features.*`` (no classifier) is enough
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        own = features.state_dict()
        missing = [k for k in own if k not in wanted]
        if missing:
            raise ValueError(f"{path} is not a VGG19 state dict: it lacks features.{missing[0]}")
        features.load_state_dict({k: wanted[k] for k in own})
        self.features = features.eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        if criterion not in ("l1", "l2"):
            raise ValueError("criterion must be 'l1' or 'l2'")
        self.criterion = nn.L1Loss() if criterion == "l1" else nn.MSELoss()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatureLoss:
        super().train(mode)
        self.features.eval()  # a frozen feature extractor stays in eval mode
        return self

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.features((x - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self._phi(target.float())
        return self.criterion(self._phi(pred.float()), target_features)
