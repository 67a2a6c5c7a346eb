"""Streaming blocks (`--stream`) and spilling activations (`--activation-memory`): the output is
the in-memory path's, tensor for tensor and bit for bit, on tiny Qwen2 and Llama models, for
pruning, joint pruning + quantization and GPTQ; the peak memory bound on a model whose weights
dwarf one block; and one-line refusals of what streaming does not do."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from bench.stream_memory import differing, measure
from rac.checkpoint import INDEX, Checkpoint
from rac.io import RacError
from rac.prune.activations import Activations
from tests.conftest import make_model, reference_set, run


@pytest.fixture(scope="module")
def calib_set(qwen2_dir, tmp_path_factory):
    """A reference set tokenized by the toy tokenizer, which every model here shares."""
    return reference_set(qwen2_dir, tmp_path_factory.mktemp("c"), 40, 600)


def _without_timings(report: dict) -> dict:
    report = {k: v for k, v in report.items() if k != "memory"}
    report["totals"] = {k: v for k, v in report["totals"].items()
                        if k not in ("wall_s", "peak_rss_mb")}
    report["layers"] = [{k: v for k, v in r.items() if k != "seconds"} for r in report["layers"]]
    return report


def both(capsys, tmp_path, model, *argv, verb="prune"):
    """Run ``rac VERB MODEL ARGV`` in memory and with ``--stream``; check that the outputs hold
    the same tensors and configs, that the streamed one loads, and return its directory and
    report."""
    outs = {}
    for name, extra in (("memory", []), ("stream", ["--stream"])):
        outs[name] = tmp_path / name
        code, _, err = run(capsys, verb, model, *argv, *extra, "--out", outs[name])
        assert code == 0, err
    mem, streamed = outs["memory"], outs["stream"]
    assert differing(mem, streamed) == []
    assert not (mem / INDEX).exists() and (streamed / INDEX).exists()  # really another writer
    for name in ("config.json", "generation_config.json"):
        assert json.loads((mem / name).read_text()) == json.loads((streamed / name).read_text())
    reports = [json.loads((d / "prune_report.json").read_text()) for d in (mem, streamed)]
    assert _without_timings(reports[0]) == _without_timings(reports[1])
    assert reports[1]["memory"]["stream"] and not reports[0]["memory"]["stream"]
    loaded = AutoModelForCausalLM.from_pretrained(streamed).state_dict()
    for k, t in AutoModelForCausalLM.from_pretrained(mem).state_dict().items():
        assert torch.equal(loaded[k], t), k
    return streamed, reports[1]


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
@pytest.mark.parametrize("verb,argv", [
    ("prune", ["--method", "sparsegpt", "--sparsity", "0.5"]),
    ("prune", ["--method", "sparsegpt", "--pattern", "2:4", "--true-sequential"]),
    ("quantize", ["--scheme", "W4A16", "--group-size", "32"]),
    ("prune", ["--method", "sparsegpt", "--pattern", "2:4", "--quantize", "W4A16",
               "--group-size", "32"]),
])
def test_streaming_writes_the_in_memory_output_bit_for_bit(arch_dir, verb, argv, request,
                                                            calib_set, tmp_path, capsys):
    model = request.getfixturevalue(arch_dir)
    out, report = both(capsys, tmp_path, model, "--calib", calib_set, *argv, verb=verb)
    name = "model.layers.1.mlp.down_proj.weight"  # 64 inputs
    dense_w = Checkpoint(model).read({name: torch.float32})[name]
    w = Checkpoint(out).read({name: torch.float32})[name]
    assert not torch.equal(w, dense_w)  # the streamed blocks are the compressed ones
    sparsity = report["totals"]["sparsity_in_scope"]
    if verb == "prune":  # joint mode: a kept weight may also round to zero
        assert sparsity == pytest.approx(0.5) if "W4A16" not in argv else 0.5 <= sparsity < 0.51
    if "W4A16" in argv:  # each group of 32 inputs of a row on a grid of 16 levels
        assert max(len(set(g.tolist())) for g in w.reshape(-1, 32)) <= 16


@pytest.mark.parametrize("argv", [
    ["--method", "sparsegpt", "--sparsity", "0.5", "--refine-epochs", "2"],
    ["--method", "sparsegpt", "--sparsity", "0.5", "--dense-targets", "--fp8"],
    ["--method", "sparsegpt", "--pattern", "2:4", "--true-sequential"],
    ["--method", "wanda", "--sparsity", "0.5", "--owl-lambda", "0.1"],
    ["--method", "sparsegpt", "--sparsity", "0.5", "--error-span", "0.1", "--error-step", "0.05"],
])
def test_streaming_and_spilled_activations_serve_every_engine_option(argv, qwen2_dir, calib_set,
                                                                     tmp_path, capsys):
    """Refinement and dense targets (the dense states), the staged true-sequential pass (which
    adds into the block inputs in place), OWL and error-driven allocation (a dense
    pass over every block before pruning, so each block is read twice), FP8 (each block rounded
    before it is written): with every activation in a mapped file, the in-memory bits."""
    _, report = both(capsys, tmp_path, qwen2_dir, "--calib", calib_set, *argv,
                     "--activation-memory", "0")
    memory = report["memory"]
    assert memory["activations_in_memory_mb"] == 0 and memory["activations_spilled_mb"] > 0


def test_magnitude_without_calibration_streams_every_block(llama_dir, tmp_path, capsys):
    out, report = both(capsys, tmp_path, llama_dir, "--method", "magnitude", "--sparsity", "0.25",
                       "--scope", "mlp@0")
    assert {r["layer"] for r in report["layers"]} == {0}
    index = json.loads((out / INDEX).read_text())["weight_map"]
    assert len(set(index.values())) == 3 + 3  # one shard per block, per embedding, norm, head


def test_a_sharded_tied_bf16_checkpoint(toy_tokenizer, calib_set, tmp_path, capsys):
    """The index's weight map, a head tied to the embeddings (written once, as save_pretrained
    does), a bf16 model's rotary tables and casts, and a config that names no dtype."""
    torch.manual_seed(1)
    lm = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(toy_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
        pad_token_id=toy_tokenizer.pad_token_id, eos_token_id=toy_tokenizer.eos_token_id))
    model = tmp_path / "tied"
    lm.to(torch.bfloat16).save_pretrained(model, max_shard_size="20KB")
    toy_tokenizer.save_pretrained(model)
    assert (model / INDEX).exists()
    config = json.loads((model / "config.json").read_text())
    del config["dtype"]  # "auto" then loads the checkpoint's dtype
    (model / "config.json").write_text(json.dumps(config))
    out, _ = both(capsys, tmp_path, model, "--calib", calib_set, "--method", "sparsegpt",
                  "--sparsity", "0.5")
    stored = Checkpoint(out).weight_map
    assert "lm_head.weight" not in stored and "model.embed_tokens.weight" in stored
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_activations_spill_past_the_budget_and_write_through():
    acts = Activations(budget_mb=2 * 4 / 2 ** 20)  # room for two float32 values
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])
    kept, spilled = acts.hold(a), acts.hold(b)
    assert (acts.in_memory, acts.spilled) == (8, 12)
    a.zero_()
    assert kept.tolist() == [1.0, 2.0]  # a copy
    assert spilled.untyped_storage().filename is not None  # file-backed
    spilled.mul_(2)
    assert spilled.tolist() == [6.0, 8.0, 10.0]


