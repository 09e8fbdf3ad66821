"""Clinically relevant evaluation of restored volumes against high-resolution references (clinical SR
paper, Sections 3.8 and 4.8): IQM differences (its Table 1), fidelity, tissue-segmentation agreement,
volumes and Bland-Altman plots (its Figure 10), and on BraTS the FLAIR hyperintensity rule against the
whole-tumour label.

Matching rule: every ``.nii`` / ``.nii.gz`` file under the reference folder (recursively) is keyed by
its path relative to that folder without the extension (``sub01/flair``, ``sub01_flair``); a method's
file matches when it has the same key under the method's folder. Subjects missing from a method are
listed in the JSON (``unmatched``) and left out of every table; a subject is evaluated when all methods
have it. Labels (``labels_dir``): ``<labels_dir>/<key>.nii[.gz]`` unless it is the reference image itself
(BraTS's layout, labels folder = references folder), else the file whose name contains ``seg`` or ``gt_w``
(case-insensitive) in the key's own folder under ``labels_dir`` (``HGG/<case>/`` for ``HGG/<case>/<c>_t1``),
else in the nearest folder above it; where several subjects' labels lie side by side (and in ``labels_dir``
itself) only ``<subject>_seg`` / ``<subject>_gt_w`` of a key ``<subject>_<contrast>``; two candidates for one
subject are refused. Whole tumour = label > 0.

Per subject the reference defines the brain mask (``image > 0`` when skull-stripped, else Otsu head
mask) and the tissue masks used for every method's IQMs (as the paper uses the high-resolution masks);
each image (reference and methods) is also segmented on its own (EM, same settings) for agreement and
volumes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_file_set, atomic_write_text, check_same_grid, load_volume, voxel_sizes
from mtsr_monai.io.outputs import same_file
from mtsr_monai.metrics import qc
from mtsr_monai.metrics.agreement import bland_altman, overlap_metrics, volume_ml
from mtsr_monai.metrics.image import image_metrics
from mtsr_monai.metrics.segmentation import guess_contrast, segment_tissues, wmh_mask
from mtsr_monai.reporting import html as H
from mtsr_monai.reporting.agreement import bland_altman_plot
from mtsr_monai.reporting.views import CONVENTION

#: the figures a report writes, by pattern: those of an earlier report's subjects are removed with it
REPORT_FIGURES = ("figures/montage_*.png", "figures/difference_*.png", "figures/bland_altman_*.png")
TABLE_KEYS = (
    "cjv",
    "efc",
    "fwhm_avg",
    "wm2max",
    "snr_total",
    "cnr",
    "ratio_wm_gm_mean",
    "ratio_csf_wmgm_mean",
    "ratio_wm_gm_sd",
    "ratio_wm_gm_p05",
    "ratio_wm_gm_p95",
)
TISSUE_NAMES = {1: "csf", 2: "gm", 3: "wm", 4: "pial"}
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _key(path: Path, root: Path) -> str:
    return _NIFTI.sub("", path.relative_to(root).as_posix())


def nifti_index(folder: Path) -> dict[str, Path]:
    """Key (relative path without extension) -> file, for every NIfTI under ``folder``."""
    return {
        _key(p, folder): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and _NIFTI.search(p.name) and not p.name.startswith(".")
    }


def match_subjects(ref_dir: Path, method_dirs: Mapping[str, Path]) -> tuple[list[dict[str, Any]], dict]:
    """Subjects found in the reference folder and in every method folder; and what did not match."""
    for path in [ref_dir, *method_dirs.values()]:
        if not Path(path).is_dir():
            raise InputError("no such directory", path)
    ref = nifti_index(Path(ref_dir))
    if not ref:
        raise InputError("no NIfTI files found", ref_dir)
    indexes = {name: nifti_index(Path(d)) for name, d in method_dirs.items()}
    matched, unmatched = [], {}
    for key, path in ref.items():
        missing = [name for name, idx in indexes.items() if key not in idx]
        if missing:
            unmatched[key] = missing
            continue
        matched.append(
            {"key": key, "ref": path, "methods": {name: idx[key] for name, idx in indexes.items()}}
        )
    if not matched:
        raise InputError(
            "no subject matched: method folders must hold files at the same relative paths as the reference "
            f"(e.g. {next(iter(ref))}.nii.gz)",
            ref_dir,
        )
    return matched, unmatched


def find_label(labels_dir: Path, key: str, reference: Path | None = None) -> Path | None:
    """The whole-tumour / lesion label of a subject (see the module docstring), or None. A file named like
    the key that is the ``reference`` image itself (the same file, or a byte-identical copy: BraTS's
    ``<case>/FLAIR.nii.gz`` when the labels folder is the references' one) is no label."""
    for ext in (".nii.gz", ".nii"):
        named = labels_dir / f"{key}{ext}"
        if named.is_file() and not (reference is not None and _same_content(named, reference)):
            return named
    parts = key.split("/")
    subject = parts[-1].rsplit("_", 1)[0].lower()  # "sub1" of "sub1_flair"
    # the key's own folder first, then each folder above it (never a sibling's: BraTS's HGG/<case>/ holds one)
    folders = [labels_dir.joinpath(*parts[:i]) for i in range(len(parts) - 1, -1, -1)]
    if len(parts) == 1:
        folders.append(labels_dir / subject)
    for folder in filter(Path.is_dir, folders):
        labels = [p for p in sorted(folder.iterdir()) if p.is_file() and _is_label_name(p.name)]
        own = [p for p in labels if p.name.lower().startswith(subject + "_")]  # sub1_seg, not sub10_seg
        if folder == labels_dir or (len(labels) > 1 and own):  # several subjects' labels side by side
            labels = own
        if len(labels) > 1:
            names = ", ".join(p.name for p in labels)
            raise InputError(f"several tumour labels for {key} ({names}): keep one in {folder}")
        if labels:
            return labels[0]
    return None


def _is_label_name(name: str) -> bool:
    low = name.lower()
    return bool(_NIFTI.search(low)) and ("seg" in low or "gt_w" in low)


def _same_content(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file (:func:`~mtsr_monai.io.outputs.same_file`) or hold the same
    bytes."""
    if same_file(a, b):
        return True
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:  # one of them is missing
        return False


def _fidelity(pred: np.ndarray, ref: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """MAE (also over the data range), PSNR, SSIM and NMSE inside the brain, by
    :func:`mtsr_monai.metrics.image.image_metrics` (range = the whole reference's)."""
    out = image_metrics(pred, ref, mask=brain)
    block = out.get("brain") or out["whole"]
    res = {k: float(block[k]) for k in ("mae", "psnr", "ssim", "nmse") if block.get(k) is not None}
    res["mae_norm"] = res["mae"] / float(out["data_range"]) if out.get("data_range") else None
    res["data_range"] = out.get("data_range")
    res["fidelity_source"] = "mtsr_monai.metrics.image.image_metrics (brain mask)"
    return res


def _precheck_grids(subjects: list[dict[str, Any]]) -> None:
    """Shapes and affines from the NIfTI headers only (cheap), so a bad subject fails the run up front."""
    import nibabel as nib

    for sub in subjects:
        paths = [sub["ref"], *sub["methods"].values()]
        try:
            headers = [nib.load(str(p)) for p in paths]
        except Exception as err:  # noqa: BLE001 - unreadable files are reported by load_volume later
            raise InputError(f"unreadable NIfTI header ({type(err).__name__})", sub["ref"]) from err
        check_same_grid([h.shape[:3] for h in headers], [h.affine for h in headers], paths)


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


AGREEMENT_KEYS = ("dice", "jaccard", "tpf", "ppv", "tnf")


def evaluate_clinical(
    pred_dir: Path,
    ref_dir: Path,
    output: Path,
    baseline_dirs: Sequence[Path] = (),
    names: Sequence[str] | None = None,
    labels_dir: Path | None = None,
    contrast: str | None = None,
    n_classes: int = 3,
    variant: str = "mriqc",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole evaluation, write ``report.json``, ``index.html`` and ``figures/`` under ``output``;
    returns the report dictionary (every number in the JSON)."""
    import json

    from tqdm import tqdm

    # absolute paths: report.json names the same files from wherever it is read
    dirs = [Path(d).resolve() for d in (pred_dir, *baseline_dirs)]
    ref_dir = Path(ref_dir).resolve()
    labels_dir = None if labels_dir is None else Path(labels_dir).resolve()
    method_names = _method_names(names, dirs, labels_dir)
    subjects, unmatched = match_subjects(ref_dir, dict(zip(method_names, dirs, strict=True)))
    _precheck_grids(subjects)  # refuse before any figure is written
    output = Path(output)
    report: dict[str, Any] = {
        "ref_dir": str(ref_dir),
        "methods": dict(zip(method_names, map(str, dirs), strict=True)),
        "labels_dir": None if labels_dir is None else str(labels_dir),
        "variant": variant,
        "n_classes": n_classes,
        "unmatched": unmatched,
        "subjects": [],
    }
    settings = {"contrast": contrast, "n_classes": n_classes, "variant": variant, "labels_dir": labels_dir}
    figures: dict[str, list[Path]] = {"montage": [], "difference": []}
    # the whole report or nothing (a bad subject or Ctrl-C half-way leaves an earlier report as it was), and
    # no figure of an earlier report's other subjects beside the new ones
    with atomic_file_set(output, stale=REPORT_FIGURES) as staging:
        fig_dir = staging / "figures"
        bar = tqdm(subjects, desc="evaluate-clinical", unit="subject", disable=not progress)
        for sub in bar:
            entry, images = _evaluate_subject(sub, settings, bar.set_postfix_str)
            bar.set_postfix_str(f"{sub['key']}: figures")
            for kind, path in _subject_figures(sub["key"], images, fig_dir).items():
                figures[kind].append(path)
            report["subjects"].append(entry)
        report["summary"], ba_figs = _summaries(report["subjects"], method_names, fig_dir)
        text = json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n"
        atomic_write_text(staging / "report.json", text)
        atomic_write_text(staging / "index.html", _render(report, method_names, figures, ba_figs, output))
    return report


def _method_names(names: Sequence[str] | None, dirs: Sequence[Path], labels_dir: Path | None) -> list[str]:
    """The methods' names (``names``, else their folders' names), checked: one per folder, all different;
    and the labels folder, when given, must exist."""
    method_names = list(names) if names else [d.resolve().name for d in dirs]
    if len(method_names) != len(dirs):
        raise InputError(f"--names gives {len(method_names)} names for {len(dirs)} method folders")
    if len(set(method_names)) != len(method_names):
        raise InputError(f"method names must differ (got {method_names}); give --names")
    if "reference" in method_names:  # the report's name for the reference images
        raise InputError("no method may be called 'reference' (a folder's name is its default): give --names")
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise InputError("no such directory", labels_dir)
    return method_names


def _load_subject(sub: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``(reference, {method: image}, affine)`` of one subject, all on one grid (InputError otherwise)."""

    ref_img = load_volume(sub["ref"])
    preds = {name: load_volume(p) for name, p in sub["methods"].items()}
    paths = [sub["ref"], *sub["methods"].values()]
    shapes = [ref_img.shape, *[p.shape for p in preds.values()]]
    check_same_grid(
        shapes, [np.asarray(ref_img.affine), *[np.asarray(p.affine) for p in preds.values()]], paths
    )
    return ref_img.numpy(), {name: p.numpy() for name, p in preds.items()}, np.asarray(ref_img.affine)


def _load_label(labels_dir: Path, key: str, ref: np.ndarray, affine: np.ndarray, ref_path: Path):
    """``(label path, whole-tumour mask)`` of a subject, ``(None, None)`` without a label file."""

    label_path = find_label(Path(labels_dir), key, Path(ref_path))
    if label_path is None:
        return None, None
    lab = load_volume(label_path, validate=False)
    check_same_grid([ref.shape, lab.shape], [affine, np.asarray(lab.affine)], [ref_path, label_path])
    return label_path, lab.numpy() > 0


def _evaluate_subject(
    sub: Mapping[str, Any], settings: Mapping[str, Any], status: Callable[[str], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One subject's report entry (reference IQMs, tissues, label, hyperintensities; every method's
    numbers by :func:`_evaluate_method`) and the images its figures show. ``status`` names the step
    running (a subject takes minutes: EM segmentations, IQMs of every image)."""

    status(f"{sub['key']}: reference tissues and IQMs")
    ref, arrays, affine = _load_subject(sub)
    spacing = voxel_sizes(affine)
    con = settings["contrast"] or guess_contrast(sub["ref"].name)
    masks = qc.image_masks(ref)
    brain, stripped = masks["brain"], masks["skull_stripped"]
    seg_ref = segment_tissues(ref, brain, (con,), n_classes=settings["n_classes"])
    # one air region for all images of the subject: the reference's (none when skull-stripped)
    air = masks["air"]
    tissue_labels = [1, 2, 3] + ([4] if settings["n_classes"] == 4 else [])
    entry: dict[str, Any] = {
        "key": sub["key"],
        "reference": str(sub["ref"]),
        "contrast": con,
        "brain_ml": volume_ml(brain, affine),
        "skull_stripped": stripped,
        "warnings": [],
        "iqm_reference": qc.compute_iqms(ref, seg_ref, spacing=spacing, variant=settings["variant"], **masks),
        "volumes_reference_ml": {TISSUE_NAMES[t]: volume_ml(seg_ref == t, affine) for t in tissue_labels},
        "methods": {},
    }
    tumour = None
    if settings["labels_dir"] is not None:
        label_path, tumour = _load_label(settings["labels_dir"], sub["key"], ref, affine, sub["ref"])
        entry["label"] = None if label_path is None else str(label_path)
        if tumour is not None:
            entry["tumour_ml"] = volume_ml(tumour, affine)
            entry["warnings"] += _label_outside_brain(tumour, brain)
    if not stripped:
        entry["warnings"] += _tissue_outside_head(ref, brain)
    wmh_ref = wmh_mask(ref, brain, spacing=spacing) if con == "flair" else None
    if wmh_ref is not None:
        entry["hyperintensity_reference_ml"] = volume_ml(wmh_ref, affine)
        if tumour is not None:
            entry["hyperintensity_vs_tumour_reference"] = overlap_metrics(wmh_ref, tumour, brain)
    common = {"ref": ref, "seg_ref": seg_ref, "brain": brain, "air": air, "spacing": spacing,
              "affine": affine, "contrast": con, "tissue_labels": tissue_labels, "wmh_ref": wmh_ref,
              "tumour": tumour}  # fmt: skip
    for name, pred in arrays.items():
        status(f"{sub['key']}: {name} IQMs, fidelity, tissues")
        method = _evaluate_method(pred, common, entry["iqm_reference"], settings)
        entry["methods"][name] = {"file": str(sub["methods"][name]), **method}
    images = {"ref": ref, "arrays": arrays, "brain": brain, "tumour": tumour, "affine": affine}
    return entry, images


def _label_outside_brain(label: np.ndarray, brain: np.ndarray, tolerated: float = 0.05) -> list[str]:
    """A warning when the brain mask misses more than ``tolerated`` of a lesion label (a lesion lies in the
    brain): the mask, and every brain-limited number, then covers part of the brain only."""
    outside = float((label & ~brain).sum()) / max(int(label.sum()), 1)
    if outside <= tolerated:
        return []
    return [
        f"the brain mask misses {outside:.0%} of the label: the brain-limited numbers cover part of the "
        "brain only (a tight crop around a bright lesion can defeat the skull-stripping test)"
    ]


def _tissue_outside_head(image: np.ndarray, head: np.ndarray, tolerated: float = 0.3) -> list[str]:
    """A warning when the voxels an Otsu head mask leaves out are not air: their median above ``tolerated``
    of the head's (0.01-0.14 on the raw TCGA and open-MS scans of ../shared/data, 0.51 on a skull-stripped
    BraTS FLAIR cropped so tightly that it has almost no background and was not recognised as stripped)."""
    left_out = image[~head & (np.abs(image) > qc.near_zero_level(image))]
    if not left_out.size or not head.any():
        return []
    ratio = float(np.median(left_out) / max(float(np.median(image[head])), 1e-12))
    if ratio <= tolerated:
        return []
    return [
        f"the head mask leaves out voxels at {ratio:.0%} of the head's median intensity, which is tissue "
        "rather than air: the reference may be skull-stripped with little background, and the brain-limited "
        "numbers may cover part of the brain only"
    ]


def _evaluate_method(
    pred: np.ndarray, common: Mapping[str, Any], iqm_ref: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """One method's IQMs (reference tissue masks) and their differences, fidelity, its own tissues' volumes
    and agreement with the reference's, and the FLAIR hyperintensities (vs the reference's and the tumour)."""

    brain, affine, seg_ref = common["brain"], common["affine"], common["seg_ref"]
    m: dict[str, Any] = {}
    m["iqm"] = qc.compute_iqms(pred, seg_ref, brain, common["spacing"], settings["variant"], common["air"])
    m["iqm_difference"] = qc.iqm_differences(m["iqm"], iqm_ref)
    m["fidelity"] = _fidelity(pred, common["ref"], brain)
    seg = segment_tissues(pred, brain, (common["contrast"],), n_classes=settings["n_classes"])
    labels = common["tissue_labels"]
    m["volumes_ml"] = {TISSUE_NAMES[t]: volume_ml(seg == t, affine) for t in labels}
    m["agreement"] = {TISSUE_NAMES[t]: overlap_metrics(seg == t, seg_ref == t, brain) for t in labels}
    if common["wmh_ref"] is not None:
        wmh = wmh_mask(pred, brain, spacing=common["spacing"])
        m["volumes_ml"]["hyperintensity"] = volume_ml(wmh, affine)
        m["agreement"]["hyperintensity"] = overlap_metrics(wmh, common["wmh_ref"], brain)
        if common["tumour"] is not None:
            m["hyperintensity_vs_tumour"] = overlap_metrics(wmh, common["tumour"], brain)
    return m


def figure_stem(key: str) -> str:
    """A subject key as part of a figure's file name: readable and unique (keys the clean-up maps alike,
    ``a/b`` and ``a_b``, must not share a file: the later figure would replace the earlier one)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + "_" + hashlib.sha1(key.encode()).hexdigest()[:6]


def _subject_figures(key: str, images: Mapping[str, Any], fig_dir: Path) -> dict[str, Path]:
    """The montage and the difference map of one subject, cut through the tumour's centre when there is
    one, else through the brain's centre."""

    ref, arrays, brain, tumour = images["ref"], images["arrays"], images["brain"], images["tumour"]
    centre_mask = tumour if tumour is not None and tumour.any() else brain
    point = np.round(np.argwhere(centre_mask).mean(axis=0)).astype(int)
    safe = figure_stem(key)
    montage = H.montage_figure(
        {"reference": ref, **arrays}, fig_dir / f"montage_{safe}.png", point, brain, tumour, title=key,
        affine=images["affine"],
    )  # fmt: skip
    difference = H.difference_figure(
        ref, arrays, fig_dir / f"difference_{safe}.png", point, brain, title=f"{key}: method - reference",
        affine=images["affine"],
    )  # fmt: skip
    return {"montage": montage, "difference": difference}


def _mean_sd_dict(values: Sequence[float | None]) -> dict[str, float | None]:
    return dict(zip(("mean", "sd"), _mean_sd(values), strict=True))


def _summaries(subs: list[dict], method_names: list[str], fig_dir: Path) -> tuple[dict[str, Any], list[Path]]:
    """Over subjects: IQM absolute differences and fidelity (mean, sd), agreement (means), Bland-Altman of
    the volumes (with their plots), the hyperintensity rule against the tumour; and the plots' paths."""
    summary: dict[str, Any] = {"iqm_abs_difference": {}, "fidelity": {}, "agreement": {}, "bland_altman": {}}
    for name in method_names:
        diffs = [s["methods"][name]["iqm_difference"] for s in subs]
        summary["iqm_abs_difference"][name] = {
            k: _mean_sd_dict([_abs(d.get(k)) for d in diffs]) for k in diffs[0]
        }
        fid_keys = [k for k, v in subs[0]["methods"][name]["fidelity"].items() if isinstance(v, (int, float))]
        summary["fidelity"][name] = {
            k: _mean_sd_dict([s["methods"][name]["fidelity"].get(k) for s in subs]) for k in fid_keys
        }
        summary["agreement"][name] = {
            tissue: {
                metric: _mean_sd(
                    [s["methods"][name]["agreement"][tissue][metric] for s in _having(subs, tissue)]
                )[0]
                for metric in AGREEMENT_KEYS
            }
            for tissue in _tissues(subs)
        }
    summary["bland_altman"], ba_figs = _bland_altman(subs, method_names, fig_dir)
    with_t = [s for s in subs if "hyperintensity_vs_tumour" in s["methods"][method_names[0]]]
    if with_t:
        summary["hyperintensity_vs_tumour"] = {
            name: {
                metric: _mean_sd([s["methods"][name]["hyperintensity_vs_tumour"][metric] for s in with_t])[0]
                for metric in AGREEMENT_KEYS
            }
            for name in method_names
        }
        summary["hyperintensity_vs_tumour"]["reference"] = {
            metric: _mean_sd([s["hyperintensity_vs_tumour_reference"][metric] for s in with_t])[0]
            for metric in AGREEMENT_KEYS
        }
    return summary, ba_figs


def _reference_volumes(subs: list[dict], tissue: str) -> list[float]:
    """The reference's volume (ml) of ``tissue`` in each subject having it."""
    key = "hyperintensity_reference_ml"
    return [s[key] if tissue == "hyperintensity" else s["volumes_reference_ml"][tissue] for s in subs]


def _bland_altman(subs: list[dict], method_names: list[str], fig_dir: Path) -> tuple[dict, list[Path]]:
    """Bland-Altman statistics of each tissue's volume, every method against the reference, and the plots."""

    stats, figs = {}, []
    for tissue in _tissues(subs):
        have = _having(subs, tissue)  # FLAIR hyperintensities: the FLAIR subjects only
        ref_vols = _reference_volumes(have, tissue)
        pairs = {
            name: ([s["methods"][name]["volumes_ml"][tissue] for s in have], ref_vols)
            for name in method_names
        }
        stats[tissue] = {name: bland_altman(a, b) for name, (a, b) in pairs.items()}
        title = f"{tissue.upper()} volume vs reference"
        figs.append(bland_altman_plot(pairs, fig_dir / f"bland_altman_{tissue}.png", title=title))
    return stats, figs


def _tissues(subs: list[dict]) -> list[str]:
    """Tissues with volumes in any subject, in first-seen order (hyperintensity: FLAIR subjects only)."""
    seen: dict[str, None] = {}
    for s in subs:
        for method in s["methods"].values():
            seen.update(dict.fromkeys(method["volumes_ml"]))
    return list(seen)


def _having(subs: list[dict], tissue: str) -> list[dict]:
    """The subjects whose every method has ``tissue`` (a mixed FLAIR / T1 cohort: not all do)."""
    return [s for s in subs if all(tissue in m["volumes_ml"] for m in s["methods"].values())]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _render(report: dict, methods: list[str], figures: dict, ba_figs: list[Path], output: Path) -> str:
    """``index.html``: the tables of the summaries and the figures, through
    ``templates/clinical_report.html.j2``."""

    summ, subs = report["summary"], report["subjects"]
    # Table 1 of the clinical paper: |IQM(method) - IQM(reference)|, mean ± sd over subjects
    keys = [k for k in TABLE_KEYS if k in summ["iqm_abs_difference"][methods[0]]]
    absdiff = summ["iqm_abs_difference"]
    rows = [[m, *[(absdiff[m][k]["mean"], absdiff[m][k]["sd"]) for k in keys]] for m in methods]
    iqm_table = H.html_table(
        ["method", *keys],
        rows,
        [None, *["min"] * len(keys)],
        caption=f"|IQM(method) - IQM(reference)|, mean ± sd over {len(subs)} subjects "
        f"({report['variant']} formulas; tissue masks of the reference; lower is better, best in bold)",
    )
    return H.render_template(
        "clinical_report.html.j2",
        title="Clinical evaluation of restored MRI",
        intro=_intro(report, methods, output),
        iqm_table=iqm_table,
        iqm_reference_table=_iqm_reference_table(subs, keys),
        fidelity_table=_fidelity_table(summ, methods),
        agreement_tables=[_agreement_table(summ, subs, methods, t) for t in summ["agreement"][methods[0]]],
        bland_altman_figures=ba_figs,
        hyperintensity_tables=_hyperintensity_tables(summ, subs, methods),
        convention=CONVENTION,
        n_classes=report["n_classes"],
        subject_figures=list(
            zip([s["key"] for s in subs], figures["montage"], figures["difference"], strict=True)
        ),
    )


def _intro(report: dict, methods: list[str], output: Path) -> str:
    """The page's first line: reference and method folders (relative to the report), subjects, unmatched."""
    import html

    def rel(path: str) -> str:  # folders named relative to the report's own folder
        return os.path.relpath(Path(path).resolve(), output.resolve())

    unmatched = report["unmatched"]
    return html.escape(
        f"Reference: {rel(report['ref_dir'])}; methods: "
        + ", ".join(f"{m} ({rel(report['methods'][m])})" for m in methods)
        + f"; {len(report['subjects'])} subjects"
        + (f"; {len(unmatched)} reference files without a match in every method" if unmatched else "")
        + ". Every number is in report.json."
        + "".join(f" Warning, {s['key']}: {w}." for s in report["subjects"] for w in s.get("warnings", []))
    )


def _fidelity_table(summ: dict, methods: list[str]) -> str:
    fid_keys = [k for k in ("mae", "mae_norm", "nmse", "psnr", "ssim") if k in summ["fidelity"][methods[0]]]
    fid = summ["fidelity"]
    rows = [[m, *[(fid[m][k]["mean"], fid[m][k]["sd"]) for k in fid_keys]] for m in methods]
    best = [None, *[("max" if k in ("psnr", "ssim") else "min") for k in fid_keys]]
    caption = "inside the reference's brain mask; mean ± sd over subjects"
    return H.html_table(["method", *fid_keys], rows, best, caption=caption)


def _agreement_table(summ: dict, subs: list[dict], methods: list[str], tissue: str) -> str:
    """One tissue's agreement (each image's EM masks vs the reference's), mean volume, Bland-Altman bias."""

    have = _having(subs, tissue)
    rows = [
        [
            m,
            *[summ["agreement"][m][tissue][k] for k in AGREEMENT_KEYS],
            _mean_sd([s["methods"][m]["volumes_ml"][tissue] for s in have])[0],
            summ["bland_altman"][tissue][m]["bias"],
        ]
        for m in methods
    ]
    return H.html_table(
        ["method", "Dice", "Jaccard", "TPF", "PPV", "TNF", "volume (ml)", "BA bias (%)"],
        rows,
        [None, "max", "max", "max", "max", "max", None, None],
        caption=f"{tissue.upper()}: masks of each image ({_mask_source(tissue)}) vs the reference's; "
        "mean over subjects; "
        f"reference volume {_mean_sd(_reference_volumes(have, tissue))[0]:.1f} ml",
    )


def _mask_source(tissue: str) -> str:
    return "the FLAIR hyperintensity rule" if tissue == "hyperintensity" else "EM segmentation"


def _hyperintensity_tables(summ: dict, subs: list[dict], methods: list[str]) -> list[str]:
    """The FLAIR hyperintensity rule against the whole-tumour label: means and per subject (none without)."""

    if "hyperintensity_vs_tumour" not in summ:
        return []
    hv = summ["hyperintensity_vs_tumour"]
    rows = [[m, *[hv[m][k] for k in AGREEMENT_KEYS]] for m in ["reference", *methods]]
    per = [
        [
            s["key"],
            s["hyperintensity_vs_tumour_reference"]["dice"],
            *[s["methods"][m]["hyperintensity_vs_tumour"]["dice"] for m in methods],
        ]
        for s in subs
        if "hyperintensity_vs_tumour_reference" in s
    ]
    means = H.html_table(
        ["image", "Dice", "Jaccard", "TPF", "PPV", "TNF"],
        rows,
        [None, "max", "max", "max", "max", "max"],
        caption="mask = FLAIR > mean + 1.3 sd in the brain, Gaussian smoothing, small "
        "components removed; against label > 0; mean over subjects; best method in bold (the reference "
        "image's row is for scale)",
        unranked=1,
    )
    return [
        means,
        H.html_table(
            ["subject", "Dice reference", *[f"Dice {m}" for m in methods]], per, caption="per subject"
        ),
    ]


def _iqm_reference_table(subs: list[dict], keys: list[str]) -> str:
    rows = [[s["key"], s["brain_ml"], "yes" if s["skull_stripped"] else "no"] for s in subs]
    rows = [row + [s["iqm_reference"].get(k) for k in keys] for row, s in zip(rows, subs, strict=True)]
    return H.html_table(
        ["subject (reference IQMs)", "brain mask (ml)", "skull-stripped", *keys],
        rows,
        caption="IQMs of the reference images, with the brain mask every brain-limited number uses (its "
        "non-zero voxels on a skull-stripped reference, else the Otsu head mask)",
    )
