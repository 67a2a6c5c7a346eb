"""Phase I: on-policy traces (token ids as generated, resumable) and equal-budget calibration sets."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rac import calibset, models
from rac.calibrate.traces import load_traces, tokens_for
from rac.cli import main
from rac.io import RacError
from tests.conftest import make_model

RAC = [sys.executable, "-m", "rac.cli"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def calib_problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("p") / "calib.jsonl"
    assert main(["problems", "--n", "80", "--split", "calib", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def store(qwen2_dir, calib_problems, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t") / "traces"
    code = main(["traces", str(qwen2_dir), "--problems", str(calib_problems), "--out", str(out),
                 "--budget-tokens", "900", "--batch-size", "8", "--temperature", "0.7"])
    assert code == 0
    return out


def test_store_holds_ids_exactly_as_generated(qwen2_dir, calib_problems, tmp_path, capsys):
    out = tmp_path / "greedy"
    assert run(capsys, "traces", qwen2_dir, "--problems", calib_problems, "--out", out,
               "--budget-tokens", 200, "--batch-size", 4, "--temperature", 0)[0] == 0
    meta, traces = load_traces(out)
    assert meta["sampling"]["temperature"] == 0
    lm = models.load_model(qwen2_dir)
    tok = models.load_tokenizer(qwen2_dir)
    for t in traces[:4]:
        # regenerate one at a time, unbatched, greedily: the stored ids must be what it produces
        ids = torch.tensor([t.prompt_ids])
        gen = lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=meta["sampling"]["max_new_tokens"],
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        again = gen[0, len(t.prompt_ids):].tolist()
        if tok.eos_token_id in again:
            again = again[:again.index(tok.eos_token_id) + 1]
        assert again == t.completion_ids
        assert t.prompt_ids == models.prompt_ids(tok, t.problem, "")


def test_store_is_datasets_readable_and_reports_realized_tokens(store):
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(store / "shards"), split="train")
    done = json.loads((store / "done.json").read_text())
    assert len(ds) == done["traces"]
    assert done["tokens"] == sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in ds)
    assert done["tokens"] >= 900 and done["budget_reached"]
    assert set(ds.column_names) >= {"prompt_ids", "completion_ids", "boundary", "finish_reason"}
    assert all(r["boundary"] == len(r["prompt_ids"]) for r in ds)


def read_rows(store: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((store / "shards").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_store(qwen2_dir, calib_problems, store, tmp_path):
    """SIGKILL `rac traces` at random moments, rerun the same command, compare with `store`."""
    out = tmp_path / "killed"
    cmd = RAC + ["traces", str(qwen2_dir), "--problems", str(calib_problems), "--out", str(out),
                 "--budget-tokens", "900", "--batch-size", "8", "--temperature", "0.7",
                 "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 5.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert kills >= 1
    assert read_rows(out) == read_rows(store)
    assert json.loads((out / "done.json").read_text()) == json.loads(
        (store / "done.json").read_text())
    assert not list(out.rglob("*.tmp"))


def test_other_run_in_the_same_directory_is_refused(qwen2_dir, calib_problems, store, capsys):
    code, _, err = run(capsys, "traces", qwen2_dir, "--problems", calib_problems, "--out", store,
                       "--budget-tokens", 900, "--temperature", 0.3)
    assert code == 2 and "different run" in err


def segments_of(path: Path) -> list[list[int]]:
    ds, _ = calibset.read_dataset(path)
    return ds["segment"]


@pytest.mark.parametrize("pack", [0, 64])
def test_sources_have_equal_exact_budgets(qwen2_dir, calib_problems, store, tmp_path, capsys, pack):
    budget = 700
    for source, flags in [("generic", ["--text", "TEXT"]), ("prompt", ["--problems", calib_problems]),
                          ("rac", ["--traces", store]), ("reference", ["--problems", calib_problems])]:
        if source == "generic":
            text = tmp_path / "docs.txt"
            text.write_text("\n\n".join(f"Tom paid {i} dollars for {i + 3} pens." for i in range(200)))
            flags = ["--text", text]
        out = tmp_path / f"{source}-{pack}"
        code, stdout, err = run(capsys, "calib", "--source", source, "--tokenizer", qwen2_dir,
                                "--budget-tokens", budget, "--out", out, "--pack", pack, *flags)
        assert code == 0, err
        ds, info = calibset.read_dataset(out)
        assert info["tokens"] == budget
        assert sum(map(sum, ds["attention_mask"])) == budget
        counts = info["segment_tokens"]
        assert counts["prompt"] + counts["decode"] + counts["generic"] == budget
        assert ("problems" in info) == (source != "generic")  # generic text renders no problem
        for ids, mask, seg in zip(ds["input_ids"], ds["attention_mask"], ds["segment"]):
            assert len(ids) == len(mask) == len(seg)
            for _t, m, s in zip(ids, mask, seg):
                assert (m == 0) == (s == calibset.PAD)  # padding never appears unmasked
            if pack:
                assert len(ids) == pack
            else:
                assert all(mask)
        if source == "rac":
            assert counts["decode"] > 0 and counts["prompt"] > 0
        if source == "prompt":
            assert counts["prompt"] == budget


def test_rac_sequences_are_prompt_then_generated_ids(qwen2_dir, calib_problems, store, tmp_path):
    _, traces = load_traces(store)
    assert main(["calib", "--source", "rac", "--tokenizer", str(qwen2_dir), "--traces", str(store),
                 "--budget-tokens", "300", "--out", str(tmp_path / "r")]) == 0
    assert main(["calib", "--source", "prompt", "--tokenizer", str(qwen2_dir), "--problems",
                 str(calib_problems), "--budget-tokens", "300", "--out", str(tmp_path / "p")]) == 0
    rac_ds, rac_info = calibset.read_dataset(tmp_path / "r")
    prompt_ds, prompt_info = calibset.read_dataset(tmp_path / "p")
    # each set records the problems it was drawn from, in order, once each
    assert rac_info["problems"] == list(dict.fromkeys(t.problem_id for t in traces[:len(rac_ds)]))
    problems = [json.loads(line)["id"] for line in Path(calib_problems).read_text().splitlines()]
    assert prompt_info["problems"] == problems[:len(prompt_ds)]
    first = traces[0]
    assert rac_ds[0]["input_ids"] == first.prompt_ids + first.completion_ids
    assert rac_ds[0]["segment"] == [0] * len(first.prompt_ids) + [1] * len(first.completion_ids)
    # prompt-only draws on the same problems, in the same order, rendered identically
    for row, t in zip(prompt_ds, traces[:3]):
        assert row["input_ids"] == t.prompt_ids


def test_offpolicy_retokenizes_with_the_target_tokenizer(store, tmp_path, toy_tokenizer, capsys):
    """Traces from a model whose tokenizer numbers its vocabulary differently: the rac source
    refuses them, offpolicy re-tokenizes them and keeps the text."""
    from transformers import PreTrainedTokenizerFast

    from rac.toy.tokenizer import CHAT_TEMPLATE

    vocab = toy_tokenizer.backend_tokenizer.to_str()
    spec = json.loads(vocab)
    ids = spec["model"]["vocab"]
    shift = {tok: (i + 7) % len(ids) for tok, i in ids.items()}
    spec["model"]["vocab"] = shift
    for added in spec["added_tokens"]:
        added["id"] = shift.get(added["content"], added["id"])
    from tokenizers import Tokenizer

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                    pad_token="<|pad|>", eos_token="<|end|>", unk_token="<|unk|>",
                                    chat_template=CHAT_TEMPLATE)
    target = make_model(tmp_path / "target", "qwen2", other, rac_model={"instruction": ""})
    code, _, err = run(capsys, "calib", "--source", "rac", "--tokenizer", target, "--traces", store,
                       "--budget-tokens", 200, "--out", tmp_path / "x")
    assert code == 2 and "another tokenizer" in err
    code, _, err = run(capsys, "calib", "--source", "offpolicy", "--tokenizer", target, "--traces",
                       store, "--budget-tokens", 200, "--out", tmp_path / "off")
    assert code == 0, err
    ds, info = calibset.read_dataset(tmp_path / "off")
    _, traces = load_traces(store)
    src = models.load_tokenizer(store / "tokenizer")
    want = src.decode(traces[0].prompt_ids + traces[0].completion_ids)
    got = other.decode(ds[0]["input_ids"])
    assert got == want[:len(got)] and len(got) > 20
    assert ds[0]["input_ids"] != (traces[0].prompt_ids + traces[0].completion_ids)[:len(ds[0]["input_ids"])]


def test_rac_refuses_traces_of_another_model(store, llama_dir, tmp_path, capsys):
    code, _, err = run(capsys, "calib", "--source", "rac", "--tokenizer", llama_dir, "--traces",
                       store, "--budget-tokens", 100, "--out", tmp_path / "x")
    assert code == 2 and "not on-policy" in err
    assert run(capsys, "calib", "--source", "offpolicy", "--tokenizer", llama_dir, "--traces",
               store, "--budget-tokens", 100, "--out", tmp_path / "y")[0] == 0


def test_budget_beyond_the_available_tokens(qwen2_dir, calib_problems, tmp_path, capsys):
    args = ["calib", "--source", "prompt", "--tokenizer", qwen2_dir, "--problems", calib_problems,
            "--budget-tokens", 10**6, "--out", tmp_path / "c"]
    code, _, err = run(capsys, *args)
    assert code == 2 and "only" in err and "--allow-short" in err
    assert not (tmp_path / "c").exists()
    assert run(capsys, *args, "--allow-short")[0] == 0
    assert calibset.read_dataset(tmp_path / "c")[1]["tokens"] < 10**6


def test_existing_set_is_reused_or_protected(qwen2_dir, calib_problems, tmp_path, capsys):
    args = ["calib", "--source", "prompt", "--tokenizer", qwen2_dir, "--problems", calib_problems,
            "--out", tmp_path / "c"]
    assert run(capsys, *args, "--budget-tokens", 100)[0] == 0
    code, out, _ = run(capsys, *args, "--budget-tokens", 100)
    assert code == 0 and "already built" in out
    # a set written before sets recorded their problems is still this set, left as it is
    info_file = tmp_path / "c" / calibset.INFO_FILE
    older = {k: v for k, v in json.loads(info_file.read_text()).items() if k != "problems"}
    info_file.write_text(json.dumps(older))
    code, out, _ = run(capsys, *args, "--budget-tokens", 100)
    assert code == 0 and "already built" in out and json.loads(info_file.read_text()) == older
    code, _, err = run(capsys, *args, "--budget-tokens", 120)
    assert code == 2 and "different calibration set" in err
    assert run(capsys, *args, "--budget-tokens", 120, "--overwrite")[0] == 0


def test_inspect_prints_counts_histogram_and_sample(store, qwen2_dir, tmp_path, capsys):
    assert run(capsys, "calib", "--source", "rac", "--tokenizer", qwen2_dir, "--traces", store,
               "--budget-tokens", 300, "--out", tmp_path / "c")[0] == 0
    code, out, _ = run(capsys, "calib", "--inspect", tmp_path / "c", "--tokenizer", qwen2_dir)
    assert code == 0
    assert "tokens per segment: prompt" in out and "histogram" in out and "[decode]" in out
    n = len(calibset.read_dataset(tmp_path / "c")[1]["problems"])
    assert f"rows, from {n} problems" in out


def test_bad_calib_inputs(qwen2_dir, calib_problems, tmp_path, capsys):
    cases = [
        (["--source", "rac", "--budget-tokens", 10], "needs --traces"),
        (["--source", "prompt", "--budget-tokens", 10], "needs --problems"),
        (["--source", "rac", "--traces", tmp_path, "--budget-tokens", 10], "not a trace store"),
        (["--source", "prompt", "--problems", calib_problems, "--budget-tokens", 0], ">= 1"),
        (["--source", "generic", "--budget-tokens", 10], "needs --text"),
        (["--source", "generic", "--text", tmp_path / "none.txt", "--budget-tokens", 10],
         "does not exist"),
    ]
    for flags, needle in cases:
        code, _, err = run(capsys, "calib", "--tokenizer", qwen2_dir, "--out", tmp_path / "o", *flags)
        assert code == 2 and needle in err and "Traceback" not in err, (flags, err)
    assert not (tmp_path / "o").exists()


def test_llmcompressor_accepts_the_calibration_set(qwen2_dir, store, tmp_path):
    """The hand-off: llm-compressor's oneshot takes our dataset (input_ids + attention_mask)."""
    pytest.importorskip("llmcompressor", reason="the llmcompressor extra is not installed")
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    assert main(["calib", "--source", "rac", "--tokenizer", str(qwen2_dir), "--traces", str(store),
                 "--budget-tokens", "400", "--out", str(tmp_path / "c")]) == 0
    ds, _ = calibset.read_dataset(tmp_path / "c")
    lm = models.load_model(qwen2_dir)
    oneshot(model=lm, dataset=ds.remove_columns("segment"),
            recipe=SparseGPTModifier(sparsity=0.5, targets=["Linear"], ignore=["re:.*lm_head"]),
            num_calibration_samples=len(ds), max_seq_length=512, pipeline="sequential")
    w = lm.model.layers[0].mlp.down_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    # the README's recipe leaves lm_head dense (a plain "lm_head" would not match its name)
    assert float((lm.lm_head.weight == 0).float().mean()) < 0.01


