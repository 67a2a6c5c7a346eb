"""``rac calib`` into a directory that holds a set: "already built" only for the very same rows.
The set's info alone (source, input paths, token counts) could not tell a set built with another
seed, instruction or edited problem file: the old set was kept and reported as built."""

from __future__ import annotations

from pathlib import Path

import pytest

from rac import calibset
from rac.calibrate.calib import CalibConfig, make_calib
from rac.io import RacError
from rac.tasks.generators import generate
from rac.tasks.problems import write_problems


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.txt"
    words = ["red", "blue", "green", "stone", "river"]  # every document as long: same counts
    path.write_text("\n\n".join(" ".join(words[i % 5:] + words[:i % 5]) for i in range(200)))
    return path


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "p.jsonl"
    write_problems(path, generate("arith", 40, 0, "calib"))
    return path


def _first_ids(out: Path) -> list[int]:
    return calibset.read(out).rows[0].ids


def test_another_seed_of_the_same_text_is_not_already_built(docs, tmp_path):
    out = tmp_path / "set"
    assert make_calib("embedded", CalibConfig("generic", 300, text=[docs], seed=0, pack=100), out)[0]
    before = _first_ids(out)
    again = CalibConfig("generic", 300, text=[docs], seed=1, pack=100)
    with pytest.raises(RacError, match="different calibration set"):
        make_calib("embedded", again, out)
    assert make_calib("embedded", again, out, overwrite=True)[0]
    assert _first_ids(out) != before


def test_another_instruction_or_edited_problems_is_not_already_built(problems, tmp_path):
    out = tmp_path / "set"

    def build(instruction: str, overwrite: bool = False) -> bool:
        cfg = CalibConfig("prompt", 300, problems=problems, pack=100, instruction=instruction)
        return make_calib("embedded", cfg, out, overwrite=overwrite)[0]

    assert build("Answer A.")
    assert not build("Answer A.")  # the very same set: nothing written
    with pytest.raises(RacError, match="different calibration set"):
        build("Answer B.")
    write_problems(problems, generate("arith", 40, 1, "calib"))
    with pytest.raises(RacError, match="different calibration set"):
        build("Answer A.")
