"""Reading, validating and writing volumes.

``load_volume`` reads NIfTI with MONAI's ``LoadImage`` (nibabel) and .nrrd/.nhdr/.mha/.mhd with SimpleITK, and
refuses what no model should see (see :mod:`mtsr_monai.io.validation`); ``save_volume`` writes with nibabel
(NIfTI) or SimpleITK (.nrrd, .mha), atomically, keeping the affine in any axis order. The RAS <-> SimpleITK
geometry conversion is :mod:`mtsr_monai.io.sitk_geometry`.
"""

from mtsr_monai.io.atomic import (
    atomic_file_set,
    atomic_output,
    atomic_write_text,
    file_stamp,
    read_json_object,
)
from mtsr_monai.io.validation import (
    check_grid_size,
    check_nifti_header,
    check_same_grid,
    check_spacing,
    validate_grid,
    validate_volume,
)
from mtsr_monai.io.volume import (
    FINE_INPLANE_MM,
    check_image_file,
    fine_input_warning,
    has_volume_suffix,
    image_header,
    image_shape,
    is_volume_file,
    load_volume,
    nifti_space,
    save_volume,
    volume_stem,
    voxel_sizes,
)

__all__ = [
    "FINE_INPLANE_MM",
    "atomic_file_set",
    "atomic_output",
    "atomic_write_text",
    "check_nifti_header",
    "check_same_grid",
    "fine_input_warning",
    "image_header",
    "has_volume_suffix",
    "image_shape",
    "is_volume_file",
    "load_volume",
    "check_image_file",
    "file_stamp",
    "nifti_space",
    "read_json_object",
    "save_volume",
    "check_grid_size",
    "check_spacing",
    "validate_grid",
    "validate_volume",
    "volume_stem",
    "voxel_sizes",
]
