"""Loading and saving Hugging Face causal LMs, the ``embedded`` alias, prompts and decoder blocks.

Model directories come from strangers: weights are loaded from safetensors only, and code from a
model directory runs only when the user passes ``--trust-remote-code``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from rac.io import RacError
from rac.prune.stats import all_finite
from rac.tasks.problems import Problem, answer_form

EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).parent / "embedded"
RAC_MODEL_FILE = "rac_model.json"
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = ("Solve the problem in Python: unless it asks for a function, write a program "
                    "that reads the input from standard input and writes the answer to standard "
                    "output. Reason step by step, then give the whole solution in one ```python "
                    "code block.")
FUNCTION_INSTRUCTION = ("Solve the problem in Python by writing the function it asks for (complete "
                        "any code given), with the imports and helper functions it uses, and no "
                        "code that reads input or prints. Reason step by step, then give the whole "
                        "solution in one ```python code block.")
THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model defaults; real R1 distills use the paper's settings, and a model directory may
    override them in ``rac_model.json`` (the embedded model does: greedy, short budgets)."""

    instruction: str = R1_INSTRUCTION
    code_instruction: str = CODE_INSTRUCTION  # code problems graded on stdin/stdout
    function_instruction: str = FUNCTION_INSTRUCTION  # code problems whose tests call a function
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    eval_max_new_tokens: int = 32768
    trace_temperature: float = 0.6
    trace_top_p: float = 0.95
    trace_max_new_tokens: int = 8192
    thinking: bool | None = None  # None: detected from the tokenizer (see ``thinks``)


def resolve(model: str | Path, need_config: bool = True) -> Path:
    path = EMBEDDED_DIR if str(model) == EMBEDDED else Path(model)
    if not path.exists():
        raise RacError(f"model {model} not found: give a Hugging Face model directory or 'embedded'")
    if not path.is_dir():
        raise RacError(f"model {model} is a file: give a Hugging Face model directory")
    if need_config and not (path / "config.json").exists():
        raise RacError(f"{path} has no config.json: not a Hugging Face model directory")
    return path


def instruction_for(d: ModelDefaults, form: str, override: str | None) -> str:
    """The text appended to a problem: the user's, else the model's for this form of problem
    (``rac.tasks.problems.answer_form``: math, stdin or function; ``code`` is stdin's)."""
    if override is not None:
        return override
    return {"code": d.code_instruction, "stdin": d.code_instruction,
            "function": d.function_instruction}.get(form, d.instruction)


def instructions(d: ModelDefaults, problems: list[Problem], override: str | None
                 ) -> dict[str, str]:
    """The text after a problem of each answer form among ``problems``: every stage that renders
    a problem (eval, traces, calibration sets, recon) renders it with the same text."""
    return {f: instruction_for(d, f, override) for f in sorted({answer_form(p) for p in problems})}


def model_name(model: str | Path) -> str:
    return EMBEDDED if str(model) == EMBEDDED else str(Path(model).resolve())


def defaults(model: str | Path) -> ModelDefaults:
    path = resolve(model) / RAC_MODEL_FILE
    if not path.exists():
        return ModelDefaults()
    try:
        overrides = json.loads(path.read_text())
        return ModelDefaults(**overrides)
    except (json.JSONDecodeError, TypeError) as e:
        raise RacError(f"{path} is malformed ({e}); fix or delete it") from e


