"""Exceptions that map to the command line's exit codes.

``InputError`` means the user gave something we refuse (bad file, bad argument): exit code 2.
Anything else escaping a command is an internal error: exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path


class InputError(ValueError):
    """Bad input or bad arguments; the message names the file and the problem in one line."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def root_cause(err: BaseException) -> BaseException:
    """The first :class:`InputError` along ``err``'s chain of causes and contexts, else the innermost error
    (MONAI wraps causes in ``Failed to instantiate component ...`` and ``applying transform ...``)."""
    seen, chain = err, []
    while seen is not None and seen not in chain:
        if isinstance(seen, InputError):
            return seen
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain[-1]


def _bundle_run_excepthook(exc_type, exc, tb) -> None:
    """``sys.excepthook`` of ``python -m monai.bundle run``: the usual traceback, then one line naming the
    cause, so a run ends with it rather than with MONAI's wrapper."""
    sys.__excepthook__(exc_type, exc, tb)
    if isinstance(exc, Exception):
        cause = root_cause(exc)
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        what = text if isinstance(cause, InputError) else f"{type(cause).__name__}: {text}"
        print(f"mtsr bundle run: error: {what}", file=sys.stderr)


def install_bundle_excepthook() -> None:
    """Use :func:`_bundle_run_excepthook` when this process is ``python -m monai.bundle`` (also under
    torchrun) and nothing else replaced the default hook; bundle configs import mtsr_monai, which calls
    this."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("monai.bundle") and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _bundle_run_excepthook
