"""rac search: bisection on a fake evaluator with a known threshold, the SE-aware verdict on hand
cases, and the whole verb on a tiny model (outputs, resume)."""

from __future__ import annotations

import json
import math

import pytest

from rac.cli import main
from rac.experiments.search import Tolerance, bisect, judge


@pytest.mark.parametrize("n_levels", [1, 2, 7, 46])
def test_bisection_finds_the_threshold_in_log_steps(n_levels):
    for threshold in range(n_levels + 2):
        asked: list[int] = []

        def within(k: int, threshold=threshold, asked=asked) -> bool:
            asked.append(k)
            return k <= threshold

        assert bisect(n_levels, within) == min(threshold, n_levels - 1)
        assert 0 not in asked  # level 0 (dense) is never evaluated as a candidate
        assert len(asked) <= math.ceil(math.log2(max(n_levels, 2))) + 1


def test_verdict_accounts_for_the_standard_error():
    dense = [1.0] * 100
    pruned = [0.0] + [1.0] * 99  # drop 0.01 +- 0.01
    v = judge(dense, pruned, Tolerance(points=0.02))
    assert v.drop == pytest.approx(0.01) and v.se == pytest.approx(0.01)
    assert not v.within  # 0.01 + 1.645 * 0.01 > 0.02: not resolved with 100 problems
    assert v.problems_needed == 271  # ceil((1.645 * 0.1 / 0.01) ** 2)
    assert judge(dense, pruned, Tolerance(points=0.03)).within
    assert judge(dense, pruned, Tolerance(points=0.02, confidence=0.5)).within
    worse = judge(dense, [0.0] * 5 + [1.0] * 95, Tolerance(points=0.02))
    assert not worse.within and worse.problems_needed is None  # the drop itself is too big
    # keep: a fraction of dense
    half = [1.0, 0.0] * 50
    assert judge(half, half, Tolerance(keep=0.95)).allowed == pytest.approx(0.025)


def test_tolerance_is_validated():
    for bad in (dict(), dict(points=0.02, keep=0.9), dict(points=-0.1), dict(keep=0.0),
                dict(points=0.02, confidence=0.2)):
        with pytest.raises(ValueError):
            Tolerance(**bad)


@pytest.mark.slow
def test_rac_search_end_to_end_and_resume(qwen2_dir, tmp_path, capsys):
    for split, name in (("calib", "c"), ("test", "v"), ("test", "t")):
        assert main(["problems", "--n", "6", "--split", split, "--seed", str(len(name)),
                     "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    assert main(["calib", "--source", "reference", "--tokenizer", str(qwen2_dir), "--problems",
                 str(tmp_path / "c.jsonl"), "--budget-tokens", "300", "--out",
                 str(tmp_path / "set")]) == 0
    argv = ["search", str(qwen2_dir), "--calib", str(tmp_path / "set"), "--problems",
            str(tmp_path / "v.jsonl"), "--test-problems", str(tmp_path / "t.jsonl"),
            "--tolerance", "0.02", "--step", "0.1", "--max-sparsity", "0.5", "--out",
            str(tmp_path / "s")]
    assert main(argv) == 0
    out = tmp_path / "s"
    result = json.loads((out / "search.json").read_text())
    # a random model answers nothing, so every level is within: the search ends at the top
    assert result["chosen"]["sparsity"] == pytest.approx(0.5)
    assert (out / "search.png").exists() and (out / "model" / "config.json").exists()
    assert "test split" in (out / "search.md").read_text()
    report = json.loads((out / "model" / "prune_report.json").read_text())
    assert report["totals"]["sparsity_in_scope"] == pytest.approx(0.5, abs=1e-3)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "levels").rglob("eval.json")}
    assert main(argv) == 0  # resumed: nothing is pruned or evaluated again
    assert {p: p.stat().st_mtime_ns for p in (out / "levels").rglob("eval.json")} == stamps
    capsys.readouterr()
    assert main(argv + ["--keep", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "not allowed with argument --tolerance" in err and len(err.strip().splitlines()) == 1
