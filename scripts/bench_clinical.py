"""Issue 13's "Done means" table for whatever clinical SR weights are shipped (rerun it after training).

    python scripts/bench_clinical.py --out /root/mtsr_runs/clinical_bench [--model M] [--exclude S ...]

A rerun with the same ``--out`` reuses every restored volume and score there; it is refused (exit 2) when the
weights (sha256), ``--thickness``, ``--register``, ``--planes`` or ``--fit-subjects`` differ from those
recorded in ``OUT/settings.json``: give a new ``--out`` after training.

For every held-out subject of ``scripts/shared_splits.py`` (never trained on, never used for a choice) with a
FLAIR, a T1 and a tumour label, and each thick direction (``sagittal``: slabs along array x, ``coronal``:
along y; never axial: BraTS z was itself interpolated from thick slices, so it is no 1 mm reference), each
sequence is acquired as a routine 2D scan (``--thickness`` mm, Gaussian profile of FWHM = thickness,
contiguous slices, ``mtsr degrade --mode thick-slice``'s model) and restored onto the 1 mm grid of the
subject's FLAIR by the user's path, ``restore_clinical`` (``mtsr clinical-sr --like``): the model with every
sequence, the model without T2 (``model_no_t2``; subjects without a T2 only have that case), and the
interpolation baselines (``--baselines``: trilinear, B-spline, sinc; B-spline / sinc on FLAIR only). Headers
are exact for simulated scans, so rigid registration is off unless ``--register``.

Scores over the brain (reference > 0):

- ``[0, 1]``: output and reference each scaled to [0, 1] by their own robust 99.5 % level (the bundle's
  evaluation: an intensity drift of the output is hidden);
- ``scanner``: raw intensities, data range = the reference's robust 99.5 % level (a drift costs);
- PSNR, 3D SSIM (11-tap Gaussian window) in both, the median intensity ratio output / reference;
- lesion Dice (FLAIR): the QC module's hyperintensity rule (``wmh_mask``, k = 1.3) and the fitted rule, the
  same rule after a Gaussian pre-smoothing of the FLAIR, its sigma and z threshold fitted on training
  subjects' 1 mm FLAIR (``--fit-subjects``; cached in ``OUT/lesion_rule.json``), against the tumour label
  (whole tumour), on the restored volume, its trilinear interpolation and the 1 mm original. The QC rule
  reads texture: isolated bright voxels and holes inside a lesion cost Dice, so a blurred scan scores above
  its sharp 1 mm original; the fitted rule reads regions.

``--external NAME:SUBJECT:DIRECTION:PATH`` scores another method's FLAIR output (e.g. ECLARE run on
``OUT/inputs/SUBJECT/DIRECTION/flair.nii.gz``), resampled onto the reference grid. Writes
``results.json`` (every row), ``table.md``; resumable (restored volumes are kept under ``OUT/runs``). The 1 mm
volumes are first cropped to the FLAIR's brain box + 8 voxels (``OUT/refs``; exact affines): scores are over
the brain anyway, and every method then handles a third of the voxels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

DIRECTIONS = ("sagittal", "coronal")  # array x and y of BraTS volumes
SEQUENCES = ("flair", "t1", "t2")


def split_subjects(exclude: list[str], split: str = "test") -> list[dict]:
    """Subjects of ``split`` (``test``: held out, for reports; ``validation``: for choices) with FLAIR, T1
    and a label (``seg`` or ``GT_W``: whole tumour)."""
    from shared_splits import split_of, subjects

    out = []
    for s in subjects():
        if split_of(s["subject"]) == split and s["subject"] not in exclude and "flair" in s and "t1" in s:
            label = s.get("label") or s.get("seg")
            if label is None:
                cand = sorted(Path(s["flair"]).parent.glob("*seg.nii.gz")) + sorted(
                    Path(s["flair"]).parent.glob("GT_W.nii.gz")
                )
                label = str(cand[0]) if cand else None
            out.append({**s, "label": label})
    return out


def cropped_subject(subject: dict, folder: Path, margin: int = 8) -> dict:
    """The subject's volumes (and label) cropped to the FLAIR's brain box + ``margin`` voxels, affines
    kept exact: the same scores (brain only), a third of the voxels for every method (a busy 2-core CPU)."""
    from mtsr_monai.io import load_volume, save_volume
    from mtsr_monai.transforms.crop import foreground_box

    folder.mkdir(parents=True, exist_ok=True)
    keys = [k for k in (*SEQUENCES, "label") if subject.get(k)]
    out = {"subject": subject["subject"], **{k: folder / f"{k}.nii.gz" for k in keys}}
    if all(out[k].exists() for k in keys):
        return out
    flair = load_volume(subject["flair"])
    box = foreground_box(flair.numpy() > 0, margin)
    start = np.array([b.start for b in box] + [1.0])
    for k in keys:
        vol = load_volume(subject[k], validate=k != "label")
        affine = np.asarray(vol.affine, np.float64).copy()
        affine[:, 3] = affine @ start
        save_volume(vol.numpy()[box].astype(np.float32), out[k], affine=affine)
    return out


def simulate_inputs(subject: dict, direction: str, thickness: float, folder: Path) -> dict[str, Path]:
    """The routine scans of one subject (every sequence it has), cached as NIfTI on their coarse grids."""
    from mtsr_monai.io import load_volume, save_volume
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for m in SEQUENCES:
        if m not in subject:
            continue
        path = folder / f"{m}.nii.gz"
        if not path.exists():
            vol = load_volume(subject[m])
            lr, affine = degrade_volume_thick_slice(
                vol.numpy(), np.asarray(vol.affine), thickness, axis=direction
            )
            save_volume(lr, path, affine=affine)
        out[m] = path
    return out


def run_method(inputs: dict[str, Path], like: str, method: str, folder: Path, args, ckpt) -> dict[str, Any]:
    """One restoration (kept; a rerun reads it back): ``{seq: path, "seconds": s, "json": path}``."""
    from mtsr_monai.inference.clinical import restore_clinical

    done = folder / "clinical_sr.json"
    if not done.exists():
        restore_clinical(
            inputs,
            folder,
            like=like,
            method="model" if method.startswith("model") else method,
            checkpoint=ckpt if method.startswith("model") else None,
            register=args.register,
            consistency=method.startswith("model"),
            progress=False,
            planes=args.planes,
        )
    info = json.loads(done.read_text())
    return {**{m: folder / f"{m}.nii.gz" for m in inputs}, "seconds": info["seconds"], "json": done}


def scores(pred: np.ndarray, ref: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM in [0, 1] (each on its own robust scale) and in scanner units, the median ratio, and the
    ratio of the two robust 99.5 % levels (``level_ratio``: what the [0, 1] scaling divides by; below 1 when
    the output's bright tail is compressed)."""
    from mtsr_monai.metrics.image import psnr, ssim
    from mtsr_monai.transforms.intensity import robust_range

    hi_ref, hi_pred = robust_range(ref)[1], robust_range(pred)[1]
    return {
        "psnr_01": psnr(pred / hi_pred, ref / hi_ref, brain, 1.0),
        "ssim_01": ssim(pred / hi_pred, ref / hi_ref, brain, 1.0),
        "psnr_scanner": psnr(pred, ref, brain, hi_ref),
        "ssim_scanner": ssim(pred, ref, brain, hi_ref),
        "median_ratio": float(np.median(pred[brain]) / np.median(ref[brain])),
        "level_ratio": hi_pred / hi_ref,
    }