def test_a_corrupt_block_leaves_nothing_behind(toy_tokenizer, calib_set, tmp_path, capsys):
    """Block 2 is only read after blocks 0 and 1 were written: the run still fails in one line
    and leaves no output and no temporary directory."""
    model = make_model(tmp_path / "m", "qwen2", toy_tokenizer)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    weights["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out" / "p"
    code, _, err = run(capsys, "prune", model, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", "0.5", "--stream", "--out", out)
    last = err.strip().splitlines()[-1]  # after the progress bar, which reached block 2
    assert code != 0 and last.startswith("rac prune: error:") and "Traceback" not in err
    assert "block 2: weight mlp.up_proj.weight holds NaN or Inf" in last
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--stream", "--fp8-export"], "--fp8-export converts the whole model in memory"),
    (["--stream", "--trust-remote-code"], "drop --trust-remote-code or --stream"),
    (["--spill-dir", "x"], "--spill-dir only applies with --activation-memory MB"),
    (["--activation-memory", "-1"], "--activation-memory -1.0: give 0 or more MB"),
])
def test_what_streaming_refuses_gets_one_line(argv, message, qwen2_dir, calib_set, tmp_path,
                                              capsys):
    out = tmp_path / "p"
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", "0.5", *argv, "--out", out)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_quantize_export_with_stream_is_refused(qwen2_dir, calib_set, tmp_path, capsys):
    code, _, err = run(capsys, "quantize", qwen2_dir, "--calib", calib_set, "--scheme", "W4A16",
                       "--export", "--stream", "--out", tmp_path / "q")
    assert code != 0 and "--export converts the whole model in memory" in err


