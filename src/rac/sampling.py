"""Sampling settings and the choice of each next token.

Temperature and top-p are rac's per-model defaults (``rac_model.json``, else the paper's: T=0.6,
top-p 0.95). Top-k and the repetition penalty follow the model's own ``generation_config.json``
(Qwen2.5 instruct models ship top-k 20 and a repetition penalty of 1.05 or 1.1), unless they are
given or the model's file is ignored; both are applied by ``transformers``' own logits processors,
as ``generate`` applies them: the penalty to greedy decoding too, top-k only when sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rac import models
from rac.io import RacError

GENERATION_CONFIG = "generation_config.json"
# the fields of a generation_config.json that bear on sampling, and those rac follows
SHIPPED_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty")
FOLLOWED_FIELDS = ("top_k", "repetition_penalty")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6  # 0 means greedy
    top_p: float = 0.95
    max_new_tokens: int = 8192
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0  # 1: off; > 1 makes tokens already in the sequence rarer

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top-k must be an integer >= 0 (0: off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition penalty must be > 0 (1: off), got "
                             f"{self.repetition_penalty}")

    def switched_on(self) -> dict:
        """Top-k and the repetition penalty, those of them that are on."""
        return {k: getattr(self, k) for k, off in (("top_k", 0), ("repetition_penalty", 1))
                if getattr(self, k) != off}

    def identity(self) -> dict:
        """The settings as cache keys and trace stores hold them: top-k and the repetition
        penalty only when they are on, so that what was keyed before rac had them still
        matches."""
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, **self.switched_on()}

    def describe(self) -> str:
        """For reports: ``greedy`` or ``T=0.6, top-p=0.95``, then top-k and the penalty if on."""
        parts = ["greedy" if self.temperature == 0
                 else f"T={self.temperature}, top-p={self.top_p}"]
        if self.top_k and self.temperature > 0:
            parts.append(f"top-k={self.top_k}")
        if self.repetition_penalty != 1:
            parts.append(f"repetition penalty {self.repetition_penalty}")
        return ", ".join(parts)


def shipped_generation_config(model: str | Path) -> dict:
    """The sampling fields that the model's ``generation_config.json`` sets ({} without one)."""
    path = models.resolve(model, need_config=False) / GENERATION_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RacError(f"{path} is malformed ({e}); fix it, or delete it") from e
    if not isinstance(data, dict):
        raise RacError(f"{path} is not a JSON object; fix it, or delete it")
    return {k: data[k] for k in SHIPPED_FIELDS if data.get(k) is not None}


def sampling_for(model: str | Path, stage: str, temperature: float | None = None,
                 top_p: float | None = None, max_new_tokens: int | None = None, *,
                 top_k: int | None = None, repetition_penalty: float | None = None,
                 generation_config: bool = True) -> Sampling:
    """The sampling settings a stage ("eval" or "trace") uses on ``model``: what is given, else
    the model's: temperature, top-p and the token limit from ``rac_model.json`` (else the
    paper's), top-k and the repetition penalty from its ``generation_config.json`` (else off;
    ``generation_config`` False: off whatever the file says)."""
    d = models.defaults(model)
    shipped = shipped_generation_config(model) if generation_config else {}
    followed = {k: shipped[k] for k in FOLLOWED_FIELDS if k in shipped}
    given = {k: v for k, v in (("top_k", top_k), ("repetition_penalty", repetition_penalty))
             if v is not None}
    try:
        return Sampling(getattr(d, f"{stage}_temperature") if temperature is None else temperature,
                        getattr(d, f"{stage}_top_p") if top_p is None else top_p,
                        getattr(d, f"{stage}_max_new_tokens") if max_new_tokens is None
                        else max_new_tokens, **{**followed, **given})
    except ValueError as e:
        if set(followed) - set(given):
            raise RacError(f"{e}, from {models.resolve(model, need_config=False)}/"
                           f"{GENERATION_CONFIG}: fix the file, or pass --ignore-generation-config"
                           ) from e
        raise


