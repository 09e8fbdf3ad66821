"""Guarding a command's outputs before any work: never over an input, writable, one writer at a time.

:func:`guard_outputs` is what ``mtsr`` runs around every command, given the command's
:class:`OutputPlan` (the files and folders it will write) and its input files. Before the command
starts it refuses (:class:`~mtsr_monai.errors.InputError`, exit 2, nothing written):

- an output that is one of the inputs (the same path, or the same file through a link);
- two outputs on one path, a file output that is a folder, a folder output that is a file;
- an output location where no file can be created (read-only folder, no permission, read-only disk),
  probed by creating and deleting a temporary file, so root and read-only mounts are judged right too;
- an output that another ``mtsr`` run is writing now: each output path is locked with ``flock`` for the
  whole run, in a lock file outside the output folder (``$TMPDIR/mtsr-locks-<uid>``), removed when the run
  ends and released by the kernel even when the holder is killed. The folder is per user, so runs of two
  users on one output are not seen by each other (a shared folder, made by the first user, refused the
  others' locks).

Holding the locks, it removes the temporary files that killed runs left next to the outputs
(``.<name>.<random>.part<ext>``, see :mod:`mtsr_monai.io.atomic`), unless another live run owns them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtsr_monai.errors import InputError

#: temporary names made by atomic_output: ".<final name>.<8 random chars>.part<ext>"
PART_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)*$")


@dataclass
class OutputPlan:
    """What a command will write: ``files`` (``fnmatch`` patterns allowed in the last component, e.g.
    ``out/sample_*.nii.gz``) and ``folders`` (created if missing; stale temporary files under them are
    removed)."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def concrete_files(self) -> list[Path]:
        return [f for f in self.files if not _is_pattern(f)]


def _is_pattern(path: Path) -> bool:
    return any(c in path.name for c in "*?[")


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _matches(src: Path, pattern: Path) -> bool:
    """Whether ``src`` is one of the files ``pattern`` names: a wildcard only in its name (``[`` or ``*`` in
    the folder's path are the folder's own characters)."""
    return src.parent == pattern.parent and fnmatch.fnmatchcase(src.name, pattern.name)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file (the same path, or links to one file); False if either is
    missing."""
    a, b = Path(a), Path(b)
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_inputs(plan: OutputPlan, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse outputs that are inputs, repeated outputs, and outputs of the wrong kind (file vs folder)."""
    sources = [_resolved(p) for p in inputs if p is not None]
    seen: dict[Path, Path] = {}
    for out in plan.files:
        target = _resolved(out)
        for src in sources:
            hit = _matches(src, target) if _is_pattern(out) else same_file(target, src)
            if hit:
                raise InputError(f"the output would overwrite the input {src}: choose another output", out)
        if _is_pattern(out):
            continue
        if target in seen:
            raise InputError(f"given as two outputs ({seen[target]} and {out})", out)
        seen[target] = Path(out)
        if target.is_dir():
            raise InputError("the output file is an existing folder", out)
    for folder in plan.folders:
        if _resolved(folder).exists() and not _resolved(folder).is_dir():
            raise InputError("the output folder is an existing file", folder)


def _existing_ancestor(path: Path) -> Path:
    path = _resolved(path)
    while not path.exists():
        path = path.parent
    return path


def check_writable(plan: OutputPlan) -> None:
    """Refuse output locations where no file can be created, by creating and removing a probe file."""
    places = {_existing_ancestor(f.parent) for f in plan.files}
    places |= {_existing_ancestor(d) for d in plan.folders}
    for place in sorted(places):
        if not place.is_dir():
            raise InputError("is a file, not a folder: cannot write outputs under it", place)
        try:
            fd, probe = tempfile.mkstemp(prefix=".mtsr-write-probe.", dir=place)
        except OSError as err:
            reason = err.strerror or str(err)
            raise InputError(f"cannot write here ({reason}): choose a writable output", place) from err
        os.close(fd)
        os.unlink(probe)


