"""``rac prune`` and ``rac quantize`` as library calls: load the model and a calibration set from
disk, run the engine, optionally quantize to FP8, and write a model directory plus
``prune_report.json`` atomically (with an integer quantization also its compressed-tensors export
if asked). With ``MemoryConfig(stream=True)`` the model is never loaded whole: each block is read
from the checkpoint when the engine reaches it and written into the output's shards when final
(``rac.prune.stream``), with the same tensors as the in-memory path, bit for bit.

The calibration set is read through ``rac.calibset``, its on-disk contract, so this stage does not
depend on how the set was built.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rac import calibset, models
from rac.io import RacError, atomic_dir, check_output_dir, write_json
from rac.prune import distributed
from rac.prune.activations import MB, Activations
from rac.prune.batches import Batch, make_batches
from rac.prune.config import QUANTIZER, PruneConfig, QuantConfig
from rac.prune.engine import Grids, prune_model
from rac.prune.masks import Target
from rac.prune.quant import (
    FP8_DIR,
    check_int_export,
    export_fp8,
    export_int,
    fp8_per_channel,
    int_dir,
    require_llmcompressor,
)
from rac.prune.quant_grid import GridParams
from rac.prune.report import LayerReport, PruneReport, PruneTotals
from rac.prune.sparsegpt import CholeskyError
from rac.prune.stream import MemoryConfig, Resident, Streamed, streamed_model

REPORT = "prune_report.json"


def _calibration(calib_dir: Path | None, tok, cfg: PruneConfig, batch_tokens: int
                 ) -> tuple[list[Batch] | None, dict | None, PruneConfig]:
    """The calibration batches and the set's info (None without a set), and ``cfg`` with balanced
    segment weights made explicit."""
    if calib_dir is None:
        if cfg.needs_calibration:
            given = cfg.needs_calibration
            raise RacError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --calib DIR "
                           "(only plain magnitude pruning works without)")
        return None, None, cfg
    cset = calibset.read(calib_dir)
    if cset.tokenizer_fingerprint != models.tokenizer_fingerprint(tok):
        raise RacError(f"{calib_dir} was tokenized for another model ({cset.info['tokenizer']});"
                       " rebuild it with --tokenizer pointing at this model")
    if cfg.balance_segments:
        cfg = replace(cfg, segment_weights=calibset.balanced_weights(cset.rows),
                      balance_segments=False)
    return make_batches(cset.rows, tok.pad_token_id, cfg.segment_weights, batch_tokens), \
        cset.info, cfg


def _check_options(cfg: PruneConfig, fp8: bool, fp8_export: bool, export: bool,
                   memory: MemoryConfig, trust_remote_code: bool) -> None:
    if memory.stream and distributed.world()[1] > 1:
        raise RacError("--stream under torchrun: every rank would stream the same blocks from and "
                       "to the checkpoint; run it in one process")
    if memory.stream and (export or fp8_export):
        raise RacError(f"{'--export' if export else '--fp8-export'} converts the whole model in "
                       "memory, which --stream avoids; drop one of them")
    if memory.stream and trust_remote_code:
        raise RacError("--stream builds the model classes transformers ships (Llama/Qwen2-style); "
                       "drop --trust-remote-code or --stream")
    if cfg.quant is not None and (fp8 or fp8_export):
        raise RacError("give --fp8 or --quantize, not both: both would quantize the same weights")
    if export and cfg.quant is None:
        raise RacError("--export writes the --quantize scheme's compressed-tensors checkpoint; "
                       "for FP8 use --fp8-export")
    if fp8_export:
        require_llmcompressor()
    if cfg.quant is not None and cfg.quant.activation_bits:
        if export:
            raise RacError(f"--export: a {cfg.quant.scheme} model is saved as a compressed-tensors "
                           "checkpoint already (rac eval and vLLM run it); drop --export")
        if memory.stream:
            raise RacError(f"--stream: a {cfg.quant.scheme} model is written as one "
                           "compressed-tensors checkpoint at the end; drop --stream")
    if export or (cfg.quant is not None and cfg.quant.activation_bits):
        check_int_export(cfg.quant)


def prune_to_dir(model: str | Path, calib_dir: Path | None, cfg: PruneConfig, out: Path, *,
                 fp8: bool = False, fp8_export: bool = False, export: bool = False,
                 batch_tokens: int = 8192, trust_remote_code: bool = False,
                 overwrite: bool = False, progress: bool = True,
                 memory: MemoryConfig | None = None, dtype: str = "auto") -> PruneReport:
    """Prune (with ``cfg.quant`` also quantize) ``model`` into ``out``. ``export``: with
    ``cfg.quant``, also write ``out/<scheme>-compressed-tensors``. ``memory``: stream the blocks,
    and how many MB of activations to keep in memory (default: neither). ``dtype``: the weights'
    and forward passes' dtype, and the output's ("auto": the checkpoint's); statistics and solves
    run in float32 for it (float64 for a float64 model)."""
    memory = memory or MemoryConfig()
    check_output_dir(out, overwrite)
    _check_options(cfg, fp8, fp8_export, export, memory, trust_remote_code)
    if dtype not in models.LOAD_DTYPES:
        raise RacError(f"--dtype {dtype}: use {', '.join(models.LOAD_DTYPES)}")
    if memory.stream and dtype != "auto":
        raise RacError(f"--dtype {dtype} with --stream: streamed blocks keep the checkpoint's "
                       "dtype; drop one of them (or convert the checkpoint first)")
    rank = distributed.world()[0]  # under torchrun every rank computes and rank 0 writes
    t0 = time.perf_counter()
    tok = models.load_tokenizer(model, trust_remote_code)
    batches, calib_info, cfg = _calibration(calib_dir, tok, cfg, batch_tokens)
    # FP8 covers every linear of the decoder blocks (not only the pruned scope), as an FP8
    # deployment would; embeddings and lm_head stay in the model's dtype.
    finish = _fp8 if fp8 or fp8_export else None
    rac_file = models.resolve(model) / models.RAC_MODEL_FILE
    with atomic_dir(out, overwrite=overwrite) if rank == 0 else _scratch() as tmp:
        acts = Activations(memory.activation_mb, memory.spill_dir or tmp)
        if memory.stream:
            lm, store = streamed_model(model, tmp, finish=finish)
        else:
            lm = models.load_model(model, "cpu", models.LOAD_DTYPES[dtype], trust_remote_code)
            store = Resident(models.decoder_blocks(lm))
        grids: Grids = {}
        try:
            layers = prune_model(lm, store.blocks, batches, cfg, progress=progress and rank == 0,
                                 grids=grids, store=store, activations=acts)
        except (ValueError, CholeskyError) as e:
            raise RacError(str(e)) from e
        if isinstance(store, Streamed):
            store.close()
        else:
            if finish is not None:
                finish(store.blocks)
            models.check_finite(lm, "the pruned model")
        report = _report(model, calib_dir, calib_info, cfg, fp8 or fp8_export, export, layers,
                         time.perf_counter() - t0, _memory(memory, acts),
                         str(next(store.blocks.parameters()).dtype).removeprefix("torch."))
        if rank:
            return report
        if cfg.quant is not None and cfg.quant.activation_bits:
            # the model as it runs: int8 weights and the activation quantization in its config
            export_int(lm, tok, tmp, cfg.quant, _by_name(lm, store.blocks, grids))
        elif not memory.stream:
            lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if rac_file.exists():
            (tmp / models.RAC_MODEL_FILE).write_text(rac_file.read_text())
        write_json(tmp / REPORT, report.to_json())
        if fp8_export:
            export_fp8(lm, tok, tmp / FP8_DIR)
        if export:
            export_int(lm, tok, tmp / int_dir(cfg.quant), cfg.quant,
                       _by_name(lm, store.blocks, grids))
    return report


@contextmanager
def _scratch() -> Iterator[Path]:
    """A rank other than 0's output directory: computed into, then dropped."""
    with tempfile.TemporaryDirectory(prefix="rac-rank-") as d:
        yield Path(d)


def _fp8(blocks: torch.nn.Module) -> None:
    """Every linear of ``blocks`` (decoder blocks, or one block) onto the FP8 grid."""
    with torch.no_grad():
        for lin in (m for m in blocks.modules() if isinstance(m, torch.nn.Linear)):
            lin.weight.copy_(fp8_per_channel(lin.weight)[0])


def _memory(memory: MemoryConfig, acts: Activations) -> dict:
    """The report's account of where the data lived (``ranks``: the processes whose rows were
    summed, torchrun's world size)."""
    return {"stream": memory.stream, "ranks": distributed.world()[1],
            "activation_mb": memory.activation_mb,
            "activations_in_memory_mb": round(acts.in_memory / MB, 1),
            "activations_spilled_mb": round(acts.spilled / MB, 1)}


def _by_name(lm: torch.nn.Module, blocks: torch.nn.ModuleList, grids: Grids
             ) -> dict[str, GridParams]:
    """The grids keyed by each linear's name in ``lm`` (what the export's config matches)."""
    names = {id(m): n for n, m in lm.named_modules()}
    return {names[id(blocks[i].get_submodule(n))]: p for (i, n), p in grids.items()}


def quantize_to_dir(model: str | Path, calib_dir: Path, quant: QuantConfig, out: Path, *,
                    recipe: str = "paper", export: bool = False, batch_tokens: int = 8192,
                    trust_remote_code: bool = False, overwrite: bool = False,
                    progress: bool = True, memory: MemoryConfig | None = None,
                    dtype: str = "auto", **options) -> PruneReport:
    """``rac quantize``: GPTQ on every linear in scope, nothing pruned. ``options`` are the
    other ``PruneConfig`` fields (scope, true_sequential, sparsegpt, segment weights, ...; None:
    the recipe's)."""
    cfg = PruneConfig.with_recipe(recipe, method=QUANTIZER, target=Target(), quant=quant, **options)
    return prune_to_dir(model, calib_dir, cfg, out, export=export, batch_tokens=batch_tokens,
                        trust_remote_code=trust_remote_code, overwrite=overwrite,
                        progress=progress, memory=memory, dtype=dtype)


def _report(model: str | Path, calib_dir: Path | None, calib_info: dict | None, cfg: PruneConfig,
            fp8: bool, export: bool, layers: list[LayerReport], wall_s: float,
            memory: dict | None = None, dtype: str = "") -> PruneReport:
    quant = cfg.quant
    quantization = None if quant is None else {
        **asdict(quant), "bits": quant.bits,
        "activations": ("int8 per token, dynamic, symmetric (compressed-tensors quantizes them "
                        "as the saved model runs)" if quant.activation_bits
                        else "unquantized (the model's dtype)"),
        "export": int_dir(quant) if export else None}
    return PruneReport(
        model=models.model_name(model), calib=str(calib_dir) if calib_dir else None,
        calib_info=calib_info, method=cfg.method, target=str(cfg.target), scope=str(cfg.scope),
        true_sequential=cfg.true_sequential, fp8=fp8,
        blocksize=cfg.sparsegpt.block_for(cfg.target, quant.group_size if quant else None),
        percdamp=cfg.sparsegpt.percdamp,
        segment_weights=dict(cfg.segment_weights), dense_targets=cfg.dense_targets,
        refine_epochs=cfg.refine_epochs, refine_lr=cfg.refine_lr,
        owl_lambda=cfg.owl_lambda, error_span=cfg.error_span,
        error_step=cfg.error_step, mask_swaps=cfg.mask_swaps, device=cfg.device,
        totals=PruneTotals.of(layers, wall_s,
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        layers=layers, quantization=quantization, memory=memory, dtype=dtype)


def read_totals(pruned_dir: Path) -> PruneTotals:
    """The totals of a pruned model directory's ``prune_report.json``."""
    import json

    return PruneTotals(**json.loads((Path(pruned_dir) / REPORT).read_text())["totals"])
