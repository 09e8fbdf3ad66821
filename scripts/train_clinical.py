"""Train the clinical SR bundle (resumable) and export shipped weights.

    python scripts/train_clinical.py train --output-dir /root/mtsr_runs/clinical/run [key=value ...]
    python scripts/train_clinical.py export --run-dir /root/mtsr_runs/clinical/run \
        --output bundles/clinical_sr/models/model.pt [key=value ...]

``key=value`` pairs (options may come before or after them) override bundle config keys, read as
every training script reads them (``mtsr_monai.inference.bundle.parse_overrides``: filters=16
residual=true). ``export`` takes the best validation generator (``model_best.pt``) and the critic of
the newest resume checkpoint, stores both in fp16 with their constructor arguments and the run's data
recipe (``recipe.json``: the intensity headroom inference must use), and refreshes the sha256 in
``large_files.yml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "clinical_sr"


def parser_for(extra: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(BUNDLE), **extra})
    return parser


def train(args: argparse.Namespace) -> None:
    import torch

    # lazy: torch and MONAI load only once the arguments are read
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import parse_overrides, run_training

    overrides = parse_overrides(args.overrides)
    for key in ("output_dir", "dataset_dir"):
        if key in overrides:
            raise InputError(f"give --{key.replace('_', '-')} instead of the override {key}=...")
    if args.threads:
        torch.set_num_threads(args.threads)
    run_training(
        BUNDLE, {"output_dir": str(args.output_dir), "dataset_dir": str(args.dataset_dir), **overrides}
    )


ARCHITECTURE = ("filters", "critic_filters", "patch_size", "residual", "critic_dropout", "modalities")


def recipe_of(run_dir: Path, cfg) -> dict:
    """The run's ``recipe.json`` (written at training start), else the recipe the config describes."""
    import json

    path = run_dir / "recipe.json"
    if path.exists():
        return json.loads(path.read_text())
    simulation = cfg.get("simulation", "fixed")
    headroom = float(cfg.get("intensity_headroom", 1.0)) if simulation == "random" else 1.0
    return {"simulation": simulation, "headroom": headroom}


def network_args(cfg) -> tuple[dict, dict]:
    """The generator's and the critic's constructor arguments, as the shipped file records them."""
    mods = list(cfg["modalities"])
    network = {
        "spatial_dims": 2,
        "in_channels": len(mods),
        "out_channels": len(mods),
        "filters": int(cfg["filters"]),
        "depth": cfg.get_parsed_content("network_def").depth,
        "residual": bool(cfg["residual"]),
    }
    critic_args = {
        "spatial_dims": 2,
        "in_channels": len(mods),
        "input_size": int(cfg["patch_size"]),
        "filters": int(cfg["critic_filters"]),
        "dropout": float(cfg["critic_dropout"]),
    }
    return network, critic_args


def export(args: argparse.Namespace) -> None:
    import torch

    # lazy: torch and MONAI load only once the arguments are read
    from mtsr_monai.engines.handlers import read_newest_checkpoint
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import declare_weights, load_weights_into, parse_overrides, sha256
    from mtsr_monai.inference.clinical import best_model_meta, generator_state
    from mtsr_monai.io import atomic_output

    run_dir = Path(args.run_dir)
    best = run_dir / "model_best.pt"
    newest = read_newest_checkpoint(run_dir / "checkpoints")  # a damaged newest: the one before it
    if not best.is_file() or newest is None:
        raise InputError("needs model_best.pt and a resume checkpoint (a run stopped before its first "
                         "validation has no best model yet)", run_dir)  # fmt: skip
    recipe = recipe_of(run_dir, parser_for({}))
    # the run's own network settings (recipe.json), then the command line's, then the config's
    architecture = {k: recipe[k] for k in ARCHITECTURE if k in recipe}
    cfg = parser_for({**architecture, **parse_overrides(args.overrides)})
    mods = list(cfg["modalities"])
    network, critic_args = network_args(cfg)
    generator, meta = generator_state(best), best_model_meta(best)
    load_weights_into(cfg.get_parsed_content("network_def", instantiate=True), generator, best)
    state = newest[1]
    ckpt = {
        "model": {k: v.half() for k, v in generator.items()},
        "critic": {k: v.half() for k, v in state["discriminator"].items()},
        "network": network,
        "critic_args": critic_args,
        "modalities": mods,
        "patch_size": int(cfg["patch_size"]),
        "protocols": {k: dict(v) for k, v in cfg["protocols"].items()},
        # what the best model records of its run; older runs recorded nothing: the newest checkpoint's count
        "iterations": int(meta.get("iterations") or state["trainer"]["iteration"]),
        # inference scales inputs by headroom x their 99.5 % level (1: the fixed recipe, own scaling)
        "intensity_headroom": float(meta.get("intensity_headroom") or recipe["headroom"]),
        "recipe": recipe,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    # an export elsewhere leaves the bundle alone
    shipped = out.resolve() == (BUNDLE / "models" / "model.pt").resolve()
    digest = declare_weights(BUNDLE, "models/model.pt") if shipped else sha256(out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, sha256 {digest}, {ckpt['iterations']} iterations")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--output-dir", required=True, type=Path)
    t.add_argument("--dataset-dir", type=Path, default=ROOT.parent / "shared" / "data")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("overrides", nargs="*", help="bundle overrides, key=value")
    e = sub.add_parser("export")
    e.add_argument("--run-dir", required=True, type=Path)
    e.add_argument("--output", type=Path, default=BUNDLE / "models" / "model.pt")
    e.add_argument("overrides", nargs="*", help="the training run's architecture overrides, key=value")
    args = p.parse_args(argv)
    from mtsr_monai.errors import exit_code_of

    return exit_code_of(lambda: {"train": train, "export": export}[args.cmd](args), "train_clinical.py")


if __name__ == "__main__":
    sys.exit(main())