def check_output_folder(folder: str | os.PathLike) -> str:
    """A bundle evaluation's ``output_dir``, checked before its long work rather than at its first write:
    InputError where it is a file or cannot be written there; returns it."""
    plan = OutputPlan(folders=[Path(folder)])
    check_not_inputs(plan, [])
    check_writable(plan)
    return str(folder)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output path: outside the output folder, keyed by the resolved path."""
    key = hashlib.sha256(str(_resolved(path)).encode()).hexdigest()[:24]
    # one folder per user: a shared one, made by whoever ran mtsr first, would refuse everyone else's locks
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"mtsr-locks-{user}" / f"{key}.lock"


class OutputLocks:
    """Exclusive ``flock`` locks on output paths, held until :meth:`release` (or the process ends)."""

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}
        self._inherited: set[Path] = set()  # held paths whose lock file a killed run had left

    def holds(self, path: str | os.PathLike) -> bool:
        return _resolved(path) in self._held

    def killed_run_locked(self, path: str | os.PathLike) -> bool:
        """True when a run on this machine that did not finish locked ``path``: its lock file was there,
        unheld (a finishing run removes its own), before this run took it, or is there still."""
        target = _resolved(path)
        return target in self._inherited or (target not in self._held and lock_path(target).exists())

    def acquire(self, path: str | os.PathLike, what: str = "mtsr") -> None:
        """Lock ``path`` or raise InputError naming the run that holds it."""
        target = _resolved(path)
        if target in self._held:
            return
        lock = lock_path(target)
        lock.parent.mkdir(parents=True, exist_ok=True)
        left = lock.exists()
        try:
            fd = lock_file_exclusively(lock)
        except BlockingIOError as busy:
            raise InputError(
                f"another mtsr run ({busy.args[0] or 'another run'}) is writing this output now: wait for it "
                "or choose another output",
                path,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}".encode(), 0)
        self._held[target] = fd
        if left:
            self._inherited.add(target)

    def is_busy(self, path: str | os.PathLike) -> bool:
        """True when another process holds the lock of ``path`` (probed without keeping it). A probe, not
        :func:`lock_file_exclusively`: it must never create a lock file, nor remove one that a run may
        have opened to lock."""
        import fcntl  # lazy: POSIX only

        if self.holds(path):
            return False
        try:
            fd = os.open(lock_path(path), os.O_RDWR)
        except FileNotFoundError:  # no run holds it (a finishing run removes its lock file)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False

    def release(self) -> None:
        """Unlock every path, removing the lock files (still locked, so no other run can hold them), and
        a few stale ones that killed runs left (:func:`prune_stale_locks`)."""
        for target, fd in self._held.items():
            lock_path(target).unlink(missing_ok=True)
            os.close(fd)
        if self._held:
            prune_stale_locks(lock_path(next(iter(self._held))).parent)
        self._held.clear()


#: lock files untouched this long are a killed run's (a run rewrites its file when it locks it)
STALE_LOCK_SECONDS = 24 * 3600


def prune_stale_locks(folder: Path, limit: int = 100) -> int:
    """Remove up to ``limit`` lock files in ``folder`` older than :data:`STALE_LOCK_SECONDS` that no run holds
    (a run killed with SIGKILL cannot remove its own); each is locked while it is removed, as
    :meth:`OutputLocks.release` does, so a run that opened it meanwhile finds it gone and locks a new one.
    Returns how many were removed."""
    import fcntl  # lazy: POSIX only
    import time

    removed, cutoff = 0, time.time() - STALE_LOCK_SECONDS
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if removed >= limit:
            break
        try:
            if not entry.name.endswith(".lock") or entry.stat().st_mtime > cutoff:
                continue
            fd = os.open(entry.path, os.O_RDWR)
        except OSError:  # gone, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_current_file(fd, Path(entry.path)):
                os.unlink(entry.path)
                removed += 1
        except OSError:  # held by a live run
            pass
        finally:
            os.close(fd)
    return removed


def lock_file_exclusively(lock: Path) -> int:
    """An exclusive ``flock`` on the file ``lock`` (created if missing), without waiting: returns its
    descriptor, which holds the lock until closed or the process ends. Raises ``BlockingIOError`` whose
    argument is the text the holder wrote in the file (empty if none) when another process holds it.
    The one place where mtsr takes a lock: the outputs of a command (:class:`OutputLocks`) and a training
    run's folder (:class:`~mtsr_monai.engines.run_safety.FolderLock`)."""
    import fcntl  # lazy: POSIX only, needed once a command locks its outputs

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held; any other error (no locking on this file system) is raised as it is
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise BlockingIOError(owner) from None
        except OSError:
            os.close(fd)
            raise
        if _is_current_file(fd, lock):
            return fd
        os.close(fd)  # a releasing run removed the file after we opened it: lock the current one


