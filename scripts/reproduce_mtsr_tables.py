#!/usr/bin/env python
"""MTSR-MRI Tables 1 and 3 (layout of the paper) from the real data in ../shared/data, with a training budget.

Table 1: bilinear, bicubic, ESRGAN-23 and proposed-12 (RRDB blocks 0, 2, ..., 22): PSNR and SSIM on T1 and T2,
and inference time. Table 3: the pruned variants v0-v4 of the paper's appendix B and every-other, each
initialised from the ESRGAN-23 model through the pruned loader and fine-tuned with the same budget.

``--start pretrained`` (default, as the paper's appendix B): ESRGAN-23 starts from the pretrained Real-ESRGAN
x4plus weights (:mod:`mtsr_monai.networks.esrgan_ncnn`, extra ``pretrained``), is fine-tuned with the budget,
and the variants are pruned from that fine-tuned model; Table 1 also gets the pretrained ESRGAN-23 as it is
(no fine-tuning). ``--start scratch``: ESRGAN-23 is trained from scratch (earlier sessions' layout).

Protocol (held-out subjects, fixed degradations):
- subjects Brats18_TCIA10_637_1, Brats18_TCIA10_639_1, Brats18_CBICA_AOO_1 are held out (never trained on,
  also by the shipped model; training uses the training subjects of ``scripts/shared_splits.py`` only); their
  T1 and T2 volumes give ``--test-slices`` axial slices each, scaled per
  volume as in training and degraded x4 by the second-order chain with fixed seeds (``eval_pairs``);
- PSNR / SSIM on the 240x240 slices in the [0, 1] training scale (``data_range = 1``), from
  :mod:`mtsr_monai.metrics.image`; inference time = mean seconds per slice on this machine;
- training: the bundle's ``train.yaml`` run in-process (``ConfigWorkflow``) for ``--iterations`` L1
  iterations (the PSNR-oriented phase 1; the adversarial phase needs a budget this script does not assume),
  on ``--train-volumes`` training volumes, HR patches of ``--patch`` pixels.

The budget is stated in the outputs; with a CPU budget of a few iterations the trained rows say little about
the methods and much about the budget. Usage:
  python scripts/reproduce_mtsr_tables.py --iterations 20 --out-dir /tmp/mtsr/sr/tables [--shipped]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from shared_splits import DATA_ROOT as DATA  # noqa: E402  ../shared/data, or $MTSR_SHARED_DATA

BUNDLE = REPO / "bundles" / "mtsr_sr"
HELD_OUT = ("Brats18_TCIA10_637_1", "Brats18_TCIA10_639_1", "Brats18_CBICA_AOO_1")
VARIANTS = ("v0", "v1", "v2", "v3", "v4", "every_other")


def split_datalist(data: Path = DATA) -> dict[str, list[dict]]:
    """One entry per (subject, contrast) volume: the shared split's training and validation volumes, and the
    held-out subjects of the SR benchmarks as this script's ``test`` set (never a bundle's validation: a run
    that validated would choose its checkpoint on them)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from shared_splits import volume_datalist

    volumes = volume_datalist("hr", root=data)
    test = [d for d in volumes["test"] if d["subject"] in HELD_OUT]
    rename = [{**d, "subject": f"{d['subject']}_{d['modality']}"} for d in volumes["training"]]
    return {"training": rename, "validation": volumes["validation"], "test": test}


def train_budget(datalist: Path, out_dir: Path, args, keep_blocks, init: Path | None = None):
    """Train (or fine-tune from ``init``) one generator with the bundle's train.yaml; returns the network."""
    from monai.bundle import ConfigWorkflow

    overrides = {
        "datalist": str(datalist),
        "output_dir": str(out_dir),
        "keep_blocks": keep_blocks,
        "global_skip": args.global_skip,
        "init_checkpoint": str(init) if init else None,
        "epoch_length": args.iterations,
        "max_epochs": 1,
        "pretrain_epochs": 1,
        "val_interval": 10**6,  # no validation inside: the tables evaluate afterwards
        "validate#dataset": "$[]",
        "loss_weights#vgg": 0.0,
        "hr_patch": args.patch,
        "samples_per_volume": args.patches,
        "batch_size": 1,
        "checkpoint_every": 10**6,
        "num_threads": args.threads,
        # scheduler only: no validation, logging or images inside the budget runs
        "train#handlers": [
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@g_scheduler", "epoch_level": False}
        ],
    }
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.yaml"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="train",
        **overrides,
    )
    wf.initialize()
    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    net = wf.parser.get_parsed_content("network")
    wf.finalize()
    return net.eval(), seconds


