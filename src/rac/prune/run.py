"""``rac prune`` as a library call: load the model and a calibration set from disk, run the engine,
optionally quantize to FP8, and write a model directory plus ``prune_report.json`` atomically.

The calibration set is read by its on-disk contract (``data/`` + ``calib_info.json``), so this
stage does not depend on how the set was built.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import datasets
import torch

from rac import models
from rac.io import RacError, atomic_dir, check_output_dir, write_json
from rac.prune.engine import PruneConfig, make_batches, prune_model
from rac.prune.quant import fp8_per_channel
from rac.prune.sparsegpt import CholeskyError

REPORT = "prune_report.json"


def read_calibration(path: Path) -> tuple[list[tuple[list[int], list[int], list[int]]], dict]:
    path = Path(path)
    info_file = path / "calib_info.json"
    if not info_file.exists():
        raise RacError(f"{path} is not a calibration set (no calib_info.json); make one with "
                       "'rac calib'")
    ds = datasets.load_from_disk(str(path / "data"))
    return list(zip(ds["input_ids"], ds["attention_mask"], ds["segment"])), json.loads(
        info_file.read_text())


def prune_to_dir(model: str | Path, calib_dir: Path | None, cfg: PruneConfig, out: Path, *,
                 fp8: bool = False, fp8_export: bool = False, batch_tokens: int = 8192,
                 trust_remote_code: bool = False, overwrite: bool = False,
                 progress: bool = True) -> dict:
    check_output_dir(out, overwrite)
    if fp8_export:
        require_llmcompressor()
    t0 = time.perf_counter()
    tok = models.load_tokenizer(model, trust_remote_code)
    batches, calib_info = None, None
    if calib_dir is not None:
        rows, calib_info = read_calibration(calib_dir)
        if calib_info["tokenizer_fingerprint"] != models.tokenizer_fingerprint(tok):
            raise RacError(f"{calib_dir} was tokenized for another model ({calib_info['tokenizer']});"
                           " rebuild it with --tokenizer pointing at this model")
        batches = make_batches(rows, tok.pad_token_id, cfg.segment_weights, batch_tokens)
    elif cfg.method != "magnitude":
        raise RacError(f"--method {cfg.method} needs --calib DIR (only magnitude works without)")
    lm = models.load_model(model, "cpu", trust_remote_code=trust_remote_code)
    blocks = models.decoder_blocks(lm)
    try:
        report = prune_model(lm, blocks, batches, cfg, progress=progress)
    except (ValueError, CholeskyError) as e:
        raise RacError(str(e)) from e
    if fp8 or fp8_export:
        # FP8 covers every linear of the decoder blocks (not only the pruned scope), as an FP8
        # deployment would; embeddings and lm_head stay in the model's dtype.
        with torch.no_grad():
            for lin in (m for m in blocks.modules() if isinstance(m, torch.nn.Linear)):
                lin.weight.copy_(fp8_per_channel(lin.weight)[0])
    models.check_finite(lm, "the pruned model")
    seconds = time.perf_counter() - t0
    in_scope = sum(r["shape"][0] * r["shape"][1] for r in report)
    zeros = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in report)
    errors = [r["relative_error"] for r in report if r["relative_error"] is not None]
    result = {
        "model": models.model_name(model), "calib": str(calib_dir) if calib_dir else None,
        "calib_info": calib_info, "method": cfg.method, "target": str(cfg.target),
        "scope": str(cfg.scope), "true_sequential": cfg.true_sequential, "fp8": fp8 or fp8_export,
        "blocksize": cfg.sparsegpt.blocksize, "percdamp": cfg.sparsegpt.percdamp,
        "segment_weights": {str(k): v for k, v in cfg.segment_weights.items()},
        "device": cfg.device,
        "totals": {
            "linears": len(report), "weights_in_scope": in_scope,
            "sparsity_in_scope": zeros / in_scope,
            "mean_relative_error": sum(errors) / len(errors) if errors else None,
            "max_percdamp": max((r["percdamp"] or 0) for r in report),
            "wall_s": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "layers": report,
    }
    rac_file = models.resolve(model) / models.RAC_MODEL_FILE
    with atomic_dir(out, overwrite=overwrite) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if rac_file.exists():
            (tmp / models.RAC_MODEL_FILE).write_text(rac_file.read_text())
        write_json(tmp / REPORT, result)
        if fp8_export:
            export_fp8(lm, tok, tmp / FP8_DIR)
    return result


FP8_DIR = "fp8-compressed-tensors"


def require_llmcompressor() -> None:
    try:
        import llmcompressor  # noqa: F401
    except ImportError as e:
        raise RacError("--fp8-export writes the compressed-tensors format with llm-compressor: "
                       "pip install 'rac[llmcompressor]'") from e


def export_fp8(lm: torch.nn.Module, tok, out: Path) -> None:
    """Write the (already FP8-gridded) model in the compressed-tensors FP8 format vLLM loads:
    llm-compressor's FP8_DYNAMIC scheme (per-channel weight scales, dynamic per-token activation
    scales). Its per-channel scale is amax / 448, as ours, so it re-quantizes our grid exactly."""
    import copy

    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    model = copy.deepcopy(lm)
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC",
                                                     ignore=["lm_head"]))
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