def load_tokenizer(model: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve(model, need_config=False)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise RacError(f"{path} has no usable tokenizer ({str(e).splitlines()[0]})") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


# the dtypes a model can be loaded in for pruning ("auto": the checkpoint's)
LOAD_DTYPES: dict[str, str | torch.dtype] = {"auto": "auto", "float32": torch.float32,
                                             "bfloat16": torch.bfloat16}


def load_model(model: str | Path, device: str = "cpu", dtype: str | torch.dtype = "auto",
               trust_remote_code: bool = False) -> torch.nn.Module:
    path = resolve(model)
    if not any(path.glob("*.safetensors")):
        raise RacError(f"{path} has no .safetensors weights; rac loads safetensors only "
                       "(convert pickled checkpoints with a tool you trust)")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, use_safetensors=True,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise RacError(f"cannot load a causal LM from {path}: {str(e).splitlines()[0]}") from e
    lm.eval()
    check_finite(lm, path)
    return lm.to(device)


def check_tensors(tensors: dict[str, torch.Tensor], where: object) -> None:
    """Refuse floating-point tensors that hold NaN or Inf (checked in chunks: ``all_finite``)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not all_finite(t):
            raise RacError(f"{where}: weight {name} holds NaN or Inf; the checkpoint is corrupt")


def check_finite(lm: torch.nn.Module, where: object) -> None:
    check_tensors(dict(lm.named_parameters()), where)


def tokenizer_fingerprint(tok: PreTrainedTokenizerBase) -> str:
    vocab = json.dumps(sorted(tok.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]


_DIGESTS: dict[tuple, str] = {}  # a file's sha256 by (path, size, mtime, inode), this process


def _file_digest(f: Path) -> str:
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with f.open("rb") as data:
            while chunk := data.read(1 << 24):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def fingerprint(path: Path, patterns: tuple[str, ...] = ("**/*",)) -> str:
    """The identity of a directory's contents: every matching file's relative name and the sha256
    of all its bytes (a sampled hash misses an edit confined to one tensor). Whole files cost about
    a second per GB; each is hashed once per process unless it changes."""
    path = Path(path)
    if not path.is_dir():
        raise RacError(f"{path} does not exist or is not a directory")
    files = sorted({q for pattern in patterns for q in path.glob(pattern) if q.is_file()})
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path)}:{_file_digest(f)}\n".encode())
    return h.hexdigest()[:16]


def weights_fingerprint(model_dir: Path) -> str:
    """The identity of a checkpoint's weights: its config and every weight file, byte for byte
    (two checkpoints of one shape with other values differ)."""
    return fingerprint(model_dir, ("config.json", "*.safetensors", "*.safetensors.index.json"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def pick_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RacError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def thinks(tok: PreTrainedTokenizerBase) -> bool:
    """Whether a model has a think phase (R1 style): its tokenizer knows ``</think>`` or its chat
    template opens ``<think>``. An instruction model without one (Qwen2.5-Instruct) answers
    directly: its whole completion is the chain of thought, its answer the last ``\\boxed{}``."""
    template = getattr(tok, "chat_template", None) or ""
    return THINK_CLOSE in tok.get_vocab() or "<think>" in template


def thinking_for(model: str | Path, tok: PreTrainedTokenizerBase, override: bool | None) -> bool:
    """The user's choice, else the model directory's (``rac_model.json``), else detected."""
    if override is not None:
        return override
    d = defaults(model).thinking
    return thinks(tok) if d is None else d


def prompt_text(tok: PreTrainedTokenizerBase, problem: str, instruction: str,
                thinking: bool = True) -> str:
    """The R1 prompt: no system prompt, the instruction after the problem, and for a model with a
    think phase the assistant turn opened with ``<think>\\n`` (added when an older chat template
    does not add it itself). Only the stages that render problems need a chat template;
    generic-text calibration and pruning work without one."""
    if not getattr(tok, "chat_template", None):
        raise RacError(f"the tokenizer of {tok.name_or_path} has no chat template, which rendering "
                       "problems as prompts needs (eval, traces, prompt/rac/offpolicy/reference "
                       "calibration, recon); add one to its tokenizer_config.json")
    content = f"{problem}\n{instruction}" if instruction else problem
    text = tok.apply_chat_template([{"role": "user", "content": content}],
                                   add_generation_prompt=True, tokenize=False)
    if thinking and not text.rstrip().endswith("<think>"):
        text += THINK_OPEN
    return text


def prompt_ids(tok: PreTrainedTokenizerBase, problem: str, instruction: str,
               thinking: bool = True) -> list[int]:
    return tok(prompt_text(tok, problem, instruction, thinking),
               add_special_tokens=False)["input_ids"]


def decoder_blocks(lm: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a Llama/Qwen2-style model (``model.layers``)."""
    inner = getattr(lm, "model", None)
    blocks = getattr(inner, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise RacError(f"{type(lm).__name__}: cannot find decoder blocks at model.layers")
    return blocks
