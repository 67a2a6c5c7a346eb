"""The integrity audit's findings (issue 20) against the tree they were found on.

Every finding has tests; the audit asks that each fails on the old tree (a372ae1) and passes
now. This script checks out OLD into a temporary git worktree, replaces its `tests/` with this
tree's, runs the finding tests there with the old `src/` and here with the current one, and
prints one Markdown row per finding: its tests and how many failed (or could not be collected:
the API they test did not exist) on each tree. A finding whose tests all pass on the old tree is
flagged: its test does not tell the fix apart.

    .venv/bin/python bench/integrity_old_tree.py            # a372ae1 against the working tree
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# finding of issue 20 -> the tests written for it ("file::name", a name matching every
# parametrization)
FINDINGS: dict[str, list[str]] = {
    "1 code task: a statement in one split, >= 100 test statements": [
        "test_codegen.py::test_every_statement_parameter_gives_its_own_statement",
        "test_codegen.py::test_a_statement_lives_in_one_split_and_the_test_split_has_100",
        "test_codegen.py::test_table2_sets_share_no_statement"],
    "1 GSM task: split by arithmetic skeleton": [
        "test_splits.py::test_gsm_problems_that_differ_only_in_names_share_a_split",
        "test_splits.py::test_every_task_has_four_disjoint_splits_with_no_near_duplicates"],
    "1 a validation split; search refuses shared problems": [
        "test_splits.py::test_validation_is_not_the_test_split_with_another_seed",
        "test_search.py::test_search_refuses_validation_problems_shared_with_the_test_file"],
    "2 fake verdicts (RAC-PASS, __eq__, reading the expected value)": [
        "test_sandbox_hostile.py::test_a_program_that_does_not_solve_is_not_graded_correct",
        "test_code_forms.py::test_functional_results_compare_with_their_types"],
    "2 killing the grader, leftovers, a bystander of the same uid": [
        "test_sandbox_hostile.py::test_a_program_cannot_kill_a_non_root_grader",
        "test_sandbox_hostile.py::test_a_double_forked_setsid_leftover_does_not_outlive_the_run",
        "test_sandbox_hostile.py::test_a_program_cannot_kill_an_unrelated_process_of_its_uid",
        "test_sandbox_hostile.py::test_no_process_survives_a_fork_bomb"],
    "2 process limits per program": [
        "test_sandbox_hostile.py::test_concurrent_programs_each_get_their_own_process_limit",
        "test_sandbox_hostile.py::test_a_non_root_grader_gives_each_program_its_own_process_limit"],
    "2 mounts: no venv, a venv under /tmp, limited tmpfs": [
        "test_sandbox_hostile.py::test_nothing_of_a_venv_inside_the_project_is_visible",
        "test_sandbox_hostile.py::test_a_venv_under_tmp_still_runs_programs",
        "test_sandbox_hostile.py::test_the_sandbox_file_systems_are_size_and_inode_limited"],
    "2 HumanEval check form": [
        "test_code_forms.py::test_a_humaneval_check_passes_a_right_program_and_fails_wrong_ones",
        "test_code_forms.py::test_a_check_that_swallows_every_exception_does_not_pass_a_dead_program"],
    "3 search cache keyed by what determines a result": [
        "test_search.py::test_search_cache_is_keyed_by_what_determines_each_result",
        "test_search.py::test_search_finds_the_level_where_accuracy_falls_and_reports_the_test_split"],
    "3 segment weights beside balancing": [
        "test_prune_options.py::test_segment_weights_are_validated_and_not_dropped_beside_balancing",
        "test_prune_options.py::test_segment_weights_beside_balancing_are_refused_on_the_command_line"],
    "3 options recorded but ignored (magnitude, no --calib)": [
        "test_prune_options.py::test_magnitude_without_calibration_refuses_what_it_would_ignore",
        "test_prune_options.py::test_options_that_need_a_calibration_set_are_named"],
    "3 --error-span with a target like 1/3": [
        "test_prune_options.py::test_error_driven_grid_holds_a_target_of_any_digits"],
    "3 bf16 refinement without an fp32 master copy": [
        "test_prune_options.py::test_bf16_refinement_accumulates_steps_below_bf16_resolution"],
    "4 K/V cache grows with the tokens": [
        "test_generate.py::test_memory_follows_the_tokens_generated_not_the_limit",
        "test_generate.py::test_growing_the_cache_from_one_token_equals_holding_the_whole_limit"],
    "4 the model's generation_config is followed and reported": [
        "test_sampling.py::test_top_k_and_the_penalty_follow_the_models_generation_config",
        "test_sampling.py::test_the_eval_report_says_what_was_used"],
    "5 fetch: size, conversion errors, re-verification": [
        "test_fetch.py::test_an_oversized_part_stops_the_writing_at_the_published_size",
        "test_fetch.py::test_a_conversion_error_is_one_line_and_leaves_no_model",
        "test_fetch.py::test_a_missing_gguf_package_is_one_line",
        "test_fetch.py::test_an_existing_gguf_is_verified_again"],
    "6 no file over 350 lines, no function over 80": [
        "test_code_size.py::test_no_file_or_function_is_too_long"],
}


def outcomes(tree: Path, tests: Path, python: str) -> dict[str, list[str]]:
    """pytest's outcome of every finding test run in ``tree`` (its src/ on the path) from the
    test files in ``tests``: test id -> outcomes of its parametrizations."""
    names = sorted({t.split("::")[1] for ts in FINDINGS.values() for t in ts})
    files = sorted({t.split("::")[0] for ts in FINDINGS.values() for t in ts})
    with tempfile.NamedTemporaryFile(suffix=".xml") as report:
        subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--continue-on-collection-errors", f"--junitxml={report.name}",
                        "-k", " or ".join(names), *[str(tests / f) for f in files]],
                       cwd=tree, env={**os.environ, "PYTHONPATH": str(tree / "src")},
                       capture_output=True, text=True)
        root = ET.parse(report.name).getroot()
    got: dict[str, list[str]] = {}
    for case in root.iter("testcase"):
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        if not case.get("classname"):  # a module that could not be collected: what it imports
            file = case.get("name", "").split(".")[-1] + ".py"  # did not exist
            for t in (t for ts in FINDINGS.values() for t in ts if t.startswith(file + "::")):
                got[t] = ["not collected"]
            continue
        file = case.get("classname", "").split(".")[-1] + ".py"
        name = case.get("name", "").split("[")[0]
        got.setdefault(f"{file}::{name}", []).append(kinds[0] if kinds else "passed")
    return got


def summary(results: list[str] | None) -> str:
    if not results:
        return "not run"
    if results == ["not collected"]:
        return "not collected (API absent)"
    bad = sum(r != "passed" for r in results)
    return f"{bad}/{len(results)} failed" if bad else f"all {len(results)} passed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="a372ae1", help="the commit the audit was made on")
    a = ap.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), a.old], cwd=ROOT,
                       check=True)
        try:
            subprocess.run(["rm", "-rf", str(old / "tests")], check=True)
            subprocess.run(["cp", "-r", str(ROOT / "tests"), str(old / "tests")], check=True)
            before = outcomes(old, old / "tests", python)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    now = outcomes(ROOT, ROOT / "tests", python)
    print(f"| finding | test | {a.old} | now |\n|---|---|---|---|")
    unproven = []
    for finding, tests in FINDINGS.items():
        for t in tests:
            print(f"| {finding} | `{t}` | {summary(before.get(t))} | {summary(now.get(t))} |")
        if all(summary(before.get(t)).startswith("all") for t in tests):
            unproven.append(finding)
    print("\nfindings whose tests all pass on the old tree:", "; ".join(unproven) or "none")


if __name__ == "__main__":
    main()
