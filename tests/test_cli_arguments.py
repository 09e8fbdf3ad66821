"""The choices the CLI offers without importing torch are the ones the code behind it accepts."""

from __future__ import annotations

from mtsr_monai.cli import arguments


def test_cli_choices_equal_the_constants_of_the_code_they_drive():
    from mtsr_monai.inference import clinical, super_resolve
    from mtsr_monai.precision import PRECISIONS
    from mtsr_monai.transforms.protocol import PROFILES

    assert arguments.SR_METHODS == super_resolve.METHODS
    assert arguments.CLINICAL_METHODS == clinical.METHODS
    assert arguments.PRECISIONS == PRECISIONS
    assert arguments.SLICE_PROFILES == PROFILES
