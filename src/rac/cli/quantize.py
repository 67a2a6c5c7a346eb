"""``rac quantize``: GPTQ, layer by layer, on the pruning engine's statistics; and the quantization
arguments ``rac prune --quantize`` shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import model_args, recipe_arg, refine_args, threads

DEFAULT_GROUP = 128


def group_size(text: str) -> int | str:
    """``--group-size``: a positive number of input columns, or ``channel`` (one grid per row)."""
    if text == "channel":
        return text
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a group size: give N >= 1 input "
                                         "columns, or 'channel' for one grid per output row")
    return size


def quant_args(p: argparse.ArgumentParser) -> None:
    """How the weights are quantized (the scheme itself is each verb's own argument)."""
    p.add_argument("--group-size", type=group_size,
                   help="one scale (and zero point) per N consecutive inputs of a row, or "
                   f"'channel' for one per row (default {DEFAULT_GROUP})")
    p.add_argument("--actorder", action="store_true",
                   help="process columns by decreasing activation size (GPTQ's act-order); the "
                   "groups stay the columns in place")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_const", const=True,
                     help="symmetric grids, no zero point (default)")
    sym.add_argument("--asym", dest="sym", action="store_const", const=False,
                     help="asymmetric grids with an integer zero point")


def export_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export", action="store_true",
                   help="also write OUT/<scheme>-compressed-tensors (packed int weights vLLM "
                   "loads; 4- or 8-bit; needs the llmcompressor extra)")


def quant_config(a: argparse.Namespace, scheme: str | None):
    """The ``QuantConfig`` of ``quant_args`` and ``scheme``; None without a scheme, where any
    quantization argument given is refused."""
    from rac.io import RacError
    from rac.prune.config import QuantConfig

    if scheme is None:
        given = [flag for flag, on in (("--group-size", a.group_size is not None),
                                       ("--actorder", a.actorder), ("--sym/--asym", a.sym is not None))
                 if on]
        if given:
            raise RacError(f"{', '.join(given)} only apply with --quantize SCHEME")
        return None
    from rac.prune.config import WITH_ACTIVATIONS

    # W8A8 is per channel by definition; weight-only schemes default to groups
    default = None if scheme in WITH_ACTIVATIONS else DEFAULT_GROUP
    size = {None: default, "channel": None}.get(a.group_size, a.group_size)
    return QuantConfig(scheme, size, a.sym is not False, a.actorder)


def engine_args(p: argparse.ArgumentParser) -> None:
    """What the engine does with the calibration statistics, for pruning and quantizing alike."""
    p.add_argument("--scope", default="all", help="KIND[@LAYERS]: all|attn|mlp at all|"
                   "first-third|first-last-third|0-3,7 (default: all)")
    p.add_argument("--true-sequential", action="store_true",
                   help="also propagate inside each block (q/k/v, o, gate/up, down)")
    p.add_argument("--segment-weights", nargs="+", metavar="SEGMENT=W",
                   help="reweight tokens by segment, e.g. decode=2 (extension beyond the paper)")
    p.add_argument("--balance-segments", action="store_true",
                   help="weigh segments so that prompt and decode tokens have equal shares of the "
                   "statistics (the report gives the weights used)")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT/GPTQ column block")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT/GPTQ dampening")
    p.add_argument("--dense-targets", action="store_true",
                   help="fit each layer to the dense model's outputs on the compressed model's "
                   "inputs (corrects error accumulated in earlier blocks; beyond the paper)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the weights' and forward passes' dtype, and the output's (default: the "
                   "checkpoint's); statistics and solves stay float32 (bf16 measured in "
                   "bench/README.md)")
    p.add_argument("--batch-tokens", type=int, default=8192,
                   help="tokens per forward batch (the forward's working memory grows with it)")
    p.add_argument("--stream", action="store_true",
                   help="never hold the whole model: read each decoder block from the checkpoint "
                   "when it is reached and write it out when done (peak memory one block plus "
                   "the activations; the same output, bit for bit; with --batch-tokens 2048 a "
                   "1.5B in fp32 peaked at 0.31 of its weights, bench/README.md)")
    p.add_argument("--activation-memory", type=float, metavar="MB",
                   help="keep at most MB of calibration hidden states in memory, the rest in "
                   "memory-mapped files, and recompute a staged block's MLP inputs instead of "
                   "holding them past it (default: all in memory)")
    p.add_argument("--spill-dir", type=Path,
                   help="where those files go (default: beside --out; not a tmpfs)")


