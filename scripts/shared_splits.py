"""One subject split of the shared data (``../shared/data``) for every training and benchmark script.

- ``HELD_OUT``: final reports only (benchmarks' ``--heldout``, Table 2); never trained on, never used for a
  choice. Three of them have T2 (for T1 <-> T2), all five have FLAIR.
- ``VALIDATION``: every choice (recipe, checkpoint, stopping) is made on these.
- everything else with the needed contrasts: training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA_ROOT = Path(os.environ.get("MTSR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SOURCES = ("brats2018_tcia", "brats2018_t1_flair", "tcga_brainles")
HELD_OUT = (
    "Brats18_TCIA10_637_1",
    "Brats18_TCIA10_639_1",
    "Brats18_CBICA_AOO_1",
    "Brats18_TCIA08_105_1",
    "Brats18_TCIA01_499_1",
)
VALIDATION = ("Brats18_TCIA10_628_1", "Brats18_CBICA_ATV_1")
CONTRASTS = ("t1", "t1ce", "t2", "flair")


def split_of(subject: str) -> str:
    """``'test'`` (held out), ``'validation'`` or ``'training'``."""
    return "test" if subject in HELD_OUT else "validation" if subject in VALIDATION else "training"


def subjects(root: Path = DATA_ROOT) -> list[dict]:
    """Every subject of the BraTS-space sources, as ``find_subjects`` gives them (``subject``, modalities)."""
    from mtsr_monai.data.datalist import find_subjects

    found = []
    for name in SOURCES:
        if (root / name).is_dir():
            found.extend(find_subjects(root / name))
    return found


def volume_datalist(key: str = "hr", contrasts=CONTRASTS, root: Path = DATA_ROOT) -> dict:
    """Decathlon-style datalist of single volumes (every listed contrast of a subject) under ``key``."""
    out: dict[str, list] = {"training": [], "validation": [], "test": []}
    for s in subjects(root):
        for c in contrasts:
            if c in s:
                out[split_of(s["subject"])].append({"subject": s["subject"], "modality": c, key: s[c]})
    return out


def subject_datalist(keys=CONTRASTS, root: Path = DATA_ROOT) -> dict:
    """Decathlon-style datalist of subjects (one dict per subject, every modality it has), split as above;
    subjects keep every modality they have (bundles skip those lacking their keys)."""
    out: dict[str, list] = {"training": [], "validation": [], "test": []}
    for s in subjects(root):
        if any(k in s for k in keys):
            out[split_of(s["subject"])].append(dict(s))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write the shared data's split as a Decathlon-style datalist.")
    p.add_argument(
        "kind",
        nargs="?",
        choices=("volumes", "subjects"),
        default="volumes",
        help="one entry per volume (key 'hr') or per subject (every modality it has)",
    )
    p.add_argument("output", nargs="?", type=Path, help="JSON to write (default: KIND_datalist.json)")
    args = p.parse_args(argv)
    target = args.output or Path(f"{args.kind}_datalist.json")
    datalist = volume_datalist(root=DATA_ROOT) if args.kind == "volumes" else subject_datalist(root=DATA_ROOT)
    if not any(datalist.values()):
        p.exit(2, f"error: no subjects found under {DATA_ROOT} (set MTSR_SHARED_DATA); nothing written\n")
    target.write_text(json.dumps(datalist, indent=4))
    print(target, {k: len(v) for k, v in datalist.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
