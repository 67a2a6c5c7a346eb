"""Phase II: the block-by-block engine on tiny random Qwen2 and Llama models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rac import calibset, models
from rac.cli import main
from rac.prune.batches import make_batches
from rac.prune.config import PruneConfig, Scope
from rac.prune.engine import prune_model
from rac.prune.masks import Target
from rac.prune.stats import LayerStats
from tests.conftest import reference_set, run


@pytest.fixture(scope="module")
def calib_set(qwen2_dir, tmp_path_factory):
    """A packed set with a padded last window, so padding is present and must be ignored."""
    return reference_set(qwen2_dir, tmp_path_factory.mktemp("c"), 60, 1000)


def rows_of(path):
    return calibset.read(path).rows


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
    assert any(0 in r.mask for r in rows)  # the set has padding
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
        for r in rows:
            current = torch.tensor([r.mask])
            model(input_ids=torch.tensor([r.ids]), attention_mask=torch.tensor([r.mask]))
        handle.remove()
        return stats.H

    with torch.no_grad():
        H_pruned = h_block1_q(lm)
        H_dense = h_block1_q(models.load_model(qwen2_dir))
    assert torch.allclose(H_engine, H_pruned, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(H_engine, H_dense, rtol=1e-3, atol=1e-3)


def _block_sparsities(report) -> list[float]:
    zeros: dict[int, float] = {}
    sizes: dict[int, int] = {}
    for r in report:
        n = r.shape[0] * r.shape[1]
        zeros[r.layer] = zeros.get(r.layer, 0.0) + r.sparsity * n
        sizes[r.layer] = sizes.get(r.layer, 0) + n
    return [zeros[i] / sizes[i] for i in sorted(sizes)]


def test_owl_moves_sparsity_between_blocks_at_the_same_total(qwen2_dir, calib_set):
    tok = models.load_tokenizer(qwen2_dir)
    lm = models.load_model(qwen2_dir)
    report = prune_model(lm, models.decoder_blocks(lm),
                         make_batches(rows_of(calib_set), tok.pad_token_id, {}),
                         PruneConfig("sparsegpt", Target(0.5), owl_lambda=0.1), progress=False)
    levels = _block_sparsities(report)
    assert sum(levels) / len(levels) == pytest.approx(0.5, abs=2e-3)
    assert max(levels) - min(levels) > 0.05


def test_error_driven_allocation_prunes_most_where_it_costs_least(qwen2_dir, calib_set):
    """Block 1 already has 40% zeros: up to 40% it costs no error, so of the grid 0.4..0.6 it
    gets the top and the other two give up what it takes."""
    tok = models.load_tokenizer(qwen2_dir)
    lm = models.load_model(qwen2_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in (m for m in lm.model.layers[1].modules() if isinstance(m, torch.nn.Linear)):
            lin.weight[torch.rand(lin.weight.shape, generator=g) < 0.4] = 0
    report = prune_model(lm, models.decoder_blocks(lm),
                         make_batches(rows_of(calib_set), tok.pad_token_id, {}),
                         PruneConfig("sparsegpt", Target(0.5), error_span=0.1, error_step=0.05),
                         progress=False)
    assert _block_sparsities(report) == pytest.approx([0.45, 0.6, 0.45], abs=2e-3)


def test_true_sequential_differs_and_still_hits_the_target(qwen2_dir, calib_set):
    tok = models.load_tokenizer(qwen2_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {})
    results = []
    for seq in (False, True):
        lm = models.load_model(qwen2_dir)
        report = prune_model(lm, models.decoder_blocks(lm), batches,
                             PruneConfig("sparsegpt", Target(0.5), true_sequential=seq),
                             progress=False)
        assert all(r.sparsity == pytest.approx(0.5, abs=1e-3) for r in report)
        results.append(lm.model.layers[1].mlp.down_proj.weight.clone())
    assert not torch.equal(*results)


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
@pytest.mark.parametrize("scope", ["all", "mlp@1", "attn@0,2"])
def test_staged_true_sequential_equals_one_pass_per_group(arch_dir, scope, request, calib_set):
    """The staged single pass computes what one forward pass per sublayer group computes."""
    from dataclasses import replace

    model = request.getfixturevalue(arch_dir)
    tok = models.load_tokenizer(model)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {}, max_tokens=300)
    assert len(batches) > 1
    cfg = PruneConfig("sparsegpt", Target(0.5), Scope.parse(scope), true_sequential=True)
    outs = []
    for staged in (True, False):
        lm = models.load_model(model)
        report = prune_model(lm, models.decoder_blocks(lm), batches, replace(cfg, staged=staged),
                             progress=False)
        outs.append((weights(lm), [(r.layer, r.name, r.tokens) for r in report]))
    (w_staged, r_staged), (w_multi, r_multi) = outs
    assert r_staged == r_multi
    for k in w_staged:
        assert torch.equal(w_staged[k], w_multi[k]), k


def test_staged_forward_refuses_a_block_of_another_form(llama_dir, calib_set, caplog):
    """A block that computes something else than the Llama/Qwen2 form is never staged."""
    from rac.prune.forward import capture_block_inputs
    from rac.prune.staged import staged_forward_matches

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
    assert "one forward pass per sublayer group" in caplog.text


def test_segment_weights_change_the_statistics(qwen2_dir, tmp_path):
    tok = models.load_tokenizer(qwen2_dir)
    rows = [calibset.Row([3, 4, 5, 6, 7, 8], [1] * 6, [0, 0, 0, 1, 1, 1])]
    plain = make_batches(rows, tok.pad_token_id, {})[0]
    weighted = make_batches(rows, tok.pad_token_id, {"decode": 2.0})[0]
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
    quant = cfg["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    # the scheme rac evaluates: FP8 weights per channel, activations left alone
    (group,) = quant["config_groups"].values()
    assert group["weights"]["type"] == "float" and group["weights"]["num_bits"] == 8
    assert group["weights"]["strategy"] == "channel"
    assert group["input_activations"] is None
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
    # the head stays unquantized, in the model's dtype
    with safe_open(str(next(exported.glob("*.safetensors"))), "pt") as f:
        stored = list(f.keys())
        head = [k for k in stored if k.startswith("lm_head")]
        assert head == ["lm_head.weight"] or not head  # tied embeddings store no head
        assert not any(k.startswith("lm_head") and "scale" in k for k in stored)
        if head:
            assert f.get_tensor("lm_head.weight").dtype == dense.lm_head.weight.dtype


def _first_group_H(qwen2_dir, rows, segment_weights) -> torch.Tensor:
    """The H that prune_model hands to the pruner for block 0's q/k/v."""
    import rac.prune.engine as engine

    tok = models.load_tokenizer(qwen2_dir)
    lm = models.load_model(qwen2_dir)
    seen: list[torch.Tensor] = []
    real = engine.prune_weights

    def spy(Ws, stats, cfg):
        seen.append(stats.H.clone())
        return real(Ws, stats, cfg)

    engine.prune_weights = spy
    try:
        prune_model(lm, models.decoder_blocks(lm),
                    make_batches(rows, tok.pad_token_id, segment_weights, max_tokens=300),
                    PruneConfig("sparsegpt", Target(0.5), Scope("attn", "0"),
                                segment_weights=segment_weights), progress=False)
    finally:
        engine.prune_weights = real
    return seen[0]


