"""The shipped embedded model: loads like a real R1 distill and still reasons."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rac import models
from rac.evaluate import EvalConfig, evaluate_model
from rac.sampling import sampling_for
from rac.tasks import arith
from rac.tasks.problems import Problem, write_problems


def test_loads_with_plain_transformers_as_qwen2():
    path = models.resolve("embedded")
    lm = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(lm).__name__ == "Qwen2ForCausalLM"
    assert type(tok).__name__ == "Qwen2Tokenizer"  # the same code path as a real R1 distill
    ours = models.load_tokenizer("embedded")
    text = models.prompt_text(tok, "Compute 12+34.", "")
    assert text.endswith("<think>\n")
    assert tok(text)["input_ids"] == ours(text)["input_ids"]
    assert sum(f.stat().st_size for f in path.iterdir()) < 20 * 2**20
    info = json.loads((path / "training.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in lm.parameters())


@pytest.mark.slow
def test_reasons_on_held_out_problems(tmp_path):
    """A regression check of the shipped weights: greedy accuracy on 60 held-out problems, the
    R1 format, and a chain of thought much longer than the prompt."""
    problems = [Problem(p.id, p.problem, p.answer) for p in arith.generate(60, 123, "test")]
    write_problems(tmp_path / "p.jsonl", problems)
    cfg = EvalConfig(sampling_for("embedded", "eval"), batch_size=60)
    res = evaluate_model("embedded", tmp_path / "p.jsonl", None, cfg, progress=False)
    s = res["summary"]
    assert s["accuracy"] >= 0.9, s
    assert s["max_hit_rate"] == 0
    assert s["mean_cot_tokens"] >= 4 * s["mean_prompt_tokens"]
    for row in res["problems"][:5]:
        c = row["samples"][0]["completion"]
        assert "</think>" in c and "\\boxed{" in c.split("</think>")[-1]
