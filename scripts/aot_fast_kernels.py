#!/usr/bin/env python3
"""Compile every specialisation of the fast step's Triton kernels (ops/bias_act, warp_nhwc, shuffle_nhwc) for sm_90
ahead of time, with the argument attributes a real launch gets: every integer and pointer argument marked
divisible by 16 (what Triton specialises when the values are), unit strides as constants.

    python3 scripts/aot_fast_kernels.py            # exit 1 and the failing cases on stderr if any fails

Why: triton 3.6 (the H200's) failed to compile warp_nhwc's 64-bit gather when the pixel strides were multiples of
16; the plain AOT compile (no attributes) and triton 3.9 both passed. CI runs this with the installed triton and,
when .ci/run has put it in build/triton36, with triton 3.6 too (tests/ops/test_fast_kernels_aot.py).
"""
from __future__ import annotations

import itertools
import os
import sys

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("scripts/aot_fast_kernels.py: unset TRITON_INTERPRET (the AOT compile needs the compiler)")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from vsr_engine.ops import bias_act as B  # noqa: E402
from vsr_engine.ops import shuffle_nhwc as S  # noqa: E402
from vsr_engine.ops import warp_nhwc as W  # noqa: E402


def compile_one(fn, sig: dict, const: dict, arch: int = 90) -> str:
    names = list(sig)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n] != "constexpr" and not sig[n].startswith("fp")}
    try:
        triton.compile(ASTSource(fn, sig, const, attrs), target=GPUTarget("cuda", arch, 32))
        return ""
    except Exception as e:  # noqa: BLE001 - reported per case
        return f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"


def cases():
    for dt in ("fp16", "bf16", "fp32"):
        for act, hz in itertools.product((0, 1, 2), (False, True)):
            c = B._block_p(64)
            yield (f"bias_act {dt} act={act} residual={hz}", B._kernel,
                   {"y_ptr": "*" + dt, "b_ptr": "*" + dt, "z_ptr": "*" + dt, "o_ptr": "*" + dt, "P": "i32",
                    "C": "i32", "sy": "i32", "sz": "i32", "so": "i32", "slope": "fp32", "HAS_B": "constexpr",
                    "HAS_Z": "constexpr", "ACT": "constexpr", "BLOCK_P": "constexpr", "BLOCK_C": "constexpr"},
                   {"HAS_B": True, "HAS_Z": hz, "ACT": act, "BLOCK_P": c, "BLOCK_C": 64})
        for fdt, border, bc in itertools.product(("fp16", "bf16", "fp32"), (False, True), (4, 64)):
            yield (f"warp_nhwc {dt} flow {fdt} border={border} C<={bc}", W._kernel,
                   {"x_ptr": "*" + dt, "f_ptr": "*" + fdt, "o_ptr": "*" + dt, "P": "i32", "H": "i32", "W": "i32",
                    "C": "i32", "sx": "i32", "so": "i32", "sfn": "i32", "sfc": "i32", "sfh": "i32",
                    "sfw": "constexpr", "BORDER": "constexpr", "BLOCK_P": "constexpr", "BLOCK_C": "constexpr"},
                   {"sfw": 1, "BORDER": border, "BLOCK_P": max(1, 2048 // bc), "BLOCK_C": bc})
        yield (f"shuffle_nhwc {dt}", S._kernel,
               {"y_ptr": "*" + dt, "b_ptr": "*" + dt, "o_ptr": "*" + dt, "P": "i32", "H": "i32", "W": "i32",
                "C": "i32", "sy": "i32", "slope": "fp32", "HAS_B": "constexpr", "BLOCK_P": "constexpr",
                "BLOCK_C": "constexpr"}, {"HAS_B": True, "BLOCK_P": 16, "BLOCK_C": 64})


def main() -> int:
    bad, n = [], 0
    for name, fn, sig, const in cases():
        n += 1
        err = compile_one(fn, sig, const)
        if err:
            bad.append(f"{name}: {err}")
    print(f"triton {triton.__version__}: {n} specialisations compiled for sm_90, {len(bad)} failed")
    for b in bad:
        print("FAILED " + b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
