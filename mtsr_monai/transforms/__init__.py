"""MONAI transforms of mtsr-monai (array transforms and their ``...d`` dictionary wrappers), usable from
bundle configs by ``_target_``.

Preprocessing: :class:`N4BiasFieldCorrectiond`, :class:`RegisterToTemplated`,
:class:`BrainMaskFromTemplated`, :class:`CropToMaskBoxd` (:class:`CropToTemplateBoxd`: its deprecated
old name), :class:`ScaleIntensityPercentilesInMaskd`, :class:`RobustScaleIntensityd` and its inverse
:class:`RestoreIntensityd`; each with its array transform (the name without ``d``).
Reading and writing: :class:`LoadVolumed`, :class:`SaveVolumed`.
Degradation: :class:`RandSecondOrderDegradationd`, :class:`RandKSpaceTruncationd`,
:class:`RandThickSliceDegradationd`; their bases :class:`RandDegradation` / :class:`RandDegradationd`.
Clinical protocols: :class:`RandSimulateProtocold`, :class:`SimulateProtocold`, :class:`RandChannelDropoutd`.

Names are resolved lazily so that importing this package does not import SimpleITK or MONAI.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "N4BiasFieldCorrectiond": "bias",
    "N4BiasFieldCorrection": "bias",
    "RegisterToTemplate": "registration",
    "RegisterToTemplated": "registration",
    "BrainMaskFromTemplate": "brain_mask",
    "BrainMaskFromTemplated": "brain_mask",
    "CropToMaskBox": "crop",
    "CropToMaskBoxd": "crop",
    "CropToTemplateBoxd": "crop",
    "ScaleIntensityPercentilesInMask": "scale",
    "ScaleIntensityPercentilesInMaskd": "scale",
    "RobustScaleIntensity": "scale",
    "RobustScaleIntensityd": "scale",
    "RestoreIntensity": "scale",
    "RestoreIntensityd": "scale",
    "LoadVolumed": "io",
    "SaveVolumed": "io",
    "RandDegradation": "degradation",
    "RandDegradationd": "degradation",
    "RandSecondOrderDegradation": "degradation",
    "RandSecondOrderDegradationd": "degradation",
    "RandKSpaceTruncation": "degradation",
    "RandKSpaceTruncationd": "degradation",
    "RandThickSliceDegradation": "degradation",
    "RandThickSliceDegradationd": "degradation",
    "SimulateProtocol": "protocol",
    "RandSimulateProtocol": "protocol",
    "RandChannelDropout": "protocol",
    "RandSimulateProtocold": "protocol",
    "SimulateProtocold": "protocol",
    "RandChannelDropoutd": "protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
