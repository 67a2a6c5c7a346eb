"""The decode loop of the transformers backend: what `generate` would produce, rows independent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from rac import models
from rac.generate import Engine, TransformersBackend, _with_room
from rac.sampling import Sampling, next_tokens, sampling_for, top_p_logits


def prompts_of(tok, n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    vocab = len(tok)
    # varied lengths, so the batch is left-padded; no EOS inside a prompt
    return [[int(t) for t in torch.randint(10, vocab, (int(torch.randint(3, 12, (1,), generator=g)),),
                                           generator=g)] for _ in range(n)]


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
def test_greedy_batch_equals_generate_one_prompt_at_a_time(arch_dir, request):
    model = request.getfixturevalue(arch_dir)
    lm, tok = models.load_model(model), models.load_tokenizer(model)
    eos = {tok.eos_token_id}
    prompts = prompts_of(tok, 6)
    # a random model rarely says EOS: make one token end a sequence so rows end at different steps
    first = [lm.generate(torch.tensor([p]), do_sample=False, max_new_tokens=1,
                         pad_token_id=tok.pad_token_id)[0, -1].item() for p in prompts]
    eos.add(first[1])
    backend = TransformersBackend(lm, tok.pad_token_id, eos)
    sampling = Sampling(temperature=0, max_new_tokens=24)
    ours = backend.generate(prompts, sampling, seeds=[0] * 6)
    assert any(c.finish_reason == "stop" for c in ours) and any(c.finish_reason == "length" for c in ours)
    for p, c in zip(prompts, ours):
        ref = lm.generate(torch.tensor([p]), do_sample=False, max_new_tokens=24,
                          pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))[0, len(p):].tolist()
        ended = [i for i, t in enumerate(ref) if t in eos]
        assert c.ids == (ref[:ended[0] + 1] if ended else ref)


def test_sampled_rows_do_not_depend_on_when_the_others_end(qwen2_dir):
    lm, tok = models.load_model(qwen2_dir), models.load_tokenizer(qwen2_dir)
    p = prompts_of(tok, 3, seed=1)
    p = [p[0], p[0][:1] + p[1][:len(p[0]) - 1], p[0][:1] + p[2][:len(p[0]) - 1]]  # equal lengths
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=20)
    plain = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id})
    alone = plain.generate(p, sampling, seeds=[5, 6, 7])
    # the same batch where the second row ends at once: the other rows are unchanged
    stop_at_once = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id, alone[1].ids[0]})
    mixed = stop_at_once.generate(p, sampling, seeds=[5, 6, 7])
    assert len(mixed[1].ids) == 1 and mixed[1].finish_reason == "stop"
    unaffected = [r for r in (0, 2) if alone[1].ids[0] not in alone[r].ids]  # no new EOS in them
    assert unaffected
    for r in unaffected:
        assert mixed[r].ids == alone[r].ids
    assert plain.generate(p, sampling, seeds=[5, 6, 7]) == alone  # seeded
    assert plain.generate(p, sampling, seeds=[6, 7, 8]) != alone


def test_top_p_keeps_the_set_transformers_keeps_and_samples_in_proportion():
    torch.manual_seed(0)
    logits = torch.randn(200, 50) * 2
    sampling = Sampling(temperature=0.7, top_p=0.8)
    kept_hf = TopPLogitsWarper(0.8)(None, logits / 0.7) > -float("inf")
    draws = torch.stack([next_tokens(logits, sampling, torch.rand(200)) for _ in range(50)])
    assert kept_hf.gather(1, draws.T).all()  # never outside transformers' top-p set
    # frequencies on one row follow the renormalised top-p distribution
    row = logits[:1].repeat(20000, 1)
    counts = torch.bincount(next_tokens(row, sampling, torch.rand(20000)), minlength=50).float()
    p = (logits[0] / 0.7).softmax(-1) * kept_hf[0]
    p = p / p.sum()
    assert torch.allclose(counts / 20000, p, atol=0.015)
    # u at the edges stays inside the kept set
    for u in (0.0, 1.0 - 1e-7):
        assert kept_hf[0, next_tokens(logits[:1], sampling, torch.tensor([u]))].item()
    assert torch.equal(next_tokens(logits, Sampling(temperature=0), None), logits.argmax(-1))


def test_top_p_from_the_most_likely_candidates_equals_sorting_the_whole_vocabulary():
    torch.manual_seed(1)
    logits = torch.randn(300, 50) * torch.rand(300, 1) * 4  # flat and peaked rows
    sampling = Sampling(temperature=0.7, top_p=0.9)
    u = torch.rand(300)
    probs = (logits / 0.7).softmax(-1)
    fits = probs.topk(5, dim=-1).values.sum(-1) >= 0.9
    assert fits.any() and (~fits).any()  # both paths are taken
    assert torch.equal(next_tokens(logits, sampling, u, candidates=5),
                       next_tokens(logits, sampling, u, candidates=50))


def test_top_p_logits_masks_exactly_the_tokens_outside_each_rows_set():
    """Hand-built rows: probabilities 0.5, 0.3, 0.15, 0.05 keep 2 tokens at top-p 0.75 and 3 at
    0.85; each row has its own top-p, and the most likely token is always kept."""
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]] * 3)
    logits = probs.log()
    out = top_p_logits(logits.clone(), torch.tensor([0.75, 0.85, 0.01]))
    kept = out > -float("inf")
    assert kept.tolist() == [[False, True, False, True], [False, True, True, True],
                             [False, True, False, False]]
    assert torch.equal(out[kept], logits[kept])  # what is kept is left as it was


def test_top_p_logits_keeps_transformers_set_with_few_candidates_or_all():
    torch.manual_seed(2)
    logits = torch.randn(300, 50) * torch.rand(300, 1) * 4 / 0.7  # flat and peaked rows
    top_p = torch.rand(300) * 0.9 + 0.05
    fits = logits.softmax(-1).topk(5, dim=-1).values.sum(-1) >= top_p
    assert fits.any() and (~fits).any()  # both paths are taken
    expected = torch.stack([TopPLogitsWarper(p.item())(None, row[None])[0]
                            for row, p in zip(logits, top_p)]) > -float("inf")
    for candidates in (5, 50):
        assert torch.equal(top_p_logits(logits.clone(), top_p, candidates) > -float("inf"),
                           expected)


def test_vllms_auto_dtype_is_float32_on_a_cpu_without_bf16_products(monkeypatch):
    """vLLM's 'auto' is bf16 on a CPU, emulated (4-8x slower at batch sizes of 64 and more) where
    the CPU has no bf16 products: there rac asks for float32, and a sweep's key says so; a dtype
    asked for is kept, and a CPU with bf16 products keeps vLLM's choice."""
    from rac import vllm_support as g
    from rac.experiments.config import EngineSpec

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for has_bf16, auto in ((False, "float32"), (True, "auto")):
        monkeypatch.setattr(g, "cpu_bf16", lambda has=has_bf16: has)
        assert g.vllm_dtype("auto") == auto
        assert g.vllm_dtype("bfloat16") == "bfloat16"
        assert Engine(backend="vllm").resolved("embedded").dtype == auto
        assert EngineSpec(backend="vllm").key()["engine"]["dtype"] == auto
    assert EngineSpec().key() == {}  # the transformers default: keys as before


