"""Give shipped MT weights a ``tissue_prior``: each translation sample is then averaged with the input's
tissue lookup (``w * sample + (1 - w) * lookup``,
:func:`mtsr_monai.inference.tissue_lookup.blend_with_tissue_lookup`).

The generator is unchanged; only the file's meta gains ``tissue_prior`` = ``{"weight": w, "source": ...,
"csf", "gm", "wm"}`` (the class intensities of ``models/tissue_lookup.json``), so every path that reads the
weights (``mtsr translate``, ``mtsr run``, the bundle's inferer, the benchmarks) applies it. ``--weight 1``
removes the prior. The new files' sha256 go into ``large_files.yml``. The weight was chosen on the validation
subjects (docs/mt.md, "Session 17").

    python scripts/set_tissue_prior.py --weight 0.5 --directions t1:t2   (bundle 0.3.0)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtsr_monai.inference.bundle import declare_weights

REPO = Path(__file__).resolve().parents[1]


def set_tissue_prior(bundle: Path, source: str, target: str, weight: float) -> dict | None:
    """Rewrite ``models/<source>_to_<target>.pt`` with the prior in its meta (none when ``weight`` is 1)."""
    from mtsr_monai.inference.tissue_lookup import check_prior_weight, load_tissue_lookup
    from mtsr_monai.inference.translate import export_generator, load_translator

    # checked before writing: a bad weight in the meta would fail only after a whole translation
    weight = check_prior_weight(weight)
    rel = f"models/{source}_to_{target}.pt"
    generator, meta = load_translator(bundle / rel)
    meta.pop("tissue_prior", None)
    if weight < 1.0:
        intensities = load_tissue_lookup(source, target, bundle / "models" / "tissue_lookup.json")
        meta["tissue_prior"] = {"weight": weight, "source": source, **intensities}
    export_generator(generator, bundle / rel, meta)
    declare_weights(bundle, rel)
    return meta.get("tissue_prior")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "mtsr_mt")
    parser.add_argument("--weight", type=float, required=True, help="the generator's share, in [0, 1]")
    parser.add_argument("--directions", nargs="+", default=["t1:t2"])
    args = parser.parse_args()
    for direction in args.directions:
        source, target = direction.split(":")
        print(direction, set_tissue_prior(args.bundle, source, target, args.weight))


if __name__ == "__main__":
    main()
