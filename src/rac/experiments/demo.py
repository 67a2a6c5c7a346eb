"""``rac demo``: the README's first command. On the embedded model it runs dense evaluation,
traces, generic / prompt / RAC calibration at equal budget, SparseGPT at a few sparsities and 2:4,
evaluation, the Figure 2 heatmap, and the report. ``--full`` runs the grid whose reference run is
committed under ``docs/results/``.
"""

from __future__ import annotations

# About 30 s on 2 quiet CPU cores (27 s measured: eval 18 s, prune 5 s, traces 2 s).
DEMO = {
    "model": "embedded",
    "seeds": [0],
    "problems": {"calib": "generate:arith:calib:1500", "test": "generate:arith:test:200"},
    "calibration": {"sources": ["generic", "prompt", "rac"], "budget_tokens": 20000},
    "prune": {"methods": ["sparsegpt"], "sparsities": [0.4, 0.5, 0.6], "patterns": ["2:4"]},
    "eval": {"max_new_tokens": [512], "batch_size": 100},
    "recon": {"problems": 16, "sparsity": 0.5, "pair": ["prompt", "rac"]},
}

# The reference grid (docs/results/): two calibration seeds, four sources, the paper's tables.
FULL = {
    "model": "embedded",
    "seeds": [0, 1],
    "problems": {"calib": "generate:arith:calib:3000", "test": "generate:arith:test:500"},
    "calibration": {"sources": ["generic", "prompt", "rac", "reference"], "budget_tokens": 20000,
                    "fractions": [0.25, 1.0], "fraction_sparsities": [0.5]},
    "prune": {"methods": ["sparsegpt"], "sparsities": [0.3, 0.4, 0.5, 0.55, 0.6],
              "patterns": ["2:4"],
              "table4_scopes": ["all@first-third", "all@first-last-third", "all"]},
    "eval": {"max_new_tokens": [512, 128], "budget_sparsities": [0.5], "batch_size": 100},
    "recon": {"problems": 24, "sparsity": 0.5, "pair": ["prompt", "rac"]},
}
