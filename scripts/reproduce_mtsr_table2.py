#!/usr/bin/env python
"""MTSR-MRI Table 2 layout on the held-out subjects: Pix2Pix (w/ noise), CycleGAN (w/ noise) and BicycleGAN,
with the identity and tissue-lookup baselines, for T1 -> T2, T2 -> T1 and T1 -> FLAIR (and FLAIR -> T1).

    python scripts/reproduce_mtsr_table2.py --output-dir OUT
        [--runs /root/mtsr_runs/table2] [--bicyclegan bundles/mtsr_mt/models]
        [--directions t1:t2 t2:t1 t1:flair flair:t1] [--slices-per-volume 8] [--lpips-backbone FILE]

Weights per direction a -> b (a row whose file is absent is listed as missing, never filled in):
- Pix2Pix (w/ noise): ``<runs>/pix2pix_<a>_to_<b>/<a>_to_<b>.pt`` (train.yaml ``--use_encoder False``);
- CycleGAN (w/ noise): ``<runs>/cyclegan_<a>_<b>/<a>_to_<b>.pt``, or the reverse generator of a b <-> a run,
  ``<runs>/cyclegan_<b>_<a>/<a>_to_<b>.pt`` (train.yaml + train_cyclegan.yaml export both directions);
- BicycleGAN: ``<bicyclegan>/<a>_to_<b>.pt``; tissue-lookup: ``<bicyclegan>/tissue_lookup.json``.

Subjects: ``scripts/shared_splits.py`` ``HELD_OUT`` having both contrasts. Per subject:
``--slices-per-volume`` evenly spaced axial slices among those with at least half the largest brain area;
both volumes scaled to [0, 1] by the training scaling; every model draws the same ``--samples`` seeded
codes. Scores are inside the brain (the source's non-zero voxels): PSNR (data range 1) and SSIM (2D, masked)
of the mean of the samples and of each sample, diversity = mean pairwise 1 - SSIM and L1 between samples.
Baselines are deterministic (one output; the volume is segmented whole, then the same slices are scored).
LPIPS (appendix C: realism to the truth, diversity over consecutive sample pairs, whole slices) needs the
AlexNet ImageNet file; without it the LPIPS column says n/a. Each row states its training budget from the
weights' metadata.
Writes ``table2.md`` and ``table2.json`` in OUT.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from shared_splits import split_of, subjects  # noqa: E402

DEFAULT_RUNS = Path("/root/mtsr_runs/table2")
DEFAULT_DIRECTIONS = ("t1:t2", "t2:t1", "t1:flair", "flair:t1")
METHODS = ("Pix2Pix (w/ noise)", "CycleGAN (w/ noise)", "BicycleGAN")
PAPER = (
    "Paper (Table 2, LPIPS realism / diversity, T1->T2 then T2->T1): Pix2Pix w/ noise 0.063 / 0.009, "
    "0.071 / 0.011; CycleGAN w/ noise 0.162 / 0.022, 0.149 / 0.023; proposed 0.159 / 0.110, 0.166 / 0.102."
)


def model_weights(source: str, target: str, runs: Path, bicyclegan: Path) -> dict[str, list[Path]]:
    """Candidate weights files of each learned method for ``source -> target`` (the first that exists)."""
    name = f"{source}_to_{target}.pt"
    return {
        METHODS[0]: [runs / f"pix2pix_{source}_to_{target}" / name],
        METHODS[1]: [
            runs / f"cyclegan_{source}_{target}" / name,
            runs / f"cyclegan_{target}_{source}" / name,
        ],
        METHODS[2]: [bicyclegan / name],
    }


def load_case(subject: dict, source: str, target: str, n_slices: int) -> dict[str, Any]:
    """Raw source volume, scaled (S, H, W) source / target slices, their brain mask and slice indices."""

    from mtsr_monai.data.slices import load_subject, spaced_brain_slices
    from mtsr_monai.io.geometry import resolve_axis
    from mtsr_monai.transforms.intensity import robust_scale

    vol = load_subject(subject, [source, target], mask_key=None, normalize=False)
    axis = resolve_axis(vol["affine"], "axial")
    raw = vol[source][0].numpy()
    a = robust_scale(vol[source][0]).movedim(axis, 0)
    b = robust_scale(vol[target][0]).movedim(axis, 0)
    picks = spaced_brain_slices(a, n_slices).unique()
    return {
        "subject": subject["subject"], "raw": raw, "axis": axis, "picks": picks.tolist(),
        "source": a[picks], "ref": b[picks].numpy(), "brain": (a[picks] > 0).numpy(),
    }  # fmt: skip


def score(stack: np.ndarray, case: dict[str, Any], lpips_metric: Any = None) -> dict[str, float]:
    """Brain scores of (N, S, H, W) outputs in [0, 1] against the case's target slices."""
    from mtsr_monai.metrics.perceptual import sample_measures

    m = sample_measures(stack, case["ref"], lpips_metric, mask=case["brain"])
    out = {
        "psnr_mean": m["psnr_mean"],
        "ssim_mean": m["ssim_mean"],
        "psnr_samples": statistics.fmean(m["psnr_samples"]),
        "psnr_worst_sample": min(m["psnr_samples"]),
    }
    keys = ("pairwise_1_minus_ssim", "pairwise_l1", "lpips_realism", "lpips_diversity")
    return {**out, **{k: m[k] for k in keys if k in m}}


