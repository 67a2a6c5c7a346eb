"""Evaluation metrics on a backend whose outputs are known exactly."""

from __future__ import annotations

import math

import pytest

from rac.cli import main
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


def _plain_instruction_tokenizer():
    """A tokenizer of an instruction model with no think phase: no </think>, a plain template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "Compute", "1+2.", "It", "is", "\\boxed{3}", "\\boxed{4}", "user:",
             "assistant:"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>",
                                  pad_token="<eos>")
    tok.chat_template = ("{% for m in messages %}user: {{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %} assistant:{% endif %}")
    return tok


def test_a_model_without_think_phase_is_graded_on_its_whole_completion(toy_tokenizer):
    from rac import models
    from rac.tasks.math import grade_math

    plain = _plain_instruction_tokenizer()
    assert models.thinks(toy_tokenizer) and not models.thinks(plain)
    assert models.prompt_text(toy_tokenizer, "Compute 1+2.", "").endswith("<think>\n")
    assert models.prompt_text(plain, "Compute 1+2.", "", thinking=False).endswith("assistant:")
    assert grade_math("It is \\boxed{3}", "3").reason == "no_think_close"
    assert grade_math("It is \\boxed{3}", "3", thinking=False).correct
    assert not grade_math("\\boxed{3} It is \\boxed{4}", "3", thinking=False).correct  # last box
    # the whole evaluation, with thinking forced off on the toy tokenizer
    problems = [Problem("a", "Compute 1+2.", "3"), Problem("b", "Compute 2+2.", "4")]
    backend = ScriptedBackend(toy_tokenizer, {"Compute 1+2.": ["So \\boxed{3}"],
                                              "Compute 2+2.": ["So \\boxed{5}"]})
    res = evaluate(backend, toy_tokenizer, problems,
                   EvalConfig(Sampling(0.0, 1.0, 50), thinking=False), progress=False)
    assert res["config"]["thinking"] is False
    assert res["summary"]["accuracy"] == 0.5
    for row in res["problems"]:
        s = row["samples"][0]
        assert s["cot_tokens"] == s["tokens"]  # all of it is the chain of thought
    on = evaluate(ScriptedBackend(toy_tokenizer, {"Compute 1+2.": ["So \\boxed{3}"],
                                                  "Compute 2+2.": ["So \\boxed{4}"]}),
                  toy_tokenizer, problems, EvalConfig(Sampling(0.0, 1.0, 50)), progress=False)
    assert on["config"]["thinking"] is True and on["summary"]["accuracy"] == 0.0  # no </think>


def test_several_greedy_samples_are_refused(qwen2_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="one completion repeated"):
        EvalConfig(Sampling(temperature=0.0, max_new_tokens=8), samples=4)
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    assert main(["eval", str(qwen2_dir), "--problems", str(problems), "--out", str(tmp_path / "e"),
                 "--samples", "4", "--temperature", "0", "--backend", "transformers"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one completion repeated" in err[0]
    assert not (tmp_path / "e").exists()
