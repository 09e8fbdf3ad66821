"""Data-dict keys that the preprocessing transforms share (registration, brain mask, N4, crop, scaling) and
that the preprocessing runner reads back for its JSON sidecar."""

from __future__ import annotations

__all__ = ["PARAMS_KEY", "RANGE_KEY", "TO_TEMPLATE_KEY", "TRANSFORMS_KEY"]

#: data-dict key holding the SimpleITK transforms (modality -> transform from output grid to its input)
TRANSFORMS_KEY = "preprocess_transforms"
#: data-dict key holding the transform from the current output grid's physical space to template space
TO_TEMPLATE_KEY = "preprocess_to_template"
#: data-dict key holding the parameters every preprocessing step applied (for the JSON sidecar)
PARAMS_KEY = "preprocess_params"
#: meta key of an image scaled by ``RobustScaleIntensity``: the ``(lo, hi)`` that map a prediction back
RANGE_KEY = "mtsr_intensity_range"
