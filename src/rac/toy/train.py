"""Train the embedded tiny reasoning model from scratch (``rac toy train``).

A Qwen2ForCausalLM, the architecture of DeepSeek-R1-Distill-Qwen, trained on a mixture of
reasoning traces (prompt -> ``<think>`` chain of thought ``</think>`` -> ``\\boxed{}`` answer) and
generic number-bearing prose, so that generic-text calibration is meaningful but off-task.

Everything is a function of the config and the step number: the batch for step ``s`` is drawn
from a generator seeded with ``(seed, s // 4)``, so a run resumed from a checkpoint is the same run.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rac.calibrate import generic
from rac.io import atomic_dir, atomic_write_text
from rac.models import RAC_MODEL_FILE
from rac.tasks import arith
from rac.tasks.splits import split_of
from rac.toy.tokenizer import build_tokenizer

# The embedded model is not an R1 checkpoint: no instruction suffix, greedy evaluation and budgets
# sized to its task (traces keep the paper's on-policy sampling, T=0.6, top-p 0.95).
RAC_MODEL_DEFAULTS = {"instruction": "", "eval_temperature": 0.0, "eval_top_p": 1.0,
                      "eval_max_new_tokens": 512, "trace_max_new_tokens": 512}


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float = 1e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    generic_fraction: float = 0.2  # share of generic prose in each batch
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    # One thread: for a model this small, two threads were slower than one (0.44 vs 0.39 s/step
    # over the first steps on a 2-core machine), and they fight any other process for the cores.
    threads: int = 1
    checkpoint_every: int = 250


def model_config(cfg: TrainConfig, tok: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=1024,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )


def draw_example(rng: random.Random, generic_fraction: float) -> str | arith.Problem:
    """One training example before tokenizing: generic prose, or a problem of the train split
    (by skeleton, so no problem of val, calib or test is trained on, not even with other names)."""
    if rng.random() < generic_fraction:
        return generic.document(rng)
    while True:
        p = arith.sample_problem(rng)
        if split_of(p.skeleton, "arith") == "train":
            return p


def group_draws(cfg: TrainConfig, group: int) -> tuple[list[str | arith.Problem], random.Random]:
    """The examples of steps ``4 * group`` to ``4 * group + 3``, untokenized, in draw order, and
    the group's generator (which goes on to order the batches)."""
    rng = random.Random(f"{cfg.seed}-{group}")
    return [draw_example(rng, cfg.generic_fraction) for _ in range(4 * cfg.batch_size)], rng


