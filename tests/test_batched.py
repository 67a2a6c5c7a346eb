"""Journaled generation: an interrupted evaluation resumes with the completions it had made, and
only with completions of the same inputs."""

from __future__ import annotations

from contextlib import closing
from types import SimpleNamespace

import pytest

import rac.batched
import rac.evaluate
from rac.batched import Journal, generate_all
from rac.evaluate import EvalConfig, evaluate_model
from rac.generate import Completion, TransformersBackend
from rac.io import RacError
from rac.sampling import Sampling
from rac.tasks import arith
from rac.tasks.problems import Problem, write_problems

PROMPTS = [[i] * (1 + i % 4) for i in range(10)]
SEEDS = [1000 + 7 * i for i in range(10)]
SAMPLING = Sampling(1.0, 1.0, 8)


class Echo:
    """A backend whose completion is a function of its prompt and seed alone; it records the size
    of every batch it is given and fails on call ``fail_at``."""

    name = "echo"

    def __init__(self, fail_at: int | None = None):
        self.calls: list[int] = []
        self.fail_at = fail_at

    def generate(self, prompts, sampling, seeds):
        self.calls.append(len(prompts))
        if len(self.calls) == self.fail_at:
            raise RuntimeError("killed")
        return [Completion([p[0], s % 97, len(p)], "stop") for p, s in zip(prompts, seeds)]

    def close(self):
        pass


def journal(path, identity: dict, n: int = 10) -> Journal:
    """A journal opened and released again, as a run that ended leaves it."""
    opened = Journal(path, identity, n)
    opened.close()
    return opened


def test_an_interrupted_run_resumes_with_only_what_it_lacks(tmp_path):
    whole = generate_all(Echo(), PROMPTS, SAMPLING, SEEDS, 3, progress=False)
    path = tmp_path / "j.jsonl"
    first = Journal(path, {"model": "a"}, 10)
    with pytest.raises(RuntimeError):
        generate_all(Echo(fail_at=3), PROMPTS, SAMPLING, SEEDS, 3, progress=False, journal=first)
    first.close()
    second = Journal(path, {"model": "a"}, 10)
    assert len(second.done) == 6  # the two batches that ended before the third failed
    assert second.seconds > 0  # and the time they took
    again = Echo()
    assert generate_all(again, PROMPTS, SAMPLING, SEEDS, 3, progress=False, journal=second) == whole
    second.close()
    assert again.calls == [3, 1]  # the 4 it lacked
    assert journal(path, {"model": "a"}).done == dict(enumerate(whole))
    Journal.discard(path)
    assert list(tmp_path.iterdir()) == []  # the journal and its lock


def test_a_second_process_cannot_write_into_a_journal_in_use(tmp_path):
    path = tmp_path / "j.jsonl"
    held = Journal(path, {"model": "a"}, 10)
    with pytest.raises(RacError, match="another process is generating into j.jsonl"):
        Journal(path, {"model": "b"}, 10)  # it would put its completions under a's identity
    held.close()
    assert journal(path, {"model": "b"}).done == {}


def test_a_journal_of_other_inputs_is_started_over_not_mixed_in(tmp_path):
    path = tmp_path / "j.jsonl"
    with closing(Journal(path, {"model": "a"}, 10)) as a:
        generate_all(Echo(), PROMPTS, SAMPLING, SEEDS, 4, progress=False, journal=a)
    assert len(journal(path, {"model": "a"}).done) == 10
    assert journal(path, {"model": "b"}).done == {}
    assert journal(path, {"model": "a"}).done == {}  # b's start removed a's completions


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "j.jsonl"
    journal(path, {}).add([(0, Completion([1, 2], "stop")), (1, Completion([3], "length"))], 0.5)
    path.write_text(path.read_text()[:-5])
    kept = journal(path, {})
    assert kept.done == {0: Completion([1, 2], "stop")} and kept.seconds == 0.25
    assert journal(path, {}, 1).done == {0: Completion([1, 2], "stop")}  # the torn line is gone


def test_rac_eval_resumes_an_interrupted_run_from_its_journal(tmp_path, monkeypatch):
    problems = [Problem(p.id, p.problem, p.answer) for p in arith.generate(6, 5, "test")]
    write_problems(tmp_path / "p.jsonl", problems)
    cfg = EvalConfig(Sampling(1.0, 0.95, 48), samples=2, batch_size=4)
    whole = evaluate_model("embedded", tmp_path / "p.jsonl", tmp_path / "whole", cfg, progress=False)
    assert not list(tmp_path.glob(".*journal*"))  # removed once the evaluation is written
    assert whole["engine"]["backend"] == "transformers"  # the engine it resolved, recorded
    real, calls, clock = TransformersBackend.generate, [], [0.0]
    # a clock that moves only by each batch's 100 s: the times below are exact on a busy machine
    fake_time = SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(rac.batched, "time", fake_time)
    monkeypatch.setattr(rac.evaluate, "time", fake_time)

    def counted(self, prompts, sampling, seeds, kill_at=0):
        calls.append(len(prompts))
        if len(calls) == kill_at:
            raise RuntimeError("killed")
        clock[0] += 100.0
        return real(self, prompts, sampling, seeds)

    monkeypatch.setattr(TransformersBackend, "generate",
                        lambda *a: counted(*a, kill_at=2))  # killed in its second batch
    with pytest.raises(RuntimeError):
        evaluate_model("embedded", tmp_path / "p.jsonl", tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.journal.jsonl").exists()
    monkeypatch.setattr(TransformersBackend, "generate", counted)
    calls.clear()
    resumed = evaluate_model("embedded", tmp_path / "p.jsonl", tmp_path / "out", cfg, progress=False)
    assert calls == [4, 4]  # 12 requests, 4 of them in the journal
    assert resumed["summary"]["resumed"] == 4 and "resumed" not in whole["summary"]
    # the journaled batch's 100 s (the killed run's) and the two new batches' 200 s
    assert resumed["summary"]["generation_s"] == pytest.approx(300.0)
    assert [r["samples"] for r in resumed["problems"]] == [r["samples"] for r in whole["problems"]]
    assert "4 completions were read" in (tmp_path / "out" / "eval.md").read_text()
    assert not list(tmp_path.glob(".out.journal*"))