def test_segment_weights_reach_the_hessian_inside_prune_model(qwen2_dir, tmp_path):
    problems = tmp_path / "p.jsonl"
    assert main(["problems", "--n", "20", "--split", "calib", "--out", str(problems)]) == 0
    assert main(["calib", "--source", "reference", "--tokenizer", str(qwen2_dir), "--problems",
                 str(problems), "--budget-tokens", "800", "--out", str(tmp_path / "c")]) == 0
    rows = calibset.read(tmp_path / "c").rows
    H_all = _first_group_H(qwen2_dir, rows, {})
    H_prompt = _first_group_H(qwen2_dir, rows, {"decode": 0.0})
    H_decode = _first_group_H(qwen2_dir, rows, {"prompt": 0.0})
    H_twice = _first_group_H(qwen2_dir, rows, {"decode": 2.0})
    assert not torch.allclose(H_prompt, H_decode, rtol=1e-2)
    assert torch.allclose(H_all, H_prompt + H_decode, rtol=1e-4, atol=1e-4)
    assert torch.allclose(H_twice, H_prompt + 2 * H_decode, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("staged", [True, False])
def test_true_sequential_against_hessians_of_the_final_pruned_model(qwen2_dir, calib_set, staged):
    """An independent reference: with true-sequential, every group's statistics come from inputs
    that the *final* pruned model produces (nothing after a group changes its inputs). So H
    recomputed with hooks on the final model, and SparseGPT applied to the dense weights with it,
    must give back every pruned weight. The model runs in float64, so that the two orders of
    computation cannot flip a mask."""
    from rac.prune.config import SEQUENTIAL_GROUPS
    from rac.prune.sparsegpt import sparsegpt_group

    tok = models.load_tokenizer(qwen2_dir)
    rows = rows_of(calib_set)
    lm = models.load_model(qwen2_dir, dtype=torch.float64)
    dense = weights(lm)
    cfg = PruneConfig("sparsegpt", Target(0.5), true_sequential=True, staged=staged)
    prune_model(lm, models.decoder_blocks(lm), make_batches(rows, tok.pad_token_id, {},
                                                            max_tokens=300), cfg, progress=False)
    pruned = weights(lm)
    leaders = {f"model.layers.{i}.{g[0]}": g for i in range(len(lm.model.layers))
               for g in SEQUENTIAL_GROUPS}
    stats = {name: LayerStats(lm.get_submodule(name).in_features, "cpu") for name in leaders}
    mask: list[torch.Tensor] = []
    handles = [lm.get_submodule(name).register_forward_pre_hook(
        lambda m, a, name=name: stats[name].add(a[0].reshape(-1, a[0].shape[-1])[mask[0] > 0]))
        for name in leaders]
    with torch.no_grad():
        for r in rows:
            mask[:] = [torch.tensor(r.mask)]
            lm(input_ids=torch.tensor([r.ids]), attention_mask=torch.tensor([r.mask]))
    for h in handles:
        h.remove()
    for leader, group in leaders.items():
        block = leader.rsplit(".", 2)[0]
        Ws = [dense[f"{block}.{n}.weight"] for n in group]
        expected, _ = sparsegpt_group(Ws, stats[leader].H, cfg.target, cfg.sparsegpt)
        for n, W_hat in zip(group, expected):
            got = pruned[f"{block}.{n}.weight"]
            assert torch.equal(got == 0, W_hat == 0), f"{block}.{n}: mask differs"
            # SparseGPT and the statistics compute in float32: equal up to its rounding
            assert torch.allclose(got, W_hat, rtol=1e-4, atol=1e-6), f"{block}.{n}"


def test_generic_calibration_and_pruning_need_no_chat_template(qwen2_dir, tmp_path, capsys):
    """A base model without a chat template (a real 270M Gemma 3 was the case): generic text and
    pruning work; only the stages that render problems refuse, saying why."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(qwen2_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert not getattr(models.load_tokenizer(base), "chat_template", None)
    code, _, err = run(capsys, "calib", "--source", "generic", "--tokenizer", base, "--text",
                       _text(tmp_path), "--budget-tokens", 300, "--out", tmp_path / "g")
    assert code == 0, err
    code, _, err = run(capsys, "prune", base, "--calib", tmp_path / "g", "--method", "sparsegpt",
                       "--sparsity", 0.5, "--out", tmp_path / "pruned")
    assert code == 0, err
    problems = tmp_path / "p.jsonl"
    assert main(["problems", "--n", "5", "--out", str(problems)]) == 0
    code, _, err = run(capsys, "calib", "--source", "prompt", "--tokenizer", base, "--problems",
                       problems, "--budget-tokens", 50, "--out", tmp_path / "p")
    assert code == 2 and "no chat template" in err and len(err.strip().splitlines()) == 1


def test_a_bad_choice_gets_one_line(qwen2_dir, calib_set, tmp_path, capsys):
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "obs",
                       "--sparsity", 0.5, "--out", tmp_path / "o")
    assert code == 2 and "invalid choice" in err and "see rac prune --help" in err
    assert len(err.strip().splitlines()) == 1, err


def test_the_report_names_the_block_size_used(qwen2_dir, calib_set, tmp_path, capsys):
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--pattern", "2:4", "--blocksize", 6, "--out", tmp_path / "o")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "prune_report.json").read_text())
    assert report["blocksize"] == 8
    assert all(r["sparsity"] == 0.5 for r in report["layers"])


def test_dense_targets_lower_the_error_against_the_dense_model(qwen2_dir, calib_set, tmp_path,
                                                                capsys):
    """The objective dense targets optimise: the last block's output against the dense model's.
    Checked on the model's final hidden states over the calibration rows."""
    outs = {}
    for flag in ([], ["--dense-targets"]):
        out = tmp_path / ("dt" if flag else "plain")
        code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method",
                           "sparsegpt", "--sparsity", 0.6, "--out", out, *flag)
        assert code == 0, err
        outs[bool(flag)] = out
    dense = models.load_model(qwen2_dir)
    rows = rows_of(calib_set)

    def error(model_dir) -> float:
        lm = models.load_model(model_dir)
        total = 0.0
        with torch.no_grad():
            for r in rows:
                ids, mask = torch.tensor([r.ids]), torch.tensor([r.mask])
                a = dense(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                b = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                keep = mask[0] > 0
                total += float(((a.hidden_states[-1] - b.hidden_states[-1])[0][keep] ** 2).sum())
        return total

    assert error(outs[True]) < error(outs[False])
    for bad in (["--method", "wanda"], ["--method", "sparsegpt", "--true-sequential"]):
        code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--sparsity", 0.5,
                           "--dense-targets", *bad, "--out", tmp_path / "bad")
        assert code == 2 and "dense targets" in err