def test_rac_top_p_is_named_where_it_samples_and_only_there(tmp_path, monkeypatch):
    """A stage's key and an evaluation's record name rac's top-p where vLLM sampled with it (top-p
    with or without top-k, on a CPU): greedy stages, top-k alone, transformers and GPUs keep their
    keys."""
    from rac.experiments import config
    from rac.experiments.sweep import Sweep
    from rac.vllm_support import VLLM_TOP_P, rac_top_p

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    top_p = Sampling(0.6, 0.95, 8)
    assert rac_top_p(top_p) and rac_top_p(Sampling(0.6, 0.95, 8, top_k=20))
    assert not any(map(rac_top_p, (Sampling(0.0, 0.95, 8), Sampling(0.6, 1.0, 8),
                                   Sampling(0.6, 1.0, 8, top_k=20))))
    vllm = Sweep(config.from_dict({"engine": {"backend": "vllm"}}), tmp_path)
    assert vllm.generation_key(top_p)["vllm_top_p"] == VLLM_TOP_P
    assert "vllm_top_p" not in vllm.generation_key(Sampling(0.0, 1.0, 8))
    assert "vllm_top_p" not in Sweep(config.from_dict({}), tmp_path).generation_key(top_p)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not rac_top_p(top_p)


def test_grouped_kv_heads_are_never_copied_per_query_head(qwen2_dir, monkeypatch):
    """The toy Qwen2 has 4 query and 2 KV heads: rac's loop keeps them grouped (no ``repeat_kv``
    copy, the cost that dominated real-model decoding) and gives the model back as it was."""
    import transformers.integrations.sdpa_attention as sdpa

    lm, tok = models.load_model(qwen2_dir), models.load_tokenizer(qwen2_dir)
    prompts = prompts_of(tok, 4, seed=2)
    sampling = Sampling(temperature=0, max_new_tokens=8)

    def no_copy(*args, **kwargs):
        raise AssertionError("KV heads were copied per query head")

    monkeypatch.setattr(sdpa, "repeat_kv", no_copy)
    with pytest.raises(AssertionError, match="copied"):  # the plain model does copy them
        lm(torch.tensor([prompts[0], prompts[0]]), attention_mask=torch.tensor(
            [[0] + [1] * (len(prompts[0]) - 1), [1] * len(prompts[0])]))
    got = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id}).generate(
        prompts, sampling, seeds=[0] * 4)
    assert [len(c.ids) for c in got] == [8] * 4
    assert lm.config._attn_implementation == "sdpa"


