"""Atomic file output: write to a temporary sibling, rename on success, delete on any failure.

An exception or Ctrl-C (KeyboardInterrupt) inside the block never leaves a partial output file, and
:func:`atomic_file_set` never leaves part of a set of files (the samples, mean and std of a translation).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
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
def atomic_file_set(
    folder: str | os.PathLike, stale: Sequence[str] = (), earlier: Iterable[str] = ()
) -> Iterator[Path]:
    """Yield a staging folder inside ``folder`` to write a set of files into (sub-folders allowed, e.g. a
    report's ``figures/``). When the block succeeds, the files of ``folder`` matching a ``stale`` pattern
    (relative to ``folder``, e.g. ``sample_*.nii.gz`` or ``figures/*.png``) that the block did not write and
    an earlier run wrote are deleted, and the staged files moved to the same places in ``folder``. An earlier
    run's files are those :data:`WRITTEN_RECORD` lists, unchanged since (size and time), or, in a folder with
    no record (written before it existed), the names in ``earlier`` (the caller's own account: a summary it
    wrote); a user's own file is never touched. On any failure the staging folder is deleted and ``folder``
    is left as it was. Its name is a ``.part`` name, so a killed run's staging folder is cleared by the next
    run's output guard."""
    final = Path(folder)
    final.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staged.", suffix=".part", dir=final))
    try:
        yield staging
        staged = sorted(p for p in staging.rglob("*") if p.is_file())
        written = {p.relative_to(staging).as_posix() for p in staged}
        record = _record(final)
        ours = _unchanged(final, record) if record is not None else set(earlier)
        with _signals_held():  # Ctrl-C / SIGTERM between two renames would leave half of each set
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
            record_written(final, written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: the signals a file set's renames hold back: Ctrl-C, a scheduler's SIGTERM, and the SIGALRM by which the
#: CLI raises a deferred one again (:func:`mtsr_monai.cli._sigterm_raises`)
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """:data:`HELD_SIGNALS` held back for the block (renames take milliseconds), then raised again for the
    handlers in place. Python runs handlers in the main thread only, so elsewhere none can interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None where it is missing, unreadable or no object (a file an earlier
    version or another tool wrote)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_stamp(path: str | os.PathLike) -> list[int] | None:
    """``[size, mtime_ns]`` of a file (None where it cannot be read): a file replaced under the same name
    shows a new stamp."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def record_written(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Add ``names`` (relative to ``folder``, just written there by mtsr) to its :data:`WRITTEN_RECORD`,
    with their size and time, and drop the entries of files gone or changed since."""
    final = Path(folder)
    record = _record(final) or {}
    entries = {rel: record[rel] for rel in _unchanged(final, record)}
    entries.update({rel: file_stamp(final / rel) for rel in names})
    atomic_write_text(final / WRITTEN_RECORD, json.dumps(entries, indent=0, sort_keys=True) + "\n")


def _record(folder: Path) -> dict[str, list[int]] | None:
    """The record of ``folder`` (None where there is none or it is unreadable)."""
    entries = read_json_object(folder / WRITTEN_RECORD)
    return None if entries is None else {k: v for k, v in entries.items() if isinstance(v, list)}


def _unchanged(folder: Path, record: dict[str, list[int]]) -> set[str]:
    """The recorded files still as mtsr wrote them (a file replaced by the user's own is not ours)."""
    return {rel for rel, stamp in record.items() if file_stamp(folder / rel) == stamp}
