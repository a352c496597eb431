"""``--model auto --scale r``: the model measured best at the measured scale nearest to r.

The table is ``assets/anyscale_choice.json``, written by ``bench/eval_anyscale.py table`` from its Vid4 run
(mean Y-PSNR per model and scale, BI LR); it is data from that measurement, not hand-written. Models whose
weights are not on this machine are skipped. Without the table the choice is official BasicVSR (Vimeo-BI) x4 +
resize, the project's baseline for any scale.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "anyscale_choice.json")
# table key -> (model name, weights variant)
CANDIDATES = {"basicvsr_meta": ("basicvsr-meta", None), "x4_resize": ("basicvsr", "vimeo-bi"),
              "dscvsr": ("dscvsr", None)}


def load_table(path: str = TABLE) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _available(name: str, variant: Optional[str]) -> bool:
    from .. import weights as W
    try:
        if name == "basicvsr-meta" and W.where("basicvsr", "vimeo-bi")[0] in ("none", "download"):
            return False
        return W.where(name, variant)[0] not in ("none", "download")
    except W.WeightsError:
        return False


def choose(scale: float, table: Optional[dict] = None) -> Tuple[str, Optional[str], str]:
    """(model, variant, why) for output scale ``scale``."""
    table = table if table is not None else load_table()
    if not table or not table.get("scales"):
        return "basicvsr", "vimeo-bi", "no measured table: official BasicVSR (Vimeo-BI) x4 + resize"
    measured: Dict[float, dict] = {float(k): v for k, v in table["scales"].items()}
    near = min(measured, key=lambda s: (abs(s - scale), s))
    ranked = sorted(((v, k) for k, v in measured[near].items() if k in CANDIDATES), reverse=True)
    for psnr, key in ranked:
        name, variant = CANDIDATES[key]
        if _available(name, variant):
            return name, variant, f"best measured at x{near:g} ({psnr:.3f} dB, {table.get('measured_on', '')})"
    return "basicvsr", "vimeo-bi", "no measured model has its weights here: official BasicVSR (Vimeo-BI) x4 + resize"


def describe(table: Optional[dict] = None) -> str:
    table = table if table is not None else load_table()
    if not table:
        return "any-scale choice: no measured table (assets/anyscale_choice.json missing)"
    keys = [k for k in ("bicubic", "x4_resize", "basicvsr_meta", "dscvsr")]
    lines = [f"any-scale choice (--model auto --scale r; nearest measured scale), {table.get('measured_on', '')}:",
             "    scale  " + "  ".join(f"{k:>13s}" for k in keys) + "  chosen"]
    for s in sorted(table["scales"], key=float):
        row = table["scales"][s]
        name, variant, _ = choose(float(s), table)
        lines.append(f"    {float(s):5g}  " + "  ".join(f"{row.get(k, float('nan')):13.3f}" for k in keys)
                     + f"  {name}" + (f" ({variant})" if variant else ""))
    return "\n".join(lines)
