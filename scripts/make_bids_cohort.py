"""Lay the development scans (../shared/data) out as a raw BIDS dataset: T1w, T2w and FLAIR per participant.

    python scripts/make_bids_cohort.py --output /tmp/cohort [--subjects 16] [--size-mm 240 240 24] \\
        [--factors 4 4 1]

Participants: the 10 BraTS 2018 TCIA cases (``sub-bratsTCIA01201`` ...), the 2 TCGA cases in BraTS space
(``sub-tcgaDU7294`` ...) and the 4 Ljubljana MS sessions (``sub-ms01/ses-1`` ..., each contrast on its own
clinical thick-slice grid). ``--size-mm`` crops every image of a session to a box (world mm) around the
centre of its T1w field of view and ``--factors`` averages blocks of voxels, to keep CPU runs short;
without them the scans are copied as they are. Write outside the repository (never commit the data).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from mtsr_monai.bids.convert import shared_cohort, write_bids_tree

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("MTSR_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument(
        "--subjects", type=int, default=None, help="keep the first N participants (default all 16)"
    )
    parser.add_argument("--participants", nargs="+", default=None, help="keep these labels (e.g. ms01)")
    parser.add_argument("--size-mm", type=float, nargs=3, default=None, help="crop box in mm (default: none)")
    parser.add_argument("--factors", type=int, nargs=3, default=(1, 1, 1), help="block-average factors")
    args = parser.parse_args(argv)
    if args.output.resolve().is_relative_to(REPO):
        parser.error("write the cohort outside the repository")
    subjects = shared_cohort(args.shared)
    if args.participants:
        subjects = [s for s in subjects if s["label"] in args.participants]
    subjects = subjects[: args.subjects] if args.subjects else subjects
    write_bids_tree(subjects, args.output, size_mm=args.size_mm, factors=args.factors)
    print(f"wrote {len(subjects)} participants to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
