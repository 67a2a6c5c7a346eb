"""FP8 (E4M3) weight quantization with one scale per output channel, applied after pruning.

Weights are quantized and immediately dequantized ("fake quantization"), so a CPU can evaluate the
accuracy of the FP8 model with ordinary matmuls. Zeros map to zeros, so the sparsity mask survives.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def fp8_per_channel(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized weight in W's dtype, per-row scales) for an E4M3 per-channel quantization."""
    Wf = W.float()
    scale = (Wf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = (Wf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return (q.float() * scale).to(W.dtype), scale.squeeze(1)