def test_block_refinement_keeps_the_masks_and_lowers_the_block_error(qwen2_dir, calib_set):
    """Adam on the kept weights: pruned weights stay exactly zero and the loss against the dense
    block's outputs goes down from the first epoch to the last."""
    from rac.prune.forward import block_output, capture_block_inputs
    from rac.prune.refine import refine_block

    tok = models.load_tokenizer(qwen2_dir)
    lm = models.load_model(qwen2_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {}, max_tokens=300)
    states = capture_block_inputs(lm, lm.model.layers, batches, "cpu")
    block = lm.model.layers[0]
    with torch.no_grad():
        targets = [block_output(block(h, **kw)).clone() for h, kw in states]
        linears = [m for n, m in block.named_modules() if n.endswith("proj")]
        for lin in linears:  # a fixed pruning: every other weight
            lin.weight[:, ::2] = 0
    zeros = [lin.weight == 0 for lin in linears]
    flags = [p.requires_grad for p in block.parameters()]
    weights = [b.weight.reshape(-1) for b in batches]
    before = [lin.weight.detach().clone() for lin in linears]
    far = [targets[0] + 1]  # gradients far above Adam's eps, so that its first step is +-lr
    one = refine_block(block, linears, states[:1], far, weights[:1], epochs=1, lr=0.01,
                       device="cpu")
    for lin, w0, z in zip(linears, before, zeros):
        # Adam's first step moves each kept weight by lr (+-) whatever its gradient's scale:
        # here 0.01 of the matrix's kept-weight RMS, so the step follows each matrix's scale
        step = (lin.weight.detach() - w0)[~z].abs().max()
        assert float(step) == pytest.approx(0.01 * float(w0[~z].pow(2).mean().sqrt()), rel=1e-2)
        with torch.no_grad():
            lin.weight.copy_(w0)
    losses = refine_block(block, linears, states, targets, weights, epochs=4, lr=0.05,
                          device="cpu")
    assert len(one) == 1 and len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    for lin, z in zip(linears, zeros):
        assert bool((lin.weight[z] == 0).all())  # pruned weights stay exactly zero
        assert int((lin.weight != 0).sum()) > 0.4 * lin.weight.numel()
    assert [p.requires_grad for p in block.parameters()] == flags  # left as it was


