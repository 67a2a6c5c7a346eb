"""Top-p for vLLM on a CPU without sorting the vocabulary at every step.

vLLM's CPU sampler (no Triton there) applies top-p by sorting each row's logits over the whole
vocabulary at every decode step: 5.6 s for 256 rows of Qwen2.5's 152k words on its one serving
thread, against 0.35 s here (``bench/vllm_top_p.py --ops-only``, bench/README.md). This logits
processor applies the same rule ranking only the most likely tokens
(``rac.sampling.top_p_logits``); rac gives vLLM ``top_p=1`` and the request's top-p in
``extra_args``. vLLM applies argmax-invariant processors after the temperature and before its
own top-k / top-p, so the set is taken from the tempered distribution, as vLLM's own is.

Registered on a CPU only (on a GPU vLLM's top-p does not sort on the host) and used where
``rac.vllm_support.rac_top_p`` says; imported by vLLM's engine process
(``rac.vllm_nucleus:NucleusLogitsProcessor``), never by rac outside an environment with vLLM."""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from rac.sampling import top_p_logits

KEY = "rac_top_p"  # SamplingParams.extra_args: the request's top-p
FQCN = f"{__name__}:NucleusLogitsProcessor"


class NucleusLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.top_p: dict[int, float] = {}  # batch row -> top-p, for the requests that set one
        self.rows, self.p = torch.zeros(0, dtype=torch.long), torch.zeros(0)  # the same, as tensors

    def is_argmax_invariant(self) -> bool:
        return True  # the most likely token is always kept

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if process_dict_updates(self.top_p, batch_update,
                                lambda params, _, __: (params.extra_args or {}).get(KEY)):
            rows = sorted(self.top_p)
            self.rows = torch.tensor(rows, dtype=torch.long)
            self.p = torch.tensor([self.top_p[r] for r in rows])

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        if len(self.rows) == logits.shape[0]:  # every row (rows sorted: 0..n-1): in place, with
            return top_p_logits(logits, self.p)  # no copy of the batch's logits out and back
        logits[self.rows] = top_p_logits(logits[self.rows], self.p)
        return logits
