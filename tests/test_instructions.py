"""The instruction after a problem fits how its tests grade it: a function problem is asked for the
function, a stdin problem for a program; the eval report says which text each form got."""

from __future__ import annotations

import json

from rac.evaluate import EvalConfig, evaluate, instruction_key, instructions_for, summary_markdown
from rac.generate import Completion, Sampling
from rac.models import CODE_INSTRUCTION, FUNCTION_INSTRUCTION, R1_INSTRUCTION
from rac.tasks.problems import Problem, answer_form

STDIN = Problem("s", "Print the sum.", "", {"tests": [{"input": "1 2", "output": "3"}]})
CALL = Problem("c", "Write add.", "", {"tests": [{"call": "add(1, 2)", "expected": "3"}]})
CHECK = Problem("h", "Write inc.", "", {"tests": [{"check": "def check(candidate):\n    pass\n",
                                                  "entry_point": "inc"}]})
MIXED = Problem("m", "Both.", "", {"tests": [{"call": "f()", "expected": "1"},
                                            {"input": "", "output": "1"}]})
MATH = Problem("a", "Compute 1+2.", "3")


class RecordingBackend:
    name = "recording"

    def __init__(self, tok):
        self.tok, self.prompts = tok, []

    def generate(self, prompts, sampling, seed):
        self.prompts += [self.tok.decode(p) for p in prompts]
        return [Completion([self.tok.eos_token_id], "stop") for _ in prompts]


def test_answer_form_of_each_kind_of_problem():
    assert [answer_form(p) for p in (MATH, STDIN, CALL, CHECK, MIXED)] == \
        ["math", "stdin", "function", "function", "stdin"]


def test_each_problem_gets_its_forms_instruction_and_the_report_counts_them(toy_tokenizer):
    backend = RecordingBackend(toy_tokenizer)
    cfg = EvalConfig(Sampling(0.0, 1.0, 4))
    res = evaluate(backend, toy_tokenizer, [STDIN, CALL, CHECK], cfg, progress=False,
                   instructions={"stdin": "Read stdin.", "function": "Write the function only."})
    assert ["Read stdin." in p for p in backend.prompts] == [True, False, False]
    assert ["Write the function only." in p for p in backend.prompts] == [False, True, True]
    assert res["instructions"] == {"function": {"instruction": "Write the function only.", "problems": 2},
                                   "stdin": {"instruction": "Read stdin.", "problems": 1}}
    md = summary_markdown(res, "t")
    assert '- 2 function problem(s): "Write the function only."' in md
    assert '- 1 stdin problem(s): "Read stdin."' in md
    # the user's instruction replaces every form's
    backend.prompts.clear()
    res = evaluate(backend, toy_tokenizer, [STDIN, CALL], EvalConfig(Sampling(0.0, 1.0, 4),
                                                                     instruction="Mine."),
                   progress=False, instructions={"stdin": "Read stdin.", "function": "F."})
    assert all("Mine." in p and "F." not in p for p in backend.prompts)
    assert res["instructions"]["function"] == {"instruction": "Mine.", "problems": 1}


def test_the_models_instructions_and_what_an_evaluation_cache_keys_on(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert instructions_for(model, [MATH]) == {"math": R1_INSTRUCTION}
    assert instructions_for(model, [STDIN, CALL]) == {"stdin": CODE_INSTRUCTION,
                                                      "function": FUNCTION_INSTRUCTION}
    files = {}
    for name, problems in {"math": [MATH], "stdin": [STDIN], "calls": [STDIN, CALL]}.items():
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(p.to_json()) + "\n" for p in problems))
    # a cached result is keyed by every form's text: a changed instruction is never served
    assert instruction_key(model, files["math"], None) == {"instructions": {"math": R1_INSTRUCTION}}
    assert instruction_key(model, files["calls"], None) == {"instructions": {
        "function": FUNCTION_INSTRUCTION, "stdin": CODE_INSTRUCTION}}
    assert instruction_key(model, files["calls"], "x") == {"instructions": {"function": "x",
                                                                            "stdin": "x"}}
    (model / "rac_model.json").write_text(json.dumps({"function_instruction": "Just the def.",
                                                      "instruction": "Box it."}))
    assert instruction_key(model, files["calls"], None)["instructions"]["function"] == "Just the def."
    assert instruction_key(model, files["math"], None) == {"instructions": {"math": "Box it."}}
    assert instructions_for(model, [CHECK]) == {"function": "Just the def."}


def test_calibration_prompts_are_the_prompts_evaluation_renders(toy_tokenizer, tmp_path):
    """Prompt-only and reference sets rendered every problem with the math instruction, so a code
    model's prompt-only set was calibrated on prompts that evaluation never shows it."""
    from rac.calibrate.calib import from_prompts
    from rac.models import ModelDefaults, instructions, prompt_ids

    problems = [STDIN, CALL, MATH]
    texts = instructions(ModelDefaults(), problems, None)
    got = [s.ids for s in from_prompts(toy_tokenizer, problems, texts, thinking=True)]
    backend = RecordingBackend(toy_tokenizer)
    evaluate(backend, toy_tokenizer, problems, EvalConfig(Sampling(0.0, 1.0, 4)), progress=False,
             instructions=texts)
    assert sorted(toy_tokenizer.decode(ids) for ids in got) == sorted(backend.prompts)
    assert got[0] == prompt_ids(toy_tokenizer, STDIN.problem, CODE_INSTRUCTION, True)
    assert got[1] == prompt_ids(toy_tokenizer, CALL.problem, FUNCTION_INSTRUCTION, True)
