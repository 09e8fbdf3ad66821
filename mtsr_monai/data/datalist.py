"""Decathlon-style datalists (``training`` / ``validation`` / ``test``) from common brain-MRI folder layouts.

Layouts:

* ``brats``: ``<case>_t1|_t1ce|_t2|_flair|_seg.nii.gz`` (2018-2021) or
  ``<case>-t1n|-t1c|-t2w|-t2f|-seg.nii.gz`` (2023), usually one folder per case; the subject id is ``<case>``.
* ``ixi``: ``[prefix]IXI<nnn>-<site>-<nnnn>-T1|T2|PD.nii.gz`` (the prefix lets ``hd_bet_IXI...`` names
  through); a file whose prefix contains ``mask`` is a brain mask, kept as ``brain_mask_<modality>`` (and
  ``brain_mask`` = the T1 one, else the first found), never as an image.
* ``bids``: ``sub-*/[ses-*/]anat/*_T1w|T2w|FLAIR|PDw.nii.gz`` (the subject id is ``sub-X`` or
  ``sub-X_ses-Y``; a T1w with a ``ce-`` entity is ``t1ce``); ``derivatives/``, ``sourcedata/``, ``code/``
  and hidden folders are ignored.
* ``folders``: one folder per subject, modality from the file-name stem (case-insensitive, aliases below).

Every subject is a dict ``{"subject": id, "t1": path, "t2": path, ...}`` with absolute paths (or paths
relative to ``base_dir`` when one is given, MONAI's ``load_decathlon_datalist(base_dir=...)`` convention).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtsr_monai.errors import InputError
from mtsr_monai.io import is_volume_file

LAYOUTS = ("auto", "brats", "ixi", "bids", "folders")
#: image keys in the order they are written; ``label`` and masks come after
IMAGE_KEYS = ("t1", "t1ce", "t2", "flair", "pd")
DEFAULT_RATIOS = (0.66, 0.18, 0.16)  # the clinical paper's training / validation / test split

#: file-name stem (lower case) -> datalist key
ALIASES = {
    "t1": "t1", "t1w": "t1", "t1n": "t1", "mprage": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1post": "t1ce", "t1_post": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2flair": "flair", "t2_flair": "flair",
    "pd": "pd", "pdw": "pd",
    "seg": "label", "gt_w": "label", "label": "label", "labels": "label", "dseg": "label",
    "mask": "brain_mask", "brain_mask": "brain_mask", "brainmask": "brain_mask",
}  # fmt: skip

#: name tokens that mark a T1 as contrast-enhanced (``post`` alone may be post-operative), those that deny it
_CONTRAST_AGENT = {"gad", "gd", "gado", "gadolinium", "postcontrast", "ce", "enhanced"}
_NO_AGENT = {"pre", "precontrast", "non", "no", "without", "native"}


def _with_contrast_agent(tokens: list[str]) -> bool:
    named = bool(_CONTRAST_AGENT & set(tokens)) or "post_contrast" in "_".join(tokens)
    return named and not _NO_AGENT & set(tokens)


_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_BRATS = re.compile(
    r"^(?P<case>.+?)[_-](?P<mod>t1ce|t1n|t1c|t1|t2w|t2f|t2|flair|seg)\.nii(\.gz)?$", re.IGNORECASE
)
_BRATS_KEYS = {"t1": "t1", "t1n": "t1", "t1ce": "t1ce", "t1c": "t1ce", "t2": "t2", "t2w": "t2",
               "flair": "flair", "t2f": "flair", "seg": "label"}  # fmt: skip
_IXI = re.compile(
    r"^(?P<prefix>.*?)(?P<subject>IXI\d+-[A-Za-z]+-\d+)-(?P<mod>T1|T2|PD)\.nii(\.gz)?$", re.IGNORECASE
)
_BIDS = re.compile(r"_(?P<mod>T1w|T2w|FLAIR|PDw|T1map)\.nii(\.gz)?$")
#: anatomical BIDS suffixes this toolkit processes -> the modality names of the models
BIDS_SUFFIX_MODALITY = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "PDw": "pd"}
#: top-level BIDS folders that hold no raw scans to process (the specification's, and hidden ones)
BIDS_NOT_RAW = ("derivatives", "sourcedata", "code")


def bids_modality(suffix: str, entities: dict[str, str]) -> str:
    """The model modality of a BIDS anatomical scan: its suffix's, ``t1ce`` for a T1w with a ``ce-`` entity
    (a contrast agent)."""
    modality = BIDS_SUFFIX_MODALITY[suffix]
    return "t1ce" if modality == "t1" and "ce" in entities else modality


def _niftis(folder: Path, recursive: bool = True) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and _NIFTI.search(p.name) and not p.name.startswith(".")
    )


def _stem(path: Path) -> str:
    return _NIFTI.sub("", path.name)


def check_translation_pair(source: str, target: str) -> None:
    """InputError unless ``source`` and ``target`` are image keys (:data:`IMAGE_KEYS`) and differ."""
    for name in (source, target):
        if name not in IMAGE_KEYS:
            raise InputError(f"unknown modality {name!r}; choose from {', '.join(IMAGE_KEYS)}")
    if source == target:
        raise InputError("source and target modality are the same")


def modality_from_name(stem: str) -> str | None:
    """Datalist key of a file stem: ``T1`` -> ``t1``, ``study1_FLAIR`` -> ``flair``, ``GT_W`` -> ``label``.
    The whole stem or its last one or two tokens decide; failing them, the one modality its other tokens
    name (a scanner's series name, ``MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla``); None when they name none or
    several (``T1_vs_FLAIR_difference``)."""
    low = stem.lower()
    tokens = [t for t in re.split(r"[_\-. ]+", low) if t]
    if "mask" in tokens or "brainmask" in tokens:
        return "brain_mask"
    candidates = [low, "_".join(tokens[-2:]), tokens[-1] if tokens else low]
    for cand in candidates:
        if cand in ALIASES:
            return ALIASES[cand]
    named = {ALIASES[t] for t in tokens if ALIASES.get(t) in IMAGE_KEYS}
    if named == {"t1"} and _with_contrast_agent(tokens):  # ``T1_post_gad``: not the plain T1
        return "t1ce"
    return named.pop() if len(named) == 1 else None


def _add(subject: dict, key: str, path: Path) -> None:
    # two files for one key (e.g. two T1 runs): keep the first in sorted order, say so
    if key in subject:
        warnings.warn(
            f"subject {subject['subject']}: {path.name} ignored, {key} is already {Path(subject[key]).name}",
            stacklevel=3,
        )
        return
    subject[key] = os.path.abspath(path)  # not resolve(): keep symlinked trees as they are


def _find_brats(root: Path) -> list[dict]:
    groups: dict[tuple[Path, str], dict] = {}
    for path in _niftis(root):
        m = _BRATS.match(path.name)
        if not m:
            continue
        case = m["case"]
        subject = groups.setdefault((path.parent, case), {"subject": case})
        _add(subject, _BRATS_KEYS[m["mod"].lower()], path)
    return [s for s in groups.values() if any(k in s for k in IMAGE_KEYS)]  # a lone label is no subject


def _find_ixi(root: Path) -> list[dict]:
    groups: dict[str, dict] = {}
    masks: dict[str, dict[str, Path]] = {}
    for path in _niftis(root):
        m = _IXI.match(path.name)
        if not m:
            continue
        sid, mod = m["subject"], m["mod"].lower()
        if "mask" in m["prefix"].lower():
            masks.setdefault(sid, {})[mod] = path
            continue
        _add(groups.setdefault(sid, {"subject": sid}), mod, path)
    for sid, by_mod in masks.items():
        subject = groups.setdefault(sid, {"subject": sid})
        for mod, path in sorted(by_mod.items()):
            _add(subject, f"brain_mask_{mod}", path)
        # T1 and T2 of IXI lie on different grids: the generic brain_mask is the T1 one when there is one
        first = by_mod.get("t1") or by_mod[sorted(by_mod)[0]]
        _add(subject, "brain_mask", first)
    return [s for s in groups.values() if any(k in s for k in IMAGE_KEYS)]


def _find_bids(root: Path) -> list[dict]:
    groups: dict[str, dict] = {}
    for path in _niftis(root):
        rel = path.relative_to(root).parts
        # at any depth: a dataset under --root has its own derivatives/ beside its sub-* folders
        if any(p in BIDS_NOT_RAW or p.startswith(".") for p in rel[:-1]) or path.parent.name != "anat":
            continue
        sub = next((p for p in rel if p.startswith("sub-")), None)
        if sub is None:
            continue
        ses = next((p for p in rel if p.startswith("ses-")), None)
        sid = f"{sub}_{ses}" if ses else sub
        m = _BIDS.search(path.name)
        if m and m["mod"] in BIDS_SUFFIX_MODALITY:
            entities = dict(e.split("-", 1) for e in path.name[: m.start()].split("_") if "-" in e)
            named = (f"sub-{entities.get('sub')}", f"ses-{entities['ses']}" if "ses" in entities else None)
            if named != (sub, ses):  # another subject's scan filed here: never pair it with this one's
                warnings.warn(f"{path}: sub/ses entities disagree with its folders; skipped", stacklevel=2)
                continue
            _add(groups.setdefault(sid, {"subject": sid}), bids_modality(m["mod"], entities), path)
    return list(groups.values())


def _find_folders(root: Path) -> list[dict]:
    subjects = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        subject: dict = {"subject": folder.name}
        for path in _niftis(folder, recursive=False):
            key = modality_from_name(_stem(path))
            if key is not None:
                _add(subject, key, path)
        if any(k in subject for k in IMAGE_KEYS):
            subjects.append(subject)
    return subjects


_FINDERS = {"brats": _find_brats, "ixi": _find_ixi, "bids": _find_bids, "folders": _find_folders}


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout: IXI names, then a BIDS tree, then BraTS names, else one folder per subject."""
    root = Path(root)
    files = _niftis(root)
    if any(_IXI.match(p.name) for p in files):
        return "ixi"
    if any(
        p.parent.name == "anat" and any(q.startswith("sub-") for q in p.relative_to(root).parts)
        for p in files
    ):
        return "bids"
    # BraTS names carry the case id, which is also the folder name (or starts with "BraTS" in a flat folder);
    # this keeps "study1_FLAIR.nii.gz" in per-patient folders out of the BraTS layout
    brats = [(p, m) for p in files if (m := _BRATS.match(p.name))]
    if brats and all(m["case"] == p.parent.name or m["case"].lower().startswith("brats") for p, m in brats):
        return "brats"
    return "folders"


def find_subjects(root: str | os.PathLike, layout: str = "auto") -> list[dict]:
    """Subjects under ``root`` as dicts ``{"subject": id, <key>: absolute path, ...}``, sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder", root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if layout == "auto":
        layout = detect_layout(root)
    subjects = _FINDERS[layout](root)
    ids = [s["subject"] for s in subjects]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"subject ids found twice in layout {layout!r}: {', '.join(dupes[:5])}", root)
    order = [*IMAGE_KEYS, "label", "brain_mask"]
    rank = {k: i for i, k in enumerate(order)}
    out = []
    for s in sorted(subjects, key=lambda s: s["subject"]):
        keys = sorted((k for k in s if k != "subject"), key=lambda k: (rank.get(k, len(order)), k))
        out.append({"subject": s["subject"], **{k: s[k] for k in keys}})
    return out


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Subjects per split: largest-remainder rounding of ``n * ratio``, then every split with a non-zero ratio
    gets at least one subject while ``n`` allows, taken from the largest split."""
    ratios = np.asarray(ratios, dtype=float) / float(np.sum(ratios))
    raw = ratios * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero(ratios > 0):
        if counts[i] == 0:
            donor = int(np.argmax(counts))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return [int(c) for c in counts]


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad ratios {ratios!r}: expected three numbers") from err
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values):
        raise InputError(
            f"bad ratios {values}: expected three non-negative numbers (training validation test)"
        )
    if abs(sum(values) - 1.0) > 1e-2:
        raise InputError(f"bad ratios {values}: they must sum to 1 (they sum to {sum(values):.3f})")
    if values[0] == 0:
        raise InputError(f"bad ratios {values}: the training ratio must be positive")
    return values  # type: ignore[return-value]