EMBEDDED_TEXTS = ([f"Compute {a}+{b}." for a, b in [(12, 7), (345, 678), (9, 9), (1234, 56), (23, 45)]]
                  + [f"Compute {a}*{b}." for a, b in [(347, 26), (12, 3), (999, 99), (5, 8), (78, 65)]]
                  + [f"Compute {a}+{b}+{c}." for a, b, c in [(1, 2, 3), (23, 45, 12), (567, 89, 1000)]])


@pytest.mark.parametrize("sampling,seed,digest,tokens", [
    (Sampling(0.0, 1.0, 512), 0, "25388c7c016de3d8", 1210),
    (Sampling(0.6, 0.95, 512), 1, "25388c7c016de3d8", 1210),
    (Sampling(1.5, 0.9, 20), 3, "20f11d401b72e605", 260)])
def test_the_embedded_model_gives_what_the_preallocating_loop_gave(sampling, seed, digest, tokens):
    """The digests of the completions of rac a372ae1's loop (the KV cache preallocated for the
    whole limit, no top-k or penalty) on the same prompts: growing the cache changes nothing. The
    T=1.5 case is pinned since requests carry their own seeds (it was seeded per batch then)."""
    import hashlib
    import json

    from rac.batched import generate_all
    from rac.generate import eos_ids_of, request_seed

    tok, lm = models.load_tokenizer("embedded"), models.load_model("embedded")
    assert sampling_for("embedded", "eval").identity() == {
        "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 512}  # its generation_config: none
    backend = TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm.generation_config))
    prompts = [models.prompt_ids(tok, t, "") for t in EMBEDDED_TEXTS]
    seeds = [request_seed(seed, t, 0) for t in EMBEDDED_TEXTS]
    ids = [c.ids for c in generate_all(backend, prompts, sampling, seeds, 5, progress=False)]
    assert sum(map(len, ids)) == tokens
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16] == digest


def test_growing_the_cache_from_one_token_equals_holding_the_whole_limit(qwen2_dir):
    lm, tok = models.load_model(qwen2_dir), models.load_tokenizer(qwen2_dir)
    prompts = prompts_of(tok, 7, seed=4)
    for sampling in (Sampling(0.0, 1.0, 30), Sampling(1.0, 0.9, 30),
                     Sampling(1.0, 1.0, 30, top_k=5, repetition_penalty=1.3)):
        first = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id}).generate(
            prompts, sampling, seeds=list(range(7)))
        # two frequent tokens end rows: rows leave the batch at different steps
        eos = {tok.eos_token_id, first[0].ids[3], first[4].ids[11]}
        outs = []
        for chunk in (1, 10_000):  # doubling from 1 token / one buffer for the whole limit
            backend = TransformersBackend(lm, tok.pad_token_id, eos)
            backend.first_chunk = chunk
            outs.append(backend.generate(prompts, sampling, seeds=list(range(7))))
        assert outs[0] == outs[1]
        assert len({len(c.ids) for c in outs[0]}) > 2


def test_a_buffer_doubles_up_to_its_limit_and_keeps_what_it_held():
    buf = torch.arange(12.).reshape(1, 1, 4, 3)
    grown = _with_room(buf, used=3, need=5, limit=100, first=2, dim=2)
    assert grown.shape == (1, 1, 8, 3) and torch.equal(grown[:, :, :3], buf[:, :, :3])
    assert _with_room(buf, 3, 4, 100, 2, dim=2) is buf  # room enough: the same buffer
    assert _with_room(buf, 4, 5, 6, 2, dim=2).shape[2] == 6  # never past the limit
    assert _with_room(torch.zeros(2, 0), 0, 3, 50, 8, dim=1).shape == (2, 11)  # first: need + 8


