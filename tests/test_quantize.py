"""`rac quantize` and `rac prune --quantize` through the engine on a tiny random Qwen2: the saved
weights on their grids, the report, the compressed-tensors export round trip, and one-line
refusals of what would not be what is evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rac.prune.config import PruneConfig, QuantConfig
from rac.prune.masks import Target
from rac.prune.quant_grid import Grid, GridParams
from tests.conftest import reference_set, run

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def calib_set(qwen2_dir, tmp_path_factory):
    return reference_set(qwen2_dir, tmp_path_factory.mktemp("c"), 40, 600)


def exported(path) -> dict[str, tuple[torch.Tensor, GridParams]]:
    """Each quantized linear of a compressed-tensors checkpoint: its codes (unpacked from int32)
    and its grid, read from the safetensors file as stored."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors import safe_open

    cfg = json.loads((path / "config.json").read_text())["quantization_config"]
    (group,) = cfg["config_groups"].values()
    bits, sym = group["weights"]["num_bits"], group["weights"]["symmetric"]
    out = {}
    with safe_open(str(next(path.glob("*.safetensors"))), "pt") as f:
        stored = list(f.keys())
        for key in (k for k in stored if k.endswith(".weight_packed")):
            name = key.removesuffix(".weight_packed")
            shape = f.get_tensor(f"{name}.weight_shape")
            scale = f.get_tensor(f"{name}.weight_scale")
            codes = unpack_from_int32(f.get_tensor(key), bits, shape)
            zero = (torch.zeros_like(scale, dtype=torch.int8) if sym else unpack_from_int32(
                f.get_tensor(f"{name}.weight_zero_point"), bits, scale.shape, packed_dim=0))
            out[name] = (codes, GridParams(scale, zero.to(torch.int8)))
    return out


def check_round_trip(out, scheme: str, grid: Grid, n_layers: int) -> torch.nn.Module:
    """The export holds the codes of the saved weights, and compressed-tensors decompresses it to
    exactly the weights rac saved (and evaluated); the rest of the model is unchanged."""
    from transformers import CompressedTensorsConfig

    saved = AutoModelForCausalLM.from_pretrained(out)
    export = out / f"{scheme.lower()}-compressed-tensors"
    stored = exported(export)
    assert len(stored) == n_layers * len(LINEARS) and not any("lm_head" in n for n in stored)
    for name, (codes, params) in stored.items():
        w = saved.get_submodule(name).weight
        assert codes.min() >= grid.q_min and codes.max() <= grid.q_max
        assert torch.equal(params.codes(grid, w).to(codes.dtype), codes), name
        assert torch.equal(grid.dequantize(codes.float(), *params.per_column(grid)).to(w.dtype),
                           w), name
    back = AutoModelForCausalLM.from_pretrained(
        export, quantization_config=CompressedTensorsConfig(dequantize=True))
    for name, p in saved.state_dict().items():
        assert torch.equal(back.state_dict()[name], p), name
    return saved


def test_rac_quantize_writes_weights_on_their_grids_and_an_exact_export(qwen2_dir, calib_set,
                                                                        tmp_path, capsys):
    pytest.importorskip("compressed_tensors", reason="the llmcompressor extra is not installed")
    out = tmp_path / "q"
    code, stdout, err = run(capsys, "quantize", qwen2_dir, "--calib", calib_set, "--scheme",
                            "W4A16", "--group-size", "16", "--asym", "--export", "--out", out)
    assert code == 0, err
    assert "with GPTQ to W4A16 (groups of 16, asymmetric)" in stdout
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "gptq" and report["target"] == "0"
    assert report["quantization"] == {"scheme": "W4A16", "group_size": 16, "sym": False,
                                      "actorder": False, "bits": 4,
                                      "activations": "unquantized (the model's dtype)",
                                      "export": "w4a16-compressed-tensors"}
    assert all(0 < r["relative_error"] < 0.05 for r in report["layers"])
    saved = check_round_trip(out, "W4A16", Grid(4, 16, sym=False), n_layers=3)
    dense = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    assert torch.equal(saved.lm_head.weight, dense.lm_head.weight)
    assert torch.equal(saved.model.embed_tokens.weight, dense.model.embed_tokens.weight)
    w, d = saved.model.layers[1].mlp.down_proj.weight, dense.model.layers[1].mlp.down_proj.weight
    assert not torch.equal(w, d) and torch.allclose(w, d, atol=0.05)


