"""Generation backends behind one interface: prompt token ids in, completion token ids out.

Token ids are what the model generated, never decoded and re-encoded. Each call is seeded, so the
same batch with the same seed gives the same completions (what makes traces resumable).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from rac import models
from rac.io import RacError

BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6  # 0 means greedy
    top_p: float = 0.95
    max_new_tokens: int = 8192

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max new tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Completion:
    ids: list[int]  # generated ids, EOS included when the model stopped
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens)


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        ...


GQA_SDPA = "rac_sdpa_gqa"


def sdpa_gqa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: torch.Tensor | None, dropout: float = 0.0,
             scaling: float | None = None, is_causal: bool | None = None,
             **kwargs) -> tuple[torch.Tensor, None]:
    """``transformers``' SDPA attention, but grouped-query attention stays grouped when there is
    a padding mask. ``transformers`` then copies every key/value head once per query head
    (``repeat_kv``): with Qwen2.5-0.5B's 14 query and 2 KV heads, at batch 64 and 300 cached
    tokens that copy took 56 ms per layer and step on a 2-core CPU, against 3 ms with
    ``enable_gqa`` (a one-off timing of the two SDPA calls): about four times the step's
    matrix products."""
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None and causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def grouped_attention(lm: torch.nn.Module):
    """Run ``lm`` with :func:`sdpa_gqa` when it uses SDPA with grouped KV heads (the same
    numbers, without the copies); any other attention is left as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = getattr(lm, "config", None)
    grouped = getattr(config, "num_key_value_heads", None) not in (None, getattr(
        config, "num_attention_heads", None))
    if not grouped or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    AttentionInterface.register(GQA_SDPA, sdpa_gqa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_SDPA, sdpa_mask)
    lm.set_attn_implementation(GQA_SDPA)
    try:
        yield
    finally:
        lm.set_attn_implementation("sdpa")


def preallocated_cache(lm: torch.nn.Module, capacity: int):
    """A ``DynamicCache`` whose full-attention layers write into buffers of ``capacity`` tokens
    instead of concatenating: ``DynamicLayer`` copies the whole cache at every step (by byte
    count, 470 MB per step for Qwen2.5-0.5B at batch 64 and 300 tokens). Other layer kinds
    (sliding windows) are kept as they are."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class Preallocated(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self.key_buf = key_states.new_empty(b, h, capacity, d)
            self.value_buf = value_states.new_empty(b, h, capacity, value_states.shape[-1])
            self.keys, self.values = self.key_buf[:, :, :0], self.value_buf[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2]
            m = n + key_states.shape[-2]
            self.key_buf[:, :, n:m] = key_states
            self.value_buf[:, :, n:m] = value_states
            self.keys, self.values = self.key_buf[:, :, :m], self.value_buf[:, :, :m]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            n = self.get_seq_length()
            self.key_buf, self.value_buf = self.key_buf[indices], self.value_buf[indices]
            self.keys, self.values = self.key_buf[:, :, :n], self.value_buf[:, :, :n]

    cache = DynamicCache(config=lm.config)
    cache.layers = [Preallocated() if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


def trim(generated: list[int], eos_ids: set[int], max_new_tokens: int) -> Completion:
    for i, t in enumerate(generated):
        if t in eos_ids:
            return Completion(generated[:i + 1], "stop")
    return Completion(generated[:max_new_tokens], "length")


def next_tokens(logits: torch.Tensor, sampling: Sampling, u: torch.Tensor | None,
                candidates: int = 256) -> torch.Tensor:
    """One token per row of ``logits`` (rows, vocab): greedy, or sampled with temperature and
    top-p by inverting the CDF at the uniforms ``u`` (rows,). Top-p keeps the most likely tokens
    until their mass reaches ``top_p`` (at least one), as ``transformers``' ``TopPLogitsWarper``.

    Sorting a 152k-word vocabulary for every row and step costs about as much as the step's
    matrix products at small batches, so only the ``candidates`` most likely tokens are sorted;
    a row whose top-p set does not fit in them (a flat distribution) is sorted whole. Both give
    the same token for the same ``u``."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / sampling.temperature).softmax(-1)
    k = min(candidates, probs.shape[1]) if sampling.top_p < 1 else probs.shape[1]
    sorted_p, order = probs.topk(k, dim=-1)
    out = _invert_cdf(sorted_p, order, sampling.top_p, u)
    if k < probs.shape[1]:
        flat = sorted_p.sum(-1) < sampling.top_p  # the top-p set is wider than the candidates
        if flat.any():
            full_p, full_order = probs[flat].sort(-1, descending=True)
            out[flat] = _invert_cdf(full_p, full_order, sampling.top_p, u[flat])
    return out


def _invert_cdf(sorted_p: torch.Tensor, order: torch.Tensor, top_p: float,
                u: torch.Tensor) -> torch.Tensor:
    """The token at uniform ``u`` of each row's top-p distribution, given the row's
    probabilities sorted in decreasing order (``order``: their token ids)."""
    if top_p < 1:
        # drop a token when the tokens more likely than it already hold top_p of the mass
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p, 0)
    cdf = sorted_p.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
    return order.gather(1, pick.clamp(max=cdf.shape[1] - 1)).squeeze(1)


