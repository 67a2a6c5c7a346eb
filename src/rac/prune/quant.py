"""FP8 (E4M3) weight quantization with one scale per output channel, applied after pruning.

The scheme is **weight-only** FP8 (activations stay in the model's dtype; compressed-tensors and
vLLM call it W8A16-FP8): what ``--fp8`` evaluates is exactly what ``--fp8-export`` writes. Weights
are quantized and immediately dequantized ("fake quantization"), so a CPU can evaluate the accuracy
of the FP8 model with ordinary matmuls. Zeros map to zeros, so the sparsity mask survives.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rac.io import RacError

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
FP8_DIR = "fp8-compressed-tensors"
SCHEME = "FP8 E4M3 weights, one scale per output channel (amax / 448), activations unquantized"
# llm-compressor matches module names against ``ignore``; a plain "lm_head" does not match the
# head's name when the targets are "Linear" (0.14), a regular expression does.
IGNORE_HEAD = "re:.*lm_head"


def fp8_per_channel(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized weight in W's dtype, per-row scales) for an E4M3 per-channel quantization."""
    Wf = W.float()
    scale = (Wf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = (Wf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return (q.float() * scale).to(W.dtype), scale.squeeze(1)


def require_llmcompressor() -> None:
    try:
        import llmcompressor  # noqa: F401
    except ImportError as e:
        raise RacError("--fp8-export writes the compressed-tensors format with llm-compressor: "
                       "pip install 'rac[llmcompressor]'") from e


def export_fp8(lm: torch.nn.Module, tok, out: Path) -> None:
    """Write the (already FP8-gridded) model in the compressed-tensors format vLLM loads, with the
    same scheme rac evaluates (``SCHEME``). llm-compressor's per-channel min-max scale is amax /
    448, as ours, so it re-quantizes our grid exactly; the head stays unquantized."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    weights = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True,
                               dynamic=False)
    recipe = QuantizationModifier(
        config_groups={"fp8_weights": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=[IGNORE_HEAD])
    model = copy.deepcopy(lm)
    oneshot(model=model, recipe=recipe)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
