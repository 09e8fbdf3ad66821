"""BicycleGAN networks (Zhu et al. 2017) for MTSR-MRI modality translation, built from MONAI blocks.

- :class:`LatentUNetGenerator`: a 2D U-Net ``G(A, z)`` whose latent code ``z`` (``nz`` values) is tiled
  over the image and concatenated to the input of *every* encoder level ("add_all" in the official code),
  so the code cannot be ignored by the deeper layers.
- :class:`ResNetEncoder`: ``E(B) -> (mu, logvar)``: strided conv, residual down-sampling blocks, global
  average pooling and two linear heads.
- :class:`PooledMultiScaleDiscriminator`: PatchGANs (MONAI ``PatchDiscriminator``) on the image and on
  2x average-pooled copies of it (BicycleGAN's ``D_NLayersMulti``); returns one logit map per scale.

``image_size`` (128 or 256) sets the depth: ``log2(size)`` U-Net levels (down to 1x1), ``log2(size) - 3``
encoder blocks, 2 (128) or 3 (256) discriminator layers, as the official ``*_128`` / ``*_256`` presets.
Channel widths are set by ``ngf`` / ``nef`` / ``ndf`` (paper defaults 64) so that shipped weights stay small.
"""

from __future__ import annotations

import math
import warnings

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import PatchDiscriminator
from torch import nn

LEAKY = ("leakyrelu", {"negative_slope": 0.2})


def _levels(image_size: int) -> int:
    levels = int(round(math.log2(image_size)))
    if 2**levels != image_size or levels < 5:
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return levels


def tile_latent(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, nz) -> (B, nz, H, W) matching ``like``'s spatial size."""
    return z[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3]).to(like.dtype)


def _up_block(in_ch: int, out_ch: int, upsample: str, layer: dict) -> nn.Module:
    """One decoder step that doubles the size: a 4x4 transposed convolution (``basic``, pix2pix), or bilinear
    x2 then a 3x3 convolution (``bilinear``: the official ``--upsample bilinear``, which has no checkerboard
    pattern: each output pixel sees the same number of input pixels)."""
    if upsample == "basic":
        return Convolution(
            2,
            in_ch,
            out_ch,
            strides=2,
            kernel_size=4,
            padding=1,
            is_transposed=True,
            output_padding=0,
            **layer,
        )
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        Convolution(2, in_ch, out_ch, kernel_size=3, padding=1, **layer),
    )


