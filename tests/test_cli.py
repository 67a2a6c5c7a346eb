"""The CLI end to end on tiny random models, and its bad-input paths."""

from __future__ import annotations

import json

import pytest

from rac.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and needle in lines[0], err


@pytest.fixture
def problems_file(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    assert run(capsys, "problems", "--n", 6, "--split", "test", "--out", path)[0] == 0
    return path


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
def test_eval_runs_on_random_qwen2_and_llama(arch_dir, request, problems_file, tmp_path, capsys):
    model = request.getfixturevalue(arch_dir)
    out = tmp_path / "ev"
    code, stdout, _ = run(capsys, "eval", model, "--problems", problems_file, "--out", out,
                          "--max-new-tokens", 12, "--temperature", 0.7, "--samples", 2)
    assert code == 0, stdout
    res = json.loads((out / "eval.json").read_text())
    assert res["summary"]["n_problems"] == 6 and res["summary"]["samples_per_problem"] == 2
    assert 0 <= res["summary"]["accuracy"] <= 1
    assert all(len(r["samples"]) == 2 for r in res["problems"])
    assert all(s["tokens"] <= 12 for r in res["problems"] for s in r["samples"])
    assert (out / "eval.md").read_text().startswith("# rac eval")


def test_r1_prompt_carries_instruction_and_opens_think(llama_dir, toy_tokenizer):
    from rac import models

    d = models.defaults(llama_dir)  # no rac_model.json: a real R1 distill's defaults
    assert d.instruction == models.R1_INSTRUCTION and d.eval_temperature == 0.6
    text = models.prompt_text(toy_tokenizer, "Compute 1+1.", d.instruction)
    assert text.endswith("<think>\n")
    assert "Compute 1+1.\nPlease reason step by step" in text


def test_existing_output_is_not_overwritten(qwen2_dir, problems_file, tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run(capsys, "eval", qwen2_dir, "--problems", problems_file, "--out", out)
    assert_one_line_error(code, err, "--overwrite")
    assert (out / "keep.txt").read_text() == "precious"


BAD_PROBLEM_FILES = {
    "empty": ("", "is empty"),
    "not json": ('{"id": "a", "problem": "x", "answer": "1"}\n{oops\n', ":2: not valid JSON"),
    "missing answer": ('{"id": "a", "problem": "x"}\n', "missing field 'answer'"),
    "wrong type": ('{"id": "a", "problem": ["x"], "answer": "1"}\n', "must be a string"),
    "duplicate": ('{"id": "a", "problem": "x", "answer": "1"}\n' * 2, "duplicate id"),
    "array": ('[1, 2]\n', "expected a JSON object"),
}


@pytest.mark.parametrize("case", BAD_PROBLEM_FILES)
def test_bad_problem_files(case, qwen2_dir, tmp_path, capsys):
    text, needle = BAD_PROBLEM_FILES[case]
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    code, _, err = run(capsys, "eval", qwen2_dir, "--problems", f, "--out", tmp_path / "o")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_bad_models_and_flags(qwen2_dir, problems_file, tmp_path, capsys):
    cases = [
        (["eval", tmp_path / "nope", "--problems", problems_file], "not found"),
        (["eval", problems_file, "--problems", problems_file], "is a file"),
        (["eval", tmp_path, "--problems", problems_file], "no config.json"),
        (["eval", qwen2_dir, "--problems", tmp_path / "none.jsonl"], "does not exist"),
        (["eval", qwen2_dir, "--problems", tmp_path], "is a directory"),
        (["eval", qwen2_dir, "--problems", problems_file, "--top-p", 0], "top-p"),
        (["eval", qwen2_dir, "--problems", problems_file, "--temperature", -1], "temperature"),
        (["eval", qwen2_dir, "--problems", problems_file, "--samples", 0], "samples"),
        (["problems", "--n", 0, "--out", tmp_path / "x.jsonl"], "--n"),
        (["problems", "--task", "chess", "--n", 3, "--out", tmp_path / "x.jsonl"], "invalid choice"),
    ]
    for argv, needle in cases:
        code, _, err = run(capsys, *argv, "--out", tmp_path / "o") if argv[0] == "eval" \
            else run(capsys, *argv)
        assert_one_line_error(code, err, needle)


def test_model_without_tokenizer_or_template(qwen2_dir, problems_file, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(qwen2_dir / f, bare / f)
    code, _, err = run(capsys, "eval", bare, "--problems", problems_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "tokenizer")
    no_template = tmp_path / "nt"
    shutil.copytree(qwen2_dir, no_template)
    (no_template / "chat_template.jinja").unlink()
    cfg = json.loads((no_template / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "eval", no_template, "--problems", problems_file, "--out",
                       tmp_path / "o")
    assert_one_line_error(code, err, "chat template")


def test_nan_weights_are_refused(qwen2_dir, problems_file, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan"
    shutil.copytree(qwen2_dir, broken)
    w = load_file(broken / "model.safetensors")
    name = next(k for k in w if k.endswith("q_proj.weight"))
    w[name][0, 0] = float("nan")
    save_file(w, broken / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run(capsys, "eval", broken, "--problems", problems_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "NaN")


def test_pickled_weights_are_refused(qwen2_dir, problems_file, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(qwen2_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    code, _, err = run(capsys, "eval", pickled, "--problems", problems_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "safetensors")