def _example(p: str | arith.Problem, tok: PreTrainedTokenizerFast) -> tuple[list[int], list[int]]:
    """(input ids, loss mask): loss on the whole generic text, on the completion of a trace."""
    if isinstance(p, str):
        ids = tok(p, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return ids, [1] * len(ids)
    prompt = tok.apply_chat_template([{"role": "user", "content": p.problem}],
                                     add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    completion = tok(arith.completion_text(p), add_special_tokens=False)["input_ids"]
    completion.append(tok.eos_token_id)
    return prompt_ids + completion, [0] * len(prompt_ids) + [1] * len(completion)


def training_problems(cfg: TrainConfig, groups: int | None = None) -> Iterator[arith.Problem]:
    """The problems a training run draws, in order (the first ``groups`` groups of four steps, or
    all): what the model saw, for checking it against held-out splits."""
    for group in range(groups if groups is not None else (cfg.steps + 3) // 4):
        yield from (p for p in group_draws(cfg, group)[0] if not isinstance(p, str))


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input ids, attention mask, labels


def group_batches(cfg: TrainConfig, tok: PreTrainedTokenizerFast, group: int) -> list[Batch]:
    """The batches of steps ``4 * group`` to ``4 * group + 3``, in step order.

    Four batches' worth of examples are drawn together and sorted by length, so a batch holds
    examples of similar length and little compute goes to padding; each example still lands in
    exactly one batch, so the training distribution is unchanged."""
    draws, rng = group_draws(cfg, group)
    pool = [_example(p, tok) for p in draws]
    pool.sort(key=lambda e: len(e[0]))
    order = list(range(4))
    rng.shuffle(order)
    return [_collate(pool[k * cfg.batch_size:(k + 1) * cfg.batch_size], tok.pad_token_id)
            for k in order]


def _collate(chunk: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(chunk), width), dtype=torch.long)
    labels = torch.full((len(chunk), width), -100, dtype=torch.long)
    for row, (x, mask) in enumerate(chunk):
        ids[row, :len(x)] = torch.tensor(x)
        attn[row, :len(x)] = 1
        labels[row, :len(x)] = torch.where(torch.tensor(mask, dtype=torch.bool), torch.tensor(x), -100)
    return ids, attn, labels


def batch_for_step(cfg: TrainConfig, tok: PreTrainedTokenizerFast, step: int) -> Batch:
    group, index = divmod(step, 4)
    return group_batches(cfg, tok, group)[index]


class _Groups(torch.utils.data.Dataset):
    def __init__(self, cfg: TrainConfig, tok: PreTrainedTokenizerFast):
        self.cfg, self.tok = cfg, tok

    def __getitem__(self, group: int) -> list[Batch]:
        return group_batches(self.cfg, self.tok, group)


def step_batches(cfg: TrainConfig, tok: PreTrainedTokenizerFast, start: int, workers: int = 1
                 ) -> Iterator[tuple[int, Batch]]:
    """``(step, batch)`` for steps ``start`` to ``cfg.steps - 1``. Batches are built by ``workers``
    background processes while the model trains (building them is about a tenth of a step's time
    on one core, a second core is otherwise idle, and the batches do not depend on the model), so
    the result is the same as calling ``batch_for_step`` step by step."""
    groups = range(start // 4, (cfg.steps + 3) // 4)
    loader = torch.utils.data.DataLoader(
        _Groups(cfg, tok), batch_size=None, sampler=groups, num_workers=workers,
        prefetch_factor=4 if workers else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed))  # leave the global RNG untouched
    for group, batches in zip(groups, loader):
        for index, batch in enumerate(batches):
            step = 4 * group + index
            if start <= step < cfg.steps:
                yield step, batch


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def train(cfg: TrainConfig, out_dir: Path, work_dir: Path, overwrite: bool = False) -> dict:
    """Train, checkpointing to ``work_dir`` (resumed if present), and save the model to ``out_dir``."""
    threads = cfg.threads or os.cpu_count() or 1  # 0: one per core
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    model = Qwen2ForCausalLM(model_config(cfg, tok))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.98))
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / "checkpoint.pt"
    log: list[dict] = []
    start, elapsed_before = 0, 0.0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path} was made with another config; use another --work-dir")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, log, elapsed_before = ckpt["step"], ckpt["log"], ckpt["elapsed_s"]
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(step_batches(cfg, tok, start), initial=start, total=cfg.steps, desc="train",
               unit="step")
    for step, (ids, attn, labels) in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 5), "lr": lr_at(cfg, step)})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"config": asdict(cfg), "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                        "step": step + 1, "log": log,
                        "elapsed_s": elapsed_before + time.perf_counter() - t0}, tmp)
            os.replace(tmp, ckpt_path)
    elapsed = elapsed_before + time.perf_counter() - t0
    info = {"config": asdict(cfg), "threads": threads, "train_seconds": round(elapsed, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, "log": log}
    model.eval()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp_dir:
        model.save_pretrained(tmp_dir)
        tok.save_pretrained(tmp_dir)
        atomic_write_text(tmp_dir / RAC_MODEL_FILE, json.dumps(RAC_MODEL_DEFAULTS, indent=2))
        atomic_write_text(tmp_dir / "training.json", json.dumps(info, indent=2))
    return info
