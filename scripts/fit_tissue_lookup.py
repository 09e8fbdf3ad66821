#!/usr/bin/env python
"""Fit the tissue-lookup translation baseline on the training subjects of the shared data.

For each pair of modalities (T1 <-> T2, T1 <-> FLAIR), every training subject (``scripts/shared_splits.py``)
with both: the median scaled target intensity of each tissue class of the source's EM segmentation; then the
median over subjects (:mod:`mtsr_monai.inference.tissue_lookup`). Writes
``bundles/mtsr_mt/models/tissue_lookup.json``.

Usage: python scripts/fit_tissue_lookup.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
PAIRS = (("t1", "flair"), ("flair", "t1"), ("t1", "t2"), ("t2", "t1"))


def main(argv: list[str] | None = None) -> int:
    from shared_splits import split_of, subjects

    from mtsr_monai.inference.bundle import declare_weights
    from mtsr_monai.inference.tissue_lookup import class_intensities, fit_tissue_lookup
    from mtsr_monai.io import atomic_write_text, load_volume
    from mtsr_monai.io.manifest import enclosing_bundle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bundles" / "mtsr_mt" / "models" / "tissue_lookup.json")
    args = p.parse_args(argv)
    training = [s for s in subjects() if split_of(s["subject"]) == "training"]
    table = {}
    for source, target in PAIRS:
        per_subject = {}
        for s in training:
            if source in s and target in s:
                src, tgt = load_volume(s[source]).numpy(), load_volume(s[target]).numpy()
                per_subject[s["subject"]] = class_intensities(src, tgt, source)
                print(source, target, s["subject"], per_subject[s["subject"]], flush=True)
        fitted = fit_tissue_lookup(per_subject.values())
        table[f"{source}_to_{target}"] = {**fitted, "subjects": sorted(per_subject)}
    atomic_write_text(args.out, json.dumps(table, indent=4) + "\n")
    bundle = enclosing_bundle(args.out.resolve().parent)
    if bundle is not None:  # the bundle checks the table it ships as it checks its weights
        declare_weights(bundle, args.out.resolve().relative_to(bundle).as_posix())
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