def test_tensors_are_read_and_copied_slice_by_slice(tmp_path):
    """A shard written a slice at a time (cast on the way, a 0-d tensor and a 1-d one beside a
    2-d one split in many slices) reads back as what safetensors itself wrote."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from rac.checkpoint import ShardWriter

    torch.manual_seed(0)
    src = {"a": torch.randn(37, 5).to(torch.bfloat16), "b": torch.tensor(3.5), "c": torch.randn(9)}
    (tmp_path / "in").mkdir()
    save_file(src, str(tmp_path / "in" / "model.safetensors"))
    ckpt = Checkpoint(tmp_path / "in")
    parts = list(ckpt.slices("a", torch.float32, max_bytes=4 * 5 * 2))
    assert [p.shape[0] for p in parts] == [4] * 9 + [1]
    assert torch.equal(torch.cat(parts), src["a"].float())
    (tmp_path / "out").mkdir()
    writer = ShardWriter(tmp_path / "out", 1)
    seen: list[str] = []
    writer.copy(ckpt, {"a": torch.float32, "b": torch.float32, "c": torch.float64},
                check=lambda t: seen.extend(t), max_bytes=24)
    writer.close()
    assert seen.count("a") == 19 and seen.count("b") == 1  # 2 rows of 10 bytes in 24
    with safe_open(str(tmp_path / "out" / "model-00001-of-00001.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        names = f.keys()
        got = {k: f.get_tensor(k) for k in names}
    assert torch.equal(got["a"], src["a"].float()) and got["b"].shape == ()
    assert got["b"].item() == 3.5 and torch.equal(got["c"], src["c"].double())
    assert writer.total_size == (37 * 5 + 1) * 4 + 9 * 8


@pytest.mark.parametrize("used", [True, False])
def test_a_corrupt_embedding_row_is_refused_where_it_is_read(used, toy_tokenizer, calib_set,
                                                             tmp_path, capsys, monkeypatch):
    """The table is never held whole: a NaN in a row the calibration set uses is refused when
    block 0's inputs are embedded, one in a row it never uses when the table is copied out."""
    from safetensors.torch import load_file, save_file

    from rac import calibset
    from rac.checkpoint import ShardWriter

    model = make_model(tmp_path / "m", "qwen2", toy_tokenizer)
    ids = {i for r in calibset.read(calib_set).rows for i in r.ids}
    row = min(ids) if used else min(set(range(len(toy_tokenizer))) - ids)
    weights = load_file(str(model / "model.safetensors"))
    weights["model.embed_tokens.weight"][row, 0] = float("nan")
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    copied: list[str] = []
    copy = ShardWriter.copy
    monkeypatch.setattr(ShardWriter, "copy", lambda self, ckpt, dtypes, *a, **k: (
        copied.extend(dtypes), copy(self, ckpt, dtypes, *a, **k))[1])
    out = tmp_path / "out" / "p"
    code, _, err = run(capsys, "prune", model, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", "0.5", "--stream", "--out", out)
    last = err.strip().splitlines()[-1]
    assert code != 0 and "model.embed_tokens.weight holds NaN or Inf" in last
    assert copied == ([] if used else ["model.embed_tokens.weight"])
    assert list((tmp_path / "out").iterdir()) == []


def _model(path, tok, layers: int, vocab: int):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=512, num_hidden_layers=layers, num_attention_heads=8,
        num_key_value_heads=2, intermediate_size=1024, tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_streaming_peak_memory_is_one_block_not_the_model(toy_tokenizer, calib_set, tmp_path):
    """Each run in a fresh process. A model of 24 blocks of 8.6 MB (fp32, hidden 512, MLP 1024)
    with an embedding and an untied head of 50,000 words (98 MB each), 400 MB in all, against the
    same model with 1 block and the tokenizer's own vocabulary: streamed, the peak grows by less
    than a quarter of the big model's weights (measured: 51 MB of 399), so neither the blocks
    nor the embedding nor the head are ever held whole; in memory it grows by more than them."""
    big = _model(tmp_path / "big", toy_tokenizer, 24, 50_000)
    small = _model(tmp_path / "small", toy_tokenizer, 1, len(toy_tokenizer))
    weights_mb = sum(f.stat().st_size for f in big.glob("*.safetensors")) / 2 ** 20
    assert weights_mb > 390

    def peak(model, *extra):
        return measure(["prune", str(model), "--calib", str(calib_set), "--method", "sparsegpt",
                        "--sparsity", "0.5", *extra, "--out", str(tmp_path / f"{model.name}{extra}")])

    base, streamed, memory = peak(small, "--stream"), peak(big, "--stream"), peak(big)
    assert streamed.peak_mb - base.peak_mb < weights_mb / 4, (base, streamed, weights_mb)
    assert memory.peak_mb - base.peak_mb > weights_mb, (base, memory, weights_mb)
    assert differing(tmp_path / "big()", tmp_path / "big('--stream',)") == []


def test_an_embedding_that_does_not_match_is_refused(toy_tokenizer, calib_set, tmp_path, capsys):
    """The table is not loaded, so its shape is checked against the config where the load
    checked it; a token id past the table is refused, never read from uninitialised memory."""
    from rac.prune.stream import streamed_model

    model = make_model(tmp_path / "m", "qwen2", toy_tokenizer)
    _, store = streamed_model(model, tmp_path / "o1")
    embed = store.embedder()
    with pytest.raises(RacError, match=f"token id {10 ** 6} is outside the model's "):
        next(embed([torch.tensor([[1, 2]]), torch.tensor([[3, 10 ** 6]])]))
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] += 64
    (model / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "prune", model, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", "0.5", "--stream", "--out", tmp_path / "o2")
    assert code != 0 and len(err.strip().splitlines()) == 1
    rows = len(toy_tokenizer)
    assert f"weight is [{rows}, 32] in the checkpoint but [{rows + 64}, 32] in the config" in err
