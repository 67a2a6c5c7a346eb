"""Hugging Face safetensors checkpoints read and written a few tensors at a time, and a model
whose parameters stay on the meta device until asked for: what streaming a model larger than
memory through the pruning engine needs (``rac.prune.stream``).

A checkpoint is one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``.
Its tensors are named as the model's ``state_dict`` names them (the Llama/Qwen2 families do), and
are cast to the model's dtype when read, as ``from_pretrained`` casts them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rac import models
from rac.io import RacError

INDEX = "model.safetensors.index.json"
METADATA = {"format": "pt"}  # what save_pretrained writes and from_pretrained checks


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

    def read(self, dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
        """The tensors named by ``dtypes``' keys, each cast to its dtype. Each file is opened
        for its tensors only and closed after (its mapping leaves the process's memory)."""
        missing = [k for k in dtypes if k not in self.weight_map]
        if missing:
            raise RacError(f"{self.path} has no tensor {missing[0]}: --stream reads tensors by the "
                           "model's parameter names; run without --stream")
        by_file: dict[str, list[str]] = {}
        for k in dtypes:
            by_file.setdefault(self.weight_map[k], []).append(k)
        out = {}
        for name, keys in by_file.items():
            with safe_open(str(self.path / name), "pt") as f:
                for k in keys:
                    out[k] = f.get_tensor(k).to(dtypes[k])
        return out

    def float_dtype(self) -> torch.dtype:
        """The dtype of the checkpoint's first floating-point tensor (what ``dtype="auto"``
        loads when the config names none)."""
        floats = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                  "F64": torch.float64}
        for k, name in sorted(self.weight_map.items()):
            with safe_open(str(self.path / name), "pt") as f:
                dtype = f.get_slice(k).get_dtype()
            if dtype in floats:
                return floats[dtype]
        return torch.float32


class ShardWriter:
    """Writes groups of tensors to ``count`` numbered shards in ``out`` (the names
    ``save_pretrained`` gives), then the index that maps each tensor to its shard."""

    def __init__(self, out: Path, count: int) -> None:
        self.out, self.count = Path(out), count
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self.written = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.written == self.count:
            raise ValueError(f"all {self.count} shards are written already")
        self.written += 1
        name = f"model-{self.written:05d}-of-{self.count:05d}.safetensors"
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()},
                  str(self.out / name), metadata=METADATA)
        self.weight_map.update(dict.fromkeys(tensors, name))
        self.total_size += sum(t.numel() * t.element_size() for t in tensors.values())

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