def test_bad_trace_flags(qwen2_dir, calib_problems, tmp_path, capsys):
    for flags, needle in [(["--budget-tokens", 0], "--budget-tokens"),
                          (["--batch-size", 0], "--batch-size"),
                          (["--samples-per-prompt", 0], "--samples-per-prompt"),
                          (["--top-p", 2], "top-p"), (["--max-new-tokens", 0], "max new tokens")]:
        code, _, err = run(capsys, "traces", qwen2_dir, "--problems", calib_problems, "--out",
                           tmp_path / "t", *flags)
        assert code == 2 and needle in err and "Traceback" not in err, (flags, err)
    assert not (tmp_path / "t").exists()


def test_only_correct_keeps_and_reports_correct_traces(qwen2_dir, calib_problems, tmp_path, capsys):
    code, out, _ = run(capsys, "traces", qwen2_dir, "--problems", calib_problems, "--out",
                       tmp_path / "t", "--budget-tokens", 300, "--batch-size", 16, "--only-correct")
    assert code == 0
    done = json.loads((tmp_path / "t" / "done.json").read_text())
    # a random model solves nothing: every problem is tried, none kept, the budget is not reached
    assert done["kept"] == 0 and done["traces"] == 80 and not done["budget_reached"]
    assert "kept 0 correct" in out and "budget not reached" in out
    assert load_traces(tmp_path / "t")[1] == []


