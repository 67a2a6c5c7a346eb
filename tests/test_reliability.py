"""Faults: SIGKILL at random moments, a full disk; what is left must be absent or complete."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from rac.cli import main

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
RAC = [sys.executable, "-m", "rac.cli"]


@pytest.fixture(scope="module")
def calib_dir(qwen2_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rel")
    problems = d / "p.jsonl"
    assert main(["problems", "--n", "80", "--split", "calib", "--out", str(problems)]) == 0
    assert main(["calib", "--source", "reference", "--tokenizer", str(qwen2_dir), "--problems",
                 str(problems), "--budget-tokens", "3000", "--out", str(d / "c")]) == 0
    return d / "c"


@pytest.mark.slow
def test_prune_killed_at_random_moments_leaves_nothing_or_a_complete_model(qwen2_dir, calib_dir,
                                                                           tmp_path):
    rng = random.Random(1)
    outcomes = {"absent": 0, "complete": 0}
    for i in range(8):
        out = tmp_path / f"p{i}"
        proc = subprocess.Popen(RAC + ["prune", str(qwen2_dir), "--calib", str(calib_dir),
                                       "--method", "sparsegpt", "--sparsity", "0.5", "--true-sequential",
                                       "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            assert json.loads((out / "prune_report.json").read_text())["totals"]["linears"] > 0
            AutoModelForCausalLM.from_pretrained(out)
            outcomes["complete"] += 1
        else:
            outcomes["absent"] += 1
    assert outcomes["absent"] > 0  # some kills landed mid-run
    # a later run cleans up what the killed ones left in the parent directory
    assert main(["prune", str(qwen2_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--out", str(tmp_path / "p0"), "--overwrite"]) == 0
    assert not list(tmp_path.glob(".p0.*.tmp"))


def _limited_file_size(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
    return apply


@pytest.mark.parametrize("verb", ["prune", "calib", "eval"])
def test_full_disk_gives_one_clear_line_and_no_partial_output(verb, qwen2_dir, calib_dir, tmp_path):
    out = tmp_path / "out"
    problems = tmp_path / "p.jsonl"
    assert main(["problems", "--n", "80", "--split", "test", "--out", str(problems)]) == 0
    args = {
        "prune": ["prune", str(qwen2_dir), "--calib", str(calib_dir), "--method", "magnitude",
                  "--sparsity", "0.5"],
        "calib": ["calib", "--source", "prompt", "--tokenizer", str(qwen2_dir), "--problems",
                  str(problems), "--budget-tokens", "600", "--pack", "600"],
        "eval": ["eval", str(qwen2_dir), "--problems", str(problems), "--max-new-tokens", "4"],
    }[verb]
    # the output needs more than 8 KB in one of its files (weights, arrow data, eval.json)
    r = subprocess.run(RAC + args + ["--out", str(out)], env=ENV, capture_output=True, text=True,
                       preexec_fn=_limited_file_size(8 * 1024))
    assert r.returncode == 2, r.stderr[-500:]
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "cannot read or write" in lines[0], r.stderr[-800:]
    assert "Traceback" not in r.stderr
    assert not out.exists()
    # an evaluation keeps the journal of the completions it made, to resume from; nothing else
    journal = {".out.journal.jsonl", ".out.journal.jsonl.lock"} if verb == "eval" else set()
    assert {p.name for p in tmp_path.glob(".out.*")} <= journal


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL between mkstemp and rename leaves `.NAME.HOST-PID.<8 random>.tmp`; the next write of
    NAME removes it when that pid is dead on this host, and leaves alone a live writer's file,
    another host's, and the temporary files of other names that begin with NAME."""
    from rac.io import _host, write_json

    dead, me = _dead_pid(), os.getpid()
    orphan = tmp_path / f".done.json.{_host()}-{dead}.abc12345.tmp"
    kept = [tmp_path / f".done.json.{_host()}-{me}.def45678.tmp",
            tmp_path / f".done.json.otherhost-{dead}.abc12345.tmp",
            tmp_path / f".done.json.3.{_host()}-{dead}.abc12345.tmp",
            tmp_path / ".done.json.99999999999999999999.tmp"]
    for f in [orphan, *kept]:
        f.write_text("{")
    write_json(tmp_path / "done.json", {"ok": 1})
    assert json.loads((tmp_path / "done.json").read_text()) == {"ok": 1}
    assert not orphan.exists()
    assert all(f.exists() for f in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["done.json", *(f.name for f in kept)])
