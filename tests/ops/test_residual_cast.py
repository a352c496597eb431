"""residual_cast: the host kernel (csrc/residual_cast_cpu.cpp) gives the bits of torch's two passes
(acc.add_(y); acc.to(bfloat16)) -- the accumulator and the rounded copy --, for both layouts, special values (NaN,
infinities, overflow to infinity, ties, subnormals) and any thread count; elsewhere the reference runs."""
import shutil

import pytest
import torch

from vsr_engine.ops import _host_kernels
from vsr_engine.ops.residual_cast import residual_cast, residual_cast_ref

pytestmark = pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                                reason="no C++ compiler / ninja: the host kernel cannot be built here")


def operands(shape, cl, seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = torch.randn(shape, generator=g) * 3
    y = (torch.randn(shape, generator=g) * 2).to(torch.bfloat16)
    flat_a, flat_y = acc.view(-1), y.view(-1)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.0e38, 1e-40, -0.0, 1.00390625, 1.01171875])
    flat_a[:8] = specials
    flat_y[:8] = torch.tensor([1.0, 1.0, 2.0, 3.0e38, 1e-40, 0.0, 0.0, 0.0]).to(torch.bfloat16)
    if cl:
        acc, y = acc.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    return acc, y


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(1, 64, 9, 13), (2, 3, 5, 7), (1, 16, 90, 80)])
def test_same_bits_as_torch(shape, cl):
    assert _host_kernels.load() is not None, _host_kernels.status()
    acc, y = operands(shape, cl)
    ref_acc = acc.clone()
    ref = residual_cast_ref(ref_acc, y)
    x = residual_cast(acc, y)
    assert x.dtype == torch.bfloat16 and x.stride() == ref.stride()
    assert torch.equal(acc.view(torch.int32), ref_acc.view(torch.int32))      # bitwise, NaN included
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(x), nan)                                  # NaN stays NaN (its bits: torch's
    assert torch.equal(x.view(torch.int16)[~nan], ref.view(torch.int16)[~nan])  # vectorised and scalar paths differ)


def test_any_thread_count():
    acc, y = operands((1, 8, 300, 300), True, seed=3)        # > one 64k-element chunk per thread
    outs = []
    before = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            a = acc.clone()
            outs.append((a, residual_cast(a, y)))
    finally:
        torch.set_num_threads(before)
    for a, x in outs[1:]:
        assert torch.equal(a.view(torch.int32), outs[0][0].view(torch.int32))
        assert torch.equal(x.view(torch.int16), outs[0][1].view(torch.int16))


def test_falls_back_where_the_kernel_does_not_apply():
    acc, y = operands((1, 4, 5, 6), False)
    yf = y.float()                                            # fp32 addend: the reference path
    a1, a2 = acc.clone(), acc.clone()
    assert torch.equal(residual_cast(a1, yf), residual_cast_ref(a2, yf)) or torch.isnan(a1).any()
    assert torch.equal(a1.nan_to_num(), a2.nan_to_num())
    a3 = acc.clone().contiguous(memory_format=torch.channels_last)  # layouts differ: the reference path
    x = residual_cast(a3, y)
    assert x.dtype == torch.bfloat16 and torch.equal(a3.nan_to_num(), a2.nan_to_num())


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_low_part_same_bits_as_torch(cl):
    """With ``lo`` (a compensated block output y + lo): acc += (y + lo) summed in fp32 first, as the reference."""
    acc, y = operands((1, 64, 9, 13), cl, seed=5)
    g = torch.Generator().manual_seed(6)
    lo = (torch.randn(acc.shape, generator=g) * 2 ** -9).to(torch.bfloat16)
    lo = lo.contiguous(memory_format=torch.channels_last) if cl else lo
    ref_acc, a = acc.clone(), acc.clone()
    ref = residual_cast_ref(ref_acc, y, torch.bfloat16, lo)
    x = residual_cast(a, y, torch.bfloat16, lo)
    assert torch.equal(a.view(torch.int32), ref_acc.view(torch.int32))
    nan = torch.isnan(ref)
    assert torch.equal(x.view(torch.int16)[~nan], ref.view(torch.int16)[~nan])
    no_lo = acc.clone()
    residual_cast(no_lo, y)
    assert not torch.equal(a.nan_to_num(), no_lo.nan_to_num())               # the low part was added
