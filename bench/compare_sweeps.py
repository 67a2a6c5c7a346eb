"""Compare two sweep output directories: are the pruned weights bit-identical, and the tables the
same? The safety net of a refactor (``make results`` before and after).

    python bench/compare_sweeps.py runs/before/demo-full runs/after/demo-full

Pruned models are matched by what made them (method, target, scope, FP8, and the calibration
set's source, budget and seed), not by cache key, so the two sweeps may live anywhere. Tables are
compared line by line with the eval times ("(3s)") and tokens/s columns removed: speed is not a
result of the grid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from safetensors import safe_open


def _calib_identity(calib_dir: str) -> tuple:
    if calib_dir == "None":
        return ("none",)
    info = json.loads((Path(calib_dir) / "inputs.json").read_text())
    return (info["source"], info["budget"], info.get("seed"), info.get("pack"))


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in sorted(st.keys()):
                t = st.get_tensor(name)
                h.update(name.encode())
                h.update(t.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy()
                         .tobytes())
    return h.hexdigest()


def pruned_models(sweep: Path) -> dict[tuple, str]:
    out = {}
    for inputs in sorted((sweep / "cache" / "pruned").glob("*/inputs.json")):
        i = json.loads(inputs.read_text())
        key = (i["method"], i["target"], i["scope"], i["fp8"], i["true_sequential"],
               _calib_identity(i["calib"]))
        out[key] = _weights_digest(inputs.parent)
    return out


def tables(sweep: Path) -> list[str]:
    """The table lines of report.md without timings: eval times "(3s)" and tokens/s columns."""
    out, timed = [], set()
    for line in (sweep / "report.md").read_text().splitlines():
        if not line.startswith("|"):
            timed = set()
            continue
        cells = line.strip("|").split("|")
        if not out or not timed and any("tokens/s" in c for c in cells):
            timed = {i for i, c in enumerate(cells) if "tokens/s" in c} or timed
        cells = [c for i, c in enumerate(cells) if i not in timed]
        out.append(re.sub(r" \(\d+s\)", "", "|".join(cells)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args()
    before, after = pruned_models(a.before), pruned_models(a.after)
    same = [k for k in before if after.get(k) == before[k]]
    differ = [k for k in before if k in after and after[k] != before[k]]
    missing = sorted(set(before) ^ set(after), key=str)
    print(f"pruned models: {len(before)} before, {len(after)} after; {len(same)} bit-identical, "
          f"{len(differ)} differ, {len(missing)} in one sweep only")
    for k in differ + missing:
        print("  differs" if k in differ else "  only in one", k)
    tb, ta = tables(a.before), tables(a.after)
    changed = [(x, y) for x, y in zip(tb, ta) if x != y]
    print(f"table lines: {len(tb)} before, {len(ta)} after; {len(changed)} differ"
          + ("" if len(tb) == len(ta) else " (different counts)"))
    for x, y in changed:
        print(f"  - {x}\n  + {y}")
    return 0 if not differ and not missing and not changed and len(tb) == len(ta) else 1


if __name__ == "__main__":
    sys.exit(main())
