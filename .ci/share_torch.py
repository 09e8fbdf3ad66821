"""Hard-link this environment's torch stack (and ITK) into another environment's site-packages.

The CUDA build of torch with its nvidia libraries is about 5.5 GB; the MONAI Label environment needs the same
torch, and a second copy once filled a CI machine's disk. Hard links share the files (no extra space), and pip
in the other environment sees the same installed distributions, so it installs nothing more for them.

Usage: .venv/bin/python .ci/share_torch.py TARGET_SITE_PACKAGES
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# the big ones both environments install at the same version: the CUDA torch stack, ITK and SimpleITK
ROOTS = ("torch", "torchvision", "itk", "SimpleITK")
# numpy differs between the environments (MONAI Label pins numpy < 2); setuptools is each venv's own
KEEP_OUT = {"numpy", "setuptools", "pip"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions that `roots` need, transitively, without the environment-specific ones."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _canonical(todo.pop())
        if name in seen or name in KEEP_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-excluded requirement
        seen[name] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            # extras' and other platforms' requirements are not installed
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def link_distribution(dist: metadata.Distribution, target: Path) -> int:
    """Hard-link every file the distribution installed inside site-packages; returns how many were linked."""
    linked = 0
    for relative in dist.files or []:
        if str(relative).startswith(".."):
            continue  # console scripts in bin/ belong to the source environment
        source = Path(dist.locate_file(relative))
        if not source.is_file():
            continue
        destination = target / relative
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:  # another filesystem (or no hard links there): a copy still spares the download
            shutil.copy2(source, destination)
        linked += 1
    return linked


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(argv[0])
    if not target.is_dir():
        print(f"no such site-packages folder: {target}", file=sys.stderr)
        return 2
    dists = dependency_closure(ROOTS)
    total = sum(link_distribution(dist, target) for dist in dists)
    names = ", ".join(sorted(dist.metadata["Name"] for dist in dists))
    print(f"share_torch: {total} files hard-linked for {len(dists)} distributions ({names})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