def memory_config(a: argparse.Namespace):
    """``engine_args``' data movement as a ``MemoryConfig``."""
    from rac.io import RacError
    from rac.prune.stream import MemoryConfig

    if a.spill_dir is not None and a.activation_memory is None:
        raise RacError("--spill-dir only applies with --activation-memory MB")
    return MemoryConfig(a.stream, a.activation_memory, a.spill_dir)


def engine_options(a: argparse.Namespace) -> dict:
    """``engine_args`` as ``PruneConfig`` fields (None: not given)."""
    from rac import models
    from rac.calibset import parse_segment_weights
    from rac.prune.config import Scope
    from rac.prune.sparsegpt import SparseGPTConfig

    return dict(scope=Scope.parse(a.scope), true_sequential=a.true_sequential,
                sparsegpt=SparseGPTConfig(blocksize=a.blocksize, percdamp=a.percdamp),
                segment_weights=parse_segment_weights(a.segment_weights or []),
                balance_segments=a.balance_segments or None,
                dense_targets=a.dense_targets or None, device=models.pick_device(a.device))


def add(sub: argparse._SubParsersAction) -> None:
    from rac.prune.config import WEIGHT_ONLY, WITH_ACTIVATIONS

    p = sub.add_parser("quantize", help="quantize a model's weights layer by layer with GPTQ")
    model_args(p)
    p.add_argument("--calib", type=Path, required=True, help="calibration set from 'rac calib'")
    p.add_argument("--scheme", required=True,
                   help=f"weight-only: {', '.join(WEIGHT_ONLY)} (activations stay in the model's "
                   f"dtype); {', '.join(WITH_ACTIVATIONS)}: int8 weights per channel and int8 "
                   "activations per token at run time, saved as the compressed-tensors checkpoint "
                   "rac eval and vLLM run")
    quant_args(p)
    export_arg(p)
    engine_args(p)
    recipe_arg(p)
    refine_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac import models
    from rac.prune.distributed import init_from_env, world
    from rac.prune.run import quantize_to_dir

    threads(a.threads)
    init_from_env(models.pick_device(a.device))  # under torchrun: join its ranks
    quant = quant_config(a, a.scheme)
    report = quantize_to_dir(a.model, a.calib, quant, a.out, recipe=a.recipe,
                             refine_epochs=a.refine_epochs, refine_lr=a.refine_lr,
                             export=a.export,
                             batch_tokens=a.batch_tokens, trust_remote_code=a.trust_remote_code,
                             overwrite=a.overwrite, memory=memory_config(a), dtype=a.dtype,
                             **engine_options(a))
    if world()[0]:
        return  # rank 0 reports
    t = report.totals
    print(f"quantized {t.linears} linears with GPTQ to {describe(quant)}, mean relative error "
          f"{t.mean_relative_error:.4f}, {t.wall_s:.1f} s, peak RSS {t.peak_rss_mb:.0f} MB "
          f"-> {a.out}")


def describe(quant) -> str:
    """E.g. 'W4A16 (groups of 128, symmetric, act-order)'."""
    groups = "per channel" if quant.group_size is None else f"groups of {quant.group_size}"
    return (f"{quant.scheme} ({groups}, {'symmetric' if quant.sym else 'asymmetric'}"
            f"{', act-order' if quant.actorder else ''}"
            f"{', int8 activations per token' if quant.activation_bits else ''})")
