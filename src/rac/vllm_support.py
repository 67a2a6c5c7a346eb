"""What vLLM can run here, and how rac has it run, without importing vLLM until asked: the
checks that refuse a model in one line (or let ``--backend auto`` take transformers), the dtype
'auto' stands for, and the name of rac's top-p, which the identity of what vLLM generated holds."""

from __future__ import annotations

from pathlib import Path

import torch

from rac.io import RacError
from rac.sampling import Sampling

# How vLLM applies top-p under rac where ``rac_top_p`` says so (rac.vllm_nucleus, not vLLM's sort
# of the whole vocabulary): part of the identity of what vLLM sampled that way, so that no store
# or cached stage made the other way is taken for one made this way.
VLLM_TOP_P = "rac.vllm_nucleus"


def rac_top_p(sampling: Sampling) -> bool:
    """Whether rac's processor applies top-p (and the top-k before it) for vLLM: when sampling with
    top-p, on a CPU (on a GPU vLLM's top-p does not sort on the host). Top-k alone is left to
    vLLM, which takes it without a sort."""
    return sampling.temperature > 0 and sampling.top_p < 1 and not torch.cuda.is_available()


def top_p_identity(backend: str, sampling: Sampling) -> dict:
    """What a stage's key or record holds of rac's top-p: its name where vLLM ("auto" may be vLLM)
    sampled with it, else nothing (greedy, top-k alone and transformers stages keep their keys;
    top-k with top-p, once left to vLLM, now names it, so such stages are made again)."""
    return {"vllm_top_p": VLLM_TOP_P} if backend != "transformers" and rac_top_p(sampling) else {}


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86: AVX512-BF16 or AMX-BF16; Arm: BF16); True
    where the flags cannot be read (vLLM's own choice is then left alone)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return any(f in flags for f in ("avx512_bf16", "amx_bf16", "bf16"))


def vllm_dtype(dtype: str) -> str:
    """vLLM's dtype, with 'auto' made concrete where vLLM's own choice is a bad one: on a CPU it
    runs an fp32 or bf16 checkpoint in bf16, whose products a CPU without native bf16 emulates
    (4-8x slower than fp32 at 64 rows and more on an AVX2 EPYC, bench/cpu_dtype.py), so there
    'auto' is float32 whatever the checkpoint's dtype."""
    if dtype != "auto" or torch.cuda.is_available() or cpu_bf16():
        return dtype
    return "float32"


def _config(model_dir: str | Path, trust_remote_code: bool):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)


def _int_weights(cfg) -> bool:
    """Whether the checkpoint's weights are stored as integers (a compressed-tensors export)."""
    q = getattr(cfg, "quantization_config", None) or {}
    q = q if isinstance(q, dict) else q.to_dict()
    return any((group.get("weights") or {}).get("type") == "int"
               for group in q.get("config_groups", {}).values())


def _int_kernel() -> bool:
    """Whether this CPU's vLLM build has its kernel for int weights: the AVX2 build has none."""
    from vllm.platforms import current_platform

    current_platform.import_kernels()
    return hasattr(torch.ops._C, "cpu_gemm_wna16")


def _problem(cfg) -> str | None:
    """Why vLLM cannot run a model of config ``cfg`` here, or None. On a CPU its attention takes
    only some head sizes (it stops with a kernel assertion otherwise), and its AVX2 build has no
    kernel for int weights (the engine dies at its first forward pass)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    text = getattr(cfg, "text_config", cfg)
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        return f"head size {head}, vLLM's CPU attention takes {', '.join(map(str, sizes))}"
    if _int_weights(cfg) and not _int_kernel():
        return ("int-quantized weights, and vLLM's build for this CPU (AVX2, no AVX-512) has no "
                "kernel for them (cpu_gemm_wna16)")
    return None


def checked_config(model_dir: str | Path, trust_remote_code: bool):
    """The model's (text) config, or one line saying why vLLM cannot run it here."""
    cfg = _config(model_dir, trust_remote_code)
    problem = _problem(cfg)
    if problem:
        raise RacError(f"{model_dir}: {problem}; use --backend transformers")
    return getattr(cfg, "text_config", cfg)


def supported(model_dir: str | Path, trust_remote_code: bool = False) -> bool:
    return _problem(_config(model_dir, trust_remote_code)) is None
