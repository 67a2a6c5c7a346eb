"""The project's size rules, checked so that they stay true: no Python file under src/ or bench/
over 350 lines, no function or method over 80 (from its ``def`` line to its last line)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 80


def too_long(path: Path, root: Path = ROOT) -> list[str]:
    """What in the Python file ``path`` breaks a limit, one line each (named from ``root``)."""
    text = path.read_text()
    where = path.relative_to(root)
    found = []
    n = len(text.splitlines())
    if n > MAX_FILE_LINES:
        found.append(f"{where}: {n} lines")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno}: {node.name} is {length} lines")
    return found


def test_the_checker_counts_a_function_from_def_to_its_last_line(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    ok = tmp_path / "ok.py"
    ok.write_text(f"def f():\n{body}\n")  # exactly the limit
    assert too_long(ok, tmp_path) == []
    long = tmp_path / "long.py"
    method = body.replace("\n", "\n    ")
    long.write_text(f"class C:\n    def g(self):\n    {method}\n        return 1\n")
    assert too_long(long, tmp_path) == ["long.py:2: g is 81 lines"]
    big = tmp_path / "big.py"
    big.write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert too_long(big, tmp_path) == [f"big.py: {MAX_FILE_LINES + 1} lines"]


def test_no_file_or_function_is_too_long():
    files = sorted(p for d in ("src", "bench") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 40  # the walk found the project
    assert [line for f in files for line in too_long(f)] == []
