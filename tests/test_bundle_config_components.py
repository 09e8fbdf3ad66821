"""The training configs' optional pieces are ``_target_`` components (``_disabled_``, ``_mode_: callable``):
a disabled one resolves to None where it is referenced, an enabled one is what the former expression built,
and the SR validation pairs are those of the named ``val_seed``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import REPO
from tests.test_bundle_zoo import _train_overrides


def _parser(bundle: str, root: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.yaml"))
    parser.update(
        {"bundle_root": str(REPO / "bundles" / bundle), **_train_overrides(bundle, root), **overrides}
    )
    return parser


def test_sr_moving_average_is_none_at_momentum_zero_and_an_ema_handler_above(tmp_path):
    from mtsr_monai.engines.handlers import ForeachEMAHandler

    off = _parser("mtsr_sr", tmp_path)
    assert off.get_parsed_content("ema") is None
    assert off.get_parsed_content("eval_network") is off.get_parsed_content("network")
    on = _parser("mtsr_sr", tmp_path, ema_momentum=0.25)
    ema = on.get_parsed_content("ema")
    assert isinstance(ema, ForeachEMAHandler) and ema.momentum == 0.25
    assert on.get_parsed_content("eval_network") is ema.ema_model
    assert on.get_parsed_content("train#resume").objects["ema"] is ema.ema_model


def test_sr_vgg_term_is_none_at_weight_zero_and_moves_with_the_generator_loss(tmp_path):
    from torchvision.models import vgg19

    from mtsr_monai.losses.perceptual import VGGFeatureLoss

    off = _parser("mtsr_sr", tmp_path)  # loss_weights#vgg 0: no VGG19 file is read
    assert off.get_parsed_content("vgg_loss") is None
    assert off.get_parsed_content("generator_loss").losses["vgg"] is None
    weights = tmp_path / "vgg19_features.pth"  # the features are all the loss reads
    torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, weights)
    # the meta device: where every tensor would go if the loss were moved, without a GPU
    on = _parser("mtsr_sr", tmp_path, **{"loss_weights#vgg": 200.0, "vgg_weights": str(weights)})
    on.update({"device": "$torch.device('meta')"})
    loss = on.get_parsed_content("generator_loss")
    vgg = on.get_parsed_content("vgg_loss")
    assert isinstance(vgg, VGGFeatureLoss) and loss.losses["vgg"] is vgg and loss.weights["vgg"] == 200.0
    assert {t.device.type for t in [*vgg.parameters(), *vgg.buffers()]} == {"meta"}


def test_sr_validation_pairs_are_those_of_val_seed(tmp_path):
    from mtsr_monai.data.slices import datalist_volumes
    from mtsr_monai.inference.super_resolve import eval_pairs

    parser = _parser("mtsr_sr", tmp_path)
    assert parser.get_parsed_content("val_seed") == 12345  # the seed of every validation so far
    pairs = parser.get_parsed_content("validate#dataset")
    volumes = datalist_volumes(tmp_path / "datalist.json", "validation", "hr", ["t1", "t2", "flair"])
    expected = eval_pairs(volumes, slices_per_volume=2, seed=12345, scale=4)
    assert len(pairs) == len(expected) > 0
    for got, want in zip(pairs, expected, strict=True):
        assert (got["source"], got["slice"]) == (want["source"], want["slice"])
        assert torch.equal(got["lr"], want["lr"]) and torch.equal(got["hr"], want["hr"])
    reseeded = _parser("mtsr_sr", tmp_path, val_seed=7).get_parsed_content("validate#dataset")
    assert not torch.equal(reseeded[0]["lr"], pairs[0]["lr"])


def test_clinical_collate_and_image_panels_are_partials_of_named_functions(tmp_path):
    from mtsr_monai.data.clinical import pad_collate, training_panels

    parser = _parser("clinical_sr", tmp_path, mode="slice")
    collate = parser.get_parsed_content("train#dataloader#collate_fn")
    multiple = parser.get_parsed_content("network_def").multiple
    assert isinstance(collate, functools.partial) and collate.func is pad_collate
    assert collate.keywords == {"multiple": multiple}
    batch = [
        {"lr": torch.ones(3, 5, 7), "hr": torch.ones(3, 5, 7)},
        {"lr": torch.ones(3, 9, 4), "hr": torch.ones(3, 9, 4)},
    ]
    assert collate(batch)["lr"].shape == (2, 3, -(-9 // multiple) * multiple, -(-7 // multiple) * multiple)
    grids = [h for h in parser.get_parsed_content("train#handlers") if hasattr(h, "images_fn")]
    panels = grids[0].images_fn
    assert isinstance(panels, functools.partial) and panels.func is training_panels
    output = {
        k: torch.arange(2 * 3 * 4.0).reshape(2, 3, 2, 2) + i
        for i, k in enumerate(("input", "pred", "target"))
    }
    shown = panels(output)
    assert list(shown) == ["input", "restored", "target"]
    assert all(
        torch.equal(shown[n], output[k][:, :1])
        for n, k in zip(shown, ("input", "pred", "target"), strict=True)
    )


def test_sr_image_panels_show_lr_its_bicubic_sr_and_hr(tmp_path):
    from mtsr_monai.engines.paired import sr_panels

    parser = _parser("mtsr_sr", tmp_path)
    grids = [h for h in parser.get_parsed_content("train#handlers") if hasattr(h, "images_fn")]
    panels = grids[0].images_fn
    assert isinstance(panels, functools.partial) and panels.func is sr_panels
    scale = parser.get_parsed_content("scale")
    lr = torch.rand(2, 1, 6, 6)
    shown = panels({"input": lr, "pred": torch.zeros(2, 1, 6 * scale, 6 * scale), "target": torch.ones(1)})
    assert list(shown) == ["lr", "bicubic", "sr", "hr"]
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=scale, mode="bicubic")
    assert torch.equal(shown["bicubic"], bicubic)


@pytest.mark.parametrize("modalities, probs", [(["flair"], [0.1]), (["t2", "flair"], [0.5, 0.1])])
def test_clinical_channel_dropout_follows_the_sequences_trained(tmp_path, modalities, probs):
    parser = _parser("clinical_sr", tmp_path, modalities=modalities)
    dataset = parser.get_parsed_content("train#dataset")
    dropout = [t for t in dataset.post.transforms if hasattr(t, "dropout")][0]
    assert dropout.dropout.probs == probs
    assert dataset[0]["lr"].shape[0] == len(modalities)  # a sample is drawn (one channel crashed before)


def test_an_empty_validation_split_is_refused_before_training_rather_than_never_validated(tmp_path):
    import json

    import numpy as np

    from mtsr_monai.data.clinical import validation_pairs
    from mtsr_monai.data.slices import datalist_volumes
    from mtsr_monai.errors import InputError
    from tests.conftest import write_nifti

    t1 = str(write_nifti(tmp_path / "t1.nii.gz", np.ones((4, 4, 4), np.float32)))
    path = tmp_path / "datalist.json"
    for validation, problem in (([], "has no subject"), ([{"subject": "v", "t1": t1}], "flair")):
        path.write_text(json.dumps({"training": [{"subject": "s", "t1": t1}], "validation": validation}))
        with pytest.raises(InputError, match=problem):
            datalist_volumes(path, "validation", "hr", ["flair"])
    assert datalist_volumes(path, "validation", "hr", ["t1"]) == [t1]
    with pytest.raises(InputError, match="validation split has no subject"):
        validation_pairs("random", [], None)