def logits_processors(sampling: Sampling) -> list:
    """``transformers``' processors for what :func:`next_tokens` does not do itself, in
    ``generate``'s order: the repetition penalty (on the raw logits, greedy too), then top-k
    (sampling only; the same set before or after the temperature)."""
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
    )

    out: list = []
    if sampling.repetition_penalty != 1:
        out.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.top_k and sampling.temperature > 0:
        out.append(TopKLogitsWarper(sampling.top_k))
    return out


def next_tokens(logits: torch.Tensor, sampling: Sampling, u: torch.Tensor | None,
                candidates: int = 256) -> torch.Tensor:
    """One token per row of ``logits`` (rows, vocab): greedy, or sampled with temperature and
    top-p by inverting the CDF at the uniforms ``u`` (rows,). Top-p keeps the most likely tokens
    until their mass reaches ``top_p`` (at least one), as ``transformers``' ``TopPLogitsWarper``.

    Sorting a 152k-word vocabulary for every row and step costs about as much as the step's
    matrix products at small batches, so only the ``candidates`` most likely tokens are sorted;
    a row whose top-p set does not fit in them (a flat distribution) is sorted whole. Both give
    the same token for the same ``u``. Logits that top-k removed (``-inf``) have probability 0."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / sampling.temperature).softmax(-1)
    narrowed = sampling.top_p < 1 or sampling.top_k > 0
    k = min(candidates, probs.shape[1]) if narrowed else probs.shape[1]
    sorted_p, order = probs.topk(k, dim=-1)
    out = _invert_cdf(sorted_p, order, sampling.top_p, u)
    if k < probs.shape[1]:
        # the top-p set is wider than the candidates (only if a token beyond them has mass)
        flat = (sorted_p.sum(-1) < sampling.top_p) & (sorted_p[:, -1] > 0)
        if flat.any():
            full_p, full_order = probs[flat].sort(-1, descending=True)
            out[flat] = _invert_cdf(full_p, full_order, sampling.top_p, u[flat])
    return out


def _invert_cdf(sorted_p: torch.Tensor, order: torch.Tensor, top_p: float,
                u: torch.Tensor) -> torch.Tensor:
    """The token at uniform ``u`` of each row's top-p distribution, given the row's
    probabilities sorted in decreasing order (``order``: their token ids)."""
    if top_p < 1:
        sorted_p = sorted_p.masked_fill(_beyond_top_p(sorted_p, top_p), 0)
    cdf = sorted_p.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
    return order.gather(1, pick.clamp(max=cdf.shape[1] - 1)).squeeze(1)


def _beyond_top_p(sorted_p: torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """Which tokens top-p drops, given each row's probabilities sorted in decreasing order: a
    token is dropped when the tokens more likely than it already hold ``top_p`` of the mass (a
    float, or one value per row, shape (rows, 1)); the most likely token is always kept."""
    return sorted_p.cumsum(-1) - sorted_p >= top_p


def top_p_logits(logits: torch.Tensor, top_p: torch.Tensor, candidates: int = 256) -> torch.Tensor:
    """``logits`` (rows, vocab; temperature applied) with ``-inf`` for every token outside row
    ``i``'s top-p set at ``top_p[i]``: the rule ``next_tokens`` samples with, and vLLM's (which
    drops a token when the mass of the tokens less likely than it or equal to it is at most
    1 - top_p). As in ``next_tokens``, only the ``candidates`` most likely tokens are ranked, and a
    row whose set is wider than them is sorted whole."""
    probs = logits.float().softmax(-1)
    p = top_p.to(probs.dtype).unsqueeze(1)
    k = min(candidates, probs.shape[1])
    sorted_p, order = probs.topk(k, dim=-1)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep.scatter_(1, order, ~_beyond_top_p(sorted_p, p))
    wide = sorted_p.cumsum(-1)[:, -1] < p[:, 0] if k < probs.shape[1] else None
    if wide is not None and wide.any():  # the token after the candidates is kept too
        full_p, full_order = probs[wide].sort(-1, descending=True)
        keep[wide] = torch.zeros_like(full_p, dtype=torch.bool).scatter_(
            1, full_order, ~_beyond_top_p(full_p, p[wide]))
    return logits.masked_fill_(~keep, float("-inf"))