def test_refinement_through_the_cli(qwen2_dir, calib_set, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--refine-epochs", 2, "--out", out)
    assert code == 0, err
    lm = AutoModelForCausalLM.from_pretrained(out)
    w = lm.model.layers[1].mlp.down_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--refine-epochs", 2, "--true-sequential", "--out",
                       tmp_path / "bad")
    assert code == 2 and "refinement" in err


def test_recipes(qwen2_dir, calib_set, tmp_path, capsys):
    from rac.prune.config import PruneConfig

    assert PruneConfig.with_recipe("paper", method="sparsegpt", target=Target(0.5)) == \
        PruneConfig("sparsegpt", Target(0.5))
    best = PruneConfig.with_recipe("best", method="sparsegpt", target=Target(0.5))
    assert best.refine_epochs == 20
    assert PruneConfig.with_recipe("best", method="sparsegpt", target=Target(0.5),
                                   refine_epochs=3).refine_epochs == 3  # explicit options win
    with pytest.raises(ValueError, match="recipe"):
        PruneConfig.with_recipe("magic", method="sparsegpt", target=Target(0.5))
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--recipe", "best", "--refine-epochs", 1, "--out",
                       tmp_path / "b")
    assert code == 0, err
    report = json.loads((tmp_path / "b" / "prune_report.json").read_text())
    assert report["refine_epochs"] == 1 and report["dense_targets"] is False
    assert report["refine_lr"] == 0.01
    assert all(len(row["block_refine_loss"]) == 1 for row in report["layers"])


