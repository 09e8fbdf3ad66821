"""Data-dict keys that the preprocessing transforms share (registration, brain mask, N4, crop, scaling) and
that the preprocessing runner reads back for its JSON sidecar."""

from __future__ import annotations

__all__ = [
    "CROP_KEY",
    "MASK_KEY",
    "PARAMS_KEY",
    "PERCENTILES_KEY",
    "RANGE_KEY",
    "TO_TEMPLATE_KEY",
    "TRANSFORMS_KEY",
]

#: data-dict key holding the SimpleITK transforms (modality -> transform from output grid to its input)
TRANSFORMS_KEY = "preprocess_transforms"
#: data-dict key holding the transform from the current output grid's physical space to template space
TO_TEMPLATE_KEY = "preprocess_to_template"
#: data-dict key holding the parameters every preprocessing step applied (for the JSON sidecar)
PARAMS_KEY = "preprocess_params"
#: meta key of an image scaled by ``RobustScaleIntensity``: the ``(lo, hi)`` that map a prediction back
RANGE_KEY = "mtsr_intensity_range"
#: meta key of a mask made by ``BrainMaskFromTemplate``: :meth:`BrainMaskFromTemplate.describe` of the call
#: and ``mask_voxels``
MASK_KEY = "mtsr_brain_mask"
#: meta key of an image scaled by ``ScaleIntensityPercentilesInMask``: one ``[lo, hi]`` per channel
PERCENTILES_KEY = "mtsr_percentiles_in_mask"
#: meta key of an image cropped by ``CropToMaskBox``: ``box_start``, ``box_end``, ``shape_before``,
#: ``shape_after`` (spatial voxels)
CROP_KEY = "mtsr_crop_box"
