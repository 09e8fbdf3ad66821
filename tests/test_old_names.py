"""Names a copied bundle config may still use after a rename resolve to the renamed classes."""

from __future__ import annotations

import importlib

import pytest


def test_the_discriminators_old_name_warns_and_gives_the_pooled_one():
    from mtsr_monai.networks import bicyclegan

    with pytest.warns(DeprecationWarning, match="PooledMultiScaleDiscriminator"):
        old = bicyclegan.MultiScalePatchDiscriminator
    assert old is bicyclegan.PooledMultiScaleDiscriminator
    with pytest.raises(AttributeError):
        bicyclegan.NoSuchNetwork  # noqa: B018


def test_a_config_naming_the_old_discriminator_still_builds_it():
    from monai.bundle import ConfigParser

    from mtsr_monai.networks.bicyclegan import PooledMultiScaleDiscriminator

    parser = ConfigParser(
        {
            "imports": ["$import mtsr_monai", "$import mtsr_monai.networks.bicyclegan"],
            "d": "$mtsr_monai.networks.bicyclegan.MultiScalePatchDiscriminator(ndf=4, image_size=32)",
        }
    )
    parser.get_parsed_content("imports")  # as a bundle workflow does first
    assert isinstance(parser.get_parsed_content("d"), PooledMultiScaleDiscriminator)


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("mtsr_monai.inference.heldout", "SimulatedPaird", "SimulatedPair"),
        ("mtsr_monai.inference.components", "ClinicalRestored", "RestoreClinicalIntensityd"),
    ],
)
def test_old_transform_names_are_the_renamed_classes(module, old, new):
    from monai.transforms import MapTransform

    renamed = getattr(importlib.import_module(module), new)
    assert getattr(importlib.import_module(module), old) is renamed
    # MONAI's convention: the key-based dictionary transforms, and only they, end in "d"
    assert issubclass(renamed, MapTransform) == new.endswith("d")