def _is_current_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


#: a temporary file no lock here can account for (its run may lock it in another node's or job's $TMPDIR)
#: is taken for a killed run's only once it is this old: a live run's is seconds old, its write's length
UNSEEN_OWNER_AGE_S = 3600.0


def written_lately(path: Path) -> bool:
    """True when ``path`` changed within :data:`UNSEEN_OWNER_AGE_S` (a run we cannot see may be writing it);
    False when it is older or gone."""
    import time  # lazy: only where temporaries are found

    try:
        return time.time() - path.stat().st_mtime < UNSEEN_OWNER_AGE_S
    except FileNotFoundError:
        return False


def remove_stale_parts(plan: OutputPlan, locks: OutputLocks) -> list[Path]:
    """Delete the temporary files of killed runs next to the planned outputs; return what was removed.

    A temporary file belongs to a live run when that run locks its final path or a folder above it. A run
    killed here left its lock file behind, unheld (:meth:`OutputLocks.killed_run_locked`): its temporaries
    go at once. Locks live in this machine's ``$TMPDIR``, so a run elsewhere (another node, a job with its
    own ``$TMPDIR``) cannot be seen: a temporary file no killed run here accounts for is left alone until it
    is :data:`UNSEEN_OWNER_AGE_S` old.
    """
    candidates: set[Path] = set()
    for out in plan.concrete_files():
        folder = _resolved(out).parent
        if folder.is_dir():
            candidates |= set(folder.glob(f".{glob_escape(Path(out).name)}.*.part*"))
    # the planned folders and those of the planned files (a demo's subject/, run/, figures/), each at its own
    # level only: deeper folders may hold other tools' writes in progress (an `mtsr bids` tree)
    for folder in {*plan.folders, *(Path(f).parent for f in plan.files)}:
        if _resolved(folder).is_dir():
            candidates |= set(_resolved(folder).glob(".*.part*"))
    removed = []
    for tmp in sorted(candidates):
        match = PART_NAME.match(tmp.name)
        if not match or not (tmp.is_file() or tmp.is_dir()):
            continue
        final = tmp.parent / match.group("name")
        owners = [final, *final.parents]
        if any(locks.is_busy(p) for p in owners):
            continue
        if not any(locks.killed_run_locked(p) for p in owners) and written_lately(tmp):
            continue
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():  # atomic_file_set's staging folder
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def guard_outputs(
    plan: OutputPlan, inputs: Iterable[str | os.PathLike], what: str = "mtsr"
) -> Iterator[OutputLocks]:
    """Check ``plan`` against ``inputs``, probe writability, lock every output and clear stale temporary
    files; hold the locks while the block runs (module docstring)."""
    inputs = list(inputs)
    check_not_inputs(plan, inputs)
    check_writable(plan)
    missing = missing_folders(plan)
    locks = OutputLocks()
    try:
        for path in [*plan.folders, *plan.concrete_files()]:
            locks.acquire(path, what)
        remove_stale_parts(plan, locks)
        yield locks
    except BaseException:
        remove_empty_folders(missing)  # a failed or interrupted run leaves no empty folder behind
        raise
    finally:
        locks.release()


def missing_folders(plan: OutputPlan) -> list[Path]:
    """The folders that writing ``plan`` would create: each missing output folder and file parent, with
    its missing ancestors, deepest first."""
    found: set[Path] = set()
    for folder in [*plan.folders, *(f.parent for f in plan.files)]:
        folder = _resolved(folder)
        while not folder.exists() and folder != folder.parent:
            found.add(folder)
            folder = folder.parent
    return sorted(found, key=lambda f: len(f.parts), reverse=True)


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty; leave anything with content."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