MEMORY_PROBE = r"""
import resource, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from rac.generate import Sampling, TransformersBackend
torch.set_num_threads(1)
torch.manual_seed(0)
# Qwen2.5-0.5B's cache shape (24 layers of 2 KV heads of 64, fp32); the rest tiny
cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                  max_position_embeddings=40000)
lm = Qwen2ForCausalLM(cfg).eval()
prompts = [[5 + (i + j) % 50 for j in range(8 + i % 5)] for i in range(64)]
backend = TransformersBackend(lm, 0, set(range(64)))  # every token ends a row: 1-token answers
backend.generate(prompts, Sampling(0.0, 1.0, 4), [0] * len(prompts))  # warm up
def vm(key):
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(key + ":"))
    return int(line.split()[1]) * 1024
before = vm("VmSize")
resource.setrlimit(resource.RLIMIT_AS, (before + (3 << 30),) * 2)
out = backend.generate(prompts, Sampling(0.0, 1.0, int(sys.argv[1])), [0] * len(prompts))
assert [len(c.ids) for c in out] == [1] * 64
print(vm("VmPeak") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_memory_follows_the_tokens_generated_not_the_limit():
    """Batch 64 of 1-token completions at the paper's 32,768-token limit: buffers for the whole
    limit would take 24 x 2 x 64 x 2 x 32,780 x 64 x 4 bytes = 51.6 GB of address space before
    the first token. Measured in a subprocess, allowed 3 GiB more address space than it has."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "32768"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 1 << 30  # the cache holds the prompt + 257 tokens: 0.45 GB


@pytest.mark.parametrize("arch_dir", ["qwen2_dir", "llama_dir"])
def test_the_repetition_penalty_and_top_k_are_what_generate_applies(arch_dir, request):
    model = request.getfixturevalue(arch_dir)
    lm, tok = models.load_model(model), models.load_tokenizer(model)
    prompts = prompts_of(tok, 6, seed=3)
    backend = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id})
    penalized = backend.generate(prompts, Sampling(0.0, 1.0, 20, repetition_penalty=1.5), [0] * len(prompts))
    for p, c in zip(prompts, penalized):  # the prompt's tokens are penalized too, as in generate
        ref = lm.generate(torch.tensor([p]), do_sample=False, max_new_tokens=20,
                          repetition_penalty=1.5, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        assert c.ids == (ref[:ref.index(tok.eos_token_id) + 1] if tok.eos_token_id in ref else ref)
    plain = backend.generate(prompts, Sampling(0.0, 1.0, 20), [0] * len(prompts))
    assert plain != penalized
    # top-k 1 leaves one token to sample: greedy, whatever the uniforms
    assert backend.generate(prompts, Sampling(1.0, 1.0, 20, top_k=1), [7] * len(prompts)) == plain


def test_top_k_samples_only_the_k_most_likely_tokens():
    from rac.sampling import logits_processors

    torch.manual_seed(2)
    logits = torch.randn(300, 50) * 3
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=4)
    (top_k,) = logits_processors(sampling)
    draws = torch.stack([next_tokens(top_k(None, logits), sampling, torch.rand(300))
                         for _ in range(40)])
    allowed = logits.topk(4, dim=-1).indices
    assert (draws.T.unsqueeze(-1) == allowed.unsqueeze(1)).any(-1).all()
    assert all(len(set(draws[:, r].tolist())) > 1 for r in range(5))  # not greedy either
    assert logits_processors(Sampling(0.0, 1.0, top_k=4)) == []  # greedy: top-k is moot


def test_a_sampled_completion_depends_on_its_own_seed_not_on_its_batch(qwen2_dir):
    """Seeds go with requests: the same requests batched 1, 3 or 7 at a time, in any order, give
    the same completions (what lets evals and traces be rebatched and resumed)."""
    from rac.batched import generate_all
    from rac.generate import request_seed

    lm, tok = models.load_model(qwen2_dir), models.load_tokenizer(qwen2_dir)
    backend = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id})
    prompts = prompts_of(tok, 7, seed=5)
    seeds = [request_seed(0, f"p{i}", 0) for i in range(7)]
    sampling = Sampling(1.0, 0.95, 12)
    whole = generate_all(backend, prompts, sampling, seeds, 7, progress=False)
    assert generate_all(backend, prompts, sampling, seeds, 3, progress=False) == whole
    reversed_ = generate_all(backend, prompts[::-1], sampling, seeds[::-1], 1, progress=False)
    assert reversed_[::-1] == whole
    other = generate_all(backend, prompts, sampling, [s + 1 for s in seeds], 7, progress=False)
    assert other != whole


