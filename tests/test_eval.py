"""Evaluation metrics on a backend whose outputs are known exactly."""

from __future__ import annotations

import math

import pytest

from rac.evaluate import EvalConfig, cot_length, evaluate
from rac.generate import Completion, Sampling
from rac.tasks.problems import Problem


class ScriptedBackend:
    """Answers each prompt with a fixed completion text (tokenized by the toy tokenizer)."""

    name = "scripted"

    def __init__(self, tok, by_problem: dict[str, list[str]]):
        self.tok, self.by_problem, self.calls = tok, by_problem, {}

    def generate(self, prompts, sampling, seed):
        out = []
        for p in prompts:
            text = self.tok.decode(p)
            problem = text.split("<|User|>")[1].split("<|Assistant|>")[0]
            k = self.calls.get(problem, 0)
            self.calls[problem] = k + 1
            completion = self.by_problem[problem][k]
            ids = self.tok(completion, add_special_tokens=False)["input_ids"]
            if len(ids) >= sampling.max_new_tokens:
                out.append(Completion(ids[:sampling.max_new_tokens], "length"))
            else:
                out.append(Completion(ids + [self.tok.eos_token_id], "stop"))
        return out


def test_metrics_match_hand_computation(toy_tokenizer):
    tok = toy_tokenizer
    problems = [Problem("a", "Compute 1+2.", "3"), Problem("b", "Compute 2+2.", "4")]
    script = {
        "Compute 1+2.": ["1+2=3\n</think>\nThe answer is \\boxed{3}.",
                         "1+2=4\n</think>\nThe answer is \\boxed{4}."],
        "Compute 2+2.": ["2+2=4\n</think>\nThe answer is \\boxed{4}.",
                         "2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2 2+2"],
    }
    cfg = EvalConfig(Sampling(temperature=0.6, top_p=0.95, max_new_tokens=20), samples=2)
    res = evaluate(ScriptedBackend(tok, script), tok, problems, cfg)
    s = res["summary"]
    # problem a: 1 of 2 correct; problem b: 1 of 2 (the second rambles into the limit)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["accuracy_se"] == pytest.approx(0.0)
    assert s["max_hit_rate"] == pytest.approx(0.25)
    n_think = len(tok("1+2=3\n</think>", add_special_tokens=False)["input_ids"])
    cots = [n_think, n_think, n_think, 20]
    assert s["mean_cot_tokens"] == pytest.approx(sum(cots) / 4)
    total = [s_["tokens"] for r in res["problems"] for s_ in r["samples"]]
    assert total[-1] == 20 and s["generated_tokens"] == sum(total)
    b = res["problems"][1]["samples"]
    assert [x["grade"] for x in b] == ["correct", "no_think_close"]
    assert b[1]["finish_reason"] == "length"


def test_standard_error_over_problems(toy_tokenizer):
    tok = toy_tokenizer
    problems = [Problem(str(i), f"Compute {i}+1.", str(i + 1)) for i in range(4)]
    script = {f"Compute {i}+1.": [f"</think>\nThe answer is \\boxed{{{i + 1 if i < 3 else 0}}}."]
              for i in range(4)}
    res = evaluate(ScriptedBackend(tok, script), tok, problems,
                   EvalConfig(Sampling(0.0, 1.0, 16)))
    p = 0.75
    assert res["summary"]["accuracy"] == pytest.approx(p)
    # sample standard deviation of [1, 1, 1, 0] over sqrt(4)
    assert res["summary"]["accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) * 4 / 3) / 2)


def test_cot_length_counts_through_think_close():
    assert cot_length([5, 6, 9, 7], think_close_id=9) == 3
    assert cot_length([5, 6, 7], think_close_id=9) == 3
