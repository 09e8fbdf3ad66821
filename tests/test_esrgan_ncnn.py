"""The Real-ESRGAN x4plus ncnn weights converted to our RRDBNet compute what the reference runtime does."""

from pathlib import Path

import numpy as np
import pytest
import torch

ncnn = pytest.importorskip("mtsr_monai.networks.esrgan_ncnn")
DATA = Path(__file__).parent / "data"


def _weights():
    try:
        return ncnn.find_realesrgan_x4plus()
    except FileNotFoundError as err:
        pytest.skip(f"{err}")


def _run_rgb(state: dict) -> np.ndarray:
    from PIL import Image

    from mtsr_monai.networks.rrdb import RRDBNet

    lr = np.asarray(Image.open(DATA / "astronaut_lr64.png"), np.float32) / 255
    net = RRDBNet(3, 3, keep_blocks=None)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(lr).permute(2, 0, 1)[None])
    return out[0].permute(1, 2, 0).numpy()


def _agreement(ours: np.ndarray) -> tuple[float, float]:
    """Median |ours - reference| in grey levels and the fraction within 3 levels, over the pixels our output
    keeps inside (0, 1) (the reference runtime computed in fp16 on llvmpipe: it overflows where saturated)."""
    from PIL import Image

    ref = np.asarray(Image.open(DATA / "astronaut_realesrgan_x4plus_ncnn.png"), np.float32) / 255
    inside = ((ours > 0.02) & (ours < 0.98)).all(axis=2)
    diff = np.abs(np.clip(ours, 0, 1) - ref)[inside] * 255
    return float(np.median(diff)), float((diff < 3).mean())


def test_conversion_reads_every_byte_of_the_bin_into_351_convolutions():
    param, weights = _weights()
    convs = ncnn.read_ncnn_convolutions(param, weights)
    assert len(convs) == len(ncnn.rrdbnet_conv_names()) == 351
    assert convs[0][1].shape == (64, 3, 3, 3) and convs[-1][1].shape == (3, 64, 3, 3)


def test_converted_rgb_net_matches_the_ncnn_reference_output():
    median, within3 = _agreement(
        _run_rgb(ncnn.realesrgan_state_dict(*_weights(), in_channels=3, out_channels=3))
    )
    assert median < MEDIAN_BELOW and within3 > WITHIN3_ABOVE


#: the right mapping scores 1.17 / 0.768 here; two trunk blocks swapped score 1.53 / 0.724
MEDIAN_BELOW, WITHIN3_ABOVE = 1.35, 0.75


def test_two_trunk_blocks_loaded_in_each_others_place_do_not_match_the_reference():
    state = ncnn.realesrgan_state_dict(*_weights(), in_channels=3, out_channels=3)
    swapped = dict(state)
    for key in [k for k in state if k.startswith("body.3.")]:
        other = key.replace("body.3.", "body.4.", 1)
        swapped[key], swapped[other] = state[other], state[key]
    median, within3 = _agreement(_run_rgb(swapped))
    assert median > MEDIAN_BELOW or within3 < WITHIN3_ABOVE


def test_a_transposed_kernel_layout_does_not_match_the_reference():
    state = ncnn.realesrgan_state_dict(*_weights(), in_channels=3, out_channels=3)
    transposed = {k: v.transpose(-1, -2) if v.ndim == 4 else v for k, v in state.items()}
    median, within3 = _agreement(_run_rgb(transposed))
    assert median > 2.0 or within3 < 0.6


def test_grey_net_equals_the_rgb_net_on_a_grey_image():
    from mtsr_monai.networks.rrdb import RRDBNet

    param, weights = _weights()
    rgb, grey = RRDBNet(3, 3, keep_blocks=[0, 1]), RRDBNet(1, 1, keep_blocks=[0, 1])
    from mtsr_monai.networks.rrdb import load_pruned_state_dict

    load_pruned_state_dict(rgb, ncnn.realesrgan_state_dict(param, weights, 3, 3))
    load_pruned_state_dict(grey, ncnn.realesrgan_state_dict(param, weights))
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        expected = rgb(x.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)
        torch.testing.assert_close(grey(x), expected, atol=1e-5, rtol=1e-4)
