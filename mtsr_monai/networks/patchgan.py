"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``, 70x70 receptive field) as a thin MONAI factory.

MONAI's :class:`~monai.networks.nets.PatchDiscriminator` already is pix2pix's design: a 4x4 stride-2 conv
without normalisation, ``num_layers_d`` 4x4 convs with normalisation and LeakyReLU 0.2 (the last with
stride 1), then a 4x4 stride-1 conv to one logit per patch. With 3 layers each logit sees a 70x70 patch.
It returns a list ``[intermediate features..., logits]``; :class:`~mtsr_monai.losses.GanLoss` uses ``[-1]``.
Instance norm by default: batch norm breaks under DDP when D runs twice before one backward.
"""

from __future__ import annotations

from monai.networks.nets import PatchDiscriminator

__all__ = ["patchgan"]


def patchgan(
    in_channels: int = 1,
    features: int = 64,
    num_layers: int = 3,
    norm: str = "INSTANCE",
    spatial_dims: int = 2,
) -> PatchDiscriminator:
    """The pix2pix/MTSR PatchGAN (70x70 receptive field with the defaults)."""
    return PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=features,
        in_channels=in_channels,
        out_channels=1,
        num_layers_d=num_layers,
        kernel_size=4,
        padding=1,
        norm=norm,
        bias=False,
        activation=("LEAKYRELU", {"negative_slope": 0.2}),
    )