def test_prune_and_quantize_in_one_pass(qwen2_dir, calib_set, tmp_path, capsys):
    pytest.importorskip("compressed_tensors", reason="the llmcompressor extra is not installed")
    out = tmp_path / "pq"
    code, stdout, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method",
                            "sparsegpt", "--pattern", "2:4", "--quantize", "W4A16",
                            "--group-size", "16", "--true-sequential", "--export", "--out", out)
    assert code == 0, err
    assert "to 2:4 and W4A16 (groups of 16, symmetric)" in stdout
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "sparsegpt" and report["quantization"]["bits"] == 4
    saved = check_round_trip(out, "W4A16", Grid(4, 16), n_layers=3)
    for block in saved.model.layers:
        for name in LINEARS:
            w = block.get_submodule(name).weight
            assert torch.all((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2), name


def test_refinement_keeps_the_grids_and_the_pattern(qwen2_dir, calib_set, tmp_path, capsys):
    """--recipe best on a 2:4 + 4-bit model: the refined weights are still codes of the grids
    the export stores, every group keeps its pattern (pruned weights stay zero; kept weights
    coded zero too), and the refinement moved weights (from one code to another), keeping the
    epoch that lowered the block's loss. Quantized without pruning, zero codes are trained too."""
    pytest.importorskip("compressed_tensors", reason="the llmcompressor extra is not installed")
    outs = {}
    best = ["--recipe", "best", "--refine-epochs", "4", "--refine-lr", "0.05"]
    for name, extra in (("plain", []), ("best", best)):
        outs[name] = tmp_path / name
        code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method",
                           "sparsegpt", "--pattern", "2:4", "--quantize", "W4A16", "--group-size",
                           "16", *extra, "--export", "--out", outs[name])
        assert code == 0, err
    saved = check_round_trip(outs["best"], "W4A16", Grid(4, 16), n_layers=3)
    plain = AutoModelForCausalLM.from_pretrained(outs["plain"])
    moved = 0
    for i, (block, before) in enumerate(zip(saved.model.layers, plain.model.layers)):
        for name in LINEARS:
            w, w0 = block.get_submodule(name).weight, before.get_submodule(name).weight
            assert torch.all((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2), name
            if i == 0:  # the same inputs, so the same mask before the refinement
                assert torch.all(w[w0 == 0] == 0), name  # pruned (and zero-coded) stay zero
                moved += int((w != w0).sum())
    assert moved > 0
    report = json.loads((outs["best"] / "prune_report.json").read_text())
    losses = {r["layer"]: r["block_refine_loss"] for r in report["layers"]}
    # measured before and after each epoch; block 0 kept a better epoch's weights (it moved)
    assert len(losses) == 3 and all(len(loss) == 5 for loss in losses.values())
    assert min(losses[0][1:]) < losses[0][0], losses
    for name, extra in (("q", []), ("qbest", best)):
        outs[name] = tmp_path / name
        code, _, err = run(capsys, "quantize", qwen2_dir, "--calib", calib_set, "--scheme",
                           "W4A16", "--group-size", "16", *extra, "--export", "--out", outs[name])
        assert code == 0, err
    check_round_trip(outs["qbest"], "W4A16", Grid(4, 16), n_layers=3)
    # block 0 (the same inputs in both runs) changed iff an epoch measured below the start
    loss = next(r["block_refine_loss"] for r in json.loads(
        (outs["qbest"] / "prune_report.json").read_text())["layers"] if r["layer"] == 0)
    blocks = [AutoModelForCausalLM.from_pretrained(outs[n]).model.layers[0] for n in ("qbest", "q")]
    same = all(torch.equal(blocks[0].get_submodule(n).weight, blocks[1].get_submodule(n).weight)
               for n in LINEARS)
    assert same == (min(loss[1:]) >= loss[0]), loss


def bf16_copy(model: Path, out: Path) -> Path:
    """``model`` saved in bfloat16 at ``out``, with its tokenizer and rac settings."""
    AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).save_pretrained(out)
    for f in model.glob("*"):
        if "token" in f.name or f.name == "rac_model.json":
            (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.mark.parametrize("verb", [["quantize", "--scheme", "W4A16", "--group-size", "16"],
                                  ["prune", "--method", "sparsegpt", "--pattern", "2:4"]])
def test_dtype_runs_the_model_as_a_checkpoint_of_that_dtype_would(qwen2_dir, calib_set, tmp_path,
                                                                  capsys, verb):
    """--dtype bfloat16 on a float32 checkpoint is the very run of its bf16 copy, bit for bit, and
    --dtype float32 on the bf16 copy that of the float32 checkpoint made from it."""
    bf16 = bf16_copy(qwen2_dir, tmp_path / "bf16")
    up = tmp_path / "up"  # the bf16 weights in float32: what --dtype float32 reads from bf16
    AutoModelForCausalLM.from_pretrained(bf16, dtype=torch.float32).save_pretrained(up)
    for f in bf16.glob("*"):
        if not (up / f.name).exists():
            (up / f.name).write_bytes(f.read_bytes())
    outs = {}
    for name, model, extra in (("cast", qwen2_dir, ["--dtype", "bfloat16"]), ("bf16", bf16, []),
                               ("widened", bf16, ["--dtype", "float32"]), ("up", up, [])):
        outs[name] = tmp_path / f"o-{name}"
        code, _, err = run(capsys, verb[0], model, "--calib", calib_set, *verb[1:], *extra,
                           "--out", outs[name])
        assert code == 0, err
    for ours, theirs, dtype in (("cast", "bf16", torch.bfloat16), ("widened", "up", torch.float32)):
        report = json.loads((outs[ours] / "prune_report.json").read_text())
        assert report["dtype"] == str(dtype).removeprefix("torch.")
        a, b = (AutoModelForCausalLM.from_pretrained(outs[n]).state_dict() for n in (ours, theirs))
        assert a.keys() == b.keys()
        assert all(a[k].dtype == dtype and torch.equal(a[k], b[k]) for k in a), ours


def test_bf16_8_bit_per_channel_export_round_trip(qwen2_dir, calib_set, tmp_path, capsys):
    """In bf16 the scales are stored in bf16 and the dequantized weights are bf16 products: the
    export still decompresses to exactly the saved weights."""
    pytest.importorskip("compressed_tensors", reason="the llmcompressor extra is not installed")
    bf16 = bf16_copy(qwen2_dir, tmp_path / "bf16")
    out = tmp_path / "q8"
    code, _, err = run(capsys, "quantize", bf16, "--calib", calib_set, "--scheme", "W8A16",
                       "--group-size", "channel", "--actorder", "--export", "--out", out)
    assert code == 0, err
    saved = check_round_trip(out, "W8A16", Grid(8, None), n_layers=3)
    assert saved.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    cfg = json.loads((out / "w8a16-compressed-tensors" / "config.json").read_text())
    (group,) = cfg["quantization_config"]["config_groups"].values()
    assert group["weights"]["strategy"] == "channel" and group["weights"]["actorder"] == "weight"


def test_per_channel_activation_order_with_dense_targets(qwen2_dir, calib_set, tmp_path, capsys):
    out = tmp_path / "ao"
    code, _, err = run(capsys, "quantize", qwen2_dir, "--calib", calib_set, "--scheme", "W3A16",
                       "--group-size", "channel", "--actorder", "--scope", "mlp@0",
                       "--dense-targets", "--out", out)
    assert code == 0, err
    report = json.loads((out / "prune_report.json").read_text())
    assert report["quantization"]["group_size"] is None and report["quantization"]["actorder"]
    assert report["dense_targets"]
    assert [r["name"] for r in report["layers"]] == list(LINEARS[4:])
    saved = AutoModelForCausalLM.from_pretrained(out)
    dense = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    # 3 bits symmetric per row: at most 8 distinct values (codes -4 .. 3), and not all rows
    # use at most 7 (the grid keeps code -4)
    w = saved.model.layers[0].mlp.gate_proj.weight
    distinct = [len(torch.unique(row)) for row in w]
    assert max(distinct) == 8
    assert torch.equal(saved.model.layers[1].mlp.gate_proj.weight,
                       dense.model.layers[1].mlp.gate_proj.weight)  # out of scope


@pytest.mark.parametrize("flags,needle", [
    (["quantize", "--scheme", "W5A16"], "scheme 'W5A16' unknown"),
    (["quantize", "--scheme", "W4A8"], "W4A8 (int4 weights, int8 activations) is not supported"),
    (["quantize", "--scheme", "W8A8", "--group-size", "16"], "one symmetric scale per output"),
    (["quantize", "--scheme", "W8A8", "--asym"], "one symmetric scale per output"),
    (["quantize", "--scheme", "W8A8", "--export"], "compressed-tensors checkpoint already"),
    (["quantize", "--scheme", "W8A8", "--stream"], "drop --stream"),
    (["quantize", "--scheme", "W4A16", "--group-size", "0"], "not a group size"),
    (["quantize", "--scheme", "W4A16", "--group-size", "12"], "do not divide 32 inputs"),
    (["quantize", "--scheme", "W3A16", "--group-size", "16", "--export"], "4- or 8-bit"),
    (["prune", "--method", "sparsegpt", "--pattern", "2:4", "--quantize", "W4A16",
      "--group-size", "16", "--actorder"], "N:M"),
    (["prune", "--method", "wanda", "--sparsity", "0.5", "--quantize", "W4A16"],
     "needs --method sparsegpt"),
    (["prune", "--method", "sparsegpt", "--sparsity", "0.5", "--quantize", "W4A16", "--fp8"],
     "not both"),
    (["prune", "--method", "sparsegpt", "--sparsity", "0.5", "--export"], "--fp8-export"),
    (["prune", "--method", "sparsegpt", "--sparsity", "0.5", "--group-size", "16", "--asym"],
     "--group-size, --sym/--asym only apply with --quantize"),
    (["quantize", "--scheme", "W8A8", "--refine-epochs", "2"], "does not simulate the int8"),
    (["quantize", "--scheme", "W8A8", "--recipe", "best"], "--recipe best) with W8A8"),
    (["prune", "--method", "sparsegpt", "--sparsity", "0.5", "--quantize", "W4A16",
      "--scope", "attn"], "--scope all"),
    (["prune", "--method", "sparsegpt", "--sparsity", "0.5", "--dtype", "bfloat16", "--stream"],
     "streamed blocks keep the checkpoint's dtype"),
])
def test_what_would_not_be_evaluated_is_refused_in_one_line(qwen2_dir, calib_set, tmp_path,
                                                            capsys, flags, needle):
    verb, *rest = flags
    out = tmp_path / "o"
    code, _, err = run(capsys, verb, qwen2_dir, "--calib", calib_set, *rest, "--out", out)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_configs_refuse_what_does_not_apply():
    quant = QuantConfig("W4A16", 16)
    with pytest.raises(ValueError, match="without pruning"):
        PruneConfig("gptq", Target(0.5), quant=quant)
    with pytest.raises(ValueError, match="without pruning"):
        PruneConfig("gptq", Target())
    with pytest.raises(ValueError, match="share out sparsity"):
        PruneConfig("gptq", Target(), quant=quant, owl_lambda=0.1)
    with pytest.raises(ValueError, match="GPTQ also"):
        PruneConfig("gptq", Target(), quant=quant, mask_swaps=2)
    assert QuantConfig("W8A16", None).grid == Grid(8, None, True)
    assert PruneConfig("gptq", Target(), quant=quant, dense_targets=True).dense_targets


def test_later_blocks_are_calibrated_on_the_quantized_blocks(qwen2_dir, calib_set, monkeypatch):
    """Block 1's statistics come from inputs that went through the *quantized* block 0 (padding
    masked): recompute them from the final quantized model and from the dense one."""
    import rac.prune.engine as engine
    from rac import calibset, models
    from rac.prune.batches import make_batches
    from rac.prune.config import Scope
    from rac.prune.forward import feed
    from rac.prune.stats import LayerStats

    tok = models.load_tokenizer(qwen2_dir)
    batches = make_batches(calibset.read(calib_set).rows, tok.pad_token_id, {}, max_tokens=300)
    seen: list[torch.Tensor] = []
    real = engine.prune_weights

    def spy(Ws, stats, cfg):
        seen.append(stats.H.clone())
        return real(Ws, stats, cfg)

    monkeypatch.setattr(engine, "prune_weights", spy)
    lm = models.load_model(qwen2_dir)
    engine.prune_model(lm, models.decoder_blocks(lm), batches,
                       PruneConfig("gptq", Target(), Scope("attn", "0-1"),
                                   quant=QuantConfig("W3A16", 16)), progress=False)

    def h_block1_q(model) -> torch.Tensor:
        stats = LayerStats(model.config.hidden_size, "cpu")
        for b in batches:
            handle = model.model.layers[1].self_attn.q_proj.register_forward_pre_hook(
                lambda m, a, b=b: feed(stats, a[0], b.weight.reshape(-1)))
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            handle.remove()
        return stats.H

    with torch.no_grad():
        H_quantized, H_dense = h_block1_q(lm), h_block1_q(models.load_model(qwen2_dir))
    # hooks in order: block 0 q/k/v, o, then block 1 q/k/v
    assert torch.allclose(seen[2], H_quantized, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(seen[2], H_dense, rtol=1e-3, atol=1e-3)


def test_w8a8_runs_with_int8_activations_per_token_as_saved(qwen2_dir, calib_set, tmp_path, capsys):
    """W8A8: GPTQ to int8 weights per channel, saved as the compressed-tensors checkpoint whose
    config quantizes every quantized linear's input to int8 per token as it runs. Loaded back with
    plain transformers, the model's logits equal, exactly, those of its int8 weights dequantized
    with every such input rounded by hand (scale max |x| / 127.5 per token); they differ from the
    weights-only model, so the activations are quantized, and `rac eval` evaluates it so."""
    pytest.importorskip("compressed_tensors", reason="the llmcompressor extra is not installed")
    out = tmp_path / "w8a8"
    code, stdout, err = run(capsys, "quantize", qwen2_dir, "--calib", calib_set, "--scheme", "W8A8",
                            "--out", out)
    assert code == 0, err
    assert "W8A8 (per channel, symmetric, int8 activations per token)" in stdout
    report = json.loads((out / "prune_report.json").read_text())
    assert report["quantization"]["activations"].startswith("int8 per token, dynamic")
    (group,) = json.loads((out / "config.json").read_text())["quantization_config"][
        "config_groups"].values()
    assert group["input_activations"]["strategy"] == "token" and group["input_activations"]["dynamic"]
    assert group["weights"]["strategy"] == "channel" and group["format"] == "int-quantized"
    ran = AutoModelForCausalLM.from_pretrained(out).eval()
    weights = {n: m.weight for n, m in ran.named_modules() if hasattr(m, "weight_scale")}
    assert len(weights) == 3 * len(LINEARS) and all(w.dtype == torch.int8 for w in weights.values())
    plain = AutoModelForCausalLM.from_pretrained(qwen2_dir).eval()
    with torch.no_grad():
        for name, w in weights.items():
            scale = ran.get_submodule(name).weight_scale
            plain.get_submodule(name).weight.copy_(w.float() * scale.float())

    def int8_per_token(module, inputs):
        x = inputs[0]
        s = (x.abs().amax(-1, keepdim=True) / 127.5).clamp(min=torch.finfo(x.dtype).tiny)
        return (torch.round(x / s).clamp(-128, 127) * s,)

    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = ran(ids).logits
        weights_only = plain(ids).logits
        hooks = [plain.get_submodule(n).register_forward_pre_hook(int8_per_token) for n in weights]
        want = plain(ids).logits
        for h in hooks:
            h.remove()
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert (got - weights_only).abs().max() > 1e-3
    assert run(capsys, "problems", "--n", 2, "--out", tmp_path / "p.jsonl")[0] == 0
    code, _, err = run(capsys, "eval", out, "--problems", tmp_path / "p.jsonl", "--out",
                       tmp_path / "e")
    assert code == 0, err