def test_generic_text_from_a_datasets_directory(qwen2_dir, tmp_path, capsys):
    import datasets

    datasets.Dataset.from_dict({"text": [f"Mia paid {i} dollars." for i in range(100)]}).save_to_disk(
        str(tmp_path / "ds"))
    code, _, err = run(capsys, "calib", "--source", "generic", "--tokenizer", qwen2_dir, "--text",
                       tmp_path / "ds", "--budget-tokens", 200, "--out", tmp_path / "c")
    assert code == 0, err
    assert calibset.read_dataset(tmp_path / "c")[1]["segment_tokens"]["generic"] == 200


def test_builtin_generic_text_for_any_model(qwen2_dir, tmp_path, capsys):
    code, _, err = run(capsys, "calib", "--source", "generic", "--tokenizer", qwen2_dir,
                       "--budget-tokens", 300, "--out", tmp_path / "x")
    assert code == 2 and "--builtin-text" in err
    code, _, err = run(capsys, "calib", "--source", "generic", "--tokenizer", qwen2_dir,
                       "--builtin-text", "--budget-tokens", 300, "--out", tmp_path / "g")
    assert code == 0, err
    info = json.loads((tmp_path / "g" / "calib_info.json").read_text())
    assert info["tokens"] == 300 and info["segment_tokens"]["generic"] == 300
    assert info["inputs"]["text"].startswith("built-in corpus")


