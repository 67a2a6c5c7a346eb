"""Shared fixtures: tiny random models built from a config (never downloaded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rac.toy.tokenizer import build_tokenizer

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(capsys, *argv) -> tuple[int, str, str]:
    """``rac ARGV`` in this process: (exit code, stdout, stderr)."""
    from rac.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reference_set(tokenizer_dir: Path, d: Path, problems: int, budget: int) -> Path:
    """A packed reference-CoT calibration set (96-token windows, so the last one is padded) of
    ``budget`` tokens from ``problems`` arith calib problems, built by the CLI under ``d``."""
    from rac.cli import main

    assert main(["problems", "--n", str(problems), "--split", "calib", "--out", str(d / "p.jsonl")]) == 0
    assert main(["calib", "--source", "reference", "--tokenizer", str(tokenizer_dir), "--problems",
                 str(d / "p.jsonl"), "--budget-tokens", str(budget), "--pack", "96", "--out",
                 str(d / "set")]) == 0
    return d / "set"


@pytest.fixture(scope="session")
def toy_tokenizer():
    return build_tokenizer()


def make_model(path: Path, arch: str, tok, seed: int = 0, hidden: int = 32, layers: int = 3,
               rac_model: dict | None = None) -> Path:
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                  max_position_embeddings=512, tie_word_embeddings=False)
    if arch == "qwen2":
        lm = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        lm = LlamaForCausalLM(LlamaConfig(**common))
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    if rac_model is not None:
        (path / "rac_model.json").write_text(json.dumps(rac_model))
    return path


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory, toy_tokenizer) -> Path:
    return make_model(tmp_path_factory.mktemp("qwen2"), "qwen2", toy_tokenizer,
                      rac_model={"instruction": "", "eval_temperature": 0.0,
                                 "eval_max_new_tokens": 24, "trace_max_new_tokens": 24})


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, toy_tokenizer) -> Path:
    return make_model(tmp_path_factory.mktemp("llama"), "llama", toy_tokenizer)