def _relative(subject: dict, base_dir: Path) -> dict:
    return {k: (v if k == "subject" else os.path.relpath(v, base_dir)) for k, v in subject.items()}


def _split_by_participant(
    ids: Sequence[str], sessions: bool, seed: int, ratios: Sequence[float]
) -> dict[str, list[str]]:
    """``ids`` cut into training / validation / test by participant: with ``sessions`` (BIDS ids
    ``sub-01_ses-1``) all of a participant's sessions go to one split (no test scan of a person trained on);
    otherwise a participant is an id, and the split is as it always was."""
    person = {i: i.split("_ses-")[0] if sessions else i for i in ids}
    people = sorted(set(person.values()))
    order = [people[i] for i in np.random.default_rng(seed).permutation(len(people))]
    n_train, n_val, _ = split_counts(len(order), ratios)
    cuts = {
        "training": set(order[:n_train]),
        "validation": set(order[n_train : n_train + n_val]),
        "test": set(order[n_train + n_val :]),
    }
    return {name: [i for i in ids if person[i] in cut] for name, cut in cuts.items()}


def build_datalist(
    root: str | os.PathLike,
    layout: str = "auto",
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    require: Sequence[str] = (),
    base_dir: str | os.PathLike | None = None,
) -> dict:
    """A decathlon-style datalist of the subjects under ``root``, split by subject (by participant in BIDS,
    where each session is an item: all sessions of a participant go to one split).

    The split is deterministic: ids (participants) sorted, then permuted by
    ``numpy.random.default_rng(seed)``, then cut into training / validation / test by :func:`split_counts`.
    ``require`` keeps only subjects having all of those keys. With ``base_dir``, paths are written relative
    to it (else absolute).
    """
    ratios = _check_ratios(ratios)
    resolved = detect_layout(root) if layout == "auto" and Path(root).is_dir() else layout
    subjects = find_subjects(root, resolved)
    if not subjects:
        raise InputError(f"no subjects found (layout {resolved!r})", root)
    require = [r.strip().lower() for r in require if r.strip()]
    known = {*IMAGE_KEYS, *ALIASES.values()}
    unknown = [r for r in require if r not in known and not r.startswith("brain_mask_")]
    if unknown:
        raise InputError(f"--require: unknown key {', '.join(unknown)}; keys are {', '.join(sorted(known))}")
    if require:
        kept = [s for s in subjects if all(r in s for r in require)]
        if not kept:
            raise InputError(f"none of the {len(subjects)} subjects has all of {', '.join(require)}", root)
        subjects = kept
    by_id = {s["subject"]: s for s in subjects}
    parts = _split_by_participant(list(by_id), resolved == "bids", seed, ratios)
    if base_dir is not None:
        base = Path(os.path.abspath(base_dir))
        by_id = {k: _relative(v, base) for k, v in by_id.items()}
    keys = sorted({k for s in subjects for k in s if k != "subject"})
    datalist = {
        "name": Path(root).resolve().name,
        "description": f"mtsr datalist of {Path(root).resolve()} (layout {resolved})",
        "layout": resolved,
        "root": str(Path(root).resolve()),
        "seed": int(seed),
        "ratios": list(ratios),
        "paths": "absolute" if base_dir is None else "relative to the datalist folder",
        "keys": {k: sum(k in s for s in subjects) for k in keys},
        "numTraining": len(parts["training"]),
        "numValidation": len(parts["validation"]),
        "numTest": len(parts["test"]),
    }
    for name, part in parts.items():
        datalist[name] = [by_id[i] for i in sorted(part)]
    return datalist


