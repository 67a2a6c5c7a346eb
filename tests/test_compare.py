"""rac compare: cells of two sweeps paired on the same problems, over the seeds both ran."""

from __future__ import annotations

import json

import pytest

from rac.cli import main
from rac.experiments.cells import Cell
from rac.experiments.compare import compare, label, markdown, to_json
from rac.io import RacError

SUMMARY = {"n_problems": 4, "samples_per_problem": 1, "accuracy": 0.0, "accuracy_se": 0.0,
           "mean_cot_tokens": 100.0, "max_hit_rate": 0.25, "wall_s": 10.0, "tokens_per_s": 5.0}


def record(source: str, pass1: list[float], seed: int = 0, target: str = "0.5") -> dict:
    run = {} if source == "dense" else {"seed": seed, "fraction": 1.0, "method": "sparsegpt",
                                        "target": target, "scope": "all", "fp8": False,
                                        "quant": "", "sparsity": float(target)}
    return {"source": source, "max_new_tokens": 400, **run, "summary": SUMMARY, "pass1": pass1}


def results(records: list[dict], sha: str | None = "abc", **prune) -> dict:
    out = {"config": {"model": "m", "prune": {"recipe": "paper", **prune}}, "records": records}
    return out | ({"test_sha256": sha} if sha else {})


def test_differences_are_paired_over_the_seeds_both_ran():
    base = results([record("dense", [1, 1, 0, 0]), record("rac", [1, 0, 0, 0], seed=0),
                    record("rac", [0, 0, 0, 0], seed=1), record("prompt", [0, 0, 0, 0])])
    again = record("dense", [1, 1, 0, 0]) | {"summary": {**SUMMARY, "wall_s": 11.0}}
    other = results([again, record("rac", [1, 1, 1, 0], seed=0)], recipe="best")
    cmp = compare(base, other)
    by = {label(p.cell): p for p in cmp.pairs}
    assert set(by) == {"dense, max 400", "RAC, sparsegpt, 0.5, scope all, max 400"}
    rac = by["RAC, sparsegpt, 0.5, scope all, max 400"]
    # seed 1 of base is not in other: only seed 0 is paired (1,0,0,0 against 1,1,1,0)
    assert rac.seeds == (0,) and rac.base.accuracy == 0.25 and rac.other.accuracy == 0.75
    # differences 0, 1, 1, 0: mean 0.5, sample SD sqrt(1/3), SE over 4 problems sqrt(1/3) / 2
    assert rac.diff == pytest.approx(0.5) and rac.se == pytest.approx((1 / 3) ** 0.5 / 2)
    assert not rac.beyond_2se
    assert by["dense, max 400"].diff == 0 and by["dense, max 400"].se == 0
    assert [label(c) for c in cmp.only_base] == ["prompt-only, sparsegpt, 0.5, scope all, max 400"]
    assert cmp.setting_changes == ["prune.recipe: paper -> best"] and cmp.extent_changes == []
    # the dense model evaluated again with the same outcomes: a measured 0, not a shared entry
    assert not any(p.same_eval for p in cmp.pairs)


def test_a_mixed_test_set_is_also_compared_within_each_form():
    forms = ["stdin", "function", "stdin", "function"]
    shared = record("dense", [1, 1, 0, 0])
    base = results([shared, record("rac", [0, 1, 0, 1])]) | {"test_forms": forms}
    other = results([shared, record("rac", [1, 0, 1, 1])]) | {"test_forms": forms}
    md = markdown(compare(base, other), ("a", "b"))
    # stdin (0, 2): +1, +1 -> +1.000 ± 0; function (1, 3): -1, 0 -> -0.500 ± 0.500; the shared
    # dense evaluation is no measurement and gets no row
    assert "| cell | function (n = 2) | stdin (n = 2) |" in md
    assert "| RAC, sparsegpt, 0.5, scope all, max 400 | -0.500 ± 0.500 | +1.000 ± 0.000 * |" in md
    assert "| dense, max 400 |" not in md.split("within each answer form")[1]
    rac = to_json(compare(base, other), ("a", "b"))["pairs"][1]
    assert rac["by_form"] == {"function": {"n": 2, "diff": -0.5, "se": 0.5, "beyond_2se": False},
                              "stdin": {"n": 2, "diff": 1.0, "se": 0.0, "beyond_2se": True}}
    assert "by_form" not in to_json(compare(base, other), ("a", "b"))["pairs"][0]  # shared dense
    # a form of one problem has a difference but no SE: null in the JSON, not a measured 0
    one = {"test_forms": ["stdin", "function", "stdin", "stdin"]}
    by = to_json(compare(base | one, other | one), ("a", "b"))["pairs"][1]["by_form"]["function"]
    assert by == {"n": 1, "diff": -1.0, "se": None, "beyond_2se": False}
    # the same file read into other forms (another rac version) cannot be paired by form
    with pytest.raises(RacError, match="other answer forms"):
        compare(base, other | {"test_forms": ["stdin"] * 4})
    single = [results(r["records"]) | {"test_forms": ["math"] * 4} for r in (base, other)]
    assert "within each answer form" not in markdown(compare(*single), ("a", "b"))


