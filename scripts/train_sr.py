#!/usr/bin/env python
"""Train the shipped SR model with the bundle (resumable), and export weights into the bundle.

python scripts/train_sr.py train --datalist D.json --run-dir /root/mtsr_runs/sr/proposed12 [--threads 2]
    runs `python -m monai.bundle run training` in this process with the from-scratch settings of bundles
    0.1-0.3 (12 blocks, bicubic global skip, L1 phase only, VGG weight 0); Ctrl-C or SIGTERM saves the
    iteration, and the same command again resumes. The shipped 0.4.x weights have no global skip and were
    fine-tuned from the pretrained ESRGAN start: continue them with `-- --global_skip null
    --init_checkpoint ...` and the overrides of docs/sr.md.
    Bundle overrides go after `--`, e.g. a lower-learning-rate stage started from stage 1's last weights:
    `... train --run-dir RUN2 -- --learning_rate 5e-5 --init_checkpoint W.pt`.
python scripts/train_sr.py export --checkpoint RUN/model.pt [--out F]
    writes bundles/mtsr_sr/models/model.pt (fp16 state dict, atomic) and its sha256 into large_files.yml;
    the checkpoint may also be a resume checkpoint (RUN/checkpoints/checkpoint_N.pt: its generator average
    'ema' when trained with --ema_momentum > 0, else its generator), and
    --out another file (kept fp32, e.g. for --init_checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "mtsr_sr"

SHIPPED_SETTINGS = {
    "epoch_length": 20, "max_epochs": 500, "pretrain_epochs": 500, "loss_weights#vgg": 0,
    "global_skip": "bicubic", "batch_size": 1, "samples_per_volume": 4, "checkpoint_every": 10,
    "val_slices_per_volume": 1,
}  # fmt: skip


def train(args: argparse.Namespace) -> int:
    # lazy: --help answers without loading the package
    from mtsr_monai.inference.bundle import parse_overrides, run_training

    settings = {"datalist": str(args.datalist), "output_dir": str(args.run_dir), "num_threads": args.threads}
    settings.update(SHIPPED_SETTINGS)
    settings.update(parse_overrides(args.overrides))
    run_training(BUNDLE, settings)
    return 0


def export(args: argparse.Namespace) -> int:
    import torch

    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import bundle_parser, declare_weights, sha256
    from mtsr_monai.io import atomic_output

    if not args.checkpoint.is_file():
        raise InputError("no such checkpoint", args.checkpoint)
    try:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or pickled objects
        raise InputError(f"not a readable checkpoint ({type(err).__name__})", args.checkpoint) from None
    # best-model file, or a resume checkpoint: its generator average if kept, else the last iterate
    for key in ("model", "ema", "generator"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError("holds no generator state dict", args.checkpoint)
    target = Path(args.out)
    shipped = target.resolve() == (BUNDLE / "models" / "model.pt").resolve()
    # refused before anything is written: weights the bundle's generator cannot load (another network), and
    # for the bundle's own file also weights its inference would misuse (another global skip)
    check_fits_bundle(args.checkpoint, state, bundle_parser(BUNDLE), check_recipe=shipped)
    # the shipped file is fp16 (half the size); another target (e.g. an init_checkpoint) keeps fp32
    state = {
        k.removeprefix("module."): (v.half() if shipped and v.is_floating_point() else v)
        for k, v in state.items()
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save(state, tmp)
    digest = declare_weights(BUNDLE, "models/model.pt") if shipped else sha256(target)
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, sha256 {digest}")
    return 0


def check_fits_bundle(checkpoint: Path, state: dict, parser, check_recipe: bool = True) -> None:
    """The weights load strictly into the bundle's inference network, and (``check_recipe``) the run that
    made them (its ``recipe.json``) used the global skip that inference.yaml declares (the output is
    otherwise wrong)."""
    import json

    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import load_weights_into

    load_weights_into(parser.get_parsed_content("network_def", instantiate=True), state, checkpoint)
    if not check_recipe:
        return
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        recipe = folder / "recipe.json"
        if recipe.is_file():
            trained, declared = json.loads(recipe.read_text()).get("global_skip"), parser["global_skip"]
            if trained != declared:
                raise InputError(
                    f"trained with global_skip {trained!r} ({recipe}), but the bundle's inference.yaml "
                    f"declares {declared!r}: its outputs would be wrong; train with --global_skip "
                    f"{declared!r} or change inference.yaml first",
                    checkpoint,
                )
            return
    print(f"warning: no recipe.json beside {checkpoint}: its global_skip cannot be checked", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--datalist", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="after --: more bundle overrides, e.g. -- --learning_rate 5e-5",
    )
    p = sub.add_parser("export")
    p.add_argument(
        "--checkpoint", type=Path, required=True, help="RUN/model.pt or RUN/checkpoints/checkpoint_N.pt"
    )
    p.add_argument("--out", type=Path, default=BUNDLE / "models" / "model.pt", help="a state dict file")
    args = parser.parse_args(argv)
    if args.command == "train" and args.overrides[:1] == ["--"]:
        args.overrides = args.overrides[1:]
    from mtsr_monai.errors import exit_code_of

    return exit_code_of(lambda: train(args) if args.command == "train" else export(args), "train_sr.py")


if __name__ == "__main__":
    sys.exit(main())
