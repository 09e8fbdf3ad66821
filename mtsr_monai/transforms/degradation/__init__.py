"""Synthetic low-resolution MRI, one module per degradation model:

- :mod:`.second_order`: the Real-ESRGAN second-order blur / resize / noise chain adapted to MRI;
- :mod:`.kspace`: central k-space truncation with complex Gaussian noise;
- :mod:`.thick_slice`: thick slices of a routine 2D protocol;
- :mod:`.common`: the low-resolution grid and the slice-by-slice plumbing they share, and the base pair of
  their transforms (:class:`RandDegradation` array, :class:`RandDegradationd` dictionary).

Each model has array functions, a volume function ``degrade_volume_*(volume, affine, ...) -> (lr,
lr_affine)`` (``mtsr degrade``), and a MONAI array transform with its ``...d`` dictionary wrapper
(``Rand`` prefix: they are random; ``prob`` = apply or skip, skipped returns the input unchanged). Their
names are re-exported here.
"""

from mtsr_monai.transforms.degradation.common import (
    RandDegradation,
    RandDegradationd,
    centre_crop_to_multiple,
)
from mtsr_monai.transforms.degradation.kspace import (
    RandKSpaceTruncation,
    RandKSpaceTruncationd,
    degrade_volume_kspace,
    kspace_truncate,
)
from mtsr_monai.transforms.degradation.second_order import (
    RandSecondOrderDegradation,
    RandSecondOrderDegradationd,
    SecondOrderDegradation,
    degrade_volume_second_order,
    second_order_degrade,
)
from mtsr_monai.transforms.degradation.thick_slice import (
    RandThickSliceDegradation,
    RandThickSliceDegradationd,
    degrade_volume_thick_slice,
    thick_slice_centres,
    thick_slice_weights,
)

__all__ = [
    "RandDegradation",
    "RandDegradationd",
    "RandKSpaceTruncation",
    "RandKSpaceTruncationd",
    "RandSecondOrderDegradation",
    "RandSecondOrderDegradationd",
    "RandThickSliceDegradation",
    "RandThickSliceDegradationd",
    "SecondOrderDegradation",
    "centre_crop_to_multiple",
    "degrade_volume_kspace",
    "degrade_volume_second_order",
    "degrade_volume_thick_slice",
    "kspace_truncate",
    "second_order_degrade",
    "thick_slice_centres",
    "thick_slice_weights",
]
