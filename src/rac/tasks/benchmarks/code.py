"""Function-writing code benchmarks, with tests in the HumanEval form the sandbox grades
(``{"check", "entry_point"}``, see rac.tasks.code): the check runs in a sandbox of its own and
reaches the program's function only through plain-data calls.

- ``humaneval``: ``openai_humaneval`` / OpenAI's ``HumanEval.jsonl.gz`` (``task_id``, ``prompt``,
  ``canonical_solution``, ``test``, ``entry_point``). The problem is the prompt (signature and
  docstring) in a code fence. The check is the dataset's ``test`` preceded by what the prompt
  defines besides the function (imports, helpers: HumanEval/32's ``check`` calls the prompt's
  ``poly``), since the check no longer shares the program's namespace. The reference solution is
  ``prompt + canonical_solution``.
- ``mbpp``: ``mbpp`` / ``google-research-datasets/mbpp``, full (``task_id``, ``text``, ``code``,
  ``test_list``, ``test_setup_code``, ``challenge_test_list``) or sanitized (``prompt`` instead
  of ``text``, ``test_imports`` instead of ``test_setup_code``). The problem is the statement
  followed by its test asserts, as in MBPP's own prompt (they are how it names the function). Each
  assert becomes one check that calls the function by name (the check binds that name to the
  program's function), after the setup code; ``challenge_test_list`` is not used, as in MBPP's
  standard evaluation. Asserts on objects of a class the solution defines (MBPP's ``Pair``) cannot
  be built in the check's sandbox and fail there.
"""

from __future__ import annotations

import ast
import builtins
import textwrap

from rac.io import RacError
from rac.tasks.benchmarks.rows import Row, column, row_id
from rac.tasks.problems import Problem


def _parse(source: str, what: str, where: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise RacError(f"{where}: its {what} is not Python that parses ({e.msg}, line {e.lineno})") \
            from None


def prompt_helpers(prompt: str, entry_point: str, where: str) -> str:
    """The source of every top-level statement of a HumanEval prompt but the entry point's def."""
    lines = prompt.splitlines()
    kept = []
    for node in _parse(prompt, "prompt", where).body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        kept.append("\n".join(lines[start - 1:node.end_lineno]))
    return "\n\n".join(kept)


def humaneval(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        prompt, entry = column(row, ("prompt",), where), column(row, ("entry_point",), where)
        test = column(row, ("test",), where)
        helpers = prompt_helpers(prompt, entry, where)
        check = f"{helpers}\n\n\n{test}" if helpers else test
        extra = {"tests": [{"check": check, "entry_point": entry}], "entry_point": entry,
                 "source": "humaneval"}
        if row.get("canonical_solution"):
            extra["solution"] = prompt + row["canonical_solution"]
        out.append(Problem(row_id(row, ("task_id",), "humaneval", i),
                           f"```python\n{prompt.strip()}\n```", "", extra))
    return out


def called_function(code: str, asserts: list[str], where: str) -> str:
    """The function MBPP's asserts test: one the reference code defines and the asserts call, else
    the first called name that is not a built-in."""
    called: list[str] = []
    for a in asserts:
        for node in ast.walk(_parse(a, "test", where)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.append(node.func.id)
    try:
        defined = {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        defined = set()
    tested = [n for n in called if n in defined] or [n for n in called if not hasattr(builtins, n)]
    if not tested:
        raise RacError(f"{where}: its tests call no function (is this MBPP?)")
    return tested[0]


def assert_check(setup: str, assertion: str) -> str:
    body = textwrap.indent(assertion.strip(), "    ")
    return f"{setup.strip()}\n\n\ndef check(candidate):\n{body}\n".lstrip()


def mbpp(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        text = column(row, ("text", "prompt"), where)
        asserts = column(row, ("test_list",), where, list)
        if not asserts or not all(isinstance(a, str) for a in asserts):
            raise RacError(f"{where}: 'test_list' must be a non-empty list of assert statements")
        code = row.get("code") or ""
        setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
        entry = called_function(code, asserts, where)
        tests = [{"check": assert_check(setup, a), "entry_point": entry} for a in asserts]
        problem = f"{text.strip()}\nYour code should pass these tests:\n\n" + "\n".join(
            a.strip() for a in asserts)
        extra = {"tests": tests, "entry_point": entry, "source": "mbpp",
                 **({"solution": code} if code else {})}
        out.append(Problem(row_id(row, ("task_id",), "mbpp", i), problem, "", extra))
    return out
