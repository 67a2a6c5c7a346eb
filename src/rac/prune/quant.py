"""Quantized weights on disk: FP8 after pruning, and the export of both FP8 and integer grids in
the compressed-tensors format vLLM loads.

FP8 (E4M3) has one scale per output channel, applied after pruning. The scheme is **weight-only**
FP8 (activations stay in the model's dtype; compressed-tensors and vLLM call it W8A16-FP8): what
``--fp8`` evaluates is exactly what ``--fp8-export`` writes. Weights are quantized and immediately
dequantized ("fake quantization"), so a CPU can evaluate the accuracy of the FP8 model with
ordinary matmuls. Zeros map to zeros, so the sparsity mask survives.

Integer grids (``rac quantize``, ``rac prune --quantize``) come from GPTQ or joint SparseGPT, which
fit them as they go (``rac.prune.quant_grid``): the export writes those very codes, scales and
zero points (compressed-tensors' pack-quantized format), never a re-fit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rac.io import RacError
from rac.prune.config import QuantConfig
from rac.prune.quant_grid import GridParams

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


def int_dir(quant: QuantConfig) -> str:
    """The export's directory name inside the output, e.g. ``w4a16-compressed-tensors``."""
    return f"{quant.scheme.lower()}-compressed-tensors"


def check_int_export(quant: QuantConfig) -> None:
    """Refuse, before any work, an export vLLM could not load (W8A8 is always saved in the
    export's format: ``rac.prune.run``)."""
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as e:
        raise RacError("--export writes the compressed-tensors format: pip install "
                       "'rac[llmcompressor]'") from e
    if quant.bits not in (4, 8):
        raise RacError(f"--export: vLLM's integer kernels take 4- or 8-bit weights, not "
                       f"{quant.bits}; {quant.scheme} is saved dequantized only (drop --export)")


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


def export_int(lm: torch.nn.Module, tok, out: Path, quant: QuantConfig,
               grids: dict[str, GridParams]) -> None:
    """Write ``lm``, whose linears named in ``grids`` hold weights dequantized from those grids, as
    compressed-tensors pack-quantized int weights: the codes of the weights as evaluated, with
    their scales and zero points (the weights stay in the model's dtype; every other linear,
    the head included, is listed in ``ignore``). With activation order the columns were processed
    out of order but the groups are the columns in place (compressed-tensors' ``weight`` order)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )

    weights = QuantizationArgs(num_bits=quant.bits, type="int", symmetric=quant.sym,
                               strategy="group" if quant.group_size else "channel",
                               group_size=quant.group_size, dynamic=False,
                               actorder="weight" if quant.actorder else None)
    # W8A8: every input of a quantized linear rounded to int8 per token as it runs
    acts = QuantizationArgs(num_bits=quant.activation_bits, type="int", symmetric=True,
                            strategy="token", dynamic=True) if quant.activation_bits else None
    model = copy.deepcopy(lm)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    scheme = QuantizationScheme(targets=["Linear"], weights=weights, input_activations=acts)
    config = QuantizationConfig(config_groups={"weights": scheme},
                                ignore=[n for n in linears if n not in grids])
    apply_quantization_config(model, config)
    grid = quant.grid
    with torch.no_grad():
        for name, params in grids.items():
            module = model.get_submodule(name)
            module.weight_scale.copy_(params.scale)
            module.weight_zero_point.copy_(params.zero)
            # The compressor re-derives the codes as round(w / scale) in the weight's dtype,
            # which in bf16 misses some 8-bit codes by one; on the fp32 grid values it cannot.
            module.weight.data = grid.dequantize(params.codes(grid, module.weight),
                                                 *params.per_column(grid))
    # int4 weights packed eight to an int32 (vLLM's wNa16 kernels); W8A8's int8 weights as they are
    fmt = "int-quantized" if quant.activation_bits else "pack-quantized"
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    tok.save_pretrained(out)
