"""Rows of a benchmark file as its publisher ships it: Hugging Face Parquet, JSONL (optionally
gzipped, as HumanEval's own ``HumanEval.jsonl.gz``) or one JSON array; and the column look-ups
every importer shares, with one-line errors that name the row and the missing column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from rac.io import RacError

Row = dict


def read_rows(path: Path) -> list[Row]:
    path = Path(path)
    if not path.is_file():
        raise RacError(f"benchmark file {path} does not exist (give a .parquet, .jsonl[.gz] or .json)")
    if path.suffix == ".parquet":
        return _parquet(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise RacError(f"{path}: cannot read it as text ({e})") from None
    rows = _json_array(text, path) if text.lstrip().startswith("[") else _jsonl(text, path)
    if not rows:
        raise RacError(f"benchmark file {path} holds no rows")
    return rows


def _parquet(path: Path) -> list[Row]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise RacError(f"{path}: not a readable Parquet file ({e})") from None


def _json_array(text: str, path: Path) -> list[Row]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise RacError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise RacError(f"{path}: a JSON array of rows must hold only objects")
    return rows


def _jsonl(text: str, path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RacError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one object") \
                from None
        if not isinstance(row, dict):
            raise RacError(f"{path}:{n}: each line must be one JSON object")
        rows.append(row)
    return rows


def column(row: Row, names: tuple[str, ...], where: str,
           kind: type | tuple[type, ...] = str) -> object:
    """The value of the first of ``names`` that the row has (datasets spell columns differently),
    checked to be a ``kind``; RacError naming what is missing otherwise."""
    for name in names:
        if row.get(name) is not None:
            value = row[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                kinds = kind if isinstance(kind, tuple) else (kind,)
                raise RacError(f"{where}: column '{name}' must be a "
                               f"{' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
            return value
    raise RacError(f"{where}: no column {' or '.join(repr(n) for n in names)} (has "
                   f"{', '.join(sorted(row)) or 'none'}); is --format right?")


def row_id(row: Row, names: tuple[str, ...], prefix: str, index: int) -> str:
    """The dataset's own id when it is a string; ``prefix/<n>`` when it numbers its rows (or has
    no id column: then ``n`` is the row's place in the file, from 0)."""
    value = next((row[n] for n in names if row.get(n) is not None), index)
    return value if isinstance(value, str) else f"{prefix}/{value}"