def read_split(path: str | os.PathLike, split: str, base_dir: str | os.PathLike | None = None) -> list[dict]:
    """One split of a datalist JSON read by MONAI's ``load_decathlon_datalist`` (relative paths joined with
    ``base_dir``, default the datalist's folder). ``subject`` ids stay as written (MONAI joins any value that
    names an existing file or folder, and a subject folder often carries the subject's id). Raises
    :class:`InputError` for a missing file, bad JSON or a missing split."""
    import json

    from monai.data import load_decathlon_datalist  # here: `mtsr datalist` needs no MONAI

    path = Path(path)
    if not path.is_file():
        raise InputError("no such datalist file", path)
    try:
        items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split, base_dir=base_dir)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read split {split!r}: {err}", path) from err
    except IndexError:  # MONAI looks at the first item of a "test" split: an empty one is just empty
        items = []
    base = os.path.normpath(base_dir if base_dir is not None else path.parent)
    for item in items:
        sid = item.get("subject")
        if isinstance(sid, str) and os.path.dirname(sid) == base:
            item["subject"] = os.path.basename(sid)
        for value in item.values():  # MONAI leaves a relative path that is not under base_dir as it was
            if isinstance(value, str) and is_volume_file(value) and not os.path.isabs(value):
                if not os.path.exists(value):
                    raise InputError(f"no such file (relative paths are read from {base}, else from the "
                                     f"working directory {os.getcwd()})", value)  # fmt: skip
    return items
