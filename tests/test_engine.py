"""Phase II: the block-by-block engine on tiny random Qwen2 and Llama models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rac import models
from rac.calibrate import calib
from rac.cli import main
from rac.prune.engine import PruneConfig, Scope, make_batches, prune_model
from rac.prune.masks import Target
from rac.prune.stats import LayerStats


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def calib_set(qwen2_dir, tmp_path_factory):
    """A packed set with a padded last window, so padding is present and must be ignored."""
    d = tmp_path_factory.mktemp("c")
    problems = d / "p.jsonl"
    assert main(["problems", "--n", "60", "--split", "calib", "--out", str(problems)]) == 0
    assert main(["calib", "--source", "reference", "--tokenizer", str(qwen2_dir), "--problems",
                 str(problems), "--budget-tokens", "1000", "--pack", "96", "--out",
                 str(d / "set")]) == 0
    return d / "set"


def rows_of(path):
    ds, _ = calib.load(path)
    return list(zip(ds["input_ids"], ds["attention_mask"], ds["segment"]))


def weights(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.state_dict().items()}


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
@pytest.mark.parametrize("method,target", [("sparsegpt", "0.5"), ("wanda", "2:4"),
                                           ("magnitude", "0.3")])
def test_targets_reached_others_untouched_and_reloadable(arch_dir, method, target, request,
                                                         calib_set, tmp_path, capsys):
    model = request.getfixturevalue(arch_dir)
    before = weights(models.load_model(model))
    flag = ["--pattern", target] if ":" in target else ["--sparsity", target]
    out = tmp_path / "pruned"
    code, stdout, err = run(capsys, "prune", model, "--calib", calib_set, "--method", method,
                            *flag, "--scope", "mlp@0,2", "--out", out)
    assert code == 0, err
    lm = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no rac involved
    after = weights(lm)
    report = json.loads((out / "prune_report.json").read_text())
    pruned = {f"model.layers.{r['layer']}.{r['name']}.weight" for r in report["layers"]}
    assert pruned == {f"model.layers.{i}.mlp.{p}_proj.weight" for i in (0, 2)
                      for p in ("gate", "up", "down")}
    for name, w in after.items():
        if name in pruned:
            if ":" in target:
                assert torch.all((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2)
            assert float((w == 0).float().mean()) == pytest.approx(float(target) if ":" not in
                                                                    target else 0.5, abs=1e-3)
        else:
            assert torch.equal(w, before[name]), name
    ids = torch.tensor([[3, 4, 5]])
    assert lm.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 7)
    if method != "magnitude":
        assert all(r["relative_error"] is not None and r["tokens"] > 0 for r in report["layers"])


def test_propagation_uses_the_pruned_blocks_and_masks_padding(qwen2_dir, calib_set):
    """The statistics of block 1 must come from inputs that went through the *pruned* block 0,
    over unmasked tokens only: recompute them from the final pruned model and compare."""
    tok = models.load_tokenizer(qwen2_dir)
    lm = models.load_model(qwen2_dir)
    rows = rows_of(calib_set)
    assert any(0 in m for _, m, _ in rows)  # the set has padding
    batches = make_batches(rows, tok.pad_token_id, {}, max_tokens=300)
    seen: dict = {}
    import rac.prune.engine as engine

    real = engine.prune_weights

    def spy(Ws, stats, cfg):
        seen.setdefault(len(seen), stats.H.clone())
        return real(Ws, stats, cfg)

    engine.prune_weights = spy
    try:
        prune_model(lm, models.decoder_blocks(lm), batches,
                    PruneConfig("sparsegpt", Target(0.5), Scope("attn", "0-1")), progress=False)
    finally:
        engine.prune_weights = real
    # spy order, one call per group: block 0 q/k/v, o, then block 1 q/k/v, o
    H_engine = seen[2]

    def h_block1_q(model) -> torch.Tensor:
        stats = LayerStats(model.config.hidden_size, "cpu")
        q = model.model.layers[1].self_attn.q_proj
        handle = q.register_forward_pre_hook(
            lambda m, a: stats.add(a[0].reshape(-1, a[0].shape[-1])[current.reshape(-1) > 0]))
        for ids, mask, _ in rows:
            current = torch.tensor([mask])
            model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask]))
        handle.remove()
        return stats.H

    with torch.no_grad():
        H_pruned = h_block1_q(lm)
        H_dense = h_block1_q(models.load_model(qwen2_dir))
    assert torch.allclose(H_engine, H_pruned, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(H_engine, H_dense, rtol=1e-3, atol=1e-3)


def test_true_sequential_differs_and_still_hits_the_target(qwen2_dir, calib_set):
    tok = models.load_tokenizer(qwen2_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {})
    results = []
    for seq in (False, True):
        lm = models.load_model(qwen2_dir)
        report = prune_model(lm, models.decoder_blocks(lm), batches,
                             PruneConfig("sparsegpt", Target(0.5), true_sequential=seq),
                             progress=False)
        assert all(r["sparsity"] == pytest.approx(0.5, abs=1e-3) for r in report)
        results.append(lm.model.layers[1].mlp.down_proj.weight.clone())
    assert not torch.equal(*results)


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
@pytest.mark.parametrize("scope", ["all", "mlp@1", "attn@0,2"])
def test_staged_true_sequential_equals_one_pass_per_group(arch_dir, scope, request, calib_set,
                                                          monkeypatch):
    """The staged single pass computes what one forward pass per sublayer group computes."""
    import rac.prune.engine as engine

    model = request.getfixturevalue(arch_dir)
    tok = models.load_tokenizer(model)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {}, max_tokens=300)
    assert len(batches) > 1
    cfg = PruneConfig("sparsegpt", Target(0.5), Scope.parse(scope), true_sequential=True)
    outs = []
    for staged in (True, False):
        if not staged:
            monkeypatch.setattr(engine, "staged_forward_matches", lambda *a: False)
        lm = models.load_model(model)
        report = prune_model(lm, models.decoder_blocks(lm), batches, cfg, progress=False)
        outs.append((weights(lm), [(r["layer"], r["name"], r["tokens"]) for r in report]))
    (w_staged, r_staged), (w_multi, r_multi) = outs
    assert r_staged == r_multi
    for k in w_staged:
        assert torch.equal(w_staged[k], w_multi[k]), k


def test_staged_forward_refuses_a_block_of_another_form(llama_dir, calib_set, capsys):
    """A block that computes something else than the Llama/Qwen2 form is never staged."""
    from rac.prune.engine import capture_block_inputs, staged_forward_matches

    lm = models.load_model(llama_dir)
    tok = models.load_tokenizer(llama_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {})
    block = lm.model.layers[0]
    state = capture_block_inputs(lm, lm.model.layers, batches[:1], "cpu")[0]
    assert staged_forward_matches(block, state, "cpu")

    class Scaled(type(block)):  # e.g. an extra norm or a scaled residual
        def forward(self, *args, **kwargs):
            return 2 * super().forward(*args, **kwargs)

    block.__class__ = Scaled
    assert not staged_forward_matches(block, state, "cpu")
    assert "one forward pass per sublayer group" in capsys.readouterr().out


def test_segment_weights_change_the_statistics(qwen2_dir, tmp_path):
    tok = models.load_tokenizer(qwen2_dir)
    rows = [([3, 4, 5, 6, 7, 8], [1] * 6, [0, 0, 0, 1, 1, 1])]
    plain = make_batches(rows, tok.pad_token_id, {})[0]
    weighted = make_batches(rows, tok.pad_token_id, {1: 2.0})[0]
    assert plain.weight.tolist() == [[1.0] * 6]
    assert weighted.weight.tolist() == [[1.0, 1, 1, 2, 2, 2]]


def test_scopes():
    assert Scope.parse("all").layer_indices(9) == list(range(9))
    assert Scope.parse("mlp@first-third").layer_indices(9) == [0, 1, 2]
    assert Scope.parse("all@first-last-third").layer_indices(9) == [0, 1, 2, 6, 7, 8]
    assert Scope.parse("attn@0-2,5").layer_indices(9) == [0, 1, 2, 5]
    assert Scope.parse("attn").names() == ("self_attn.q_proj", "self_attn.k_proj",
                                           "self_attn.v_proj", "self_attn.o_proj")
    with pytest.raises(ValueError, match="do not exist"):
        Scope.parse("all@7-9").layer_indices(4)
    with pytest.raises(ValueError, match="unknown"):
        Scope.parse("ffn")
    with pytest.raises(ValueError, match="unknown"):
        Scope.parse("all@a-b")


def test_fp8_keeps_zeros_and_is_close(qwen2_dir, calib_set, tmp_path, capsys):
    from rac.prune.quant import fp8_per_channel

    W = torch.randn(8, 16)
    W[W.abs() < 0.5] = 0
    Wq, scale = fp8_per_channel(W)
    assert torch.equal(Wq == 0, W == 0)
    assert torch.allclose(Wq, W, rtol=0.07, atol=1e-6)
    assert scale.shape == (8,)
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--pattern", "2:4", "--fp8", "--out", tmp_path / "fp8")
    assert code == 0, err
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "fp8")
    w = lm.model.layers[0].mlp.up_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    # every kept value lies on the row's FP8 grid
    row = w[0][w[0] != 0]
    s = w[0].abs().max() / 448
    assert torch.allclose((row / s).to(torch.float8_e4m3fn).float() * s, row)


def test_bad_prune_inputs_leave_nothing_behind(qwen2_dir, llama_dir, calib_set, tmp_path, capsys):
    other = tmp_path / "other_calib"
    from tests.conftest import make_model

    cases = [
        (["--method", "sparsegpt", "--sparsity", 1.5], "sparsity must be in [0, 1)"),
        (["--method", "sparsegpt", "--sparsity", -0.1], "sparsity must be in [0, 1)"),
        (["--method", "sparsegpt", "--pattern", "3:2"], "impossible"),
        (["--method", "sparsegpt", "--pattern", "two:four"], "malformed"),
        (["--method", "sparsegpt", "--pattern", "2:4", "--sparsity", 0.5], "not both"),
        (["--method", "sparsegpt"], "--sparsity"),
        (["--method", "sparsegpt", "--sparsity", 0.5, "--scope", "all@5-6"], "do not exist"),
        (["--method", "sparsegpt", "--sparsity", 0.5, "--scope", "conv"], "unknown"),
        (["--method", "sparsegpt", "--sparsity", 0.5, "--segment-weights", "thought=2"],
         "segment must be"),
        (["--method", "sparsegpt", "--sparsity", 0.5, "--pattern", "3:8"], "not both"),
    ]
    for flags, needle in cases:
        code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--out",
                           tmp_path / "o", *flags)
        assert code == 2 and needle in err and "Traceback" not in err, (flags, err)
        assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "prune", qwen2_dir, "--method", "wanda", "--sparsity", 0.5,
                       "--out", tmp_path / "o")
    assert code == 2 and "needs --calib" in err
    # a calibration set made for another tokenizer
    from rac.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.add_tokens(["<extra>"])
    foreign = make_model(tmp_path / "foreign", "qwen2", tok)
    assert main(["calib", "--source", "generic", "--tokenizer", str(foreign), "--text",
                 str(_text(tmp_path)), "--budget-tokens", "50", "--out", str(other)]) == 0
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", other, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--out", tmp_path / "o")
    assert code == 2 and "another model" in err
    # a pattern that does not divide the input width (32 columns, groups of 7)
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--pattern", "3:7", "--out", tmp_path / "o")
    assert code == 2 and "groups of 7" in err
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def _text(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\n\n".join(f"Ann paid {i} dollars." for i in range(50)))
    return f


def test_nan_statistics_are_refused(qwen2_dir, calib_set, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "inf"
    shutil.copytree(qwen2_dir, broken)
    w = load_file(broken / "model.safetensors")
    w["model.layers.0.self_attn.v_proj.weight"] *= 1e25  # finite weights; o_proj inputs overflow H
    save_file(w, broken / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run(capsys, "prune", broken, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--out", tmp_path / "o")
    assert code == 2 and "NaN or Inf" in err
    assert not (tmp_path / "o").exists()


def test_fp8_export_in_compressed_tensors_format(qwen2_dir, calib_set, tmp_path, capsys):
    pytest.importorskip("llmcompressor", reason="the llmcompressor extra is not installed")
    from safetensors import safe_open

    out = tmp_path / "fp8"
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--pattern", "2:4", "--fp8-export", "--out", out)
    assert code == 0, err
    exported = out / "fp8-compressed-tensors"
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "compressed-tensors"
    dense = AutoModelForCausalLM.from_pretrained(out)
    with safe_open(str(next(exported.glob("*.safetensors"))), "pt") as f:
        name = "model.layers.0.mlp.up_proj"
        q = f.get_tensor(f"{name}.weight")
        scale = f.get_tensor(f"{name}.weight_scale")
    assert q.dtype == torch.float8_e4m3fn
    # the exported grid is exactly the one rac evaluated on the CPU
    w = dense.model.layers[0].mlp.up_proj.weight
    assert torch.allclose(q.float() * scale.float().reshape(-1, 1), w, rtol=1e-6, atol=1e-8)
    assert torch.equal(q.float() == 0, w == 0)