def baseline_stacks(case: dict[str, Any], source: str, lookup: dict | None) -> dict[str, np.ndarray]:
    """identity and (with a lookup table) tissue-lookup outputs on the case's slices, as (1, S, H, W)."""
    from mtsr_monai.inference.tissue_lookup import identity_translate, tissue_lookup_translate

    def on_slices(volume: np.ndarray) -> np.ndarray:
        return np.moveaxis(volume, case["axis"], 0)[case["picks"]][None] * case["brain"][None]

    out = {"identity": on_slices(identity_translate(case["raw"]))}
    if lookup is not None:
        out["tissue-lookup"] = on_slices(tissue_lookup_translate(case["raw"], source, lookup))
    return out


def model_stack(translator: tuple, case: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    """(N, S, H, W) translations of the case's source slices by ``(generator, meta)``; 0 outside the brain."""
    import torch

    from mtsr_monai.inference.translate import restore_target_scaling, translate_slices, volume_settings

    generator, meta = translator
    settings = volume_settings(meta)
    out = translate_slices(
        generator, case["source"], torch.as_tensor(codes), int(meta["image_size"]),
        native_resolution=settings["native_resolution"],
    ).numpy()  # fmt: skip
    # median-scaled models: each sample's 99.5 % level read over the scored slices (not the whole volume)
    return restore_target_scaling(
        out * case["brain"][None], settings["target_scaling"], settings["target_level"]
    )


def budget(meta: dict[str, Any]) -> str:
    """The training budget a weights file records: the iteration its weights come from (bundle runs export at
    the best validation PSNR, so it can be below the run's length), patch / slice size, filters."""
    size = int(meta["image_size"])
    data = f"{size}x{size} patches at 1 mm" if meta.get("native_resolution") else f"slices resized to {size}"
    widths = f"ngf {meta['ngf']} (cap x{meta.get('max_mult', 8)})"
    phase = f", {meta['phase'].split(':')[0]} only" if meta.get("phase") else ""  # e.g. the L1 warm start
    return f"weights of it {meta.get('iterations', '?')}{phase}, {data}, {widths}"


def lookup_budget(path: Path, source: str, target: str) -> str:
    """What the tissue-lookup table of ``source -> target`` was fitted on."""
    entry = json.loads(path.read_text()).get(f"{source}_to_{target}", {})
    return f"class medians of {len(entry.get('subjects', []))} training subjects"


def mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}


