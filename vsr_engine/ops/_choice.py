"""The automatic backend order of each op on CUDA tensors: one table, ``backend_choice.json`` beside this file.

Until GPU rows exist the table follows the static analysis (its ``basis`` says so and ``vsr-engine info`` prints
it); ``bench/gpu_proof.py --update-choice`` rewrites it from measured forward+backward times. A backend that is
not in an op's ``order`` is never chosen automatically (it can still be forced). ``VSR_ENGINE_CHOICE=path`` reads
another table. On CPU tensors the order is fixed: triton (interpreter) then torch.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend_choice.json")
_cache: Dict[str, dict] = {}


def table(path: Optional[str] = None) -> dict:
    path = path or os.environ.get("VSR_ENGINE_CHOICE") or PATH
    t = _cache.get(path)
    if t is None:
        with open(path) as f:
            t = json.load(f)
        _cache[path] = t
    return t


def order(op: str) -> List[str]:
    try:
        return list(table()["ops"][op]["order"])
    except Exception:  # a missing or broken table must not break the ops
        return ["cuda", "cupy", "triton", "torch"]


def basis() -> str:
    try:
        t = table()
        return t["basis"] + (f" (measured on {t['measured_on']})" if t.get("measured_on") else "")
    except Exception as e:
        return f"built-in order (table unreadable: {type(e).__name__})"


def from_rows(rows: List[dict], device: str, old: Optional[dict] = None) -> dict:
    """A new table from benchmark rows ``{"op", "backend", "ms"}`` (forward+backward at the real shapes, summed
    per backend): each op's order is its measured backends fastest first, then torch if unmeasured."""
    old = old or table()
    tot: Dict[str, Dict[str, float]] = {}
    for r in rows:
        if r.get("ms") is None:
            continue
        tot.setdefault(r["op"], {}).setdefault(r["backend"], 0.0)
        tot[r["op"]][r["backend"]] += float(r["ms"])
    ops = {}
    for op, entry in old["ops"].items():
        meas = tot.get(op)
        if not meas:
            ops[op] = entry
            continue
        ordered = sorted(meas, key=meas.get)
        if "torch" not in ordered:
            ordered.append("torch")
        ops[op] = {"order": ordered, "why": "measured: " + ", ".join(f"{b} {meas[b]:.3f} ms" for b in ordered
                                                                     if b in meas)}
    return {"basis": "measured by bench/gpu_proof.py (sum of forward+backward ms over its shapes and dtypes)",
            "measured_on": device, "ops": ops}


def write(t: dict, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(t, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