def test_balanced_segments(qwen2_dir, calib_set, tmp_path, capsys):
    rows = [calibset.Row([1, 2, 3, 4, 5], [1] * 5, [0, 0, 1, 1, 1]),
            calibset.Row([1, 2, 3, 9], [1, 1, 1, 0], [0, 1, 1, -1])]
    # 3 prompt and 5 decode tokens (padding never counts): decode weighs 3/5
    assert calibset.balanced_weights(rows) == {"prompt": 1.0, "decode": 0.6}
    assert calibset.balanced_weights([calibset.Row([1], [1], [0])]) == {"prompt": 1.0}
    code, _, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "sparsegpt",
                       "--sparsity", 0.5, "--balance-segments", "--out", tmp_path / "b")
    assert code == 0, err
    used = json.loads((tmp_path / "b" / "prune_report.json").read_text())["segment_weights"]
    counts = calibset.segment_counts(rows_of(calib_set))
    assert used["prompt"] * counts["prompt"] == pytest.approx(used["decode"] * counts["decode"])


def test_mask_swaps_lower_wanda_errors_and_are_refused_where_they_do_not_apply(qwen2_dir, calib_set,
                                                                             tmp_path, capsys):
    tok = models.load_tokenizer(qwen2_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {})
    errors = []
    for swaps in (0, 20):
        lm = models.load_model(qwen2_dir)
        report = prune_model(lm, models.decoder_blocks(lm), batches,
                             PruneConfig("wanda", Target(0.5), mask_swaps=swaps), progress=False)
        assert all(r.sparsity == pytest.approx(0.5, abs=1e-3) for r in report)
        errors.append([r.relative_error for r in report])
    assert errors[1][0] < errors[0][0]  # block 0 sees the same inputs both times
    assert sum(errors[1]) < sum(errors[0])
    with pytest.raises(ValueError, match="SparseGPT"):
        PruneConfig("sparsegpt", Target(0.5), mask_swaps=5)
    code, _, err = run(capsys, "prune", qwen2_dir, "--method", "magnitude", "--sparsity", "0.5",
                       "--mask-swaps", "5", "--out", tmp_path / "m")
    assert code != 0 and "needs --calib" in err and not (tmp_path / "m").exists()


