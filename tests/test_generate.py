"""The decode loop of the transformers backend: what `generate` would produce, rows independent."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from rac import models
from rac.generate import Sampling, TransformersBackend, next_tokens


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
    ours = backend.generate(prompts, sampling, seed=0)
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
    alone = plain.generate(p, sampling, seed=5)
    # the same batch where the second row ends at once: the other rows are unchanged
    stop_at_once = TransformersBackend(lm, tok.pad_token_id, {tok.eos_token_id, alone[1].ids[0]})
    mixed = stop_at_once.generate(p, sampling, seed=5)
    assert len(mixed[1].ids) == 1 and mixed[1].finish_reason == "stop"
    unaffected = [r for r in (0, 2) if alone[1].ids[0] not in alone[r].ids]  # no new EOS in them
    assert unaffected
    for r in unaffected:
        assert mixed[r].ids == alone[r].ids
    assert plain.generate(p, sampling, seed=5) == alone  # seeded
    assert plain.generate(p, sampling, seed=6) != alone


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
        prompts, sampling, seed=0)
    assert [len(c.ids) for c in got] == [8] * 4
    assert lm.config._attn_implementation == "sdpa"
