"""Top-p (after top-k, if any) for vLLM on a CPU without sorting the vocabulary at every step.

vLLM's CPU sampler (no Triton there) applies top-p by sorting each row's logits over the whole
vocabulary at every decode step: 5.6 s for 256 rows of Qwen2.5's 152k words on its one serving
thread, against 0.35 s here; 4.4 s against 0.45 s with top-k 20 (``bench/vllm_top_p.py
--ops-only``, bench/README.md). This logits processor applies the same rule ranking only the most
likely tokens (``rac.sampling.top_p_logits``; where logits tie at the edge of the set, which of the
tied tokens are kept may differ from vLLM's sort, not how likely the set is); rac gives vLLM
``top_p=1`` and the request's top-p in ``extra_args``. vLLM applies argmax-invariant processors
after the temperature and before its own top-k / top-p, so the set is taken from the tempered
distribution, as vLLM's own is. With top-k as well (Qwen2.5's released checkpoints ship top_k=20),
vLLM sorts the vocabulary for the two together, so the request's top-k comes here too (vLLM gets
none) and is applied first: top-p then ranks the top-k tokens, renormalized, as vLLM's
``apply_top_k_top_p_pytorch`` does.

Registered on a CPU only (on a GPU vLLM's top-p does not sort on the host) and used where
``rac.vllm_support.rac_top_p`` says; imported by vLLM's engine process
(``rac.vllm_nucleus:NucleusLogitsProcessor``), never by rac outside an environment with vLLM."""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from rac.sampling import top_p_logits

KEY = "rac_top_p"  # SamplingParams.extra_args: the request's top-p
TOP_K = "rac_top_k"  # and its top-k, where it has one
FQCN = f"{__name__}:NucleusLogitsProcessor"


def nucleus_logits(logits: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """``logits`` with ``-inf`` outside each row's top-k (``top_k[i]`` 0: none; ties with the k-th
    kept, as vLLM and transformers keep them), then outside the top-p set of what is left."""
    if top_k.any():
        none = top_k <= 0  # ranked as k=1 and then let through: a row without top-k must not
        k = top_k.masked_fill(none, 1).clamp(max=logits.shape[1])  # make every row's rank long
        kth = logits.topk(int(k.max()), dim=-1).values.gather(1, (k - 1).unsqueeze(1))
        kth[none] = float("-inf")
        logits.masked_fill_(logits < kth, float("-inf"))
    return top_p_logits(logits, top_p)


def _settings(params, _, __) -> tuple[float, int] | None:
    """A request's (top-p, top-k or 0), where rac applies them (``extra_args``)."""
    extra = params.extra_args or {}
    return (extra[KEY], extra.get(TOP_K, 0)) if KEY in extra else None


class NucleusLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.top_p: dict[int, tuple[float, int]] = {}  # batch row -> (top-p, top-k or 0)
        self.rows = torch.zeros(0, dtype=torch.long)  # the same, as tensors
        self.p, self.k = torch.zeros(0), torch.zeros(0, dtype=torch.long)

    def is_argmax_invariant(self) -> bool:
        return True  # the most likely token is always kept

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if process_dict_updates(self.top_p, batch_update, _settings):
            rows = sorted(self.top_p)
            self.rows = torch.tensor(rows, dtype=torch.long)
            self.p = torch.tensor([self.top_p[r][0] for r in rows])
            self.k = torch.tensor([self.top_p[r][1] for r in rows], dtype=torch.long)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        if len(self.rows) == logits.shape[0]:  # every row (rows sorted: 0..n-1): in place, with
            return nucleus_logits(logits, self.p, self.k)  # no copy of the logits out and back
        logits[self.rows] = nucleus_logits(logits[self.rows], self.p, self.k)
        return logits
