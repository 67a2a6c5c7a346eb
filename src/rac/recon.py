"""Token-wise reconstruction error (the paper's Figure 2).

For held-out problems: take the dense model's greedy rollout, feed the same prompt + rollout to the
dense model and to two pruned models (teacher forcing), and compute per token the last-layer
hidden-state error e_t = ||h_dense,t - h_pruned,t||_2. The heatmap shows e_A / e_B (rows:
problems, columns: token index aligned at the prompt/decode boundary, dashed line there; a
diverging colormap centred at 1: red where model A errs more).
"""

from __future__ import annotations

import statistics
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch

from rac import models
from rac.batched import generate_all
from rac.generate import Engine, Sampling, open_backend, request_seed
from rac.io import atomic_dir, atomic_write_text, save_figure, write_json
from rac.tasks.problems import answer_form, read_problems


@dataclass
class Sequence:
    problem_id: str
    ids: list[int]
    boundary: int  # number of prompt tokens


@torch.inference_mode()
def last_hidden(lm: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    out = lm(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0].float()


def token_errors(dense: torch.nn.Module, pruned: torch.nn.Module, seqs: list[Sequence]
                 ) -> list[torch.Tensor]:
    return [torch.linalg.vector_norm(last_hidden(dense, s.ids) - last_hidden(pruned, s.ids), dim=-1)
            for s in seqs]


def rollouts(dense_dir: str | Path, problems_file: Path, n: int, max_new_tokens: int,
             engine: Engine | None = None, batch_size: int = 64, progress: bool = True
             ) -> list[Sequence]:
    """The dense model's greedy rollouts on the first ``n`` problems."""
    tok = models.load_tokenizer(dense_dir)
    problems = read_problems(problems_file)[:n]
    texts = models.instructions(models.defaults(dense_dir), problems, None)
    thinking = models.thinking_for(dense_dir, tok, None)
    prompts = [models.prompt_ids(tok, p.problem, texts[answer_form(p)], thinking) for p in problems]
    with closing(open_backend(dense_dir, tok, engine)) as backend:
        comps = generate_all(backend, prompts, Sampling(0.0, 1.0, max_new_tokens),
                             [request_seed(0, p.id, 0) for p in problems], batch_size,
                             desc="rollouts", progress=progress)
    return [Sequence(p.id, pr + c.ids, len(pr)) for p, pr, c in zip(problems, prompts, comps)]


def summarize(errors: list[torch.Tensor], seqs: list[Sequence]) -> dict:
    prompt = torch.cat([e[:s.boundary] for e, s in zip(errors, seqs)])
    decode = torch.cat([e[s.boundary:] for e, s in zip(errors, seqs)])
    return {"mean_error_prompt": float(prompt.mean()), "mean_error_decode": float(decode.mean()),
            "prompt_tokens": len(prompt), "decode_tokens": len(decode)}


def heatmap(ratios: list[torch.Tensor], seqs: list[Sequence], path: Path, label_a: str,
            label_b: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    left = max(s.boundary for s in seqs)
    right = max(len(s.ids) - s.boundary for s in seqs)
    grid = torch.full((len(seqs), left + right), float("nan"))
    for row, (r, s) in enumerate(zip(ratios, seqs)):
        grid[row, left - s.boundary:left - s.boundary + len(s.ids)] = r
    finite = grid[torch.isfinite(grid)]
    lo = min(float(finite.min()), 0.99)
    hi = max(float(finite.max()), 1.01)
    fig, ax = plt.subplots(figsize=(10, 0.25 * len(seqs) + 1.8))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="RdBu_r", interpolation="nearest",
                   norm=TwoSlopeNorm(vmin=lo, vcenter=1.0, vmax=hi),
                   extent=(-left - 0.5, right - 0.5, len(seqs) - 0.5, -0.5))
    ax.axvline(-0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("token index relative to the prompt/decode boundary")
    ax.set_ylabel("held-out problem")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=f"e({label_a}) / e({label_b})")
    fig.tight_layout()
    save_figure(fig, path)


def recon(dense_dir: str | Path, model_a: Path, model_b: Path, problems_file: Path, out: Path, *,
          n: int = 20, max_new_tokens: int | None = None, labels: tuple[str, str] = ("A", "B"),
          engine: Engine | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    max_new = max_new_tokens or models.defaults(dense_dir).eval_max_new_tokens
    seqs = rollouts(dense_dir, problems_file, n, max_new, engine, progress=progress)
    dense = models.load_model(dense_dir)
    errs = {lab: token_errors(dense, models.load_model(m), seqs)
            for lab, m in zip(labels, (model_a, model_b))}
    eps = 1e-12
    ratios = [(a + eps) / (b + eps) for a, b in zip(errs[labels[0]], errs[labels[1]])]
    per_model = {lab: summarize(e, seqs) for lab, e in errs.items()}
    decode_ratio = statistics.fmean(float(r[s.boundary:].mean()) for r, s in zip(ratios, seqs))
    prompt_ratio = statistics.fmean(float(r[:s.boundary].mean()) for r, s in zip(ratios, seqs))
    result = {
        "dense": models.model_name(dense_dir), "models": {labels[0]: str(model_a),
                                                          labels[1]: str(model_b)},
        "problems_file": str(problems_file), "n_problems": len(seqs),
        "max_new_tokens": max_new, "per_model": per_model,
        "mean_ratio_prompt": prompt_ratio, "mean_ratio_decode": decode_ratio,
        "sequences": [{"id": s.problem_id, "boundary": s.boundary,
                       "errors": {lab: [round(float(x), 6) for x in e[i]] for lab, e in errs.items()}}
                      for i, s in enumerate(seqs)],
    }
    a, b = labels
    md = "\n".join([
        f"# Token-wise last-layer error: {a} vs {b}", "",
        f"{len(seqs)} held-out problems, teacher-forced on the dense model's greedy rollout.", "",
        "| model | mean error, prompt tokens | mean error, decode tokens |", "|---|---|---|",
        *[f"| {lab} | {v['mean_error_prompt']:.4f} | {v['mean_error_decode']:.4f} |"
          for lab, v in per_model.items()], "",
        f"Mean ratio e({a})/e({b}): prompt tokens {prompt_ratio:.3f}, decode tokens "
        f"{decode_ratio:.3f} (above 1: {a} reconstructs worse).", "",
        "![heatmap](recon_heatmap.png)", ""])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        heatmap(ratios, seqs, tmp / "recon_heatmap.png", a, b,
                f"e({a}) / e({b}) per token (dashed: prompt | decode)")
        write_json(tmp / "recon.json", result)
        atomic_write_text(tmp / "recon.md", md)
    return result
