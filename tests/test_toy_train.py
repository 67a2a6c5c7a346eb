"""`rac toy train`: an interrupted run resumes to the same model as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import rac.toy.train as train_mod
from rac.toy.train import TrainConfig, batch_for_step, step_batches, train

TINY = TrainConfig(steps=12, batch_size=8, checkpoint_every=5, hidden_size=16, num_layers=1,
                   num_heads=2, num_kv_heads=1, intermediate_size=32, warmup_steps=2)


def test_batches_are_a_function_of_the_step(toy_tokenizer):
    a = batch_for_step(TINY, toy_tokenizer, 6)
    b = batch_for_step(TINY, toy_tokenizer, 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ids, attn, labels = a
    # loss only where there is text, never on padding
    assert torch.all(labels[attn == 0] == -100)


@pytest.mark.parametrize("workers", [0, 1])
def test_prefetched_batches_are_the_batches_of_their_steps(toy_tokenizer, workers):
    # start mid-group, as a resumed run does (checkpoints need not fall on a group boundary)
    got = list(step_batches(TINY, toy_tokenizer, 6, workers=workers))
    assert [step for step, _ in got] == list(range(6, TINY.steps))
    for step, batch in got:
        assert all(torch.equal(x, y) for x, y in zip(batch, batch_for_step(TINY, toy_tokenizer, step)))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    info = train(TINY, tmp_path / "a", tmp_path / "a.work")
    real = train_mod.lr_at

    def dies_at_8(cfg, step):
        if step == 8:
            raise KeyboardInterrupt
        return real(cfg, step)

    monkeypatch.setattr(train_mod, "lr_at", dies_at_8)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "b", tmp_path / "b.work")
    assert not (tmp_path / "b").exists()  # no half-written model
    monkeypatch.setattr(train_mod, "lr_at", real)
    train(TINY, tmp_path / "b", tmp_path / "b.work")  # resumes from the step-5 checkpoint
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    logged = json.loads((tmp_path / "b" / "training.json").read_text())
    assert logged["config"]["steps"] == 12 and logged["parameters"] == info["parameters"]


def test_training_never_draws_a_held_out_problem_even_renamed():
    """The trainer kept problems whose *text* hashed into train: 62 of the 500 test problems of the
    reference run were training problems with other names. It now keeps train skeletons only."""
    from rac.tasks.generators import generate
    from rac.tasks.overlap import shared
    from rac.tasks.problems import Problem
    from rac.toy.train import training_problems

    drawn = list(training_problems(TrainConfig(), groups=150))
    assert len(drawn) > 20000
    trained = [Problem(f"t{i}", p.problem, p.answer, {"family": p.family}) for i, p in enumerate(drawn)]
    for split in ("val", "calib", "test"):
        held = [Problem(p.id, p.problem, p.answer, {"family": p.extra["family"]})
                for p in generate("arith", 500, 0, split, ("word",))]
        assert shared(held, trained) == [], split
