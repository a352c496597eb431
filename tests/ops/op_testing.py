"""Shared helpers for tests/ops: which implementations can run here, and the comparison rules.

Implementations of an op under test (each test file maps them to callables with the op's public signature):
  ``triton``   -- the public function forced to the triton backend (on CPU: TRITON_INTERPRET=1, set before Python
                  starts; on a GPU machine: CUDA tensors);
  ``torch_op`` -- the ``vsr_engine::<op>`` custom op with its torch implementation (explicit torch backward);
  ``cuda_emu`` -- the custom op with the CUDA backend, csrc/*.cu compiled for host emulation (see conftest.py).
Rules: fp32 (and fp64) outputs and gradients match the torch reference at ~1e-5. 16-bit ones are compared with
an fp64 reference: the error must be at most FACTOR x PyTorch's own error in that dtype (the reference run in
fp16 / bf16) plus one ulp at the output's magnitude.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pytest
import torch

from vsr_engine.ops import _backend, use_backend

INTERPRET = _backend.INTERPRET
HAS_CUDA = torch.cuda.is_available()
FACTOR = 2.0

needs_interpret = pytest.mark.skipif(
    not INTERPRET, reason="Triton kernels on CPU need TRITON_INTERPRET=1 set before Python starts")


def gpu(f):
    """Marks a test that needs a CUDA device (skipped here)."""
    return pytest.mark.gpu(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")(f))


def gpu_backends(*names: str):
    """pytest params for the GPU tests: ``cuda`` / ``cupy`` are skipped, with the reason, where that backend is not
    live on this machine (no nvcc for the JIT build; cupy or NVRTC missing). Checked only when CUDA exists."""
    params = []
    for n in names:
        marks = []
        if HAS_CUDA and n in ("cuda", "cupy"):
            ok, why = (_backend.cuda_usable if n == "cuda" else _backend.cupy_usable)("cuda")
            marks = [pytest.mark.skip(reason=f"{n} backend not live: {why}")] if not ok else []
        params.append(pytest.param(n, marks=marks, id=n))
    return params


def impl_params(*names: str):
    """pytest params for the implementations that can run on this machine's CPU."""
    marks = {"triton": [needs_interpret], "torch_op": [], "cuda_emu": []}
    return [pytest.param(n, marks=marks[n], id=n) for n in names]


def activate(impl: str, request) -> None:
    """Set up what implementation ``impl`` needs (the emulated CUDA kernels for ``cuda_emu``)."""
    if impl == "cuda_emu":
        request.getfixturevalue("cuda_emu")


def forced(fn: Callable, backend: str) -> Callable:
    def run(*a, **k):
        with use_backend(backend):
            return fn(*a, **k)
    return run


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close_lowp(out: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor, what: str = "") -> None:
    """16-bit rule: |out - ref64| <= FACTOR * |torch_lowp - ref64| + ulp(max |ref64|)."""
    assert out.dtype == torch_lowp.dtype, (what, out.dtype, torch_lowp.dtype)
    assert out.shape == ref64.shape, (what, out.shape, ref64.shape)
    e_k, e_t = err(out, ref64), err(torch_lowp, ref64)
    ulp = torch.finfo(out.dtype).eps * max(ref64.abs().max().item(), 1e-3) if ref64.numel() else 0.0
    assert e_k <= FACTOR * e_t + ulp, (
        f"{what}: kernel error {e_k:.3g} > {FACTOR} x torch {out.dtype} error {e_t:.3g} + ulp {ulp:.3g}")


def _cast(args, dtype):
    return [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def run(fn: Callable, args: Sequence, grad_idx: Sequence[int], gouts=None):
    """fn(*args) with gradients w.r.t. args[grad_idx] for upstream gradients ``gouts`` (one per output).
    Returns (outputs, grads) detached; an input without a gradient gives None."""
    args = [a.detach().clone().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    out = fn(*args)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    grads = []
    if grad_idx and gouts is not None:
        pairs = [(o, g.to(o.dtype)) for o, g in zip(outs, gouts) if o.requires_grad]
        torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])
        grads = [args[i].grad for i in grad_idx]
    return [o.detach() for o in outs], grads


def check_against_ref(fn: Callable, ref: Callable, args: Sequence, grad_idx: Sequence[int], dtype: torch.dtype,
                      what: str = "", rtol: float = 1e-5, atol: float = 1e-5, seed: int = 1) -> None:
    """Forward outputs and gradients of ``fn`` in ``dtype`` against ``ref`` (see the module docstring)."""
    o64, _ = run(ref, _cast(args, torch.float64), [])
    gen = torch.Generator().manual_seed(seed)
    gouts = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device) for o in o64]
    o64, g64 = run(ref, _cast(args, torch.float64), grad_idx, gouts)
    ok, gk = run(fn, _cast(args, dtype), grad_idx, gouts)
    if dtype in (torch.float32, torch.float64):
        ot, gt = run(ref, _cast(args, dtype), grad_idx, gouts)
        for i, (a, b) in enumerate(zip(ok, ot)):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what} output {i}: {m}")
        for i, a, b in zip(grad_idx, gk, gt):
            assert (a is None) == (b is None), f"{what}: gradient of input {i} missing"
            if a is not None:
                torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what} grad {i}: {m}")
    else:
        ot, gt = run(ref, _cast(args, dtype), grad_idx, gouts)
        for i, (a, b, c) in enumerate(zip(ok, o64, ot)):
            assert_close_lowp(a, b, c, f"{what} output {i}")
        for i, a, b, c in zip(grad_idx, gk, g64, gt):
            assert a is not None and a.dtype == dtype, f"{what}: gradient of input {i} is {a if a is None else a.dtype}"
            assert_close_lowp(a, b, c, f"{what} grad {i}")


def compile_check(fn: Callable, ref: Callable, args: Sequence, grad_idx: Sequence[int]) -> None:
    """torch.compile(fullgraph=True, backend='aot_eager') of fn, with a backward, equals eager ref (fp32)."""
    def loss_of(f):
        def g(*a):
            out = f(*a)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return sum((o.float() * (k + 1.0)).square().sum() for k, o in enumerate(outs))
        return g
    torch._dynamo.reset()
    compiled = torch.compile(loss_of(fn), fullgraph=True, backend="aot_eager")
    (lc,), gc = run(compiled, args, grad_idx, [torch.ones(())])
    (lr,), gr = run(loss_of(ref), args, grad_idx, [torch.ones(())])
    torch.testing.assert_close(lc, lr, rtol=1e-5, atol=1e-5)
    for a, b in zip(gc, gr):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