def evaluate_direction(source: str, target: str, args: argparse.Namespace, lpips_metric) -> dict[str, Any]:
    """Rows (baselines, then the learned methods found) and the missing ones for ``source -> target``."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.tissue_lookup import load_tissue_lookup
    from mtsr_monai.inference.translate import latent_codes, load_translator

    chosen = [s for s in subjects() if split_of(s["subject"]) == "test" and source in s and target in s]
    cases = [load_case(s, source, target, args.slices_per_volume) for s in chosen]
    result: dict[str, Any] = {"source": source, "target": target, "rows": [], "missing": []}
    if not cases:
        result["missing"].append(f"every method: no held-out subject has {source} and {target}")
        return result
    try:
        lookup = load_tissue_lookup(source, target, args.tissue_lookup)
    except InputError as err:
        lookup = None
        result["missing"].append(f"tissue-lookup: {err}")
    per_case = [baseline_stacks(c, source, lookup) for c in cases]
    for name in per_case[0]:
        rows = [score(stacks[name], c, lpips_metric) for stacks, c in zip(per_case, cases, strict=True)]
        fitted = "none" if name == "identity" else lookup_budget(args.tissue_lookup, source, target)
        result["rows"].append({"method": name, "budget": fitted, **mean_over(rows)})
    for method, candidates in model_weights(source, target, args.runs, args.bicyclegan).items():
        weights = next((p for p in candidates if p.is_file()), None)
        if weights is None:
            result["missing"].append(f"{method}: no weights at {' or '.join(map(str, candidates))}")
            continue
        translator = load_translator(weights)
        # the same seeded draws for every model, shifted by a model's code_prior when it has one
        meta = translator[1]
        codes = latent_codes(args.samples, int(meta["nz"]), args.seed, meta.get("code_prior"))
        rows = [score(model_stack(translator, c, codes), c, lpips_metric) for c in cases]
        result["rows"].append(
            {"method": method, "budget": budget(meta), "weights": str(weights), **mean_over(rows)}
        )
        print(f"{source} -> {target} {method}: {result['rows'][-1]}", flush=True)
    result["subjects"] = [c["subject"] for c in cases]
    return result


def _fmt(row: dict[str, Any], key: str, digits: int) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "-"


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, lpips_status) -> str:
    """The Table 2 layout: one row per method and direction, budgets and missing rows below."""
    lpips = (
        f"LPIPS v0.1 AlexNet ({lpips_status.backbone})"
        if lpips_status.available
        else f"n/a (AlexNet weights absent: {lpips_status.backbone})"
    )
    per_direction = "; ".join(
        f"{r['source']} -> {r['target']}: {', '.join(r.get('subjects', [])) or 'none'}" for r in results
    )
    lines = [
        "# MTSR-MRI Table 2 layout on the held-out subjects",
        "",
        f"Held-out subjects of scripts/shared_splits.py having both contrasts ({per_direction}); "
        f"{args.slices_per_volume} axial slices each, {args.samples} samples per slice (seed {args.seed}); "
        f"PSNR / SSIM / diversity inside the brain. LPIPS realism / diversity: {lpips}.",
        "",
        "| method | direction | LPIPS realism / diversity | PSNR of mean | SSIM of mean "
        "| mean PSNR of samples | worst sample PSNR | pairwise 1-SSIM | pairwise L1 | training budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for res in results:
        for r in res["rows"]:
            lp = (
                f"{_fmt(r, 'lpips_realism', 3)} / {_fmt(r, 'lpips_diversity', 3)}"
                if "lpips_realism" in r
                else "n/a"
            )
            lines.append(
                f"| {r['method']} | {res['source']} -> {res['target']} | {lp} | {r['psnr_mean']:.2f} | "
                f"{r['ssim_mean']:.3f} | {r['psnr_samples']:.2f} | {r['psnr_worst_sample']:.2f} | "
                f"{_fmt(r, 'pairwise_1_minus_ssim', 4)} | {_fmt(r, 'pairwise_l1', 4)} | {r['budget']} |"
            )
    missing = [f"- {res['source']} -> {res['target']}: {m}" for res in results for m in res["missing"]]
    if missing:
        lines += ["", "Not in the table (nothing is filled in for them):", *missing]
    lines += ["", PAPER, "Not comparable with the rows above: other subjects, CPU budgets, and LPIPS only "
              "with the backbone file."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="pix2pix_* / cyclegan_* run folders")
    p.add_argument("--bicyclegan", type=Path, default=REPO / "bundles" / "mtsr_mt" / "models")
    p.add_argument(
        "--tissue-lookup", type=Path, default=None, help="default: <bicyclegan>/tissue_lookup.json"
    )
    p.add_argument("--directions", nargs="+", default=list(DEFAULT_DIRECTIONS))
    p.add_argument("--lpips-backbone", type=Path, default=None)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--slices-per-volume", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.tissue_lookup = args.tissue_lookup or args.bicyclegan / "tissue_lookup.json"

    import torch

    from mtsr_monai.io import atomic_write_text
    from mtsr_monai.metrics.perceptual import load_lpips

    torch.set_num_threads(args.threads)
    lpips_metric, lpips_status = load_lpips(backbone_path=args.lpips_backbone)
    results = []
    for direction in args.directions:
        source, target = direction.split(":")
        results.append(evaluate_direction(source, target, args, lpips_metric))
    text = markdown(results, args, lpips_status)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "table2.md", text)
    report = {"lpips": lpips_status.as_dict(), "directions": results}
    atomic_write_text(args.output_dir / "table2.json", json.dumps(report, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
