"""Functions fit on a screen: one over 60 lines says why in its docstring ("Over 60 lines: <reason>").
The package's own modules are imported at module level: one imported inside a function says why."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


#: where the package's own modules may be imported inside functions without a stated reason: the command
#: line and the MONAI Label app load a command's code only when it runs (``mtsr --help`` < 1 s)
LAZY_ANYWHERE = ("mtsr_monai/cli/", "mtsr_monai/label/")
LAZY = re.compile(r"#\s*lazy:\s*(.+)")
KEEPS_OUT = re.compile(r"keeps ([\w, ]+) out of this module's import")


def lazy_internal_imports(root: Path) -> list[tuple[str, int, str | None]]:
    """``(path, line, reason)`` of every import of ``mtsr_monai`` inside a function; the reason: the text of a
    ``# lazy: ...`` comment on the line above, or None."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(LAZY_ANYWHERE):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mtsr_monai"):
                    reason = LAZY.search(lines[node.lineno - 2]) if node.lineno > 1 else None
                    found.append((rel, node.lineno, reason.group(1) if reason else None))
    return found


def test_internal_imports_inside_functions_say_why():
    missing = [f"{p}:{n}" for p, n, why in lazy_internal_imports(REPO / "mtsr_monai") if why is None]
    assert not missing, "import at module level, or say why on the line above ('# lazy: ...'):\n" + "\n".join(
        missing
    )


def test_the_import_check_finds_an_unexplained_lazy_import(tmp_path, monkeypatch):
    pkg = tmp_path / "mtsr_monai" / "data"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "def f():\n    from mtsr_monai.io import x\n\n\ndef g():\n    # lazy: keeps scipy out\n"
        "    from mtsr_monai.io import y\n"
    )
    monkeypatch.setattr("tests.test_code_shape.REPO", tmp_path)
    found = lazy_internal_imports(tmp_path / "mtsr_monai")
    assert found == [("mtsr_monai/data/a.py", 2, None), ("mtsr_monai/data/a.py", 7, "keeps scipy out")]


def test_lazy_imports_keep_out_what_they_say():
    """Each "keeps X out of this module's import" holds: importing the module alone loads no X."""
    claims: dict[str, set[str]] = {}
    for path, _, why in lazy_internal_imports(REPO / "mtsr_monai"):
        kept_out = KEEPS_OUT.search(why or "")
        if kept_out:
            module = path[: -len(".py")].replace("/", ".").removesuffix(".__init__")
            claims.setdefault(module, set()).update(x.strip() for x in kept_out.group(1).split(","))
    assert claims
    runs = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for module in claims
    }
    for module, run in runs.items():
        loaded = {m.split(".")[0] for m in run.communicate()[0].split()}
        assert run.returncode == 0, module
        assert not claims[module] & loaded, f"{module} imports {claims[module] & loaded} after all"
