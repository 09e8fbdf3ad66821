"""The clinical paper's ablations (its Table A.1) on held-out real subjects, with a training budget argument.

    python scripts/reproduce_clinical_tables.py --iterations 150 --out /tmp/mtsr/clinical/tables

Every configuration is trained from scratch through the bundle (``bundles/clinical_sr/configs/train.yaml``,
its fixed simulation recipe: pairs made by registering simulated routine scans, where pairing matters)
for ``--iterations`` generator steps and evaluated on the datalist's ``test`` subjects (whole volumes
restored slice-wise; brain-masked MAE, NMSE (sum/sum), PSNR (data range 1), 3D SSIM, averaged over FLAIR,
T1, T2 and subjects). Rows:

- base: fused (C = 3), random patches, lambda_critic 0, affine pairing
- split: one C = 1 model per sequence, otherwise as base
- full slices instead of patches
- lambda_critic 0.1 and 0.5
- rigid instead of affine pairing
- the interpolated input (trilinear, affine pairing): the baseline a model must beat

Writes ``table.md`` and ``results.json`` in ``--out``; runs are kept in ``--out/runs/<name>`` (resumable).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "clinical_sr"

CONFIGS = [
    # name, pairing, channels, mode, lambda
    ("0 base", "affine", "fused", "patch", 0.0),
    ("1 split", "affine", "split", "patch", 0.0),
    ("2 full slices", "affine", "fused", "slice", 0.0),
    ("3 critic 0.1", "affine", "fused", "patch", 0.1),
    ("4 critic 0.5", "affine", "fused", "patch", 0.5),
    ("5 rigid", "rigid", "fused", "patch", 0.0),
]


def train_one(name: str, overrides: dict, out: Path, iterations: int, batch_size: int) -> Path:
    from monai.bundle import ConfigWorkflow

    run_dir = out / "runs" / name.replace(" ", "_").replace(".", "")
    samples = max(iterations * batch_size // max(len(overrides.get("_subjects", [1] * 8)), 1), 1)
    overrides = {k: v for k, v in overrides.items() if not k.startswith("_")}
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.yaml"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        output_dir=str(run_dir),
        batch_size=batch_size,
        samples_per_scan=samples,
        max_epochs=1,
        epoch_length=iterations,
        val_interval=10**6,
        checkpoint_every=max(iterations // 2, 1),
        **overrides,
    )
    wf.initialize()
    wf.run()
    net = wf.parser.get_parsed_content("network")
    net.eval()
    wf.finalize()
    return net


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=2000, help="training budget: generator steps per model")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--filters", type=int, default=16, help="base filters (the paper: 64)")
    p.add_argument("--train-subjects", type=int, default=0, help="use only the first N training subjects")
    p.add_argument("--test-subjects", type=int, default=0, help="use only the first N test subjects")
    p.add_argument("--dataset-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache-dir", type=Path, default=Path("/root/mtsr_runs/clinical/cache"))
    p.add_argument("--out", type=Path, default=Path("/tmp/mtsr/clinical/tables"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", default=None, help="names (prefix numbers) of rows to run")
    return p.parse_args(argv)


def split_subjects(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    """The bundle datalist's training, validation and test subjects, training and test cut to the first N
    when asked (the trainer needs a validation split, though these runs never validate)."""
    from mtsr_monai.data.datalist import read_split

    datalist = BUNDLE / "configs" / "datalist.json"
    train_subjects = read_split(datalist, "training", args.dataset_dir)
    validation_subjects = read_split(datalist, "validation", args.dataset_dir)
    test_subjects = read_split(datalist, "test", args.dataset_dir)
    if args.train_subjects:
        train_subjects = train_subjects[: args.train_subjects]
    if args.test_subjects:
        test_subjects = test_subjects[: args.test_subjects]
    return train_subjects, validation_subjects, test_subjects


def trained_predictor(name: str, base: dict, channels: str, mode: str, args: argparse.Namespace):
    """Train the row's model (fused: one; else one per sequence, the same budget each) and return its
    ``pair -> restored volume``."""
    import numpy as np

    from mtsr_monai.data.clinical import MODALITIES, select_channels
    from mtsr_monai.inference.clinical import restore_volume

    if channels == "fused":
        net = train_one(name, base, args.out, args.iterations, args.batch_size)
        return lambda pr: restore_volume(net, pr["lr"], 2, 8, 64 if mode == "patch" else None)
    nets = [
        train_one(f"{name} {m}", {**base, "modalities": [m]}, args.out, args.iterations, args.batch_size)
        for m in MODALITIES
    ]
    return lambda pr: np.concatenate(
        [restore_volume(n, select_channels([pr], [c])[0]["lr"], 2, 8, 64) for c, n in enumerate(nets)]
    )


def markdown_table(results: list[dict], train_subjects: list, test_subjects: list, args) -> str:
    """The rows as the paper's table (Markdown), after a line naming the subjects and the budget."""
    lines = [
        f"Held-out subjects: {', '.join(s['subject'] for s in test_subjects)}; training subjects: "
        f"{len(train_subjects)}; budget {args.iterations} generator steps x batch {args.batch_size}; "
        f"base filters {args.filters}.",
        "",
        "| NAME | PRE-PROCESSING | CHANNELS | INPUT | λ_critic | MAE | NMSE | PSNR | SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lam = "-" if r["lambda"] is None else f"{r['lambda']:g}"
        lines.append(
            f"| {r['name']} | {r['pairing'].upper()} | {r['channels']} | {r['mode']} | {lam} | "
            f"{r['mae']:.5f} | {r['nmse']:.3E} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    from mtsr_monai.data.clinical import cached_pairs
    from mtsr_monai.inference.clinical import volume_metrics

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_subjects, validation_subjects, test_subjects = split_subjects(args)
    # the fixed recipe: the pairing rows differ only there (the random one simulates from the HR and ignores
    # pairing), and its inputs keep their own [0, 1] scaling, as the test pairs are given (headroom 1)
    common = {
        "filters": args.filters, "critic_filters": 16, "residual": True, "loss": "mae+ssim",
        "simulation": "fixed", "learning_rate": 0.0005, "cache_dir": str(args.cache_dir),
        "dataset_dir": str(args.dataset_dir), "train#subjects": train_subjects,
        "validate#subjects": validation_subjects, "_subjects": train_subjects,
    }  # fmt: skip
    test_pairs = {
        pairing: cached_pairs(test_subjects, args.cache_dir, pairing=pairing)
        for pairing in ("affine", "rigid")
    }

    def evaluate(predict, pairing: str) -> dict:
        rows = [volume_metrics(predict(pair), pair["hr"], pair["mask"]) for pair in test_pairs[pairing]]
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    interpolated = evaluate(lambda pr: np.asarray(pr["lr"], np.float32), "affine")
    row = {"name": "trilinear input", "pairing": "affine", "channels": "-", "mode": "-", "lambda": None}
    results = [{**row, **interpolated}]
    for name, pairing, channels, mode, lam in CONFIGS:
        if args.only and name.split()[0] not in args.only:
            continue
        start = time.time()
        base = {**common, "pairing": pairing, "mode": mode, "lambda_critic": lam}
        metrics = evaluate(trained_predictor(name, base, channels, mode, args), pairing)
        row = {"name": name, "pairing": pairing, "channels": channels, "mode": mode, "lambda": lam}
        results.append({**row, "seconds": round(time.time() - start, 1), **metrics})
        print(json.dumps(results[-1]), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(results, train_subjects, test_subjects, args)
    (args.out / "table.md").write_text(table)
    print(table)
    assert all(math.isfinite(r["psnr"]) for r in results)


if __name__ == "__main__":
    main()