def crop_box(mask: np.ndarray, margin: int = 8) -> tuple[slice, ...]:
    from mtsr_monai.transforms.crop import foreground_box

    return foreground_box(mask, margin)


def fit_lesion_rule(subjects: list[dict]) -> dict[str, float]:
    """The pre-smoothing sigma and z threshold ``k`` of the QC hyperintensity rule that maximise the mean
    Dice against the whole tumour label on training subjects' 1 mm FLAIR (other settings kept)."""
    from mtsr_monai.io import load_volume
    from mtsr_monai.metrics.segmentation import wmh_mask

    grid = [(float(s), float(k)) for s in (0, 1, 2, 3) for k in np.round(np.arange(0.6, 2.61, 0.2), 2)]
    dice = np.zeros(len(grid))
    for s in subjects:
        flair = load_volume(s["flair"]).numpy()
        box = crop_box(flair > 0)
        flair, label = flair[box], load_volume(s["label"], validate=False).numpy()[box] > 0
        for i, (sigma, k) in enumerate(grid):
            dice[i] += dice_score(wmh_mask(flair, flair > 0, k=k, presmooth=sigma), label)
    sigma, k = grid[int(np.argmax(dice))]
    return {"presmooth": sigma, "k": k, "train_dice": float(dice.max() / len(subjects))}


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    den = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / den if den else 1.0


