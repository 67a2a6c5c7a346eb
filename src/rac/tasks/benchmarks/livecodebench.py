"""LiveCodeBench ``code_generation_lite`` (``test.jsonl`` ... ``test6.jsonl``): ``question_title``,
``question_content``, ``platform``, ``question_id``, ``contest_id``, ``contest_date``,
``starter_code``, ``difficulty``, ``public_test_cases``, ``private_test_cases``, ``metadata``.

Tests are the public and the private ones together, as LiveCodeBench grades. Each is
``{"input", "output", "testtype"}``:

- ``stdin`` (AtCoder, Codeforces) becomes ``{"input", "output"}``;
- ``functional`` (LeetCode) becomes ``{"call": "Solution().<func_name>(<args>)", "expected"}``:
  ``input`` holds one JSON value per line (the arguments), ``output`` one JSON value, and
  ``metadata`` (a JSON string) names the method, ``{"func_name": ...}``.

Grading differs from LiveCodeBench's own in three ways, all stricter: rac compares stdout line by
line (LiveCodeBench also accepts floats within 1e-6), a functional result must equal the expected
value type for type (LiveCodeBench's ``==`` takes ``2`` for ``2.0`` and a tuple for a list), and
rac runs the code block as written, where LiveCodeBench first prepends a block of imports
(``typing``, ``collections``, ``heapq``...): a LeetCode answer that uses ``List`` without importing
it fails here.

``private_test_cases`` is either a JSON string or, in most rows, base64 of zlib of a *pickle* of
that JSON string. Unpickling data from the internet can run any code, so it is never unpickled:
``pickled_text`` reads the pickle's opcodes with ``pickletools.genops`` (a parser: it executes
nothing, imports nothing, calls nothing) and accepts only a pickle whose whole content is one
string constant, which it then takes from the opcode's argument. Anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickletools
import zlib

from rac.io import RacError
from rac.tasks.benchmarks.rows import Row, column
from rac.tasks.problems import Problem

MAX_TESTS_BYTES = 1 << 30  # a decompressed private-test field larger than this is refused
TEXT_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}
FRAMING_OPCODES = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}


def pickled_text(data: bytes) -> str:
    """The one string a pickle holds, read from its opcodes without unpickling; ValueError if it
    holds anything else (a global, a call, a container, several values)."""
    texts = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in TEXT_OPCODES:
                texts.append(arg)
            elif op.name not in FRAMING_OPCODES:
                raise ValueError(f"it holds a {op.name} opcode, not only a string")
    except (ValueError, EOFError) as e:
        raise ValueError(f"not a pickle of one string ({e})") from None
    if len(texts) != 1:
        raise ValueError(f"not a pickle of one string ({len(texts)} string constants)")
    text = texts[0]
    return text.decode("utf-8") if isinstance(text, bytes) else text


def private_tests(field: str, where: str) -> list:
    """``private_test_cases`` as its list of tests, whichever of its two encodings it has."""
    if not field.strip():
        return []
    try:
        return json.loads(field)
    except ValueError:
        pass
    try:
        squeezed = zlib.decompressobj()
        raw = squeezed.decompress(base64.b64decode(field, validate=True), MAX_TESTS_BYTES)
        if squeezed.unconsumed_tail:
            raise ValueError(f"over {MAX_TESTS_BYTES >> 20} MiB decompressed")
        return json.loads(pickled_text(raw))
    except (ValueError, binascii.Error, zlib.error) as e:
        raise RacError(f"{where}: private_test_cases is neither JSON nor base64(zlib(pickle(JSON "
                       f"text))): {e}") from None


def _call(func: str, test: dict, where: str) -> dict:
    try:
        args = [json.loads(line) for line in test["input"].split("\n")]
        expected = json.loads(test["output"])
    except ValueError as e:
        raise RacError(f"{where}: a functional test's input or output is not JSON ({e})") from None
    return {"call": f"Solution().{func}({', '.join(repr(a) for a in args)})",
            "expected": repr(expected)}


def convert_tests(cases: object, func: str | None, where: str) -> list[dict]:
    if not isinstance(cases, list):
        raise RacError(f"{where}: test cases must be a JSON list, got {type(cases).__name__}")
    tests = []
    for case in cases:
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) \
                or not isinstance(case.get("output"), str):
            raise RacError(f"{where}: a test case must be {{'input', 'output', 'testtype'}} strings")
        kind = case.get("testtype", "stdin")
        if kind == "stdin":
            tests.append({"input": case["input"], "output": case["output"]})
        elif kind == "functional":
            if not func:
                raise RacError(f"{where}: a functional test, but metadata names no func_name")
            tests.append(_call(func, case, where))
        else:
            raise RacError(f"{where}: unknown testtype {kind!r} (stdin or functional)")
    return tests


def _json_field(row: Row, name: str, where: str) -> object:
    value = row.get(name)
    if not isinstance(value, str):
        return value if value is not None else {}
    try:
        return json.loads(value) if value.strip() else {}
    except ValueError as e:
        raise RacError(f"{where}: column '{name}' is not JSON ({e})") from None


def livecodebench(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        metadata = _json_field(row, "metadata", where)
        func = metadata.get("func_name") if isinstance(metadata, dict) else None
        public = _json_field(row, "public_test_cases", where) or []
        private = private_tests(row.get("private_test_cases") or "", where)
        tests = convert_tests(public, func, where) + convert_tests(private, func, where)
        if not tests:
            raise RacError(f"{where}: no test cases")
        problem = column(row, ("question_content",), where)
        starter = (row.get("starter_code") or "").strip()
        if starter:
            problem += f"\n\nUse this starter code:\n```python\n{starter}\n```"
        extra = {"tests": tests, "public_tests": len(public), "source": "livecodebench",
                 **{k: row[k] for k in ("question_title", "platform", "contest_id", "contest_date",
                                        "difficulty") if row.get(k) is not None}}
        out.append(Problem(str(column(row, ("question_id",), where, (str, int))), problem, "", extra))
    return out