class TransformersBackend:
    """Batched decoding of any ``transformers`` causal LM: left padding, KV cache, rows leave the
    batch as soon as they end.

    A lean loop rather than ``generate``: ``generate`` keeps computing every row until the longest
    one ends (chains of thought vary several-fold in length, so most of a batch's late steps
    would be padding) and spends more per step on its machinery than a small model spends on
    arithmetic. Sampling draws one uniform per *original* row and step from a generator seeded
    with ``seed``, so a row's tokens do not depend on when the other rows of its batch ended."""

    name = "transformers"

    def __init__(self, lm: torch.nn.Module, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids
        self.device = next(lm.parameters()).device

    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        with grouped_attention(self.lm):
            return self._generate(prompts, sampling, seed)

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        dev, n = self.device, len(prompts)
        width = max(map(len, prompts))
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gen = torch.Generator(dev).manual_seed(seed)
        eos = torch.tensor(sorted(self.eos_ids), device=dev)
        out = torch.full((n, sampling.max_new_tokens), self.pad_id, dtype=torch.long, device=dev)
        rows = torch.arange(n, device=dev)  # the original rows still being decoded
        cache = preallocated_cache(self.lm, width + sampling.max_new_tokens)
        # only the last position's logits are needed (models written without the argument get
        # them all)
        last_only = ({"logits_to_keep": 1}
                     if "logits_to_keep" in inspect.signature(self.lm.forward).parameters else {})
        logits = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **last_only).logits[:, -1]
        position = positions[:, -1:]
        for step in range(sampling.max_new_tokens):
            u = None
            if sampling.temperature > 0:
                u = torch.rand(n, generator=gen, device=dev)[rows]
            token = next_tokens(logits, sampling, u)
            out[rows, step] = token
            going = ~torch.isin(token, eos)
            if step + 1 == sampling.max_new_tokens or not going.any():
                break
            if not going.all():  # drop the rows that ended, from the cache too
                keep = going.nonzero().squeeze(1)
                rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            position = position + 1
            logits = self.lm(input_ids=token.unsqueeze(1), attention_mask=mask,
                             position_ids=position, past_key_values=cache, use_cache=True).logits[:, -1]
        return [trim(row, self.eos_ids, sampling.max_new_tokens) for row in out.tolist()]


class VLLMBackend:
    """vLLM's offline engine (optional extra ``rac[vllm]``), tensor parallel for big models."""

    name = "vllm"

    def __init__(self, model_dir: str, tensor_parallel: int = 1, trust_remote_code: bool = False):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RacError("--backend vllm needs vLLM: pip install 'rac[vllm]' on a GPU machine") from e
        self.llm = LLM(model=model_dir, tensor_parallel_size=tensor_parallel,
                       trust_remote_code=trust_remote_code)

    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        params = [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_new_tokens, seed=seed + i)
                  for i in range(len(prompts))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                 use_tqdm=False)
        return [Completion(list(o.outputs[0].token_ids),
                           "length" if o.outputs[0].finish_reason == "length" else "stop")
                for o in outs]


def eos_ids_of(tok, lm: torch.nn.Module | None = None) -> set[int]:
    ids = {tok.eos_token_id}
    cfg_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, list):
        ids.update(cfg_eos)
    return {i for i in ids if i is not None}


@dataclass(frozen=True)
class Engine:
    """How a stage runs a model: the backend, the device (transformers) or tensor parallelism
    (vLLM), and whether code shipped in the model directory may run."""

    backend: str = "transformers"
    device: str = "auto"
    tensor_parallel: int = 1
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} unknown; use {', '.join(BACKENDS)}")
        if self.tensor_parallel < 1:
            raise ValueError(f"tensor parallel size must be >= 1, got {self.tensor_parallel}")


def open_backend(model: str | Path, tok, engine: Engine | None = None) -> Backend:
    """Load ``model`` for generation with ``engine`` (default: transformers on the best device):
    the one place every generating verb does it."""
    engine = engine or Engine()
    if engine.backend == "vllm":
        return VLLMBackend(str(models.resolve(model)), engine.tensor_parallel,
                           engine.trust_remote_code)
    lm = models.load_model(model, models.pick_device(engine.device),
                           trust_remote_code=engine.trust_remote_code)
    return TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm))


def generate_all(backend: Backend, prompts: list[list[int]], sampling: Sampling, seed: int,
                 batch_size: int, desc: str = "generate", progress: bool = True) -> list[Completion]:
    """Generate for every prompt, batched by similar length; batch ``b`` is seeded ``seed + b``."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: list[Completion | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="seq", leave=False, disable=not progress)
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        for i, c in zip(idx, backend.generate([prompts[i] for i in idx], sampling, seed + b)):
            out[i] = c
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


def sampling_for(model: str | Path, stage: str, temperature: float | None = None,
                 top_p: float | None = None, max_new_tokens: int | None = None) -> Sampling:
    """The sampling settings a stage ("eval" or "trace") uses on ``model``: what is given, else
    the model's defaults (``rac_model.json``, else the paper's)."""
    d = models.defaults(model)
    return Sampling(getattr(d, f"{stage}_temperature") if temperature is None else temperature,
                    getattr(d, f"{stage}_top_p") if top_p is None else top_p,
                    getattr(d, f"{stage}_max_new_tokens") if max_new_tokens is None
                    else max_new_tokens)
