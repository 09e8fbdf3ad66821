"""Exceptions that map to the command line's exit codes.

``InputError`` means the user gave something we refuse (bad file, bad argument): exit code 2.
Anything else escaping a command is an internal error: exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input or bad arguments; the message names the file and the problem in one line."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
