"""VGG19 feature loss: never downloads, names the missing file, conv5_4 before ReLU on 1-channel input; the
VGG19 and LPIPS backbone files are looked for in the same torch.hub folder."""

from __future__ import annotations

import pytest
import torch

from mtsr_monai.errors import InputError
from mtsr_monai.losses.perceptual import VGG19_FILE, VGGFeatureLoss, default_vgg19_path
from mtsr_monai.metrics.perceptual import BACKBONE_FILES, default_backbone_path


def test_missing_weights_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InputError) as err:  # exit 2 in a bundle run
        VGGFeatureLoss()
    assert VGG19_FILE in str(err.value) and str(tmp_path / "torch" / "hub" / "checkpoints") in str(err.value)


def test_both_weights_files_are_looked_for_in_torch_hubs_checkpoints_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test: set_dir below is global
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    checkpoints = tmp_path / "home" / "hub" / "checkpoints"
    assert default_vgg19_path() == checkpoints / VGG19_FILE
    assert default_backbone_path("alex") == checkpoints / BACKBONE_FILES["alex"]
    torch.hub.set_dir(str(tmp_path / "elsewhere"))  # wins over TORCH_HOME, as for torch's own downloads
    checkpoints = tmp_path / "elsewhere" / "checkpoints"
    assert default_vgg19_path() == checkpoints / VGG19_FILE
    assert default_backbone_path("vgg") == checkpoints / BACKBONE_FILES["vgg"]


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    # random (not ImageNet) weights for the convolutional part only: enough to test the plumbing
    from torchvision.models import vgg19

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19(weights=None).features[:35].state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / VGG19_FILE
    torch.save(state, path)
    return path


def test_features_are_conv5_4_before_activation(vgg_features_file):
    loss = VGGFeatureLoss(weights_path=vgg_features_file)
    assert isinstance(loss.features[-1], torch.nn.Conv2d) and loss.features[-1].out_channels == 512
    phi = loss._phi(torch.rand(1, 1, 32, 32))
    assert phi.min() < 0  # pre-activation: a ReLU output could not be negative


def test_loss_is_zero_for_identical_images_and_differentiable(vgg_features_file):
    loss = VGGFeatureLoss(weights_path=vgg_features_file)
    target = torch.rand(2, 1, 32, 32)
    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    assert loss(target, target).item() == 0.0
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.features.parameters())


def test_wrong_file_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a VGG19"):
        VGGFeatureLoss(weights_path=path)
