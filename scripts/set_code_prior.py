"""Give MT weights a ``code_prior``: translation then draws its latent codes from the encoder's aggregate
posterior (per-dimension mean and std over real training targets) instead of N(0, I).

With a weak KL term the encoder places real targets away from N(0, I) (docs/mt.md, Session 20: mean -1.46
and 0.41 in two dimensions), so N(0, I) draws ask the generator for contrasts it never learnt. The
encoder is read from a bundle-trainer checkpoint (``checkpoint_N.pt``); ``--patches`` seeded patches of
the datalist's training targets are encoded, prepared as the trainer prepares them (median-scaled target
when the weights say so, [-1, 1]). The generator is unchanged; only the file's meta gains ``code_prior``
(``mtsr_monai.engines.bicyclegan.aggregate_code_prior``). A bundle file's sha256 goes into
``large_files.yml``.

    python scripts/set_code_prior.py --checkpoint RUN/checkpoints/checkpoint_6000.pt \\
        --datalist DATALIST --direction t1:t2 [--weights bundles/mtsr_mt/models/t1_to_t2.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def training_targets(datalist: Path, source: str, target: str, meta: dict, patches: int, seed: int):
    """Batches of 32 seeded training-target patches ``(B, 1, S, S)`` in [-1, 1], as the trainer sees them:
    the dataset is the bundle's own ``train#dataset`` (``configs/train.yaml``) with the weights' settings,
    without the target's gamma augmentation (the prior describes real targets, not augmented ones)."""
    import numpy as np
    import torch
    from monai.bundle import ConfigParser

    bundle = REPO / "bundles" / "mtsr_mt"
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "train.yaml")
    parser.update({
        "bundle_root": str(bundle), "datalist": str(datalist), "source": source, "target": target,
        "image_size": int(meta["image_size"]), "native_resolution": bool(meta.get("native_resolution", True)),
        "target_scaling": meta.get("target_scaling", "robust"), "target_gamma_prob": 0.0,
    })  # fmt: skip
    dataset = parser.get_parsed_content("train#dataset")
    dataset.set_random_state(seed)  # the patch crops (MONAI's own generators, not torch's)
    picks = np.random.default_rng(seed).choice(len(dataset), min(patches, len(dataset)), replace=False)
    for start in range(0, len(picks), 32):
        yield torch.stack([dataset[int(i)][target] for i in picks[start : start + 32]])


def code_prior_of(encoder_state: dict, meta: dict, datalist: Path, patches: int = 256, seed: int = 0) -> dict:
    """The meta ``code_prior`` of weights described by ``meta`` (less the checkpoint's name): the aggregate
    posterior of a trainer checkpoint's encoder over ``patches`` seeded training-target patches of
    ``datalist``."""
    from mtsr_monai.engines.bicyclegan import aggregate_code_prior
    from mtsr_monai.inference.translate import check_code_prior
    from mtsr_monai.networks.bicyclegan import ResNetEncoder

    nef = int(encoder_state["features.0.conv.weight"].shape[0])
    # as build_networks makes it: the generator's width cap (meta max_mult) is not the encoder's
    encoder = ResNetEncoder(nz=int(meta["nz"]), nef=nef, image_size=int(meta["image_size"]))
    encoder.load_state_dict(encoder_state)
    batches = training_targets(datalist, meta["source"], meta["target"], meta, patches, seed)
    prior = aggregate_code_prior(encoder, batches)
    check_code_prior(prior, int(meta["nz"]))
    return {**prior, "patches": patches, "seed": seed}


def set_code_prior(
    weights: Path, checkpoint: Path, datalist: Path, patches: int = 256, seed: int = 0
) -> dict:
    """Rewrite ``weights`` with the encoder's aggregate posterior as its meta ``code_prior``."""
    import torch

    from mtsr_monai.inference.translate import export_generator, load_translator

    generator, meta = load_translator(weights)
    encoder_state = torch.load(checkpoint, map_location="cpu", weights_only=False)["encoder"]
    prior = code_prior_of(encoder_state, meta, datalist, patches, seed)
    meta["code_prior"] = {**prior, "checkpoint": checkpoint.name}
    export_generator(generator, weights, meta)
    return meta["code_prior"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="trainer checkpoint (with the encoder)"
    )
    parser.add_argument("--datalist", type=Path, required=True, help="its training datalist")
    parser.add_argument("--direction", default="t1:t2")
    parser.add_argument("--weights", type=Path, help="default: the bundle's <source>_to_<target>.pt")
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source, target = args.direction.split(":")
    bundle = REPO / "bundles" / "mtsr_mt"
    weights = args.weights or bundle / "models" / f"{source}_to_{target}.pt"
    print(set_code_prior(weights, args.checkpoint, args.datalist, args.patches, args.seed))
    if weights.resolve().parent == (bundle / "models").resolve():
        from mtsr_monai.inference.bundle import declare_weights

        declare_weights(bundle, f"models/{weights.name}")


if __name__ == "__main__":
    main()
