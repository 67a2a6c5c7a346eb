"""Calibration across processes: ``torchrun`` with 2 gloo ranks gives the model one process
gives (a float64 model: identical masks and codes, weights equal to float64 rounding), with
rank 0 alone writing; what does not split over ranks is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rac.prune.config import PruneConfig
from rac.prune.distributed import check
from rac.prune.masks import Target
from tests.conftest import reference_set, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def f64(qwen2_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny Qwen2 in float64 and a reference calibration set of 600 tokens."""
    out = tmp_path_factory.mktemp("f64")
    AutoModelForCausalLM.from_pretrained(qwen2_dir, dtype=torch.float64).save_pretrained(out)
    for f in qwen2_dir.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            (out / f.name).write_bytes(f.read_bytes())
    return out, reference_set(qwen2_dir, tmp_path_factory.mktemp("c"), 40, 600)


def torchrun(*argv: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "rac.cli", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("verb", [
    ["prune", "--method", "sparsegpt", "--sparsity", "0.5"],
    ["quantize", "--scheme", "W4A16", "--group-size", "16", "--actorder"],
], ids=["sparsegpt", "gptq"])
def test_two_gloo_ranks_give_the_model_one_process_gives(f64, tmp_path, capsys, verb):
    model, calib = f64
    flags = [*verb, "--calib", calib, "--batch-tokens", 64, "--threads", 1]
    code, _, err = run(capsys, verb[0], model, *flags[1:], "--out", tmp_path / "one")
    assert code == 0, err
    done = torchrun(verb[0], model, *flags[1:], "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("-> ") == 1  # rank 0 alone reports (and writes)
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert one.keys() == two.keys()
    for name, w in one.items():
        assert w.dtype == torch.float64
        assert torch.equal(w == 0, two[name] == 0), name  # identical masks
        assert torch.allclose(w, two[name], rtol=1e-9, atol=1e-12), name
    reports = [json.loads((tmp_path / d / "prune_report.json").read_text()) for d in ("one", "two")]
    assert [r["memory"]["ranks"] for r in reports] == [1, 2]
    # both ranks saw half of the rows each; the statistics summed hold all of them
    assert [x["tokens"] for x in reports[0]["layers"]] == [x["tokens"] for x in reports[1]["layers"]]
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_what_does_not_split_over_ranks_is_named():
    base = dict(method="sparsegpt", target=Target(0.5))
    for options, name in ((dict(true_sequential=True), "--true-sequential"),
                          (dict(refine_epochs=2), "--refine-epochs"),
                          (dict(owl_lambda=0.08), "--owl-lambda"),
                          (dict(dense_targets=True), "--dense-targets")):
        with pytest.raises(ValueError, match=name):
            check(PruneConfig(**base, **options))
    check(PruneConfig(**base))  # the plain engine splits
