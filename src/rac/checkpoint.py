"""Hugging Face safetensors checkpoints read and written a few tensors at a time, and a model
whose parameters stay on the meta device until asked for: what streaming a model larger than
memory through the pruning engine needs (``rac.prune.stream``).

A checkpoint is one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``.
Its tensors are named as the model's ``state_dict`` names them (the Llama/Qwen2 families do), and
are cast to the model's dtype when read, as ``from_pretrained`` casts them.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rac import models
from rac.io import RacError

INDEX = "model.safetensors.index.json"
METADATA = {"format": "pt"}  # what save_pretrained writes and from_pretrained checks
SLICE_BYTES = 16 * 2 ** 20  # what a tensor too big to hold whole is read and written in
# safetensors' dtype names
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "U16": torch.uint16, "U32": torch.uint32,
          "U64": torch.uint64, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
          "F8_E5M2": torch.float8_e5m2}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class Checkpoint:
    """The tensors of a model directory's safetensors files, by name, read on request."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        index = self.path / INDEX
        try:
            if index.exists():
                self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            else:
                self.weight_map = {}
                for f in sorted(self.path.glob("*.safetensors")):
                    with safe_open(str(f), "pt") as st:
                        self.weight_map.update(dict.fromkeys(st.keys(), f.name))
        except (OSError, KeyError, json.JSONDecodeError, SafetensorError) as e:
            raise RacError(f"{self.path}: unreadable safetensors checkpoint ({e})") from e
        if not self.weight_map:
            raise RacError(f"{self.path} has no .safetensors weights; rac loads safetensors only")

    def _check_names(self, names: list[str]) -> None:
        missing = [k for k in names if k not in self.weight_map]
        if missing:
            raise RacError(f"{self.path} has no tensor {missing[0]}: --stream reads tensors by the "
                           "model's parameter names; run without --stream")

    def read(self, dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
        """The tensors named by ``dtypes``' keys, each cast to its dtype. Each file is opened
        for its tensors only and closed after (its mapping leaves the process's memory)."""
        self._check_names(list(dtypes))
        by_file: dict[str, list[str]] = {}
        for k in dtypes:
            by_file.setdefault(self.weight_map[k], []).append(k)
        out = {}
        for name, keys in by_file.items():
            with safe_open(str(self.path / name), "pt") as f:
                for k in keys:
                    out[k] = f.get_tensor(k).to(dtypes[k])
        return out

    def shape(self, name: str) -> tuple[list[int], str]:
        """Tensor ``name``'s shape and safetensors dtype name, without reading it."""
        self._check_names([name])
        with safe_open(str(self.path / self.weight_map[name]), "pt") as f:
            sl = f.get_slice(name)
            return list(sl.get_shape()), sl.get_dtype()

    def slices(self, name: str, dtype: torch.dtype, max_bytes: int = SLICE_BYTES
               ) -> Iterator[torch.Tensor]:
        """Tensor ``name`` cast to ``dtype``, in slices along its first dimension of at most
        ``max_bytes`` each (as stored). The file is opened for each slice and closed after: its
        mapping's pages leave memory with each slice (read through one open file, a 933 MB
        embedding grows the resident set by 933 MB)."""
        shape, stored = self.shape(name)
        row = math.prod(shape[1:]) * DTYPES[stored].itemsize if shape else 0
        step = max(1, max_bytes // row) if row else 1
        for start in range(0, shape[0] if shape else 1, step):
            with safe_open(str(self.path / self.weight_map[name]), "pt") as f:
                part = f.get_slice(name)[start:start + step] if shape else f.get_tensor(name)
            yield part.to(dtype)

    def float_dtype(self) -> torch.dtype:
        """The dtype of the checkpoint's first floating-point tensor (what ``dtype="auto"``
        loads when the config names none)."""
        for k in sorted(self.weight_map):
            dtype = DTYPES.get(self.shape(k)[1])
            if dtype is not None and dtype.is_floating_point:
                return dtype
        return torch.float32


class ShardWriter:
    """Writes groups of tensors to ``count`` numbered shards in ``out`` (the names
    ``save_pretrained`` gives), then the index that maps each tensor to its shard."""

    def __init__(self, out: Path, count: int) -> None:
        self.out, self.count = Path(out), count
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self.written = 0

    def _next(self, names: list[str], size: int) -> Path:
        """The next shard's path, with ``names`` (``size`` bytes) entered in the index."""
        if self.written == self.count:
            raise ValueError(f"all {self.count} shards are written already")
        self.written += 1
        name = f"model-{self.written:05d}-of-{self.count:05d}.safetensors"
        self.weight_map.update(dict.fromkeys(names, name))
        self.total_size += size
        return self.out / name

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        path = self._next(list(tensors), sum(t.numel() * t.element_size() for t in tensors.values()))
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()},
                  str(path), metadata=METADATA)

    def copy(self, ckpt: Checkpoint, dtypes: dict[str, torch.dtype],
             check: Callable[[dict[str, torch.Tensor]], None] | None = None,
             max_bytes: int = SLICE_BYTES) -> None:
        """Write ``ckpt``'s tensors named by ``dtypes`` (cast to their dtypes) as the next shard,
        a slice (``Checkpoint.slices``) at a time, each slice first given to ``check``.
        safetensors writes only whole tensors held in memory (and copies each once more), so
        here the file is laid out as its format says: a little-endian u64 header length, the
        JSON header padded to 8 bytes, then the tensors' bytes in header order."""
        header: dict[str, object] = {"__metadata__": METADATA}
        offset = 0
        for k, dtype in dtypes.items():
            shape = ckpt.shape(k)[0]
            size = math.prod(shape) * dtype.itemsize
            header[k] = {"dtype": DTYPE_NAMES[dtype], "shape": shape,
                         "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(self._next(list(dtypes), offset), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for k, dtype in dtypes.items():
                for part in ckpt.slices(k, dtype, max_bytes):
                    if check is not None:
                        check({k: part})
                    f.write(part.contiguous().reshape(-1).view(torch.uint8).numpy().data)

    def close(self) -> None:
        if self.written != self.count:
            raise ValueError(f"{self.written} of {self.count} shards written")
        (self.out / INDEX).write_text(json.dumps(
            {"metadata": {"total_size": self.total_size},
             "weight_map": dict(sorted(self.weight_map.items()))}, indent=2) + "\n")


def load_skeleton(model: str | Path, trust_remote_code: bool = False
                  ) -> tuple[torch.nn.Module, Checkpoint]:
    """``model`` built with every parameter on the meta device (no memory; buffers such as
    rotary tables are computed as usual), in the dtype ``from_pretrained`` would load it in, with
    its generation config; and its checkpoint, from which parameters are read when needed."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    path = models.resolve(model)
    ckpt = Checkpoint(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        dtype = getattr(config, "dtype", None) or ckpt.float_dtype()
        with init_empty_weights(include_buffers=False):
            lm = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                  trust_remote_code=trust_remote_code)
        if (path / "generation_config.json").exists():
            lm.generation_config = GenerationConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise RacError(f"cannot build a causal LM from {path}: {str(e).splitlines()[0]}") from e
    lm.tie_weights()
    lm.eval()
    return lm, ckpt


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with each tied tensor once, under its first name (what
    ``save_pretrained`` writes: the input embedding, not a tied head)."""
    seen: set[int] = set()
    out = {}
    for k, t in module.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[k] = t
    return out


def materialize(module: torch.nn.Module, ckpt: Checkpoint, prefix: str = "",
                names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Replace ``module``'s meta parameters and persistent buffers (those of ``names`` only, if
    given) by the checkpoint's tensors named ``prefix`` + their name, as ordinary tensors (never
    inference tensors, so that autograd can train them); returns them by checkpoint name."""
    state = module.state_dict()
    names = list(state) if names is None else names
    with torch.inference_mode(False):
        tensors = ckpt.read({prefix + k: state[k].dtype for k in names})
        try:
            module.load_state_dict({k: tensors[prefix + k] for k in names}, assign=True,
                                   strict=len(names) == len(state))
        except RuntimeError as e:
            raise RacError(f"{ckpt.path}: {prefix or 'the model'} does not match the config "
                           f"({str(e).splitlines()[-1].strip()})") from e
    return tensors


def evict(module: torch.nn.Module) -> None:
    """Put ``module``'s parameters and persistent buffers back on the meta device (their memory
    is freed once nothing else holds them)."""
    with torch.inference_mode(False):
        module.load_state_dict({k: torch.empty_like(t, device="meta")
                                for k, t in module.state_dict().items()}, assign=True)
