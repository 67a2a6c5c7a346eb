"""Generation backends behind one interface: prompt token ids in, completion token ids out.

Token ids are what the model generated, never decoded and re-encoded. Every request (a problem and
its sample number) carries its own seed, ``request_seed``, so a completion does not depend on the
batch it ran in, on the order of the requests or on where an interrupted run resumed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from rac import models, vllm_support
from rac.sampling import Sampling, logits_processors, next_tokens

# auto (the command line's default): vLLM where it is installed and takes the model, since it
# generates faster than rac's loop on the real 0.5B even on a CPU (bench/README.md: 3-5x in bf16
# on AVX-512; 1.4-1.8x in fp32 on AVX2)
BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class Completion:
    ids: list[int]  # generated ids, EOS included when the model stopped
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens)


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        """One completion per prompt; ``seeds[i]`` alone decides prompt ``i``'s random draws."""
        ...

    def close(self) -> None:
        """Free what the backend holds (vLLM: its engine processes and KV cache)."""
        ...


def request_seed(seed: int, key: str, sample: int) -> int:
    """The seed of one request: a hash of the run's seed, the problem's id and the sample number
    (63 bits, what ``torch.Generator`` and vLLM take)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
    arithmetic. Sampling draws one uniform per row and step from that row's own generator (seeded
    with its request's seed), so a row's tokens do not depend on the other rows of its batch.
    Memory grows with the tokens generated, not with ``max_new_tokens``: the KV cache and the
    generated ids start ``first_chunk`` tokens past the prompt and double when full."""

    name = "transformers"
    first_chunk = 256

    def __init__(self, lm: torch.nn.Module, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids
        self.device = next(lm.parameters()).device

    def close(self) -> None:
        pass  # the model goes with the backend object

    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        with grouped_attention(self.lm):
            return self._generate(prompts, sampling, seeds)

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
    def _generate(self, prompts: list[list[int]], sampling: Sampling,
                  seeds: list[int]) -> list[Completion]:
        dev, n, limit = self.device, len(prompts), sampling.max_new_tokens
        ids, mask, seq = self._left_padded(prompts)  # seq: gets the generated ids appended
        width = ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # CPU generators, one per row: about 150 us a step at 64 rows (measured), against
        # about a second for a step of the real 0.5B at that batch
        gens = [torch.Generator().manual_seed(s) for s in seeds]
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
                u = torch.cat([torch.rand(1, generator=gens[r]) for r in rows.tolist()]).to(dev)
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


def eos_ids_of(tok, generation_config=None) -> set[int]:
    """The ids that end a completion: the tokenizer's EOS and the generation config's."""
    cfg_eos = getattr(generation_config, "eos_token_id", None)
    ids = {tok.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])}
    return {i for i in ids if isinstance(i, int)}


VLLM_ONLY = {"vllm": True}  # an Engine field that only the vLLM backend reads


@dataclass(frozen=True)
class Engine:
    """How a stage runs a model: the backend, the device (transformers), and whether code shipped
    in the model directory may run; the rest are vLLM's engine settings (``vllm_backend``)."""

    backend: str = "transformers"
    device: str = "auto"
    trust_remote_code: bool = False
    tensor_parallel: int = field(default=1, metadata=VLLM_ONLY)
    # engine replicas, each on its own share of the cores or GPUs (rac.vllm_backend.Replicas)
    data_parallel: int = field(default=1, metadata=VLLM_ONLY)
    # auto: float32 on a CPU without bf16 products (AVX2), else vLLM's own choice
    dtype: str = field(default="auto", metadata=VLLM_ONLY)
    max_model_len: int | None = field(default=None, metadata=VLLM_ONLY)  # None: the model's
    # None: 4 on a CPU; on a GPU, gpu_memory decides
    kv_cache_gb: float | None = field(default=None, metadata=VLLM_ONLY)
    gpu_memory: float = field(default=0.9, metadata=VLLM_ONLY)  # fraction vLLM may take
    threads: int = field(default=0, metadata=VLLM_ONLY)  # CPU cores vLLM uses (0: all ours)
    # no graph compilation: a faster start for slower decoding (bench/README.md, eager mode)
    eager: bool = field(default=False, metadata=VLLM_ONLY)

    def resolved(self, model: str | Path) -> Engine:
        """'auto' made concrete: vLLM when it is installed, no --device was asked for and it takes
        the model (vLLM's CPU attention needs head sizes >= 32), else transformers; vLLM's dtype
        as ``vllm_dtype`` gives it."""
        if self.backend == "vllm":
            return replace(self, dtype=vllm_support.vllm_dtype(self.dtype))
        if self.backend != "auto":
            return self
        if (self.device == "auto" and importlib.util.find_spec("vllm") is not None
                and vllm_support.supported(models.resolve(model), self.trust_remote_code)):
            return replace(self, backend="vllm", dtype=vllm_support.vllm_dtype(self.dtype))
        return replace(self, backend="transformers", threads=0)  # --threads went to torch

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} unknown; use {', '.join(BACKENDS)}")
        if min(self.tensor_parallel, self.data_parallel) < 1:
            raise ValueError(f"tensor and data parallel sizes must be >= 1, got "
                             f"{self.tensor_parallel} and {self.data_parallel}")
        if self.backend == "vllm" and self.device != "auto":
            raise ValueError("--device applies to the transformers backend; vLLM picks its own")
        if self.backend == "transformers":
            changed = [f.name for f in fields(self)
                       if f.metadata.get("vllm") and getattr(self, f.name) != f.default]
            if changed:
                raise ValueError(f"{', '.join(changed)} apply to --backend vllm only")
        if self.kv_cache_gb is not None and self.kv_cache_gb <= 0:
            raise ValueError(f"KV cache size must be > 0 GiB, got {self.kv_cache_gb}")
        if not 0 < self.gpu_memory <= 1:
            raise ValueError(f"GPU memory fraction must be in (0, 1], got {self.gpu_memory}")


def open_backend(model: str | Path, tok, engine: Engine | None = None) -> Backend:
    """Load ``model`` for generation with ``engine`` (default: transformers on the best device):
    the one place every generating verb does it. Use it as ``with closing(open_backend(...))``:
    a vLLM engine holds processes and memory until it is closed."""
    engine = (engine or Engine()).resolved(model)
    if engine.backend == "vllm":
        from rac.vllm_backend import open_vllm

        return open_vllm(models.resolve(model), engine, tok)
    lm = models.load_model(model, models.pick_device(engine.device),
                           trust_remote_code=engine.trust_remote_code)
    return TransformersBackend(lm, tok.pad_token_id,
                               eos_ids_of(tok, getattr(lm, "generation_config", None)))
