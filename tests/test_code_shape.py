"""Functions fit on a screen: one over 60 lines says why in its docstring ("Over 60 lines: <reason>")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

MAX_LINES = 60
#: the phrase a long function's docstring carries, followed by its reason
REASON = re.compile(rf"Over {MAX_LINES} lines\W+\w+")
CHECKED = ("mtsr_monai", "scripts", "tests")


def long_functions_without_reason(root: Path) -> list[str]:
    """``path:line name (N lines)`` of every function (methods and nested ones included) over
    :data:`MAX_LINES` lines, its ``def`` line to its last, whose docstring gives no reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and not REASON.search(ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_every_function_over_60_lines_gives_its_reason():
    missing = [entry for folder in CHECKED for entry in long_functions_without_reason(REPO / folder)]
    assert not missing, "give a reason ('Over 60 lines: ...') or shorten:\n" + "\n".join(missing)


def test_the_check_finds_a_long_function_without_reason(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f'def long():\n    """Many steps."""\n{body}\n')
    (tmp_path / "reasoned.py").write_text(f'def reasoned():\n    """Over 60 lines: a table."""\n{body}\n')
    monkeypatch.setattr("tests.test_code_shape.REPO", tmp_path)
    assert long_functions_without_reason(tmp_path) == [f"long.py:1 long ({MAX_LINES + 2} lines)"]
