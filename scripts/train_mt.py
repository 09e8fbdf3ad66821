#!/usr/bin/env python
"""Train one modality-translation model with the bundle's own config (bundles/mtsr_mt/configs/train.yaml)
on the shared data's split, resumable, and export its best validated generator.

    python scripts/train_mt.py --source t1 --target flair --run-dir /root/mtsr_runs/mt/t1_to_flair
        [--minutes 7] [--export bundles/mtsr_mt/models/t1_to_flair.pt] [-- --upsample bilinear ...]

This is `python -m monai.bundle run training` of train.yaml (the command is printed first): each option is
one override of it (`--lr` is `learning_rate`, `--minutes` `max_minutes`, `--threads` `num_threads`,
`--no-encoder` `use_encoder False`, `--run-dir` `output_dir`, the others their own names), an option left
out keeps train.yaml's value, and more overrides go after `--`, written as for monai.bundle. So the recipe
is the bundle's (native-resolution patches, median-scaled targets, target gamma, L1 warm start, validation on
`val_max_batches` batches); the first 16-filter weights (bundle 0.1.x) were trained by this script before it
ran the bundle, with what are now `--ngf 16 --nef 16 --ndf 16 --epoch-length 200 --precision fp32 --device cpu
-- --native_resolution False --target_scaling robust --target_gamma_prob 0 --pretrain_iterations 0
--max_mult 8`.

Subjects come from the BraTS folders of the shared data, split by ``scripts/shared_splits.py`` (written to
``<run-dir>/datalist.json``; ``--datalist`` gives another): its training split is trained on, its validation
split validated on; the held-out subjects (``HELD_OUT``) are never listed and are the ones
``scripts/reproduce_mtsr_table2.py`` evaluates. Running the same command again resumes from the newest
checkpoint in --run-dir; `--minutes` ends each invocation after a validation. The bundle writes its best
validated generator (PSNR) to ``<run-dir>/<source>_to_<target>.pt``; ``--export`` copies it with the subjects
in its meta, and into ``bundles/mtsr_mt/models/`` also declares its sha256 in ``large_files.yml`` (and
rewrites ``models/model.pt`` for ``t1_to_flair.pt``), so the bundle's check accepts it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "mtsr_mt"

from shared_splits import DATA_ROOT, HELD_OUT, split_of, subjects  # noqa: E402

from mtsr_monai.errors import InputError, exit_code_of  # noqa: E402
from mtsr_monai.inference.bundle import override_args, parse_overrides, run_training  # noqa: E402

#: the train.yaml key of each option that is one override as it is
OPTION_KEYS = {
    "source": "source", "target": "target", "image_size": "image_size", "nz": "nz", "ngf": "ngf",
    "nef": "nef", "ndf": "ndf", "lr": "learning_rate", "batch_size": "batch_size",
    "epoch_length": "epoch_length", "max_epochs": "max_epochs", "minutes": "max_minutes",
    "threads": "num_threads", "seed": "seed", "precision": "precision",
}  # fmt: skip


def subjects_for(source: str, target: str, split: str = "training", root: Path = DATA_ROOT) -> list[dict]:
    """Subjects of one ``shared_splits`` split (``training`` / ``validation`` / ``test``) having both
    modalities, as ``{"subject", source, target}`` dicts."""
    return [
        {"subject": s["subject"], source: s[source], target: s[target]}
        for s in subjects(root)
        if source in s and target in s and split_of(s["subject"]) == split
    ]


def write_datalist(run_dir: Path, source: str, target: str) -> Path:
    """``run_dir/datalist.json``: the training and validation splits (no held-out subject) with both
    modalities; InputError when either split has none (the shared data is missing)."""
    # lazy: --help answers without loading torch
    from mtsr_monai.io import atomic_write_text

    listing = {split: subjects_for(source, target, split) for split in ("training", "validation")}
    if not all(listing.values()):
        problem = f"no {source} + {target} subjects in a split of the shared data (set MTSR_SHARED_DATA)"
        raise InputError(problem, DATA_ROOT)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "datalist.json"
    atomic_write_text(path, json.dumps(listing, indent=1))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--run-dir", required=True, type=Path, help="the bundle's output_dir")
    p.add_argument("--export", type=Path, help="copy the best validated generator (fp16) here at the end")
    p.add_argument("--datalist", type=Path, help="a Decathlon datalist instead of the shared data's split")
    p.add_argument("--no-encoder", action="store_true", help="pix2pix + noise (use_encoder False)")
    for name, kind in (("image-size", int), ("nz", int), ("ngf", int), ("nef", int), ("ndf", int),
                       ("lr", float), ("batch-size", int), ("epoch-length", int), ("max-epochs", int),
                       ("seed", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=kind, help="default: train.yaml's")
    p.add_argument("--minutes", type=float, help="wall-clock budget of this invocation (default: none)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: no cap)")
    p.add_argument("--device", help="e.g. cpu, cuda:0 (default: train.yaml's, CUDA when there is one)")
    p.add_argument("--precision", help="auto | fp32 | bf16 | fp16 (default: train.yaml's, auto)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="after --: more train.yaml overrides")
    args = p.parse_args(argv)
    if args.overrides[:1] == ["--"]:
        args.overrides = args.overrides[1:]
    return args


def bundle_overrides(args: argparse.Namespace, datalist: Path) -> dict[str, Any]:
    """The train.yaml overrides of the command line (options left out: train.yaml's values)."""
    out: dict[str, Any] = {"datalist": str(datalist), "output_dir": str(args.run_dir)}
    given = {opt: getattr(args, opt) for opt in OPTION_KEYS}
    out.update({OPTION_KEYS[opt]: value for opt, value in given.items() if value is not None})
    if args.no_encoder:
        out["use_encoder"] = False
    if args.device:
        out["device"] = f"$torch.device({args.device!r})"
    out.update(parse_overrides(args.overrides))
    return out


def bundle_command(overrides: dict[str, Any]) -> str:
    """The ``python -m monai.bundle run training`` command line this run is (printed for the record)."""
    import shlex

    configs = BUNDLE / "configs"
    words = ["python", "-m", "monai.bundle", "run", "training", "--config_file", str(configs / "train.yaml"),
             "--meta_file", str(configs / "metadata.json"), "--bundle_root", str(BUNDLE)]  # fmt: skip
    return shlex.join([*words, *override_args(overrides)])


def train(overrides: dict[str, Any]) -> None:
    """``monai.bundle run training`` of train.yaml with ``overrides``, in this process
    (:func:`~mtsr_monai.inference.bundle.run_training`)."""
    run_training(BUNDLE, overrides)


def export(best: Path, target: Path, datalist: Path, held_out: list[str]) -> Path:
    """Copy the run's best validated generator ``best`` to ``target`` (atomic) with the datalist's subjects
    and the ``held_out`` ones in its meta; into the bundle's models folder also declare its sha256."""
    import torch

    # lazy: --help answers without loading torch
    from mtsr_monai.inference.bundle import declare_weights, read_weights
    from mtsr_monai.io import atomic_output

    saved = read_weights(best, "no validated generator yet: the run ended before its first validation")
    if not isinstance(saved, dict) or not isinstance(saved.get("meta"), dict):
        raise InputError("holds no generator with its meta", best)
    listing = json.loads(datalist.read_text())
    for split in ("training", "validation"):
        saved["meta"][f"{split}_subjects"] = [s["subject"] for s in listing.get(split, [])]
    saved["meta"]["held_out"] = list(held_out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save(saved, tmp)
    if target.resolve().parent == (BUNDLE / "models").resolve():  # accepted by the bundle's check
        declare_weights(BUNDLE, f"models/{target.name}")
        if target.name == "t1_to_flair.pt":  # the zoo's model.pt follows the default direction
            from make_mt_model_pt import make_model_pt

            make_model_pt(BUNDLE)
    return target


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    # lazy: --help answers without loading torch
    from mtsr_monai.engines.run_safety import check_training_setup

    # the bundle checks this too, but the datalist is written into run_dir before it runs
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    check_training_setup(args.run_dir, args.precision or "auto", device)
    datalist = args.datalist or write_datalist(args.run_dir, args.source, args.target)
    overrides = bundle_overrides(args, datalist)
    print(bundle_command(overrides), flush=True)
    train(overrides)
    if args.export:
        best = str(overrides.get("export_path", args.run_dir / f"{args.source}_to_{args.target}.pt"))
        if best.startswith("$"):
            raise InputError("--export copies the run's export_path: give it as a path, not an expression")
        # the shared split's held-out subjects, or the test split of a datalist of one's own
        held_out = [s["subject"] for s in json.loads(datalist.read_text()).get("test", [])]
        held_out = held_out if args.datalist else list(HELD_OUT)
        print(f"exported {export(Path(best), args.export, datalist, held_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main, "train_mt.py"))