def test_a_setting_absent_from_an_older_config_is_its_default_not_a_change():
    older = results([record("dense", [1, 0, 1, 0])])
    newer = results([record("dense", [1, 0, 1, 1])])
    newer["config"]["traces"] = {"only_correct": False}  # written after the field existed
    assert compare(older, newer).setting_changes == []
    newer["config"]["traces"] = {"only_correct": True}
    assert compare(older, newer).setting_changes == ["traces.only_correct: False -> True"]


def test_what_is_not_a_measurement_is_not_starred():
    """Both sweeps reading one cached evaluation give no difference to read; one problem has no
    SE; a change of grid extent is told apart from a change of settings."""
    shared = record("dense", [1, 0, 1, 0])
    base = results([shared, record("rac", [1])], sparsities=[0.5])
    other = results([shared, record("rac", [0])], sparsities=[0.5, 0.6])
    cmp = compare(base, other)
    dense, rac = cmp.pairs
    assert dense.same_eval and not rac.same_eval
    assert rac.diff == -1 and not rac.beyond_2se
    assert cmp.setting_changes == [] and cmp.extent_changes == ["prune.sparsities: [0.5] -> [0.5, 0.6]"]
    md = markdown(cmp, ("a", "b"))
    assert "same evaluation (one cache entry)" in md and "| -1.000 ± 0.000 |" in md
    assert "No setting differs" in md


def test_input_files_changed_in_place_are_named():
    """Same config and versions, but the calibration problems regenerated under the same name:
    every pruned cell rests on other data, and compare says so."""
    base = results([record("rac", [1, 0])]) | {"calib_sha256": "c1", "model_fingerprint": "m"}
    other = results([record("rac", [1, 1])]) | {"calib_sha256": "c2", "model_fingerprint": "m"}
    assert compare(base, other).setting_changes == ["calib_sha256: c1 -> c2"]
    assert "No setting differs" not in markdown(compare(base, other), ("a", "b"))


def test_records_that_cannot_be_paired_are_refused():
    twice = results([record("rac", [1, 0]), record("rac", [1, 0])])
    with pytest.raises(RacError, match="twice for seed 0"):
        compare(twice, twice)
    short = results([record("rac", [1, 0, 1])])
    with pytest.raises(RacError, match="problems per record differ"):
        compare(results([record("rac", [1, 0])]), short)


def test_labels_name_what_makes_a_cell():
    r = record("rac", [1]) | {"fp8": True, "fraction": 0.25, "quant": "W4A16", "target": "2:4"}
    assert label(Cell.of(r)) == ("RAC, sparsegpt, 2:4 + W4A16, scope all, FP8, x0.25 calibration, "
                                 "max 400")


@pytest.mark.parametrize("shas, message", [(("abc", None), "does not record which test problems"),
                                           (("abc", "abd"), "ran different test problems")])
def test_sweeps_of_other_problems_are_refused(shas, message):
    a, b = (results([record("dense", [1, 0, 0, 0])], sha=s) for s in shas)
    with pytest.raises(RacError, match=message):
        compare(a, b)


def test_cli_writes_the_three_files_and_refuses_what_it_cannot_pair(tmp_path, capsys):
    for name, recs in (("a", [record("rac", [1, 1, 1, 1]), record("dense", [1, 1, 1, 1])]),
                       ("b", [record("rac", [0, 0, 0, 0]), record("dense", [1, 1, 1, 1])]),
                       ("c", [record("rac", [0, 0, 0, 0], target="0.6")])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results(recs)))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| -1.000 ± 0.000* |" in out and "No setting differs" in out
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [p["beyond_2se"] for p in saved["pairs"]] == [True, False]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert "compare.png" in (tmp_path / "cmp" / "compare.md").read_text()

    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "share no cell" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "holds no results.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["[1, 2]", '{"records": []}', "{not json",
                                  json.dumps(results([{**record("rac", [1]), "summary": {}}]))])
def test_a_file_that_is_not_a_sweeps_results_is_one_line(tmp_path, capsys, text):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(results([record("rac", [1])])))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err


def test_an_out_that_is_a_file_is_refused_before_anything_is_printed(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(results([record("rac", [1])])))
    (tmp_path / "f").write_text("")
    assert main(["compare", str(good), str(good), "--out", str(tmp_path / "f")]) == 2
    got = capsys.readouterr()
    assert got.out == "" and "is a file" in got.err
