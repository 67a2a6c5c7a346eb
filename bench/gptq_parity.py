"""GPTQ parity: rac's GPTQ against llm-compressor's `oneshot` + `GPTQModifier`, in one run.

Both tools quantize the same model (every decoder linear, lm_head left alone) on the same
calibration tokens (rows with no padding), W4A16 by default: 4-bit, symmetric, groups of 128,
block 128, dampening 0.01 of mean(diag H), without and with activation order (llm-compressor's
"static": groups stay the columns in place, as rac's --actorder). Each tool runs in a child
process of its own, so its wall time and peak RSS are its own. The error of every quantized
linear is measured on the dense model's inputs, ||(W - W_hat) X||^2 / ||W X||^2 from one H per
linear, so both tools are judged on the same statistics; the table gives their ratio. A third
row, rac-no-clip, runs rac's GPTQ on the symmetric grid rac used before 2026-12-03,
max |w| / q_max (15 of 16 codes at 4 bits, nothing clipped), where rac and compressed-tensors now
fit max |w| / (q_max + 1/2): it measures what that grid cost.

    python bench/gptq_parity.py                      # random Llama layers, the 0.5B's shapes
    python bench/gptq_parity.py --model models/qwen2.5-coder-0.5b-instruct/hf \\
        --calib runs/c-generic --samples 32 --seq 512 --no-former-grid  # a real checkpoint

Prints a Markdown table of errors, seconds, peak memory and rac / llm-compressor ratios; a
benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rac.prune.batches import Batch
from rac.prune.config import QUANTIZER, PruneConfig, QuantConfig
from rac.prune.engine import prune_model
from rac.prune.forward import input_stats
from rac.prune.masks import Target
from rac.prune.stats import relative_error

BITS = {"W4A16": 4, "W8A16": 8}
TOOLS = ("rac", "rac-no-clip", "llmcompressor")


def batches_of(ids: torch.Tensor) -> list[Batch]:
    return [Batch(ids[i:i + 4], torch.ones_like(ids[i:i + 4]), torch.ones(ids[i:i + 4].shape))
            for i in range(0, len(ids), 4)]


def run_rac(lm, ids: torch.Tensor, scheme: str, group: int, actorder: bool) -> None:
    cfg = PruneConfig(QUANTIZER, Target(), quant=QuantConfig(scheme, group, True, actorder))
    prune_model(lm, lm.model.layers, batches_of(ids), cfg, progress=False)


def run_llmcompressor(lm, ids: torch.Tensor, model_dir: str, scheme: str, group: int,
                      actorder: bool) -> None:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    weights = QuantizationArgs(num_bits=BITS[scheme], type="int", symmetric=True,
                               strategy="group", group_size=group)
    recipe = GPTQModifier(config_groups={"g": QuantizationScheme(targets=["Linear"], weights=weights)},
                          ignore=["lm_head"], block_size=128, dampening_frac=0.01,
                          actorder="static" if actorder else None)
    ds = Dataset.from_dict({"input_ids": ids.tolist(),
                            "attention_mask": [[1] * ids.shape[1]] * len(ids)})
    oneshot(model=lm, dataset=ds, processor=model_dir, recipe=recipe, pipeline="sequential",
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1])


def use_unclipped_grid() -> None:
    """rac's former symmetric grid: scale max |w| / q_max, so codes -q_max .. q_max and code
    q_min unused; nothing is clipped."""
    from rac.prune import quant_grid

    fit = quant_grid.Grid.fit

    def fit_unclipped(self, W, dtype):
        scale, zero = fit(self, W, dtype)
        if self.sym:
            scale = (scale * (self.q_max + 0.5) / self.q_max).to(dtype).float()
        return scale, zero

    quant_grid.Grid.fit = fit_unclipped


def worker(tool: str, work: Path, scheme: str, group: int, actorder: bool) -> None:
    """One tool on the dense model in ``work``: its quantized linears to ``work/TOOL.pt``, its
    seconds and peak RSS printed as JSON."""
    torch.set_num_threads(int((work / "threads").read_text()))
    lm = AutoModelForCausalLM.from_pretrained(work / "dense", dtype=torch.float32).eval()
    ids = torch.load(work / "ids.pt")
    t0 = time.perf_counter()
    if tool.startswith("rac"):
        if tool == "rac-no-clip":
            use_unclipped_grid()
        run_rac(lm, ids, scheme, group, actorder)
    else:
        run_llmcompressor(lm, ids, str(work / "dense"), scheme, group, actorder)
    seconds = time.perf_counter() - t0
    torch.save({n: m.weight.detach().clone() for n, m in lm.model.layers.named_modules()
                if isinstance(m, torch.nn.Linear)}, work / f"{tool}.pt")
    print(json.dumps({"seconds": seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def run_worker(tool: str, work: Path, a: argparse.Namespace, actorder: bool) -> dict:
    argv = [sys.executable, __file__, "--worker", tool, "--work", str(work), "--scheme", a.scheme,
            "--group-size", str(a.group_size)] + (["--actorder"] if actorder else [])
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{tool} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def grid_levels(W: torch.Tensor, group: int) -> int:
    """The most distinct values any group of a row holds (<= 2^bits on a grid)."""
    g = W.reshape(W.shape[0], -1, group)
    return max(len(torch.unique(g[r, j])) for r in range(0, g.shape[0], 97) for j in range(g.shape[1]))


def calibration_ids(a: argparse.Namespace, vocab: int) -> torch.Tensor:
    if not a.calib:
        return torch.randint(0, vocab, (a.samples, a.seq), generator=torch.Generator().manual_seed(0))
    from rac import calibset

    ds, _ = calibset.read_dataset(a.calib)
    # the set's real tokens end to end, cut into rows of --seq: both tools take rows with no
    # padding, and a set of short rows (generic text, prompts) still gives full ones
    tokens = [t for r, m in zip(ds["input_ids"], ds["attention_mask"]) for t, k in zip(r, m) if k]
    rows = [tokens[i:i + a.seq] for i in range(0, len(tokens) - a.seq + 1, a.seq)]
    if len(rows) < a.samples:
        sys.exit(f"{a.calib}: {len(tokens)} tokens make {len(rows)} rows of {a.seq}, {a.samples} "
                 "asked; use a smaller --seq or --samples")
    return torch.tensor(rows[:a.samples])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a checkpoint directory (default: random Llama layers)")
    ap.add_argument("--calib", help="a rac calibration set whose tokens to use, end to end "
                    "(default: random tokens)")
    ap.add_argument("--layers", type=int,
                    help="the random model's layers (default 4), or a checkpoint's first N blocks")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scheme", choices=sorted(BITS), default="W4A16")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--orders", choices=("none", "static", "both"), default="both",
                    help="activation orders to compare (each is a run of every tool)")
    ap.add_argument("--no-former-grid", action="store_true",
                    help="skip the rac-no-clip row (a third of the time on a real model)")
    ap.add_argument("--actorder", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.work, a.scheme, a.group_size, a.actorder)
        return
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if a.model:
            dense = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
            tokenizer_dir = a.model
            a.layers = a.layers or dense.config.num_hidden_layers
            del dense.model.layers[a.layers:]  # its first blocks only, when --layers says so
            dense.config.num_hidden_layers = a.layers
            if getattr(dense.config, "layer_types", None):
                dense.config.layer_types = dense.config.layer_types[:a.layers]
        else:
            # the 0.5B's layer shapes (hidden 896 = 7 x 128, MLP 4864 = 38 x 128), Llama layers
            a.layers = a.layers or 4
            cfg = LlamaConfig(vocab_size=32000, hidden_size=896, intermediate_size=4864,
                              num_hidden_layers=a.layers, num_attention_heads=14,
                              num_key_value_heads=2, max_position_embeddings=2048,
                              tie_word_embeddings=True)
            torch.manual_seed(0)
            dense = LlamaForCausalLM(cfg).eval()
            tokenizer_dir = None
        dense.save_pretrained(work / "dense")
        if tokenizer_dir:
            from transformers import AutoTokenizer
            AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(work / "dense")
        else:
            from rac.toy.tokenizer import build_tokenizer  # any processor: the ids are given
            build_tokenizer().save_pretrained(work / "dense")
        ids = calibration_ids(a, dense.config.vocab_size)
        torch.save(ids, work / "ids.pt")
        (work / "threads").write_text(str(a.threads))
        linears = {n: m for n, m in dense.model.layers.named_modules()
                   if isinstance(m, torch.nn.Linear)}
        stats = input_stats(dense, linears, batches_of(ids))
        rows = []
        orders = {"none": (False,), "static": (True,), "both": (False, True)}[a.orders]
        for actorder in orders:
            out = {}
            for tool in (t for t in TOOLS if not (a.no_former_grid and t == "rac-no-clip")):
                run = run_worker(tool, work, a, actorder)
                W_hat = torch.load(work / f"{tool}.pt")
                errs = [relative_error(m.weight.detach(), W_hat[n], stats[n].H)
                        for n, m in linears.items()]
                levels = max(grid_levels(W_hat[n], a.group_size) for n in list(linears)[:3])
                out[tool] = (run, errs, levels)
            rows.append((actorder, out))
    print_table(a, rows, list(linears))


def print_table(a: argparse.Namespace, rows: list, names: list[str]) -> None:
    """The Markdown table, then for each rac row the layers whose error ratio is furthest from 1."""
    print(f"\n{a.model or 'random Llama'}, {a.layers} layers, {a.scheme} symmetric, groups of "
          f"{a.group_size}, {a.samples} x {a.seq} calibration tokens, {a.threads} threads")
    print("| activation order | tool | mean layer error | rac / llm-compressor, geometric mean "
          "[min, max] over layers | seconds | peak RSS GB | levels in a group |")
    print("|---|---|---|---|---|---|---|")
    extremes = []
    for actorder, out in rows:
        order = "static" if actorder else "none"
        theirs = out["llmcompressor"][1]
        for tool, (run, errs, levels) in out.items():
            vs = "-"
            if tool != "llmcompressor":
                ratios = {n: o / t for n, o, t in zip(names, errs, theirs) if t > 0}
                logs = [math.log(r) for r in ratios.values()]
                vs = (f"{math.exp(sum(logs) / len(logs)):.3f} [{min(ratios.values()):.3f}, "
                      f"{max(ratios.values()):.3f}]")
                far = sorted(ratios, key=lambda n: abs(math.log(ratios[n])))[-3:]
                mine = dict(zip(names, errs))
                extremes += [f"{order} {tool} {n}: {mine[n]:.3g} vs {mine[n] / ratios[n]:.3g} "
                             f"(ratio {ratios[n]:.3f})" for n in far]
            print(f"| {order} | {tool} | {sum(errs) / len(errs):.5f} | "
                  f"{vs} | {run['seconds']:.1f} | {run['peak_rss_gb']:.2f} | {levels} |")
        print(f"| {order} | rac / llm-compressor | | | "
              f"{out['rac'][0]['seconds'] / out['llmcompressor'][0]['seconds']:.2f} | "
              f"{out['rac'][0]['peak_rss_gb'] / out['llmcompressor'][0]['peak_rss_gb']:.2f} | |")
    print("\nlayers furthest from equal error (rac vs llm-compressor):\n" + "\n".join(extremes))

if __name__ == "__main__":
    main()