def lesion_dice(vol: np.ndarray, label: np.ndarray, brain: np.ndarray, rule: dict) -> dict:
    """Dice of the QC hyperintensity rule and of the fitted rule on a FLAIR volume against the label."""
    from mtsr_monai.metrics.segmentation import wmh_mask

    fitted = wmh_mask(vol, brain, k=rule["k"], presmooth=rule["presmooth"])
    return {"dice_qc": dice_score(wmh_mask(vol, brain), label), "dice_fit": dice_score(fitted, label)}


def lesion_row(row: dict, vol: np.ndarray, ref: np.ndarray, ctx: dict) -> list[dict]:
    """The lesion row of one FLAIR (none without a label); not cached, so a new rule rescores every method."""
    if ctx["label"] is None:
        return []
    return [{**row, "kind": "lesion", **lesion_dice(vol, ctx["label"], ref > 0, ctx["rule"])}]


def load_array(path: Any) -> np.ndarray:
    from mtsr_monai.io import load_volume

    return load_volume(path, validate=False).numpy().astype(np.float32)


def external_on_grid(path: str, like: str) -> np.ndarray:
    """Another method's output resampled (trilinear, physical space) onto the reference grid."""
    import SimpleITK as sitk

    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.sitk_utils import metatensor_to_sitk, resample

    out = resample(metatensor_to_sitk(load_volume(path)), metatensor_to_sitk(load_volume(like)), float32=True)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.float32)


def method_rows(name: str, direction: str, method: str, run: dict, refs: dict, ctx: dict) -> list[dict]:
    """Score, consistency and lesion rows of one method on one case; all but the lesion rows cached next to
    its outputs."""
    cache = Path(run["json"]).parent / "rows.json"
    lesion = lesion_row(
        {"subject": name, "direction": direction, "method": method, "sequence": "flair"},
        load_array(run["flair"]),
        refs["flair"],
        ctx,
    )
    if cache.exists():
        return [r for r in json.loads(cache.read_text()) if r.get("kind") != "lesion"] + lesion
    box = ctx["box"]
    rows = []
    for m in SEQUENCES:
        if m not in run:
            continue
        pred, ref = load_array(run[m]), refs[m]
        row = {"subject": name, "direction": direction, "method": method, "sequence": m}
        rows.append({**row, **scores(pred[box], ref[box], ref[box] > 0), "seconds": run["seconds"]})
    if method.startswith("model"):
        for m, c in json.loads(Path(run["json"]).read_text())["consistency"].items():
            keys = ("gain", "nrmse", "median_ratio")
            rows.append(
                {
                    "subject": name,
                    "direction": direction,
                    "method": method,
                    "sequence": m,
                    "kind": "consistency",
                    **{k: c[k] for k in keys},
                    "trilinear_nrmse": c["trilinear"]["nrmse"],
                }
            )
    cache.write_text(json.dumps(rows))
    return rows + lesion


def evaluate_case(subject: dict, direction: str, args, ckpt, rule: dict) -> list[dict]:
    """Every method on one subject and direction: score rows, lesion rows, consistency rows."""
    name = subject["subject"]
    subject = cropped_subject(subject, args.out / "refs" / name)
    inputs = simulate_inputs(subject, direction, args.thickness, args.out / "inputs" / name / direction)
    like, base = str(subject["flair"]), args.out / "runs" / name / direction
    cases = {"model": inputs, "trilinear": inputs}
    if "t2" in inputs:
        cases["model_no_t2"] = {k: v for k, v in inputs.items() if k != "t2"}
    for b in args.baselines:
        if b != "trilinear":
            cases[b] = {"flair": inputs["flair"]}
    refs = {m: load_array(subject[m]) for m in SEQUENCES if m in inputs}
    label = load_array(subject["label"]) > 0 if subject.get("label") else None
    ctx = {"box": crop_box(refs["flair"] > 0), "label": label, "rule": rule}
    rows = []
    for method, inp in cases.items():
        if method in args.methods:
            run = run_method(inp, like, method, base / method, args, ckpt)
            rows += method_rows(name, direction, method, run, refs, ctx)
    original = {"subject": name, "direction": direction, "method": "original", "sequence": "flair"}
    rows += lesion_row(original, refs["flair"], refs["flair"], ctx)
    for ext in args.external:
        ename, esub, edir, epath = ext.split(":", 3)
        if esub == name and edir == direction:
            pred, ref = external_on_grid(epath, like), refs["flair"]
            row = {"subject": name, "direction": direction, "method": ename, "sequence": "flair"}
            rows.append({**row, **scores(pred[ctx["box"]], ref[ctx["box"]], ref[ctx["box"]] > 0)})
            rows += lesion_row(row, pred, ref, ctx)
    return rows


