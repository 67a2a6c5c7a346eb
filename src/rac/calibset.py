"""The calibration set: the one on-disk contract between the stage that builds it (``rac calib``)
and the stages that read it (``rac prune``, llm-compressor's ``oneshot``).

A set is a directory::

    data/             a ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` and a
                      per-token ``segment`` code (llm-compressor takes the first two as they are)
    calib_info.json   what made it: source, tokenizer fingerprint, token counts per segment,
                      the digest of its rows

Segments are spoken by name everywhere outside this module (``{"decode": 2.0}``); the integer
codes exist only in the stored column.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

from rac.io import RacError, atomic_dir, write_json

PROMPT, DECODE, GENERIC, PAD = 0, 1, 2, -1
CODES = {"prompt": PROMPT, "decode": DECODE, "generic": GENERIC, "pad": PAD}
NAMES = {code: name for name, code in CODES.items()}
WEIGHTABLE = ("prompt", "decode", "generic")  # padding never enters a statistic
INFO_FILE = "calib_info.json"
DATA_DIR = "data"
COLUMNS = ("input_ids", "attention_mask", "segment")


@dataclass(frozen=True)
class Row:
    """One calibration sequence: token ids, attention mask (0 on padding), segment codes."""

    ids: list[int]
    mask: list[int]
    segment: list[int]


@dataclass(frozen=True)
class CalibSet:
    rows: list[Row]
    info: dict

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.info["tokenizer_fingerprint"]


def check_segment_weights(weights: dict[str, float]) -> None:
    """Raise ValueError unless ``weights`` maps segment names to non-negative numbers."""
    for name, w in weights.items():
        if name not in WEIGHTABLE:
            raise ValueError(f"segment weight for {name!r}: segment must be one of "
                             f"{', '.join(WEIGHTABLE)}")
        if not w >= 0:
            raise ValueError(f"segment weight {name}={w}: weights must be >= 0")


def parse_segment_weights(specs: list[str]) -> dict[str, float]:
    """``["decode=2", "prompt=0.5"]`` -> ``{"decode": 2.0, "prompt": 0.5}``, validated."""
    out: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            out[name] = float(value)
        except ValueError as e:
            raise ValueError(f"segment weight {spec!r}: write SEGMENT=WEIGHT, e.g. decode=2") from e
    check_segment_weights(out)
    return out


def token_weights(row: Row, weights: dict[str, float]) -> list[float]:
    """Per-token weight of a row: 0 on padding, else its segment's weight (default 1)."""
    by_code = {CODES[name]: w for name, w in weights.items()}
    return [m * by_code.get(s, 1.0) for m, s in zip(row.mask, row.segment)]


def balanced_weights(rows: list[Row]) -> dict[str, float]:
    """Segment weights that give every segment present the same weighted token count (the
    smallest keeps weight 1): e.g. prompt 1, decode P / D for a RAC set of P prompt and D decode
    tokens."""
    counts = {name: n for name, n in segment_counts(rows).items() if n and name in WEIGHTABLE}
    least = min(counts.values())
    return {name: least / n for name, n in counts.items()}


def segment_counts(rows: list[Row]) -> dict[str, int]:
    counts = Counter(g for r in rows for g in r.segment)
    return {name: counts.get(code, 0) for name, code in CODES.items()}


def content_sha256(rows: list[Row]) -> str:
    """The digest of a set's rows: ids, masks and segments."""
    blob = json.dumps([[r.ids, r.mask, r.segment] for r in rows], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def write(rows: list[Row], info: dict, out: Path, overwrite: bool) -> bool:
    """Write the set; returns False (and writes nothing) when ``out`` already holds this very set:
    the same info and the same rows (an info alone does not tell a set built with another seed,
    instruction or problem file of the same path and counts)."""
    out = Path(out)
    info = {**info, "content_sha256": content_sha256(rows)}
    old = out / INFO_FILE
    prev = json.loads(old.read_text()) if old.exists() else None
    # a set written before sets recorded their problems is this one when everything else is equal
    if prev is not None and prev in (info, {k: v for k, v in info.items() if k != "problems"}):
        return False
    if old.exists() and not overwrite:
        raise RacError(f"{out} holds a different calibration set; pass --overwrite or use another")
    ds = datasets.Dataset.from_dict({"input_ids": [r.ids for r in rows],
                                     "attention_mask": [r.mask for r in rows],
                                     "segment": [r.segment for r in rows]})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        ds.save_to_disk(str(tmp / DATA_DIR))
        write_json(tmp / INFO_FILE, info)
    return True


def read_dataset(path: Path) -> tuple[datasets.Dataset, dict]:
    """The stored ``datasets.Dataset`` and the info of a set, validated: what llm-compressor's
    ``oneshot(dataset=...)`` takes (drop the ``segment`` column first)."""
    path = Path(path)
    if not (path / INFO_FILE).exists():
        raise RacError(f"{path} is not a calibration set (no {INFO_FILE}); make one with 'rac calib'")
    info = json.loads((path / INFO_FILE).read_text())
    try:
        ds = datasets.load_from_disk(str(path / DATA_DIR))
    except FileNotFoundError as e:
        raise RacError(f"{path} is an incomplete calibration set (no {DATA_DIR}/); rebuild it "
                       "with 'rac calib'") from e
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing or "tokenizer_fingerprint" not in info:
        raise RacError(f"{path} is not a calibration set of this rac version (missing "
                       f"{missing or ['tokenizer_fingerprint']}); rebuild it with 'rac calib'")
    return ds, info


def read(path: Path) -> CalibSet:
    """Read and validate a set written by :func:`write`."""
    ds, info = read_dataset(path)
    rows = [Row(*r) for r in zip(ds["input_ids"], ds["attention_mask"], ds["segment"])]
    for n, r in enumerate(rows):
        if not len(r.ids) == len(r.mask) == len(r.segment):
            raise RacError(f"{path}: row {n} has columns of different lengths; rebuild the set")
    return CalibSet(rows, info)