def test_request_seeds_differ_by_run_seed_problem_and_sample():
    from rac.generate import request_seed

    seeds = {request_seed(r, k, s) for r in (0, 1) for k in ("a", "b", "a1") for s in (0, 1, 10)}
    assert len(seeds) == 18 and all(0 <= s < 2**63 for s in seeds)
    assert request_seed(0, "a", 1) == request_seed(0, "a", 1)


def test_vllm_settings_are_refused_for_the_transformers_backend(capsys, tmp_path):
    from tests.conftest import run

    assert run(capsys, "problems", "--n", 2, "--out", tmp_path / "p.jsonl")[0] == 0
    code, _, err = run(capsys, "eval", "embedded", "--problems", tmp_path / "p.jsonl", "--out",
                       tmp_path / "e", "--kv-cache-gb", 2, "--dtype", "bfloat16")
    assert code == 2 and "dtype, kv_cache_gb apply to --backend vllm only" in err
    assert not (tmp_path / "e").exists()
    code, _, err = run(capsys, "eval", "embedded", "--problems", tmp_path / "p.jsonl", "--out",
                       tmp_path / "e", "--backend", "vllm", "--device", "cpu")
    assert code == 2 and "--device applies to the transformers backend" in err


def test_vllm_cpu_cores_are_split_over_tensor_parallel_ranks(monkeypatch):
    from rac.io import RacError
    from rac.vllm_backend import _bind, _core_sets

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {4, 5, 6, 7, 8})
    assert _bind(_core_sets(0, 1)) == "4,5,6,7,8"
    assert _bind(_core_sets(4, 2)) == "4,5|6,7"
    assert _bind(_core_sets(2, 1)) == "4,5"
    with pytest.raises(RacError, match="each rank needs one"):
        _core_sets(1, 2)
    with pytest.raises(RacError, match="may use 5 cores"):
        _core_sets(6, 1)


def test_data_parallel_replicas_get_disjoint_shares_of_the_cores_or_gpus(monkeypatch):
    from rac.io import RacError
    from rac.vllm_backend import _replica_env

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    engine = Engine(backend="vllm", data_parallel=2, tensor_parallel=2)
    assert _replica_env(engine, on_cpu=True) == [{"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
                                                 {"VLLM_CPU_OMP_THREADS_BIND": "2|3"}]
    assert _replica_env(replace(engine, tensor_parallel=1, threads=4), on_cpu=True) == [
        {"VLLM_CPU_OMP_THREADS_BIND": "0,1"}, {"VLLM_CPU_OMP_THREADS_BIND": "2,3"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7,9")
    assert _replica_env(engine, on_cpu=False) == [{"CUDA_VISIBLE_DEVICES": "3,5"},
                                                  {"CUDA_VISIBLE_DEVICES": "6,7"}]
    with pytest.raises(RacError, match="needs 6 GPUs; 5 are visible"):
        _replica_env(replace(engine, data_parallel=3), on_cpu=False)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")  # a user's binding would be overridden
    with pytest.raises(RacError, match="VLLM_CPU_OMP_THREADS_BIND is set"):
        _replica_env(engine, on_cpu=True)
    with pytest.raises(ValueError, match="data parallel sizes must be >= 1"):
        Engine(backend="vllm", data_parallel=0)
    with pytest.raises(ValueError, match="data_parallel apply to --backend vllm only"):
        Engine(data_parallel=2)


def test_auto_backend_takes_vllm_only_where_it_is_installed_and_takes_the_model(monkeypatch):
    import importlib.util

    from rac import vllm_support
    from rac.generate import Engine

    real = importlib.util.find_spec
    installed = {"vllm": True}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if installed["vllm"] else None) if name == "vllm"
                        else real(name, *a))
    takes = {"embedded": True}
    monkeypatch.setattr(vllm_support, "supported", lambda path, trc=False: takes["embedded"])
    auto = Engine(backend="auto", threads=2)
    assert auto.resolved("embedded") == Engine(backend="vllm", threads=2,
                                               dtype=vllm_support.vllm_dtype("auto"))
    assert Engine(backend="auto", device="cpu").resolved("embedded").backend == "transformers"
    takes["embedded"] = False
    assert auto.resolved("embedded") == Engine(backend="transformers")  # threads went to torch
    installed["vllm"] = False
    takes["embedded"] = True
    assert auto.resolved("embedded").backend == "transformers"
    with pytest.raises(ValueError, match="kv_cache_gb apply to --backend vllm only"):
        Engine(backend="auto", kv_cache_gb=2).resolved("embedded")
    assert Engine(backend="transformers").resolved("embedded") == Engine()