def lesion_rule(args) -> dict:
    """The fitted lesion rule, cached in ``OUT/lesion_rule.json`` (training subjects only)."""
    from shared_splits import HELD_OUT, VALIDATION, subjects

    path = args.out / "lesion_rule.json"
    if path.exists():
        return json.loads(path.read_text())
    train = [
        s
        for s in subjects()
        if s["subject"] not in HELD_OUT and s["subject"] not in VALIDATION and "flair" in s and s.get("label")
    ][: args.fit_subjects]
    rule = {**fit_lesion_rule(train), "subjects": [s["subject"] for s in train]}
    path.write_text(json.dumps(rule))
    return rule


def _sel(rows: list[dict], kind: str | None = None, **where: Any) -> list[dict]:
    return [r for r in rows if r.get("kind") == kind and all(r.get(k) == v for k, v in where.items())]


def _one(rows: list[dict], **where: Any) -> dict | None:
    found = _sel(rows, None, **where)
    return found[0] if found else None


def flair_table(rows: list[dict], cases: list[tuple[str, str]]) -> list[str]:
    """The issue's FLAIR table: model vs trilinear per case, then means and the criteria."""
    lines = [
        "| subject | slabs | PSNR [0,1] tri / model (Δ) | SSIM [0,1] tri / model "
        "| PSNR scanner tri / model (Δ) | SSIM scanner tri / model | median ratio tri / model "
        "| Dice (QC rule) 1 mm / tri / model | Dice (fitted) 1 mm / tri / model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    deltas, dscan, ssim_win, ratios, dice_qc, dice_fit = [], [], [], [], [], []
    for sub, d in cases:
        t, m = (
            _one(rows, subject=sub, direction=d, method="trilinear", sequence="flair"),
            _one(rows, subject=sub, direction=d, method="model", sequence="flair"),
        )
        if not t or not m:
            continue
        les = {r["method"]: r for r in _sel(rows, "lesion", subject=sub, direction=d)}
        deltas.append(m["psnr_01"] - t["psnr_01"])
        dscan.append(m["psnr_scanner"] - t["psnr_scanner"])
        ssim_win.append(m["ssim_01"] > t["ssim_01"])
        ratios.append(m["median_ratio"])
        dq = [les.get(k, {}).get("dice_qc", float("nan")) for k in ("original", "trilinear", "model")]
        df = [les.get(k, {}).get("dice_fit", float("nan")) for k in ("original", "trilinear", "model")]
        dice_qc.append(dq)
        dice_fit.append(df)
        lines.append(
            f"| {sub} | {d} | {t['psnr_01']:.2f} / {m['psnr_01']:.2f} ({deltas[-1]:+.2f}) "
            f"| {t['ssim_01']:.3f} / {m['ssim_01']:.3f} "
            f"| {t['psnr_scanner']:.2f} / {m['psnr_scanner']:.2f} ({dscan[-1]:+.2f}) "
            f"| {t['ssim_scanner']:.3f} / {m['ssim_scanner']:.3f} "
            f"| {t['median_ratio']:.3f} / {m['median_ratio']:.3f} "
            f"| {dq[0]:.3f} / {dq[1]:.3f} / {dq[2]:.3f} | {df[0]:.3f} / {df[1]:.3f} / {df[2]:.3f} |"
        )
    if deltas:
        lines += [
            "",
            f"FLAIR over {len(deltas)} cases: mean ΔPSNR [0,1] {np.mean(deltas):+.2f} dB (target >= +1.5; "
            f"worse than trilinear in {sum(x < 0 for x in deltas)}), SSIM above trilinear in "
            f"{sum(ssim_win)}/{len(ssim_win)}, mean ΔPSNR scanner {np.mean(dscan):+.2f} dB "
            f"(worse in {sum(x < 0 for x in dscan)}), median ratio {min(ratios):.3f}-{max(ratios):.3f} "
            f"(target 0.98-1.02), lesion Dice model >= trilinear: {lesion_summary(dice_qc, 'QC rule')}; "
            f"{lesion_summary(dice_fit, 'fitted rule')}.",
        ]
    return lines


def lesion_summary(dice: list[list[float]], rule: str) -> str:
    """'QC rule 0/6 (mean 1 mm / trilinear / model ...)' from [original, trilinear, model] Dice rows."""
    d = np.asarray(dice, dtype=float)
    if not d.size or np.isnan(d).all():
        return f"{rule} n/a (no label)"
    mean = " / ".join(f"{x:.3f}" for x in np.nanmean(d, axis=0))
    return f"{rule} {int((d[:, 2] >= d[:, 1]).sum())}/{len(d)} (mean 1 mm / trilinear / model {mean})"


def other_tables(rows: list[dict], cases: list[tuple[str, str]]) -> list[str]:
    """T1 / T2 (all sequences and T2 missing) against trilinear; every method's FLAIR means; consistency."""
    lines = [
        "",
        "| subject | slabs | sequence | case | ΔPSNR [0,1] | ΔPSNR scanner | ΔSSIM [0,1] | median ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sub, d in cases:
        for seq in ("flair", "t1", "t2"):
            t = _one(rows, subject=sub, direction=d, method="trilinear", sequence=seq)
            for method in ("model", "model_no_t2"):
                m = _one(rows, subject=sub, direction=d, method=method, sequence=seq)
                if not t or not m or (seq == "flair" and method == "model"):
                    continue
                case = (
                    "no T2"
                    if method == "model_no_t2" or not _one(rows, subject=sub, sequence="t2")
                    else "all"
                )
                lines.append(
                    f"| {sub} | {d} | {seq} | {case} | {m['psnr_01'] - t['psnr_01']:+.2f} "
                    f"| {m['psnr_scanner'] - t['psnr_scanner']:+.2f} | {m['ssim_01'] - t['ssim_01']:+.3f} "
                    f"| {m['median_ratio']:.3f} |"
                )
    lines += [
        "",
        "| method (FLAIR, mean) | cases | PSNR [0,1] | SSIM [0,1] | PSNR scanner | SSIM scanner "
        "| median ratio | 99.5 % level ratio (range) | seconds per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in sorted({r["method"] for r in _sel(rows, None, sequence="flair")}):
        sel = _sel(rows, None, method=method, sequence="flair")
        mean = {
            k: np.mean([r[k] for r in sel])
            for k in ("psnr_01", "ssim_01", "psnr_scanner", "ssim_scanner", "median_ratio")
        }
        secs = float(np.mean([r["seconds"] for r in sel if "seconds" in r] or [np.nan]))
        levels = [r["level_ratio"] for r in sel if "level_ratio" in r]  # rows cached before it: none
        level = f"{min(levels):.3f}-{max(levels):.3f}" if levels else "n/a"
        lines.append(
            f"| {method} | {len(sel)} | {mean['psnr_01']:.2f} | {mean['ssim_01']:.3f} "
            f"| {mean['psnr_scanner']:.2f} | {mean['ssim_scanner']:.3f} | {mean['median_ratio']:.3f} "
            f"| {level} | {secs:.0f} |"
        )
    return lines + consistency_table(rows)


def consistency_table(rows: list[dict]) -> list[str]:
    """Round-trip consistency NRMSE of each method against trilinear's, per sequence."""
    lines: list[str] = []
    cons = _sel(rows, "consistency")
    if cons:
        lines += [
            "",
            "| method | sequence | consistency NRMSE (model) | (trilinear) | gain |",
            "|---|---|---|---|---|",
        ]
        for method in sorted({r["method"] for r in cons}):
            for seq in SEQUENCES:
                sel = [r for r in cons if r["method"] == method and r["sequence"] == seq]
                if sel:
                    lines.append(
                        f"| {method} | {seq} | {np.mean([r['nrmse'] for r in sel]):.4f} "
                        f"| {np.mean([r['trilinear_nrmse'] for r in sel]):.4f} | "
                        f"{min(r['gain'] for r in sel):.3f}-{max(r['gain'] for r in sel):.3f} |"
                    )
    return lines


def cached_settings(args, model: Path) -> dict[str, Any]:
    """What the volumes and scores kept under ``--out`` depend on: the weights' sha256 and the settings."""
    from mtsr_monai.inference.bundle import sha256

    keys = ("thickness", "register", "planes", "fit_subjects")
    return {"model_sha256": sha256(model), **{k: getattr(args, k) for k in keys}}


def check_cached_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``OUT/settings.json``, or exit 2 where ``OUT`` holds results made with others: a
    rerun reads every kept volume and score back, so new weights or slabs would be reported under the new
    header with the old results."""
    path = out / "settings.json"
    if path.exists():
        kept = json.loads(path.read_text())
        changed = [k for k in settings if kept.get(k) != settings[k]]
    else:
        changed = ["settings not recorded"] if out.is_dir() and any(out.iterdir()) else []
    if changed:
        print(f"error: {out} holds results made with other settings ({', '.join(changed)}): give a new --out",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def chosen_subjects(parser: argparse.ArgumentParser, args: argparse.Namespace, seen: set[str]) -> list[dict]:
    """The split's subjects the weights have not seen, those of ``--subjects`` where given; a name that is
    not among them (a typo, a subject of another split) stops the benchmark (exit 2) rather than shrinking
    it."""
    available = split_subjects(sorted(seen), args.split)
    unknown = sorted(set(args.subjects or ()) - {s["subject"] for s in available})
    if unknown:
        names = ", ".join(s["subject"] for s in available)
        where = f"the {args.split} split's unseen subjects ({names})"
        parser.error(f"--subjects {', '.join(unknown)}: not among {where}")
    return [s for s in available if not args.subjects or s["subject"] in args.subjects]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundle's model.pt)")
    p.add_argument("--thickness", type=float, default=5.0)
    p.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=DIRECTIONS)
    p.add_argument("--split", default="test", choices=("test", "validation"), help="validation: for choices")
    p.add_argument("--subjects", nargs="*", default=None, help="only these subjects of the split")
    p.add_argument("--exclude", nargs="*", default=[], help="held-out subjects the weights have seen")
    p.add_argument("--baselines", nargs="*", default=["trilinear", "bspline", "sinc"])
    p.add_argument("--methods", nargs="*", default=["model", "model_no_t2", "trilinear", "bspline", "sinc"])
    p.add_argument("--external", nargs="*", default=[], help="NAME:SUBJECT:DIRECTION:PATH (FLAIR)")
    p.add_argument("--fit-subjects", type=int, default=10, help="training subjects for the lesion rule")
    p.add_argument("--register", action="store_true", help="rigid registration as for real sessions")
    p.add_argument("--planes", type=int, default=2, choices=(1, 2), help="model: planes averaged")
    args = p.parse_args(argv)
    from mtsr_monai.inference.clinical import default_model_path, load_clinical_model

    check_cached_settings(args.out, cached_settings(args, args.model or default_model_path()))
    ckpt = load_clinical_model(args.model or default_model_path())
    seen = set(ckpt.get("recipe", {}).get("training_subjects", [])) | set(args.exclude)
    subjects = chosen_subjects(p, args, seen)
    rule = lesion_rule(args)
    rows, cases, start = [], [], time.time()
    for s in subjects:
        for d in args.directions:
            rows += evaluate_case(s, d, args, ckpt, rule)
            cases.append((s["subject"], d))
            print(f"{s['subject']} {d}: done ({time.time() - start:.0f} s)", flush=True)
    header = [
        f"{'Held-out' if args.split == 'test' else 'Validation'} subjects "
        f"{', '.join(s['subject'] for s in subjects)} (excluded as seen by the weights: "
        f"{', '.join(sorted(seen)) or 'none'}); {args.thickness:g} mm Gaussian slabs; weights "
        f"{args.model or default_model_path()} ({ckpt.get('iterations', '?')} iterations); lesion rule "
        f"fitted on {len(rule['subjects'])} training subjects' 1 mm FLAIR: pre-smoothing sigma "
        f"{rule['presmooth']:g} voxels, k = {rule['k']:.2f}.",
        "",
    ]
    table = header + flair_table(rows, cases) + other_tables(rows, cases)
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "lesion_rule": rule, "cases": cases}, indent=1)
    )
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