def evaluate(method: str, pairs: list[dict], network=None) -> dict:
    import numpy as np
    import torch

    from mtsr_monai.inference.super_resolve import interpolate_slices
    from mtsr_monai.metrics.image import psnr, ssim

    per_mod: dict[str, dict[str, list[float]]] = {}
    seconds = 0.0
    with torch.inference_mode():
        for item in pairs:
            x = item["lr"][None]
            start = time.perf_counter()
            y = network(x) if method == "model" else interpolate_slices(x, 4, method)
            seconds += time.perf_counter() - start
            pred, ref = y[0, 0].numpy(), item["hr"][0].numpy()
            m = per_mod.setdefault(item["modality"], {"psnr": [], "ssim": []})
            m["psnr"].append(psnr(pred, ref, data_range=1.0))
            m["ssim"].append(ssim(pred, ref, data_range=1.0))
    result = {mod: {k: float(np.mean(v)) for k, v in d.items()} for mod, d in per_mod.items()}
    result["seconds_per_slice"] = seconds / len(pairs)
    return result


def markdown(title: str, rows: list[tuple[str, str, dict]], budget: str, extra_header: str = "") -> str:
    head = f"| Method |{extra_header} T1 SSIM | T1 PSNR | T2 SSIM | T2 PSNR | Inference time (s / slice) |"
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [f"**{title}** ({budget})", "", head, sep]
    for name, extra, r in rows:
        cells = [f"{r[m]['ssim']:.3f} | {r[m]['psnr']:.2f}" for m in ("t1", "t2")]
        mid = f" {extra} |" if extra_header else ""
        lines.append(f"| {name} |{mid} " + " | ".join(cells) + f" | {r['seconds_per_slice']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="training iterations per model (budget)")
    parser.add_argument("--train-volumes", type=int, default=8, help="training volumes used (budget)")
    parser.add_argument("--patch", type=int, default=64, help="HR training patch size")
    parser.add_argument("--patches", type=int, default=2, help="patches per slice (batch)")
    parser.add_argument("--test-slices", type=int, default=2, help="axial slices per held-out T1/T2 volume")
    parser.add_argument(
        "--global-skip",
        default=None,
        choices=["bicubic", "none"],
        help="default: none with --start pretrained, bicubic with --start scratch",
    )
    parser.add_argument("--start", default="pretrained", choices=["pretrained", "scratch"])
    parser.add_argument("--shipped", action="store_true", help="add a row for the shipped bundle weights")
    parser.add_argument("--shipped-only", action="store_true", help="add it to --out-dir's tables")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/mtsr/sr/tables"))
    args = parser.parse_args(argv)
    if args.global_skip is None:
        args.global_skip = "none" if args.start == "pretrained" else "bicubic"
    args.global_skip = None if args.global_skip == "none" else args.global_skip
    return args


def training_and_test(args: argparse.Namespace) -> tuple[Path, list[dict], int]:
    """Write the budget's training datalist (the first ``--train-volumes``, T1 and T2 first) and make the
    held-out test pairs (T1, T2 slices, seeded second-order degradation): ``(datalist, pairs, volumes)``."""
    from mtsr_monai.inference.super_resolve import eval_pairs
    from mtsr_monai.io import atomic_write_text

    split = split_datalist()
    rng_order = sorted(split["training"], key=lambda d: (d["modality"] not in ("t1", "t2"), d["subject"]))
    train = rng_order[: args.train_volumes]
    datalist = args.out_dir / "datalist.json"
    atomic_write_text(datalist, json.dumps({"training": train, "validation": split["validation"]}, indent=1))
    test = [d for d in split["test"] if d["modality"] in ("t1", "t2")]
    pairs = []
    for d in test:
        for p in eval_pairs([d["hr"]], slices_per_volume=args.test_slices, seed=args.seed, scale=4):
            p["modality"] = d["modality"]
            pairs.append(p)
    return datalist, pairs, len(train)


def budget_tables(args: argparse.Namespace, datalist: Path, pairs: list[dict], budget: str) -> dict:
    """Tables 1 and 3 within the budget: interpolation, (pretrained) ESRGAN-23, ESRGAN-23 trained, and each
    pruned variant fine-tuned from it; with training seconds."""
    import torch

    from mtsr_monai.networks.rrdb import variant_blocks

    results = {"budget": budget, "table1": {}, "table3": {}, "training_seconds": {}}
    for method in ("bilinear", "bicubic"):
        results["table1"][method] = evaluate(method, pairs)
    init23 = None
    if args.start == "pretrained":
        from mtsr_monai.networks.esrgan_ncnn import realesrgan_state_dict
        from mtsr_monai.networks.rrdb import RRDBNet

        init23 = args.out_dir / "realesrgan_x4plus_grey.pt"
        torch.save(realesrgan_state_dict(), init23)
        pretrained = RRDBNet(keep_blocks=None)
        pretrained.load_state_dict(torch.load(init23, weights_only=True))
        results["table1"]["ESRGAN-23 (pretrained, not fine-tuned)"] = evaluate(
            "model", pairs, pretrained.eval()
        )
    net23, secs = train_budget(datalist, args.out_dir / "esrgan23", args, None, init=init23)
    results["training_seconds"]["esrgan23"] = secs
    ckpt23 = args.out_dir / "esrgan23.pt"
    torch.save(net23.state_dict(), ckpt23)
    results["table1"]["ESRGAN-23"] = evaluate("model", pairs, net23)
    for name in VARIANTS:
        net, secs = train_budget(datalist, args.out_dir / name, args, variant_blocks(name), init=ckpt23)
        results["training_seconds"][name] = secs
        results["table3"][name] = evaluate("model", pairs, net) | {"blocks": len(variant_blocks(name))}
        print(name, results["table3"][name], flush=True)
    results["table1"]["Proposed-12 (budget)"] = results["table3"]["every_other"]
    return results


def tables_markdown(results: dict) -> str:
    """Tables 1 and 3 in the paper's layout (Markdown)."""
    t1_rows = [(k, "", v) for k, v in results["table1"].items()]
    removed = {"v0": "none", "v1": "1, 2, 22, 23", "v2": "1-4, 20-23", "v3": "1-11", "v4": "12-23",
               "every_other": "all even (2, 4, ..., 22)"}  # fmt: skip
    t3_rows = [(k, f"{removed[k]} | {v['blocks']}", v) for k, v in results["table3"].items()]
    budget = results["budget"]
    return (
        "### Table 1 layout: x4 SR on held-out BraTS 2018 slices\n\n"
        + markdown("Table 1", t1_rows, budget)
        + "\n### Table 3 layout: pruned variants, fine-tuned from ESRGAN-23\n\n"
        + markdown("Table 3", t3_rows, budget, extra_header=" Removed RRDB (1-based) | Blocks |")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from mtsr_monai.io import atomic_write_text

    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    datalist, pairs, n_train = training_and_test(args)
    budget = (
        f"CPU budget: {args.iterations} L1 iterations per model, batch {args.patches} HR patches of "
        f"{args.patch}x{args.patch}, {n_train} training volumes, global skip {args.global_skip}, "
        f"ESRGAN-23 from {'pretrained Real-ESRGAN x4plus' if args.start == 'pretrained' else 'scratch'}; "
        f"test: {len(pairs)} held-out axial slices ({args.test_slices} of each held-out T1 and T2 volume), "
        "second-order degradation x4"
    )
    print(budget, flush=True)
    json_path = args.out_dir / "tables.json"
    test_set = {"test_slices": args.test_slices, "seed": args.seed, "pairs": len(pairs)}
    if args.shipped_only:
        # add the shipped weights' row to an earlier run's tables, on the same test pairs only, or start
        # tables holding that row alone
        empty = {"table1": {}, "table3": {}, "budget": "shipped row only", "test_set": test_set}
        results = json.loads(json_path.read_text()) if json_path.exists() else empty
        if results.get("test_set") != test_set:
            found = results.get("test_set")
            why = (
                f"was scored on other test slices ({found}, this call {test_set}): give its --test-slices "
                "and --seed, or a new --out-dir"
                if found
                else "does not record its test slices (written before session 48): give a new --out-dir"
            )
            print(f"error: {json_path} {why}", file=sys.stderr)
            return 2
    else:
        results = {**budget_tables(args, datalist, pairs, budget), "test_set": test_set}
    if args.shipped or args.shipped_only:
        from mtsr_monai.inference.bundle import load_bundle_network

        shipped, _ = load_bundle_network()
        results["table1"]["Proposed-12 (shipped weights)"] = evaluate("model", pairs, shipped)
    md = tables_markdown(results)
    atomic_write_text(args.out_dir / "tables.md", md)
    atomic_write_text(json_path, json.dumps(results, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
