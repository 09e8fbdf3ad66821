"""Atomic file output: write to a temporary sibling, rename on success, delete on any failure.

An exception or Ctrl-C (KeyboardInterrupt) inside the block never leaves a partial output file, and
:func:`atomic_file_set` never leaves part of a set of files (the samples, mean and std of a translation).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

#: hidden list, in an output folder, of the files :func:`atomic_file_set` wrote there: only those are
#: replaced by a later set, never a user's own file that matches a pattern (``brain_mask.nii.gz``)
WRITTEN_RECORD = ".mtsr-written.json"


def _suffixes(path: Path) -> str:
    # keep ".nii.gz" whole so writers that dispatch on the extension still work on the temp name
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; move it onto ``path`` when the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".part{_suffixes(final)}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files: give the output the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically and return its path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_file_set(folder: str | os.PathLike, stale: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a staging folder inside ``folder`` to write a set of files into (sub-folders allowed, e.g. a
    report's ``figures/``). When the block succeeds, the files of ``folder`` matching a ``stale`` pattern
    (relative to ``folder``, e.g. ``sample_*.nii.gz`` or ``figures/*.png``) that the block did not write and
    an earlier set wrote (an earlier run's extra samples: :data:`WRITTEN_RECORD` lists them) are deleted,
    and the staged files moved to the same places in ``folder``; a user's own file matching a pattern is
    never touched. On any failure the staging folder is deleted and ``folder`` is left as it was. Its name
    is a ``.part`` name, so a killed run's staging folder is cleared by the next run's output guard."""
    final = Path(folder)
    final.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staged.", suffix=".part", dir=final))
    try:
        yield staging
        staged = sorted(p for p in staging.rglob("*") if p.is_file())
        written = {p.relative_to(staging).as_posix() for p in staged}
        ours = _written_before(final)
        for pattern in stale:
            for old in final.glob(pattern):
                rel = old.relative_to(final).as_posix()
                if rel in ours and rel not in written and old.is_file():
                    old.unlink()
        for path in staged:
            target = final / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o666 & ~_umask())
            os.replace(path, target)
        # what the sets wrote here and is still here: what the next set may replace
        kept = {rel for rel in ours if (final / rel).is_file()}
        atomic_write_text(final / WRITTEN_RECORD, json.dumps(sorted(kept | written), indent=0) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _written_before(folder: Path) -> set[str]:
    """The files earlier sets wrote into ``folder`` (none where the record is missing or unreadable)."""
    try:
        names = json.loads((folder / WRITTEN_RECORD).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
