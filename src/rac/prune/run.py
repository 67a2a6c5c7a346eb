"""``rac prune`` as a library call: load the model and a calibration set from disk, run the engine,
optionally quantize to FP8, and write a model directory plus ``prune_report.json`` atomically.

The calibration set is read through ``rac.calibset``, its on-disk contract, so this stage does not
depend on how the set was built.
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from rac import calibset, models
from rac.io import RacError, atomic_dir, check_output_dir, write_json
from rac.prune.batches import make_batches
from rac.prune.config import PruneConfig
from rac.prune.engine import prune_model
from rac.prune.quant import FP8_DIR, export_fp8, fp8_per_channel, require_llmcompressor
from rac.prune.report import PruneReport, PruneTotals
from rac.prune.sparsegpt import CholeskyError

REPORT = "prune_report.json"


def prune_to_dir(model: str | Path, calib_dir: Path | None, cfg: PruneConfig, out: Path, *,
                 fp8: bool = False, fp8_export: bool = False, batch_tokens: int = 8192,
                 trust_remote_code: bool = False, overwrite: bool = False,
                 progress: bool = True) -> PruneReport:
    check_output_dir(out, overwrite)
    if fp8_export:
        require_llmcompressor()
    t0 = time.perf_counter()
    tok = models.load_tokenizer(model, trust_remote_code)
    batches, calib_info = None, None
    if calib_dir is not None:
        cset = calibset.read(calib_dir)
        if cset.tokenizer_fingerprint != models.tokenizer_fingerprint(tok):
            raise RacError(f"{calib_dir} was tokenized for another model ({cset.info['tokenizer']});"
                           " rebuild it with --tokenizer pointing at this model")
        calib_info = cset.info
        if cfg.balance_segments:
            cfg = replace(cfg, segment_weights=calibset.balanced_weights(cset.rows),
                          balance_segments=False)
        batches = make_batches(cset.rows, tok.pad_token_id, cfg.segment_weights, batch_tokens)
    elif cfg.needs_calibration:
        given = cfg.needs_calibration
        raise RacError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --calib DIR "
                       "(only plain magnitude pruning works without)")
    lm = models.load_model(model, "cpu", trust_remote_code=trust_remote_code)
    blocks = models.decoder_blocks(lm)
    try:
        layers = prune_model(lm, blocks, batches, cfg, progress=progress)
    except (ValueError, CholeskyError) as e:
        raise RacError(str(e)) from e
    if fp8 or fp8_export:
        # FP8 covers every linear of the decoder blocks (not only the pruned scope), as an FP8
        # deployment would; embeddings and lm_head stay in the model's dtype.
        with torch.no_grad():
            for lin in (m for m in blocks.modules() if isinstance(m, torch.nn.Linear)):
                lin.weight.copy_(fp8_per_channel(lin.weight)[0])
    models.check_finite(lm, "the pruned model")
    report = PruneReport(
        model=models.model_name(model), calib=str(calib_dir) if calib_dir else None,
        calib_info=calib_info, method=cfg.method, target=str(cfg.target), scope=str(cfg.scope),
        true_sequential=cfg.true_sequential, fp8=fp8 or fp8_export,
        blocksize=cfg.sparsegpt.block_for(cfg.target), percdamp=cfg.sparsegpt.percdamp,
        segment_weights=dict(cfg.segment_weights), dense_targets=cfg.dense_targets,
        refine_epochs=cfg.refine_epochs, refine_lr=cfg.refine_lr,
        owl_lambda=cfg.owl_lambda, error_span=cfg.error_span,
        error_step=cfg.error_step, mask_swaps=cfg.mask_swaps, device=cfg.device,
        totals=PruneTotals.of(layers, time.perf_counter() - t0,
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        layers=layers)
    rac_file = models.resolve(model) / models.RAC_MODEL_FILE
    with atomic_dir(out, overwrite=overwrite) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if rac_file.exists():
            (tmp / models.RAC_MODEL_FILE).write_text(rac_file.read_text())
        write_json(tmp / REPORT, report.to_json())
        if fp8_export:
            export_fp8(lm, tok, tmp / FP8_DIR)
    return report


def read_totals(pruned_dir: Path) -> PruneTotals:
    """The totals of a pruned model directory's ``prune_report.json``."""
    import json

    return PruneTotals(**json.loads((Path(pruned_dir) / REPORT).read_text())["totals"])
