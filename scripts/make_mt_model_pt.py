"""Write ``bundles/mtsr_mt/models/model.pt``: the model zoo's one checkpoint of the MT bundle.

The zoo's tools (``verify_net_in_out``, ``ckpt_export``, ``onnx_export``) and MONAI Label load
``models/model.pt`` into ``configs/inference.yaml#network_def``. That file is the generator of
``models/t1_to_flair.pt`` (the default direction), as a plain state dict with the same fp16 tensors (no
re-training, no conversion), so it follows the translation weights exactly: run this script again whenever
``t1_to_flair.pt`` changes. ``network_def`` reads its arguments from ``t1_to_flair.pt``'s meta. The sha256
of the new file goes into ``large_files.yml``.

    python scripts/make_mt_model_pt.py [--bundle bundles/mtsr_mt] [--source t1 --target flair]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def make_model_pt(bundle: Path, source: str = "t1", target: str = "flair") -> Path:
    """Copy the generator state dict of ``<source>_to_<target>.pt`` into ``models/model.pt``; returns it."""
    from mtsr_monai.inference.bundle import declare_weights
    from mtsr_monai.io import atomic_output

    ckpt = torch.load(bundle / "models" / f"{source}_to_{target}.pt", map_location="cpu", weights_only=True)
    out = bundle / "models" / "model.pt"
    with atomic_output(out) as tmp:
        torch.save(dict(ckpt["generator"]), tmp)
    declare_weights(bundle, "models/model.pt")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "mtsr_mt")
    parser.add_argument("--source", default="t1")
    parser.add_argument("--target", default="flair")
    args = parser.parse_args()
    print(make_model_pt(args.bundle, args.source, args.target))


if __name__ == "__main__":
    main()
