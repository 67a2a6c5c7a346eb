"""Sampling settings: top-k and the repetition penalty follow the model's generation_config.json
unless given or ignored, and every stage says what it used."""

from __future__ import annotations

import json
import shutil

import pytest

from rac.cli import main
from rac.io import RacError
from rac.sampling import Sampling, sampling_for, shipped_generation_config

QWEN_SHIPS = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


@pytest.fixture
def qwen_like(qwen2_dir, tmp_path):
    """The toy Qwen2 with the sampling settings a Qwen2.5 instruct model ships."""
    d = tmp_path / "qwen_like"
    shutil.copytree(qwen2_dir, d)
    cfg = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**cfg, **QWEN_SHIPS, "do_sample": True}))
    return d


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "p.jsonl"
    assert main(["problems", "--n", "4", "--split", "test", "--out", str(path)]) == 0
    return path


def test_top_k_and_the_penalty_follow_the_models_generation_config(qwen_like, qwen2_dir):
    assert shipped_generation_config(qwen_like) == QWEN_SHIPS
    # temperature and top-p stay rac's (rac_model.json: greedy evals; else the paper's)
    assert sampling_for(qwen_like, "eval") == Sampling(0.0, 0.95, 24, 20, 1.05)
    assert sampling_for(qwen_like, "trace") == Sampling(0.6, 0.95, 24, 20, 1.05)
    assert sampling_for(qwen_like, "eval", top_k=0) == Sampling(0.0, 0.95, 24, 0, 1.05)
    assert sampling_for(qwen_like, "eval", repetition_penalty=1.2).repetition_penalty == 1.2
    ignored = sampling_for(qwen_like, "eval", generation_config=False)
    assert ignored == Sampling(0.0, 0.95, 24, 0, 1.0)
    assert sampling_for(qwen_like, "eval", top_k=3, generation_config=False).top_k == 3
    # a model whose file sets no sampling setting (save_pretrained's, the embedded model's)
    assert shipped_generation_config(qwen2_dir) == {}
    assert shipped_generation_config("embedded") == {}
    assert sampling_for(qwen2_dir, "eval") == Sampling(0.0, 0.95, 24)


def test_a_bad_generation_config_is_one_clear_error(qwen_like):
    path = qwen_like / "generation_config.json"
    path.write_text(json.dumps({"top_k": -1}))
    with pytest.raises(RacError, match="top-k must be.*generation_config.json.*--ignore-generation"):
        sampling_for(qwen_like, "eval")
    assert sampling_for(qwen_like, "eval", top_k=5).top_k == 5  # the bad value is not used
    assert sampling_for(qwen_like, "eval", generation_config=False).top_k == 0
    path.write_text("{not json")
    with pytest.raises(RacError, match="generation_config.json is malformed"):
        sampling_for(qwen_like, "eval")


def test_identity_and_description_name_top_k_and_the_penalty_only_when_on():
    plain = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8192}
    assert Sampling().identity() == plain  # what cache keys and trace stores held before
    assert Sampling(top_k=20, repetition_penalty=1.05).identity() == {
        **plain, "top_k": 20, "repetition_penalty": 1.05}
    assert Sampling().describe() == "T=0.6, top-p=0.95"
    assert Sampling(0.0, 1.0, top_k=20).describe() == "greedy"
    assert Sampling(0.0, 1.0, repetition_penalty=1.05).describe() == "greedy, repetition penalty 1.05"
    assert Sampling(top_k=20, repetition_penalty=1.1).describe() == (
        "T=0.6, top-p=0.95, top-k=20, repetition penalty 1.1")
    for bad in ({"top_k": -1}, {"top_k": 2.5}, {"repetition_penalty": 0.0}):
        with pytest.raises(ValueError):
            Sampling(**bad)


def _eval(model, problems, out, *flags) -> tuple[dict, str]:
    assert main(["eval", str(model), "--problems", str(problems), "--out", str(out),
                 "--max-new-tokens", "8", *flags]) == 0
    return json.loads((out / "eval.json").read_text()), (out / "eval.md").read_text()


def test_the_eval_report_says_what_was_used(qwen_like, qwen2_dir, problems, tmp_path, capsys):
    res, md = _eval(qwen_like, problems, tmp_path / "a")
    assert res["config"]["sampling"] == {"temperature": 0.0, "top_p": 0.95, "max_new_tokens": 8,
                                         "top_k": 20, "repetition_penalty": 1.05}
    assert res["model_generation_config"] == QWEN_SHIPS
    assert "sample(s), greedy, repetition penalty 1.05, max 8 new tokens" in md
    assert "| top_k | 20 | 20 |" in md and "| temperature | 0.7 | 0.0 |" in md
    res, md = _eval(qwen_like, problems, tmp_path / "b", "--ignore-generation-config",
                    "--temperature", "0.5", "--top-k", "3")
    assert (res["config"]["sampling"]["top_k"], res["config"]["sampling"]["repetition_penalty"]) \
        == (3, 1.0)
    assert "T=0.5, top-p=0.95, top-k=3, max 8" in md and "| repetition_penalty | 1.05 | 1.0 |" in md
    res, md = _eval(qwen2_dir, problems, tmp_path / "c")  # nothing shipped: no table
    assert res["model_generation_config"] == {} and "sampling setting" not in md
    assert res["config"]["sampling"]["top_k"] == 0
    capsys.readouterr()


def test_trace_stores_record_the_sampling_used(qwen_like, qwen2_dir, tmp_path):
    from rac.calibrate.traces import load_traces

    calib = tmp_path / "c.jsonl"
    assert main(["problems", "--n", "8", "--split", "calib", "--out", str(calib)]) == 0
    for model, extra in ((qwen_like, {"top_k": 20, "repetition_penalty": 1.05}), (qwen2_dir, {})):
        out = tmp_path / f"traces-{model.name}"
        assert main(["traces", str(model), "--problems", str(calib), "--out", str(out),
                     "--budget-tokens", "50", "--batch-size", "4"]) == 0
        meta, _ = load_traces(out)
        # without top-k or a penalty the store's identity is the one a372ae1 wrote: it resumes
        assert meta["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 24,
                                    **extra}


def test_sweep_stages_use_and_key_the_sampling_used(qwen_like, tmp_path):
    from rac.experiments import config
    from rac.experiments.config import EvalSpec, TracesSpec, spec_key, spec_sampling

    t = TracesSpec()
    plain = spec_sampling("embedded", "trace", t, 512)
    assert plain == Sampling(0.6, 0.95, 512)
    # the key a372ae1 built (asdict of the spec then): caches made before stay valid
    assert spec_key(t, plain) == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512,
                                  "samples_per_prompt": 1, "batch_size": 128}
    followed = spec_sampling(qwen_like, "eval", EvalSpec(), 64)
    assert followed == Sampling(0.0, 1.0, 64, 20, 1.05)
    assert spec_key(EvalSpec(), followed)["top_k"] == 20
    own = EvalSpec(generation_config=False, top_k=5, repetition_penalty=1.2)
    assert spec_sampling(qwen_like, "eval", own, 64) == Sampling(0.0, 1.0, 64, 5, 1.2)
    assert spec_sampling(qwen_like, "eval", EvalSpec(generation_config=False), 64).top_k == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[eval]\ntop_k = -1\n")
    with pytest.raises(RacError, match="'eval.top_k' must be >= 0"):
        config.load(bad)
