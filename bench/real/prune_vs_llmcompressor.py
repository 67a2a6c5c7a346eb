"""`rac prune` vs llm-compressor's `oneshot` SparseGPT on a real model, same calibration tokens.

Each tool runs in its own process (so each peak RSS is its own): the model is loaded, then pruned
to 50% unstructured (SparseGPT, block 128, dampening 0.01 in both, `lm_head` kept dense) on the
rows of one rac calibration set, which llm-compressor takes as a `datasets.Dataset` of
`input_ids` / `attention_mask`. Each child saves three blocks' pruned weights; this process then
scores both against the dense weights on the same statistics (H of the dense model's inputs on
the calibration tokens): mean relative error ||(W - W_hat) X|| / ||W X|| per linear.

    python bench/real/prune_vs_llmcompressor.py models/qwen2.5-coder-0.5b-instruct/hf \\
        --calib runs/real-qwen05/cache/calib/<generic key> --threads 2

Prints a table of seconds, peak RSS, errors and ratios; a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rac import calibset, models
from rac.prune.batches import make_batches
from rac.prune.config import PruneConfig
from rac.prune.engine import prune_model
from rac.prune.forward import input_stats
from rac.prune.masks import Target
from rac.prune.stats import relative_error

TOOLS = ("rac", "llm-compressor")


def scored_blocks(n_blocks: int) -> list[int]:
    return sorted({0, n_blocks // 2, n_blocks - 1})


def prune_child(tool: str, model: str, calib: Path, out: Path) -> None:
    rows = calibset.read(calib).rows
    lm = models.load_model(model, "cpu")
    tok = models.load_tokenizer(model)
    t0 = time.perf_counter()
    if tool == "rac":
        prune_model(lm, models.decoder_blocks(lm), make_batches(rows, tok.pad_token_id),
                    PruneConfig("sparsegpt", Target(0.5)), progress=True)
    else:
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        ds = Dataset.from_dict({"input_ids": [r.ids for r in rows],
                                "attention_mask": [r.mask for r in rows]})
        oneshot(model=lm, dataset=ds, processor=str(models.resolve(model)),
                recipe=SparseGPTModifier(sparsity=0.5, block_size=128, dampening_frac=0.01,
                                         targets=["Linear"], ignore=["re:.*lm_head"]),
                num_calibration_samples=len(rows), max_seq_length=max(len(r.ids) for r in rows),
                pipeline="sequential")
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    blocks = models.decoder_blocks(lm)
    save_file({f"{b}.{name}": lin.weight.detach().contiguous()
               for b in scored_blocks(len(blocks))
               for name, lin in blocks[b].named_modules() if isinstance(lin, torch.nn.Linear)},
              str(out / "weights.safetensors"))
    (out / "result.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb,
                                                 "blocks": scored_blocks(len(blocks))}))


@torch.inference_mode()
def errors(model: str, calib: Path, pruned: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean relative error of each tool's scored linears, on the dense model's inputs."""
    rows = calibset.read(calib).rows
    lm, tok = models.load_model(model, "cpu"), models.load_tokenizer(model)
    blocks = models.decoder_blocks(lm)
    linears = {f"{b}.{name}": lin for b in scored_blocks(len(blocks))
               for name, lin in blocks[b].named_modules() if isinstance(lin, torch.nn.Linear)}
    stats = input_stats(lm, linears, make_batches(rows, tok.pad_token_id))
    return {tool: sum(relative_error(linears[k].weight, w[k], stats[k].H) for k in linears)
            / len(linears) for tool, w in pruned.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--calib", type=Path, required=True, help="a rac calibration set directory")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        prune_child(a.child, a.model, a.calib, a.child_out)
        return
    results, weights = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for tool in TOOLS:
            out = Path(tmp) / tool
            out.mkdir()
            subprocess.run([sys.executable, __file__, a.model, "--calib", str(a.calib),
                            "--threads", str(a.threads), "--child", tool, "--child-out", str(out)],
                           check=True)
            results[tool] = json.loads((out / "result.json").read_text())
            weights[tool] = load_file(str(out / "weights.safetensors"))
        errs = errors(a.model, a.calib, weights)
    n_tokens = sum(sum(r.mask) for r in calibset.read(a.calib).rows)
    lc = results["llm-compressor"]
    print(f"\n{a.model}, {n_tokens} calibration tokens, SparseGPT 50%, "
          f"{torch.get_num_threads()} threads")
    blocks = ", ".join(map(str, lc["blocks"]))
    print("| tool | prune seconds | llm-compressor / tool | peak RSS (MB) | RSS / llm-compressor "
          f"| mean relative error (blocks {blocks}) |")
    print("|---|---|---|---|---|---|")
    for tool in TOOLS:
        r = results[tool]
        print(f"| {tool} | {r['seconds']:.1f} | {lc['seconds'] / r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / lc['peak_rss_mb']:.2f} | "
              f"{errs[tool]:.4f} |")


if __name__ == "__main__":
    main()
