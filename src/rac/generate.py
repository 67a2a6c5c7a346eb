"""Generation backends behind one interface: prompt token ids in, completion token ids out.

Token ids are what the model generated, never decoded and re-encoded. Each call is seeded, so the
same batch with the same seed gives the same completions (what makes traces resumable).
"""

from __future__ import annotations

import inspect
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


def trim(generated: list[int], eos_ids: set[int], max_new_tokens: int) -> Completion:
    for i, t in enumerate(generated):
        if t in eos_ids:
            return Completion(generated[:i + 1], "stop")
    return Completion(generated[:max_new_tokens], "length")


def next_tokens(logits: torch.Tensor, sampling: Sampling, u: torch.Tensor | None) -> torch.Tensor:
    """One token per row of ``logits`` (rows, vocab): greedy, or sampled with temperature and
    top-p by inverting the CDF at the uniforms ``u`` (rows,). Top-p keeps the most likely tokens
    until their mass reaches ``top_p`` (at least one), as ``transformers``' ``TopPLogitsWarper``."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / sampling.temperature).softmax(-1)
    sorted_p, order = probs.sort(-1, descending=True)
    if sampling.top_p < 1:
        # drop a token when the tokens more likely than it already hold top_p of the mass
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= sampling.top_p, 0)
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

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        from transformers import DynamicCache

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
        cache = DynamicCache(config=self.lm.config)
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
