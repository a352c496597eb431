"""The automatic backend order of each op on CUDA tensors: one table, ``backend_choice.json`` beside this file.

Until GPU rows exist the table follows the static analysis (its ``basis`` says so and ``vsr-engine info`` prints
it); ``bench/gpu_proof.py --update-choice`` rewrites it from measured forward+backward times. A backend that is
not in an op's ``order`` is never chosen automatically (it can still be forced). ``VSR_ENGINE_CHOICE=path`` reads
another table. On CPU tensors the order is fixed: triton (interpreter) then torch.

Per shape: an op's entry may hold ``by_size``, a list of ``{"max_numel", "order"}`` in ascending ``max_numel``; a
call whose main input has at most that many elements uses the first such order, larger calls the op's ``order``
(``bucket(op, numel)`` picks it; the ops pass the bucket to ``resolve``). ``from_rows`` writes these buckets when
the benchmark rows carry ``numel`` and the fastest order differs between sizes.
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


def _mode_entry(op: str, train: bool) -> dict:
    """The op's entry for inference, or its ``train`` sub-entry (forward+backward timings) when asked and present."""
    entry = table()["ops"][op]
    return entry["train"] if train and isinstance(entry.get("train"), dict) else entry


def bucket(op: str, numel, train: bool = False) -> int:
    """Index of the ``by_size`` entry for a call whose main input has ``numel`` elements, -1 for the op's
    ``order``. With no ``by_size`` entries (the static table) nothing is compared."""
    try:
        sizes = _mode_entry(op, train).get("by_size") or ()
    except Exception:
        return -1
    for i, b in enumerate(sizes):
        if numel <= int(b["max_numel"]):
            return i
    return -1


def order(op: str, size_bucket: int = -1, train: bool = False) -> List[str]:
    """The op's automatic order: for inference (forward timings) or, ``train``, for calls that will run a backward
    (forward+backward timings) where the table has them."""
    try:
        entry = _mode_entry(op, train)
        if size_bucket >= 0:
            return list(entry["by_size"][size_bucket]["order"])
        return list(entry["order"])
    except Exception:  # a missing or broken table must not break the ops
        return ["cuda", "cupy", "triton", "torch"]


def basis() -> str:
    try:
        t = table()
        return t["basis"] + (f" (measured on {t['measured_on']})" if t.get("measured_on") else "")
    except Exception as e:
        return f"built-in order (table unreadable: {type(e).__name__})"


def _ranked(ms: Dict[str, float]) -> List[str]:
    ordered = sorted(ms, key=ms.get)
    return ordered + ([] if "torch" in ordered else ["torch"])


def from_rows(rows: List[dict], device: str, old: Optional[dict] = None) -> dict:
    """See ``_from_rows``. Rows that carry ``pass`` (``fwd`` / ``fwd+bwd``) make two orders per op: ``order`` (and
    ``by_size``) from the forward rows, for inference calls, and ``train`` from the forward+backward rows, for calls
    made with gradients enabled; rows without ``pass`` make the one order as before."""
    if not any(r.get("pass") in ("fwd", "fwd+bwd") for r in rows):
        return _from_rows(rows, device, old)
    fwd = _from_rows([r for r in rows if r.get("pass") == "fwd"], device, old)
    trn = _from_rows([r for r in rows if r.get("pass") == "fwd+bwd"], device, old)
    for op, e in fwd["ops"].items():
        t = trn["ops"].get(op)
        if t is not None and t is not (old or table())["ops"].get(op):
            e["train"] = {k: v for k, v in t.items() if k in ("order", "why", "by_size")}
    fwd["basis"] = ("measured by bench/gpu_proof.py: inference order from forward ms, train order from "
                    "forward+backward ms (each summed over its shapes and dtypes)")
    return fwd


def _from_rows(rows: List[dict], device: str, old: Optional[dict] = None) -> dict:
    """A new table from benchmark rows ``{"op", "backend", "ms"[, "numel"]}`` (forward+backward at the real shapes,
    summed per backend): each op's order is its measured backends fastest first, then torch if unmeasured. When the
    rows carry ``numel`` (the main input's element count) and the fastest order at a smaller size differs from the
    largest size's, that size gets a ``by_size`` bucket (up to the geometric mean of it and the next size) and the
    op's ``order`` is the largest size's."""
    old = old or table()
    tot: Dict[str, Dict[str, float]] = {}
    per: Dict[str, Dict[int, Dict[str, float]]] = {}
    for r in rows:
        if r.get("ms") is None:
            continue
        tot.setdefault(r["op"], {}).setdefault(r["backend"], 0.0)
        tot[r["op"]][r["backend"]] += float(r["ms"])
        if r.get("numel") is not None:
            d = per.setdefault(r["op"], {}).setdefault(int(r["numel"]), {})
            d[r["backend"]] = d.get(r["backend"], 0.0) + float(r["ms"])
    ops = {}
    for op, entry in old["ops"].items():
        meas = tot.get(op)
        if not meas:
            ops[op] = entry
            continue
        sizes = sorted(per.get(op, {}))
        # only sizes where every backend of the op was measured can be compared
        sizes = [n for n in sizes if set(per[op][n]) == set(meas)]
        if len(sizes) >= 2:
            top = _ranked(per[op][sizes[-1]])
            new = {"order": top, "why": f"measured at {sizes[-1]} elements: " + ", ".join(
                f"{b} {per[op][sizes[-1]][b]:.3f} ms" for b in top if b in per[op][sizes[-1]])}
            buckets = []
            for n, nxt in zip(sizes, sizes[1:]):
                o = _ranked(per[op][n])
                if o != top:
                    buckets.append({"max_numel": int((n * nxt) ** 0.5), "order": o,
                                    "why": f"measured at {n} elements: " + ", ".join(
                                        f"{b} {per[op][n][b]:.3f} ms" for b in o if b in per[op][n])})
            if buckets:
                new["by_size"] = buckets
            ops[op] = new
            continue
        ordered = _ranked(meas)
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
