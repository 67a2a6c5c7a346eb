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
from rac.sampling import Sampling, logits_processors, next_tokens

BACKENDS = ("transformers", "vllm")


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


def _with_room(buf: torch.Tensor, used: int, need: int, limit: int, first: int,
               dim: int) -> torch.Tensor:
    """``buf`` if it holds ``need`` positions along ``dim``, else a bigger one (twice as big, at
    least ``first`` more than needed, at most ``limit``) holding a copy of the ``used`` ones."""
    cap = buf.shape[dim]
    if cap >= need:
        return buf
    shape = list(buf.shape)
    shape[dim] = max(need, min(limit, max(2 * cap, need + first)))
    grown = buf.new_empty(shape)
    grown.narrow(dim, 0, used).copy_(buf.narrow(dim, 0, used))
    return grown


def growing_cache(lm: torch.nn.Module, limit: int, first: int):
    """A ``DynamicCache`` whose full-attention layers write into buffers instead of concatenating
    (``DynamicLayer`` copies the whole cache at every step: by byte count, 470 MB per step for
    Qwen2.5-0.5B at batch 64 and 300 tokens). The buffers start ``first`` tokens past the prompt
    and double when full, never past ``limit``: buffers of the whole limit from the start would
    hold batch x (prompt + max new tokens) before the first token, 48 GiB for Qwen2.5-0.5B in
    fp32 at batch 64 and 32,768 new tokens. Rows leaving the batch copy only the used part. Other
    layer kinds (sliding windows) are kept as they are."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class Growing(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.key_buf, self.value_buf = key_states[:, :, :0], value_states[:, :, :0]
            self.keys, self.values = self.key_buf, self.value_buf
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2]
            m = n + key_states.shape[-2]
            self.key_buf = _with_room(self.key_buf, n, m, limit, first, dim=2)
            self.value_buf = _with_room(self.value_buf, n, m, limit, first, dim=2)
            self.key_buf[:, :, n:m] = key_states
            self.value_buf[:, :, n:m] = value_states
            self.keys, self.values = self.key_buf[:, :, :m], self.value_buf[:, :, :m]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            n = self.get_seq_length()
            self.key_buf = _select_rows(self.key_buf, indices, n)
            self.value_buf = _select_rows(self.value_buf, indices, n)
            self.keys, self.values = self.key_buf[:, :, :n], self.value_buf[:, :, :n]

    cache = DynamicCache(config=lm.config)
    cache.layers = [Growing() if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


def _select_rows(buf: torch.Tensor, indices: torch.Tensor, used: int) -> torch.Tensor:
    """A buffer of the same capacity holding the ``used`` positions of rows ``indices``."""
    kept = buf.new_empty(len(indices), *buf.shape[1:])
    kept[:, :, :used] = buf[indices, :, :used]
    return kept


def trim(generated: list[int], eos_ids: set[int], max_new_tokens: int) -> Completion:
    for i, t in enumerate(generated):
        if t in eos_ids:
            return Completion(generated[:i + 1], "stop")
    return Completion(generated[:max_new_tokens], "length")


class TransformersBackend:
    """Batched decoding of any ``transformers`` causal LM: left padding, KV cache, rows leave the
    batch as soon as they end.

    A lean loop rather than ``generate``: ``generate`` keeps computing every row until the longest
    one ends (chains of thought vary several-fold in length, so most of a batch's late steps
    would be padding) and spends more per step on its machinery than a small model spends on
    arithmetic. Sampling draws one uniform per *original* row and step from a generator seeded
    with ``seed``, so a row's tokens do not depend on when the other rows of its batch ended.
    Memory grows with the tokens generated, not with ``max_new_tokens``: the KV cache and the
    generated ids start ``first_chunk`` tokens past the prompt and double when full."""

    name = "transformers"
    first_chunk = 256

    def __init__(self, lm: torch.nn.Module, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids
        self.device = next(lm.parameters()).device

    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        with grouped_attention(self.lm):
            return self._generate(prompts, sampling, seed)

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """(ids, attention mask, each row's ids with its padding replaced by its first token:
        what the repetition penalty looks at)."""
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        seen = ids.clone()
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
            seen[row] = torch.tensor((p[:1] or [self.pad_id]) * (width - len(p)) + p)
        return ids.to(self.device), mask.to(self.device), seen.to(self.device)

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        dev, n, limit = self.device, len(prompts), sampling.max_new_tokens
        ids, mask, seq = self._left_padded(prompts)  # seq: gets the generated ids appended
        width = ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gen = torch.Generator(dev).manual_seed(seed)
        eos = torch.tensor(sorted(self.eos_ids), device=dev)
        processors = logits_processors(sampling)
        rows = torch.arange(n, device=dev)  # the original rows still being decoded
        cache = growing_cache(self.lm, width + limit, self.first_chunk)
        # only the last position's logits are needed (models written without the argument get
        # them all)
        last_only = ({"logits_to_keep": 1}
                     if "logits_to_keep" in inspect.signature(self.lm.forward).parameters else {})
        logits = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **last_only).logits[:, -1]
        position = positions[:, -1:]
        for step in range(limit):
            if processors:  # on float32 logits, as generate
                logits, history = logits.float(), seq[rows, :width + step]
                for process in processors:
                    logits = process(history, logits)
            u = None
            if sampling.temperature > 0:
                u = torch.rand(n, generator=gen, device=dev)[rows]
            token = next_tokens(logits, sampling, u)
            seq = _with_room(seq, width + step, width + step + 1, width + limit, self.first_chunk,
                             dim=1)
            seq[rows, width + step] = token
            going = ~torch.isin(token, eos)
            if step + 1 == limit or not going.any():
                break
            if not going.all():  # drop the rows that ended, from the cache too
                keep = going.nonzero().squeeze(1)
                rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            position = position + 1
            logits = self.lm(input_ids=token.unsqueeze(1), attention_mask=mask,
                             position_ids=position, past_key_values=cache, use_cache=True).logits[:, -1]
        return [trim(row, self.eos_ids, limit) for row in seq[:, width:width + step + 1].tolist()]


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

        # vLLM applies the penalty to greedy decoding too, as rac's loop; top-k -1 is off
        params = [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k or -1,
                                 repetition_penalty=sampling.repetition_penalty,
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
