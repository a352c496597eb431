"""YCbCr <-> RGB as torch ops that run on any device (the GPU pipeline uploads YUV planes, 1.5 B/px for 4:2:0,
and converts on the GPU; the encoder side converts back to YUV on the GPU before the download).

Conventions (ITU-T H.273 / Rec. BT.601, BT.709, BT.2020):

* Matrices (``matrix=``): ``bt601`` (Kr 0.299, Kb 0.114; also ``smpte170m``, ``bt470bg``), ``bt709``
  (0.2126, 0.0722), ``bt2020`` (non-constant luminance, 0.2627, 0.0593; also ``bt2020nc``). RGB here is the
  gamma-encoded R'G'B' in [0, 1]; no transfer function or primaries conversion is done.
* Ranges (``color_range=``): ``limited`` (tv/mpeg): Y = 16..235, C = 16..240, scaled by 2^(bits-8);
  ``full`` (pc/jpeg): Y = 0..2^bits-1, C = 2^(bits-1) +- (2^bits-1)/2.
* Bit depths 8..16 (10-bit planes come as uint16/int16/int32 tensors holding the code values).
* Subsampling is read from the plane shapes: chroma (ceil(H/2), ceil(W/2)) = 4:2:0, (H, ceil(W/2)) = 4:2:2,
  (H, W) = 4:4:4.
* Chroma siting (``chroma_loc=``), in luma sample units:
    - ``left`` (default; MPEG-2, H.264/HEVC/AV1 default ``chroma_sample_loc_type 0``): chroma sample i sits at
      x = 2i (co-sited with the even luma column) and, for 4:2:0, at y = 2j + 0.5 (between the two rows);
    - ``center`` (MPEG-1, JPEG/JFIF; type 1): x = 2i + 0.5, y = 2j + 0.5;
    - ``topleft`` (type 2; BT.2020 UHD masters): x = 2i, y = 2j.
* Upsampling (``upsample=``): ``bilinear`` (default) interpolates linearly between the two nearest chroma
  samples at their sited positions, edges replicated; ``nearest`` repeats each chroma sample over its 2x2
  (4:2:0) or 2x1 (4:2:2) luma block, ignoring siting (what swscale's fast unscaled path does).
* Downsampling (``rgb_to_yuv``) is the matching low-pass: a co-sited axis uses taps [1/4, 1/2, 1/4] centred on
  the even sample, a centred axis averages the two samples; edges replicated.

All arithmetic is fp32 (whatever the input or output dtype); outputs are rounded half to even and clamped.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["MATRICES", "matrix_coefficients", "yuv_to_rgb_matrix", "rgb_to_yuv_matrix", "yuv_to_rgb",
           "rgb_to_yuv", "subsampling_of", "plane_shapes", "planes_nbytes", "split_planes", "pack_planes",
           "packed_yuv_to_rgb", "rgb_to_packed_yuv", "upsample_chroma", "downsample_chroma"]

MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}
_MATRIX_ALIASES = {"601": "bt601", "bt470bg": "bt601", "smpte170m": "bt601", "itu601": "bt601", "bt.601": "bt601",
                   "709": "bt709", "itu709": "bt709", "bt.709": "bt709",
                   "2020": "bt2020", "bt2020nc": "bt2020", "bt2020-ncl": "bt2020", "bt2020_ncl": "bt2020",
                   "bt.2020": "bt2020"}
_RANGE_ALIASES = {"limited": "limited", "tv": "limited", "mpeg": "limited", "studio": "limited",
                  "full": "full", "pc": "full", "jpeg": "full"}
_CHROMA_LOCS = ("left", "center", "topleft")
_SUBSAMPLING = {"420": (2, 2), "422": (1, 2), "444": (1, 1)}  # (vertical, horizontal) factors


def _matrix_name(matrix: str) -> str:
    m = str(matrix).lower()
    m = _MATRIX_ALIASES.get(m, m)
    if m not in MATRICES:
        raise ValueError(f"unknown matrix {matrix!r}; choose from {sorted(MATRICES)}")
    return m


def _range_name(color_range: str) -> str:
    r = _RANGE_ALIASES.get(str(color_range).lower())
    if r is None:
        raise ValueError(f"unknown color_range {color_range!r}; use 'limited' or 'full'")
    return r


def matrix_coefficients(matrix: str = "bt709") -> Tuple[float, float, float]:
    kr, kb = MATRICES[_matrix_name(matrix)]
    return kr, 1.0 - kr - kb, kb


def yuv_to_rgb_matrix(matrix: str = "bt709") -> torch.Tensor:
    """3x3 M with [R', G', B'] = M @ [Y, Cb, Cr], Y in [0, 1], Cb/Cr in [-1/2, 1/2] (closed form)."""
    kr, kg, kb = matrix_coefficients(matrix)
    return torch.tensor([[1.0, 0.0, 2.0 * (1.0 - kr)],
                         [1.0, -2.0 * (1.0 - kb) * kb / kg, -2.0 * (1.0 - kr) * kr / kg],
                         [1.0, 2.0 * (1.0 - kb), 0.0]], dtype=torch.float64)


def rgb_to_yuv_matrix(matrix: str = "bt709") -> torch.Tensor:
    """3x3 M with [Y, Cb, Cr] = M @ [R', G', B']."""
    kr, kg, kb = matrix_coefficients(matrix)
    return torch.tensor([[kr, kg, kb],
                         [-kr / (2.0 * (1.0 - kb)), -kg / (2.0 * (1.0 - kb)), 0.5],
                         [0.5, -kg / (2.0 * (1.0 - kr)), -kb / (2.0 * (1.0 - kr))]], dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _coeffs(matrix: str, inverse: bool) -> List[List[float]]:
    """The 3x3 matrix as Python floats (fp32-rounded), computed once per matrix: converting a frame never
    reads a tensor back to the host."""
    m = yuv_to_rgb_matrix(matrix) if inverse else rgb_to_yuv_matrix(matrix)
    return m.to(torch.float32).tolist()


def _quant(color_range: str, bit_depth: int) -> Tuple[float, float, float, float]:
    """(y_offset, y_scale, c_offset, c_scale): code = offset + scale * value (Y in [0,1], C in [-1/2,1/2])."""
    bit_depth = int(bit_depth)
    if not 8 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be 8..16, got {bit_depth}")
    if _range_name(color_range) == "limited":
        s = float(1 << (bit_depth - 8))
        return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s
    top = float((1 << bit_depth) - 1)
    return 0.0, top, float(1 << (bit_depth - 1)), top


def subsampling_of(luma_hw: Sequence[int], chroma_hw: Sequence[int]) -> str:
    h, w = int(luma_hw[0]), int(luma_hw[1])
    ch, cw = int(chroma_hw[0]), int(chroma_hw[1])
    for name, (fy, fx) in _SUBSAMPLING.items():
        if ch == -(-h // fy) and cw == -(-w // fx):
            return name
    raise ValueError(f"chroma plane {ch}x{cw} does not fit luma {h}x{w} as 4:2:0, 4:2:2 or 4:4:4")


def plane_shapes(height: int, width: int, subsampling: str = "420") -> Tuple[Tuple[int, int], ...]:
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {sorted(_SUBSAMPLING)}, got {subsampling!r}")
    fy, fx = _SUBSAMPLING[subsampling]
    c = (-(-height // fy), -(-width // fx))
    return (height, width), c, c


def planes_nbytes(height: int, width: int, subsampling: str = "420", bit_depth: int = 8) -> int:
    bps = 1 if bit_depth <= 8 else 2
    return sum(h * w for h, w in plane_shapes(height, width, subsampling)) * bps


# ---------------------------------------------------------------------------------------------------------------
# chroma resampling
# ---------------------------------------------------------------------------------------------------------------
def _cosited(chroma_loc: str, axis: str) -> bool:
    if chroma_loc not in _CHROMA_LOCS:
        raise ValueError(f"chroma_loc must be one of {_CHROMA_LOCS}, got {chroma_loc!r}")
    if axis == "x":
        return chroma_loc in ("left", "topleft")
    return chroma_loc == "topleft"


def _up_axis(c: torch.Tensor, dim: int, n_out: int, factor: int, cosited: bool, mode: str) -> torch.Tensor:
    n_in = c.shape[dim]
    if factor == 1:
        return c
    x = torch.arange(n_out, device=c.device, dtype=torch.float32)
    if mode == "nearest":
        return c.index_select(dim, torch.div(x, factor, rounding_mode="floor").long().clamp_(max=n_in - 1))
    # position of luma sample x in chroma sample units
    pos = x / factor if cosited else (x + 0.5) / factor - 0.5
    i0 = torch.floor(pos)
    w = pos - i0
    i0 = i0.long()
    a = c.index_select(dim, i0.clamp(0, n_in - 1))
    b = c.index_select(dim, (i0 + 1).clamp(0, n_in - 1))
    shape = [1] * c.dim()
    shape[dim] = n_out
    w = w.view(shape)
    return a + (b - a) * w


def upsample_chroma(c: torch.Tensor, out_hw: Sequence[int], chroma_loc: str = "left",
                    mode: str = "bilinear") -> torch.Tensor:
    """Chroma plane(s) (..., ch, cw) float -> (..., H, W), factors 1 or 2 per axis (see module docstring)."""
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {mode!r}")
    h, w = int(out_hw[0]), int(out_hw[1])
    fy = 1 if c.shape[-2] == h else 2
    fx = 1 if c.shape[-1] == w else 2
    if c.shape[-2] != -(-h // fy) or c.shape[-1] != -(-w // fx):
        raise ValueError(f"chroma {tuple(c.shape[-2:])} does not fit luma {h}x{w}")
    c = _up_axis(c, c.dim() - 2, h, fy, _cosited(chroma_loc, "y"), mode)
    return _up_axis(c, c.dim() - 1, w, fx, _cosited(chroma_loc, "x"), mode)


def _down_axis(c: torch.Tensor, dim: int, factor: int, cosited: bool) -> torch.Tensor:
    if factor == 1:
        return c
    n = c.shape[dim]
    n_out = -(-n // factor)
    i = torch.arange(n_out, device=c.device) * 2
    take = lambda idx: c.index_select(dim, idx.clamp(0, n - 1))  # noqa: E731
    if cosited:
        return 0.25 * take(i - 1) + 0.5 * take(i) + 0.25 * take(i + 1)
    return 0.5 * (take(i) + take(i + 1))


def downsample_chroma(c: torch.Tensor, subsampling: str = "420", chroma_loc: str = "left") -> torch.Tensor:
    """Full-resolution chroma (..., H, W) float -> subsampled (..., ch, cw) (see module docstring)."""
    fy, fx = _SUBSAMPLING[subsampling]
    c = _down_axis(c, c.dim() - 2, fy, _cosited(chroma_loc, "y"))
    return _down_axis(c, c.dim() - 1, fx, _cosited(chroma_loc, "x"))


# ---------------------------------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------------------------------
def _codes(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint16:  # limited op coverage: go through int32
        t = t.to(torch.int32)
    return t.to(torch.float32)


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, matrix: str = "bt709",
               color_range: str = "limited", bit_depth: int = 8, chroma_loc: str = "left",
               upsample: str = "bilinear", dtype: torch.dtype = torch.float32, clamp: bool = True) -> torch.Tensor:
    """Planes of code values (..., H, W), (..., ch, cw) x2 -> R'G'B' (..., 3, H, W) in [0, 1] (``dtype``)."""
    if u.shape != v.shape:
        raise ValueError(f"U {tuple(u.shape)} and V {tuple(v.shape)} differ")
    h, w = y.shape[-2:]
    subsampling_of((h, w), u.shape[-2:])  # validates
    yo, ys, co, cs = _quant(color_range, bit_depth)
    yf = (_codes(y) - yo) * (1.0 / ys)
    cb = (_codes(u) - co) * (1.0 / cs)
    cr = (_codes(v) - co) * (1.0 / cs)
    cb = upsample_chroma(cb, (h, w), chroma_loc, upsample)
    cr = upsample_chroma(cr, (h, w), chroma_loc, upsample)
    m = _coeffs(_matrix_name(matrix), True)
    r = yf + m[0][2] * cr
    g = yf + m[1][1] * cb + m[1][2] * cr
    b = yf + m[2][1] * cb
    rgb = torch.stack((r, g, b), dim=-3)
    if clamp:
        rgb = rgb.clamp_(0.0, 1.0)
    return rgb.to(dtype)


def _out_dtype(bit_depth: int, out_dtype: Optional[torch.dtype]) -> torch.dtype:
    if out_dtype is not None:
        return out_dtype
    return torch.uint8 if bit_depth <= 8 else torch.int16 if bit_depth <= 15 else torch.int32


def rgb_to_yuv(rgb: torch.Tensor, *, matrix: str = "bt709", color_range: str = "limited", bit_depth: int = 8,
               subsampling: str = "420", chroma_loc: str = "left",
               out_dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R'G'B' (..., 3, H, W) in [0, 1] -> (Y, U, V) code planes (uint8 for 8-bit, int16 for 9..15-bit)."""
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W), got {tuple(rgb.shape)}")
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {sorted(_SUBSAMPLING)}, got {subsampling!r}")
    x = rgb.to(torch.float32).clamp(0.0, 1.0)
    r, g, b = x.unbind(-3)
    m = _coeffs(_matrix_name(matrix), False)
    yv = m[0][0] * r + m[0][1] * g + m[0][2] * b
    cb = m[1][0] * r + m[1][1] * g + m[1][2] * b
    cr = m[2][0] * r + m[2][1] * g + m[2][2] * b
    cb = downsample_chroma(cb, subsampling, chroma_loc)
    cr = downsample_chroma(cr, subsampling, chroma_loc)
    yo, ys, co, cs = _quant(color_range, bit_depth)
    top = float((1 << int(bit_depth)) - 1)
    dt = _out_dtype(int(bit_depth), out_dtype)
    q = lambda t, o, s: torch.round(t * s + o).clamp_(0.0, top).to(dt)  # noqa: E731
    return q(yv, yo, ys), q(cb, co, cs), q(cr, co, cs)


# ---------------------------------------------------------------------------------------------------------------
# packed planar frames (the layout staged by the host ring: Y rows, then U rows, then V rows, no padding)
# ---------------------------------------------------------------------------------------------------------------
def split_planes(buf: torch.Tensor, height: int, width: int, subsampling: str = "420",
                 bit_depth: int = 8) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views (no copy) of the Y, U, V planes in a packed 1-D uint8 buffer (little-endian 16-bit for > 8 bits)."""
    if buf.dim() != 1 or buf.dtype != torch.uint8:
        raise ValueError(f"expected a 1-D uint8 buffer, got {buf.dtype} {tuple(buf.shape)}")
    need = planes_nbytes(height, width, subsampling, bit_depth)
    if buf.numel() < need:
        raise ValueError(f"buffer has {buf.numel()} bytes, {height}x{width} {subsampling} {bit_depth}-bit "
                         f"needs {need}")
    bps = 1 if bit_depth <= 8 else 2
    out, off = [], 0
    for h, w in plane_shapes(height, width, subsampling):
        n = h * w * bps
        p = buf[off:off + n]
        if bps == 2:
            if p.storage_offset() % 2:
                p = p.clone()
            p = p.view(torch.int16)
        out.append(p.view(h, w))
        off += n
    return tuple(out)  # type: ignore[return-value]


def pack_planes(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate planes' bytes into one 1-D uint8 tensor (the download layout)."""
    parts = []
    for p in planes:
        p = p.contiguous()
        if p.dtype == torch.int32:
            p = p.to(torch.int16)
        parts.append(p.reshape(-1).view(torch.uint8))
    return torch.cat(parts)


def packed_yuv_to_rgb(buf: torch.Tensor, height: int, width: int, *, subsampling: str = "420",
                      bit_depth: int = 8, **kwargs) -> torch.Tensor:
    """Packed planar YUV bytes -> (3, H, W) R'G'B' (keyword arguments as ``yuv_to_rgb``)."""
    y, u, v = split_planes(buf, height, width, subsampling, bit_depth)
    return yuv_to_rgb(y, u, v, bit_depth=bit_depth, **kwargs)


def rgb_to_packed_yuv(rgb: torch.Tensor, **kwargs) -> torch.Tensor:
    """(3, H, W) R'G'B' -> packed planar YUV bytes (keyword arguments as ``rgb_to_yuv``)."""
    if rgb.dim() != 3:
        raise ValueError(f"expected (3, H, W), got {tuple(rgb.shape)}")
    return pack_planes(rgb_to_yuv(rgb, **kwargs))
