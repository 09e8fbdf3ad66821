"""``mtsr bundles``: where the shipped MONAI bundles are, and whether their weights match their sha256."""

from __future__ import annotations

import argparse

NAME = "bundles"
HELP = "list the shipped bundles (folder, version) and check their weights against large_files.yml"
DESCRIPTION = (
    "Prints each bundle's folder (in a git checkout bundles/, in an installed wheel the package's own copy; "
    "$MTSR_BUNDLES overrides both), its version and every file its large_files.yml declares, checked against "
    "its sha256. With --path NAME, prints only that bundle's folder, e.g. for "
    "`python -m monai.bundle run training --config_file "
    '"$(mtsr bundles --path mtsr_sr)/configs/train.yaml"`. '
    "Exit code 2 when a declared file is missing or differs."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", metavar="NAME", help="print only the folder of bundle NAME")


def run(args: argparse.Namespace) -> int:
    import json

    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import BUNDLE_NAMES, bundle_dir, declared_files, verify_file

    if args.path:
        print(bundle_dir(args.path))
        return 0
    failures = 0
    for name in BUNDLE_NAMES:
        root = bundle_dir(name)
        meta = root / "configs" / "metadata.json"
        version = json.loads(meta.read_text()).get("version", "?") if meta.is_file() else "?"
        print(f"{name} {version}: {root}")
        for rel in declared_files(root):
            try:
                verify_file(root / rel)
                status = "sha256 ok"
            except InputError as err:
                status, failures = err.problem, failures + 1
            print(f"  {rel}: {status}")
    return 2 if failures else 0