def test_weights_fingerprint_tells_checkpoints_of_one_shape_apart(qwen2_dir, tmp_path):
    """The fingerprint was config + file names and sizes: a fine-tuned checkpoint of the same shape
    passed the on-policy check for another's traces."""
    import shutil

    from safetensors.torch import load_file, save_file

    from rac.models import weights_fingerprint

    other = tmp_path / "other"
    shutil.copytree(qwen2_dir, other)
    tensors = load_file(other / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    assert (other / "model.safetensors").stat().st_size == (qwen2_dir / "model.safetensors").stat().st_size
    before = weights_fingerprint(other)
    assert before != weights_fingerprint(qwen2_dir)
    (other / "README.md").write_text("notes")  # not part of the weights
    assert weights_fingerprint(other) == before


def test_sharded_traces_merge_into_the_store_of_one_run(qwen2_dir, calib_problems, tmp_path, capsys):
    """Two shards (sampled, T=1) merged give the unsharded store: its meta, its counts and the
    same rows in every shard file, cut where the budget cut the single run."""
    import pyarrow.parquet as pq

    flags = ["--problems", calib_problems, "--temperature", 1.0, "--top-p", 0.95, "--batch-size",
             8, "--budget-tokens", 1500, "--seed", 3]
    assert run(capsys, "traces", qwen2_dir, *flags, "--out", tmp_path / "one")[0] == 0
    for i in (0, 1):
        code, out, err = run(capsys, "traces", qwen2_dir, *flags, "--shard", f"{i}/2", "--out",
                             tmp_path / f"s{i}")
        assert code == 0 and "shard" in out, err
    code, out, err = run(capsys, "merge-traces", tmp_path / "s1", tmp_path / "s0", "--out",
                         tmp_path / "merged")
    assert code == 0, err
    one, merged = tmp_path / "one", tmp_path / "merged"
    assert json.loads((merged / "meta.json").read_text()) == json.loads((one / "meta.json").read_text())
    assert json.loads((merged / "done.json").read_text()) == json.loads((one / "done.json").read_text())
    names = sorted(f.name for f in (one / "shards").glob("*.parquet"))
    assert 1 < len(names) < len(list((tmp_path / "s0" / "shards").glob("*.parquet"))) * 2
    assert names == sorted(f.name for f in (merged / "shards").glob("*.parquet"))
    for name in names:
        assert (pq.read_table(one / "shards" / name).to_pylist()
                == pq.read_table(merged / "shards" / name).to_pylist())
    # refused: a shard missing, a shard of another run, a store that is not a shard
    code, _, err = run(capsys, "merge-traces", tmp_path / "s0", "--out", tmp_path / "m2")
    assert code == 2 and "give each of 0/2 .. 1/2 once" in err
    assert run(capsys, "traces", qwen2_dir, *flags[:-1], 4, "--shard", "1/2", "--out",
               tmp_path / "other")[0] == 0
    code, _, err = run(capsys, "merge-traces", tmp_path / "s0", tmp_path / "other", "--out",
                       tmp_path / "m3")
    assert code == 2 and "shards of different runs (they differ in seed)" in err
    code, _, err = run(capsys, "merge-traces", one, tmp_path / "s1", "--out", tmp_path / "m4")
    assert code == 2 and "not a finished shard" in err
    assert not any((tmp_path / m).exists() for m in ("m2", "m3", "m4"))
    code, _, err = run(capsys, "traces", qwen2_dir, *flags, "--shard", "2/2", "--out", tmp_path / "x")
    assert code == 2 and "need 0 <= I < N" in err


def test_a_short_store_is_refused_only_in_the_sets_own_vocabulary(tmp_path, qwen2_dir):
    """A store's count is in its own tokens: in another vocabulary the calibration set tokenizes
    the traces again and is the one that knows (and says) whether they fall short."""
    (tmp_path / "done.json").write_text(json.dumps({"tokens": 812, "kept": 3, "traces": 4}))
    own = models.tokenizer_fingerprint(models.load_tokenizer(qwen2_dir))
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer_fingerprint": own}))
    with pytest.raises(RacError, match="hold 812 tokens, fewer than the 862 needed: 3 of 4"):
        tokens_for(tmp_path, 862, qwen2_dir, "the traces", "add problems")
    assert tokens_for(tmp_path, 812, qwen2_dir, "the traces", "add problems")["kept"] == 3
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer_fingerprint": "another"}))
    assert tokens_for(tmp_path, 862, qwen2_dir, "the traces", "add problems")["tokens"] == 812