def test_allocation_and_swap_options_are_recorded_in_the_report(qwen2_dir, calib_set, tmp_path,
                                                                capsys):
    # per layer: Wanda's per-row counts would round 0.45 x 32 columns down to 14
    code, out, err = run(capsys, "prune", qwen2_dir, "--calib", calib_set, "--method", "wanda",
                         "--wanda-group", "layer", "--sparsity", "0.5", "--mask-swaps", "4",
                         "--error-span", "0.1",
                         "--error-step", "0.05", "--out", tmp_path / "w")
    assert code == 0, err
    report = json.loads((tmp_path / "w" / "prune_report.json").read_text())
    assert (report["mask_swaps"], report["error_span"], report["error_step"]) == (4, 0.1, 0.05)
    assert report["owl_lambda"] == 0.0
    assert report["totals"]["sparsity_in_scope"] == pytest.approx(0.5, abs=2e-3)


def test_input_stats_sum_the_dense_inputs_of_real_tokens_only():
    from rac.prune.batches import Batch
    from rac.prune.forward import input_stats

    class Toy(torch.nn.Module):  # embedding -> linear, called like a causal LM
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 2)
            self.lin = torch.nn.Linear(2, 3)
            self.emb.weight.data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0],
                                                 [9.0, 9.0]])

        def forward(self, input_ids, attention_mask):
            return self.lin(self.emb(input_ids))

    toy = Toy()
    ids = torch.tensor([[1, 2, 4], [3, 3, 3]])  # token 4 is padding (weight 0)
    weight = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    stats = input_stats(toy, {"lin": toy.lin}, [Batch(ids, (weight > 0).long(), weight)])
    # x x^T over the five real tokens: [1,0], [0,2], and [1,1] three times
    assert torch.equal(stats["lin"].H, torch.tensor([[4.0, 3.0], [3.0, 7.0]]))
    assert not toy.lin._forward_pre_hooks  # the hooks are gone


def test_a_staged_block_recomputes_the_mlp_input_past_the_budget_bit_for_bit(
        qwen2_dir, calib_set, monkeypatch):
    """With no activation budget left, the staged pass recomputes the down projection's inputs
    after pruning it instead of holding them: the same weights, bit for bit."""
    from rac.prune import engine
    from rac.prune.activations import Activations

    held: list[bool] = []
    staged = engine.prune_block_staged

    def spy(*args, **kwargs):
        held.append(args[-1])
        return staged(*args, **kwargs)

    monkeypatch.setattr(engine, "prune_block_staged", spy)
    tok = models.load_tokenizer(qwen2_dir)
    batches = make_batches(rows_of(calib_set), tok.pad_token_id, {}, max_tokens=300)
    cfg = PruneConfig("sparsegpt", Target(0.5), true_sequential=True)
    results = []
    for acts in (Activations(), Activations(budget_mb=0)):
        lm = models.load_model(qwen2_dir)
        prune_model(lm, models.decoder_blocks(lm), batches, cfg, progress=False, activations=acts)
        results.append(weights(lm))
    assert held == [True] * 3 + [False] * 3
    for name, w in results[0].items():
        assert torch.equal(w, results[1][name]), name
