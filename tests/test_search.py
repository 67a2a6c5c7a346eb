"""rac search: bisection on a known threshold, the SE-aware verdict on hand cases, the whole verb
with a fake pruner and evaluator whose accuracy falls at a known level (the level found exactly,
the cache keyed by what determines each result, overlapping files refused), and the whole verb on a
tiny model (outputs, resume)."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from rac.cli import main
from rac.experiments import search as search_module
from rac.experiments.search import Tolerance, bisect, judge
from rac.tasks.problems import Problem, read_problems, write_problems


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
    for split, name in (("calib", "c"), ("val", "v"), ("test", "t")):
        assert main(["problems", "--n", "6", "--split", split, "--seed", "1",
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


class Fake:
    """A pruner and an evaluator that need no model: a pruned 'model' is a directory naming its
    sparsity and weight bits, and a problem is solved while the sparsity is below its
    ``breaks_at`` and the bits are at least its ``needs_bits`` (if any). Counts what it was asked
    to do."""

    def __init__(self, monkeypatch):
        self.pruned: list[tuple[str, float]] = []
        self.evaluated: list[tuple[float, str]] = []
        self.configs: list = []
        monkeypatch.setattr(search_module, "prune_to_dir", self.prune)
        monkeypatch.setattr(search_module, "evaluate_model", self.evaluate)

    def prune(self, model, calib, cfg, out, batch_tokens, progress):
        out.mkdir(parents=True)
        shutil.copy(Path(model) / "config.json", out / "config.json")
        bits = cfg.quant.bits if cfg.quant else 16
        (out / "level.json").write_text(json.dumps({"sparsity": cfg.target.fraction,
                                                    "bits": bits}))
        self.pruned.append((cfg.method, cfg.target.fraction))
        self.configs.append(cfg)

    def evaluate(self, model, problems, out, cfg, overwrite, progress):
        level = Path(model) / "level.json"
        at = json.loads(level.read_text()) if level.exists() else {"sparsity": 0.0, "bits": 16}
        sparsity = at["sparsity"]
        pass1 = [float(sparsity < p.extra["breaks_at"] and at["bits"] >= p.extra.get("needs_bits", 0))
                 for p in read_problems(problems)]
        mean = statistics.fmean(pass1)
        se = statistics.stdev(pass1) / math.sqrt(len(pass1))
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps({
            "problems": [{"pass1": x} for x in pass1],
            "summary": {"accuracy": mean, "accuracy_se": se, "n_problems": len(pass1)}}))
        self.evaluated.append((sparsity, Path(problems).name))

    def counts(self) -> tuple[int, int]:
        counts = len(self.pruned), len(self.evaluated)
        self.pruned.clear()
        self.evaluated.clear()
        return counts


def _problems(path: Path, prefix: str, breaks_at: list[float]) -> Path:
    write_problems(path, [Problem(f"{prefix}{i}", f"{prefix} problem number {i} of the file",
                                  "1", {"breaks_at": b}) for i, b in enumerate(breaks_at)])
    return path


@pytest.fixture
def fake_search(tmp_path, monkeypatch):
    """A model of 4 blocks, a calibration 'set', a validation file whose accuracy falls from 1 to
    0.6 at sparsity 0.46 and a disjoint test file whose accuracy falls to 0 at 0.30."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "calib_info.json").write_text("{}")
    val = _problems(tmp_path / "val.jsonl", "v", [0.46] * 16 + [0.9] * 24)
    test = _problems(tmp_path / "test.jsonl", "t", [0.30] * 20)
    argv = ["search", str(model), "--calib", str(calib), "--problems", str(val),
            "--test-problems", str(test), "--tolerance", "0.02", "--step", "0.02",
            "--max-sparsity", "0.9", "--temperature", "0", "--out", str(tmp_path / "s")]
    return Fake(monkeypatch), argv, tmp_path


def _run(argv: list[str], out: Path) -> dict:
    assert main(argv) == 0
    return json.loads((out / "search.json").read_text())


def test_search_finds_the_level_where_accuracy_falls_and_reports_the_test_split(fake_search):
    fake, argv, tmp = fake_search
    result = _run(argv, tmp / "s")
    assert result["chosen"]["sparsity"] == pytest.approx(0.44)  # 0.46 drops 0.4: not within
    assert result["dense_validation_accuracy"] == 1.0
    # the test file's problems break at 0.30: the chosen model fails them all, dense solves them
    assert (result["test_accuracy"], result["dense_test_accuracy"]) == (0.0, 1.0)
    assert result["test_problems"] == 20
    tried = {round(p["sparsity"], 2): p["verdict"]["within"] for p in result["points"]}
    assert tried[0.44] and not tried[0.46]
    pruned, evaluated = fake.counts()
    assert pruned == len(tried) <= 7  # bisection over 46 levels
    assert evaluated == len(tried) + 3  # + dense validation, chosen test, dense test