class LatentUNetGenerator(nn.Module):
    """U-Net generator with the latent code injected at every encoder level; output in [-1, 1] (tanh).
    ``upsample``: ``basic`` (transposed convolutions, the default) or ``bilinear`` (see :func:`_up_block`).

    Its log2(``image_size``) levels halve the input down to 1 x 1: H and W must be multiples of
    ``image_size`` (other sizes fail inside torch); ``translate_slices`` pads slices to such sizes."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        nz: int = 8,
        ngf: int = 64,
        image_size: int = 256,
        max_mult: int = 8,
        dropout: float = 0.0,
        upsample: str = "basic",
    ) -> None:
        super().__init__()
        if upsample not in ("basic", "bilinear"):
            raise ValueError(f"upsample must be 'basic' or 'bilinear', not {upsample!r}")
        self.nz, self.image_size = nz, image_size
        levels = _levels(image_size)
        widths = [ngf * min(2**i, max_mult) for i in range(levels)]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, width in enumerate(widths):
            # no norm on the outermost level (as pix2pix) and on the 1x1 bottleneck (instance norm
            # of a single pixel is undefined)
            norm = None if i in (0, levels - 1) else "INSTANCE"
            self.down.append(
                Convolution(2, prev + nz, width, strides=2, kernel_size=4, padding=1, act=LEAKY, norm=norm)
            )
            prev = width
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            in_ch = widths[i] if i == levels - 1 else widths[i] * 2
            out_ch = out_channels if i == 0 else widths[i - 1]
            layer = {"conv_only": True} if i == 0 else {"act": "relu", "norm": "INSTANCE"}
            if i > 0:
                layer["dropout"] = dropout if i > levels - 4 else 0.0
            self.up.append(_up_block(in_ch, out_ch, upsample, layer))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        # no code: the prior's mean (z = 0), so one-input tools (verify_net_in_out, ckpt/onnx export) work
        if z is None:
            z = x.new_zeros((x.shape[0], self.nz))
        skips = []
        h = x
        for block in self.down:
            h = block(torch.cat([h, tile_latent(z, h)], dim=1))
            skips.append(h)
        h = skips.pop()
        for block in self.up[:-1]:
            h = block(h)
            h = torch.cat([h, skips.pop()], dim=1)
        return torch.tanh(self.up[-1](h))


class _ResidualDown(nn.Module):
    """norm-act-conv3, norm-act-conv3, avg-pool 2; shortcut avg-pool + 1x1 conv (official BasicBlock)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.InstanceNorm2d(in_ch),
            nn.LeakyReLU(0.2),
            Convolution(2, in_ch, in_ch, kernel_size=3, norm="INSTANCE", act=LEAKY),
            Convolution(2, in_ch, out_ch, kernel_size=3, conv_only=True),
            nn.AvgPool2d(2),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2), Convolution(2, in_ch, out_ch, kernel_size=1, conv_only=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResNetEncoder(nn.Module):
    """``E(B) -> (mu, logvar)``, each (B, nz). Widths nef * (1, 2, 3, 4, 4, ...)."""

    def __init__(
        self, in_channels: int = 1, nz: int = 8, nef: int = 64, image_size: int = 256, max_mult: int = 4
    ):
        super().__init__()
        n_blocks = _levels(image_size) - 3
        layers: list[nn.Module] = [
            Convolution(2, in_channels, nef, strides=2, kernel_size=4, padding=1, conv_only=True)
        ]
        prev = nef
        for i in range(1, n_blocks):
            width = nef * min(i + 1, max_mult)
            layers.append(_ResidualDown(prev, width))
            prev = width
        layers += [nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.mu = nn.Linear(prev, nz)
        self.logvar = nn.Linear(prev, nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class PooledMultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs of the same depth; scale k sees the image average-pooled k times (3x3,
    stride 2), as BicycleGAN's ``D_NLayersMulti``. Not MONAI's ``MultiScalePatchDiscriminator``, which feeds
    the same image to ever deeper PatchGANs (pix2pixHD).

    Returns a list of logit maps, one per scale (full resolution first).
    """

    def __init__(
        self,
        in_channels: int = 1,
        ndf: int = 64,
        image_size: int = 256,
        num_scales: int = 2,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers is None:
            num_layers = 3 if image_size >= 256 else 2
        self.scales = nn.ModuleList(
            PatchDiscriminator(
                spatial_dims=2,
                channels=ndf,
                in_channels=in_channels,
                num_layers_d=num_layers,
                norm="INSTANCE",
            )
            for _ in range(num_scales)
        )
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, disc in enumerate(self.scales):
            if i > 0:
                x = self.pool(x)
            outputs.append(disc(x)[-1])
        return outputs


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def build_networks(
    nz: int = 8,
    ngf: int = 64,
    nef: int = 64,
    ndf: int = 64,
    image_size: int = 256,
    use_encoder: bool = True,
    max_mult: int = 8,
    upsample: str = "basic",
) -> dict[str, nn.Module | None]:
    """Generator, encoder (None for pix2pix with noise) and the two discriminators D (cVAE) and D2 (cLR).
    ``max_mult`` caps the generator's widths at ``ngf * max_mult`` (official: 8); ``upsample``: the
    generator's decoder (official ``--upsample``: ``basic`` or ``bilinear``)."""
    return {
        "generator": LatentUNetGenerator(
            nz=nz, ngf=ngf, image_size=image_size, max_mult=max_mult, upsample=upsample
        ),
        "encoder": ResNetEncoder(nz=nz, nef=nef, image_size=image_size) if use_encoder else None,
        "discriminator": PooledMultiScaleDiscriminator(ndf=ndf, image_size=image_size),
        "discriminator2": PooledMultiScaleDiscriminator(ndf=ndf, image_size=image_size)
        if use_encoder
        else None,
    }


def __getattr__(name: str) -> type[PooledMultiScaleDiscriminator]:
    """The old name, which MONAI's own ``MultiScalePatchDiscriminator`` (another network) shares: bundle
    configs copied from mtsr_mt before the rename still name it (the weights are state dicts, free of it)."""
    if name == "MultiScalePatchDiscriminator":
        warnings.warn(
            "mtsr_monai.networks.bicyclegan.MultiScalePatchDiscriminator is deprecated: use "
            "PooledMultiScaleDiscriminator",
            DeprecationWarning,
            stacklevel=2,
        )
        return PooledMultiScaleDiscriminator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
