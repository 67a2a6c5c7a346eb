"""Generation backends behind one interface: prompt token ids in, completion token ids out.

Token ids are what the model generated, never decoded and re-encoded. Each call is seeded, so the
same batch with the same seed gives the same completions (what makes traces resumable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


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


class TransformersBackend:
    """Batched ``generate`` with left padding and a KV cache, on any device."""

    name = "transformers"

    def __init__(self, lm: torch.nn.Module, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids
        self.device = next(lm.parameters()).device

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        torch.manual_seed(seed)
        greedy = sampling.temperature == 0
        out = self.lm.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p, top_k=None,
            pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids),
        )
        new = out[:, width:].tolist()
        return [trim(row, self.eos_ids, sampling.max_new_tokens) for row in new]


class VLLMBackend:
    """vLLM's offline engine (optional extra ``rac[vllm]``), tensor parallel for big models."""

    name = "vllm"

    def __init__(self, model_dir: str, tensor_parallel: int = 1, trust_remote_code: bool = False):
        try:
            from vllm import LLM
        except ImportError as e:
            from rac.io import RacError
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