def test_search_cache_is_keyed_by_what_determines_each_result(fake_search):
    fake, argv, tmp = fake_search
    out = tmp / "s"

    def flag(name: str, value: str) -> list[str]:
        i = argv.index(name)
        return argv[:i + 1] + [value] + argv[i + 2:]

    _run(argv, out)
    fake.counts()
    assert _run(flag("--tolerance", "0.03"), out)["chosen"]["sparsity"] == pytest.approx(0.44)
    assert fake.counts() == (0, 0)  # another tolerance: every evaluation reused
    # another validation file, whose problems break at 0.2: evaluated anew (pruned models reused)
    other = _problems(tmp / "val2.jsonl", "w", [0.2] * 40)
    result = _run(flag("--problems", str(other)), out)
    assert result["chosen"]["sparsity"] == pytest.approx(0.18)
    assert fake.counts()[1] > 0
    # one that no level passes at all: dense accuracy 0 is reported as 0, not the cached 1.0
    zero = _problems(tmp / "val3.jsonl", "z", [0.0] * 40)
    assert _run(flag("--problems", str(zero)), out)["dense_validation_accuracy"] == 0.0
    fake.counts()
    # another calibration set (same path, other contents), method or recipe: pruned anew
    (tmp / "calib" / "calib_info.json").write_text('{"seed": 1}')
    assert _run(argv, out)["chosen"]["sparsity"] == pytest.approx(0.44)
    pruned, _ = fake.counts()
    assert pruned > 0
    for changed in (argv + ["--method", "wanda"], argv + ["--recipe", "best"]):
        _run(changed, out)
        assert fake.counts()[0] == pruned
    # other sampling: the same pruned models, evaluated anew
    _run(flag("--temperature", "0.5"), out)
    assert fake.counts() == (0, pruned + 3)
    inputs = [json.loads(p.read_text()) for p in (out / "levels").rglob("inputs.json")]
    assert {i["eval"]["sampling"]["temperature"] for i in inputs if "eval" in i} == {0.0, 0.5}


def test_search_refuses_validation_problems_shared_with_the_test_file(fake_search, capsys):
    fake, argv, tmp = fake_search
    val = read_problems(tmp / "val.jsonl")
    test = read_problems(tmp / "test.jsonl")
    for leaked, reason in ((Problem("t3", "a new statement", "1", {"breaks_at": 0.5}), "id"),
                           (Problem("v99", test[5].problem, "1", {"breaks_at": 0.5}),
                            "statement")):
        write_problems(tmp / "val.jsonl", val + [leaked])
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "share 1 problems" in err and f"({reason})" in err, err
        assert len(err.strip().splitlines()) == 1
        assert fake.counts() == (0, 0) and not (tmp / "s" / "levels").exists()


def test_search_over_quantization_targets_stops_at_the_fewest_bits_within(fake_search, capsys):
    """Validation problems: 16 of 40 need 4-bit weights or more, every one breaks at sparsity
    0.46. Of dense, w8a16, w4a16, w3a16 and 2:4+w4a16, w4a16 is the last within tolerance; GPTQ
    quantizes the first three, SparseGPT prunes and quantizes 2:4 in one pass, on the grids the
    flags say."""
    fake, argv, tmp = fake_search
    val = _problems(tmp / "val.jsonl", "v", [0.46] * 40)
    val_rows = read_problems(val)
    write_problems(val, [Problem(p.id, p.problem, p.answer, {**p.extra, "needs_bits": 4 if i < 16
                                                             else 0})
                         for i, p in enumerate(val_rows)])
    targets = ["w8a16", "w4a16", "w3a16", "2:4+w4a16"]
    quant = argv + ["--quantize", ",".join(targets), "--group-size", "64", "--asym"]
    result = _run(quant, tmp / "s")
    assert result["chosen"]["level"] == "w4a16" and result["chosen"]["weight_bits"] == 4
    tried = {p["level"]: p["verdict"]["within"] for p in result["points"]}
    assert tried["w4a16"] and not tried["w3a16"]
    assert all(c.method == "gptq" and c.quant.group_size == 64 and not c.quant.sym
               for c in fake.configs if not c.target.fraction)
    md = (tmp / "s" / "search.md").read_text()
    assert "quantization targets w8a16, w4a16, w3a16, 2:4+w4a16" in md and "| w3a16 |" in md
    # the last target prunes too: when every target is within, it is the one chosen
    easy = _problems(tmp / "val.jsonl", "v", [0.9] * 40)
    assert easy and _run(quant, tmp / "s")["chosen"]["level"] == "2-4+w4a16"
    assert [c.method for c in fake.configs if c.target.fraction] == ["sparsegpt"]
    # what does not apply is refused in one line, before any work
    fake.counts()
    for bad, says in ((argv + ["--quantize", "w4a8"], "W4A8 (int4 weights, int8 activations) is not"),
                      (argv + ["--quantize", "w4a16", "--pattern", "2:4"], "not both"),
                      (argv + ["--group-size", "64"], "only apply with --quantize")):
        capsys.readouterr()
        assert main(bad) == 2, bad
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert fake.counts() == (0, 0)
