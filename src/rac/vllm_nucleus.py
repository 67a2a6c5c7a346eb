"""Top-p for vLLM on a CPU without sorting the vocabulary at every step.

vLLM's CPU sampler (no Triton there) applies top-p by sorting each row's logits over the whole
vocabulary at every decode step: 256 rows of Qwen2.5's 152k words take seconds on two cores,
several times the model's own forward pass, so sampled generation ran at a fraction of greedy's
rate (bench/README.md). This logits processor applies the same rule ranking only the most likely
tokens (``rac.sampling.top_p_logits``); rac gives vLLM ``top_p=1`` and the request's top-p in
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
            self.rows = torch.tensor(list(self.top_p), dtype=torch.long)
            self.p = torch.tensor(list(self.top_p.values()))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        logits[self.rows] = top_p_logits(logits[self.rows], self.p)
        return logits
