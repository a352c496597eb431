"""Stages 1 and 5, decode and encode: host-side frame conversion: YUV <-> RGB with the stream's own matrix and range (BT.601 / BT.709 / BT.2020,
limited / full), 8- to 16-bit, grayscale; untagged streams get FFmpeg's guess."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from .common import VsrInputError, _av


# Colour: YUV -> RGB with the stream's matrix and range
# AVColorSpace -> our matrix name; swscale's SWS_CS_* ids
_AVCOL_SPC = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


_SWS_CS = {"bt709": 1, "fcc": 4, "bt601": 5, "smpte240m": 7, "bt2020": 9}


# matrix name -> (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic) to tag an output with
_TAGS_FOR = {"bt709": (1, 1, 1), "bt601": (6, 6, 6), "bt2020": (9, 9, 14), "fcc": (4, 2, 2), "smpte240m": (7, 7, 7)}


_RANGE = {1: "limited", 2: "full"}


_AVRANGE = {"limited": 1, "full": 2}


def guess_matrix(width: int, height: int) -> str:
    """FFmpeg/mpv's guess for an untagged stream: HD (>= 1280 wide or > 576 high) is BT.709, else BT.601."""
    return "bt709" if (width >= 1280 or height > 576) else "bt601"


def _plane_array(frame, i: int, dtype) -> np.ndarray:
    """Plane ``i`` of a frame as an (h, w) array of code values (line padding removed)."""
    p = frame.planes[i]
    item = np.dtype(dtype).itemsize
    a = np.frombuffer(memoryview(p), dtype=np.uint8).reshape(p.height, p.line_size)
    a = a[:, :p.width * item]
    return np.ascontiguousarray(a).view(dtype).reshape(p.height, p.width) if item > 1 else a.copy()


def _frame_from_plane(a: np.ndarray, pix_fmt: str):
    """A one-plane (gray) VideoFrame of ``pix_fmt`` holding the code values ``a`` (h, w)."""
    av = _av()
    h, w = a.shape
    f = av.VideoFrame(w, h, pix_fmt)
    p = f.planes[0]
    buf = np.zeros((h, p.line_size), np.uint8)
    buf[:, :w * a.itemsize] = np.ascontiguousarray(a).view(np.uint8).reshape(h, w * a.itemsize)
    p.update(buf.tobytes())
    return f


def _is_rgb_format(fmt) -> bool:
    name = fmt.name
    return name.startswith(("rgb", "bgr", "argb", "abgr", "gbr", "0rgb", "0bgr", "rgba", "bgra", "pal8"))


def _is_gray_format(fmt) -> bool:
    return fmt.name.startswith(("gray", "ya"))


def _bit_depth(fmt) -> int:
    try:
        return int(max(c.bits for c in fmt.components))
    except Exception:  # pragma: no cover
        return 8


def frame_to_rgb(frame, matrix: Optional[str] = None, color_range: Optional[str] = None) -> np.ndarray:
    """A decoded PyAV VideoFrame -> H x W x 3 uint8 RGB, converting with ``matrix``/``color_range``
    (default: the frame's own tags, guessed when absent)."""
    fmt = frame.format
    if _is_rgb_format(fmt):
        return frame.to_ndarray(format="rgb24")
    if matrix is None:
        matrix = _AVCOL_SPC.get(int(frame.colorspace or 2)) or guess_matrix(frame.width, frame.height)
    if color_range is None:
        color_range = _RANGE.get(int(frame.color_range or 0)) or ("full" if fmt.name.startswith("yuvj") else "limited")
    if _is_gray_format(fmt):
        # swscale treats gray as full range whatever the tag; do the range mapping here.
        bits = _bit_depth(fmt)
        y = _plane_array(frame, 0, np.uint8 if bits <= 8 else np.uint16).astype(np.float32)
        m = float(1 << (bits - 8))
        if color_range == "limited":
            v = (y - 16.0 * m) / (219.0 * m)
        else:
            v = y / float((1 << bits) - 1)
        g = np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    from av.video.reformatter import Interpolation
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    out = frame.reformat(format="rgb24", src_colorspace=_SWS_CS.get(matrix, 5),
                         src_color_range=_AVRANGE[color_range], interpolation=flags)
    return out.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, matrix: str, color_range: str):
    """H x W x 3 uint8 RGB -> a PyAV VideoFrame in ``pix_fmt`` with the given matrix and range."""
    av = _av()
    from av.video.reformatter import Interpolation
    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    fmt = av.VideoFormat(pix_fmt)
    if _is_rgb_format(fmt):
        return f.reformat(format=pix_fmt)
    if _is_gray_format(fmt):
        bits = _bit_depth(fmt)
        y = rgb.astype(np.float32) @ np.array(_KR_KB_Y(matrix), np.float32)
        m = float(1 << (bits - 8))
        code = (16.0 * m + y / 255.0 * 219.0 * m) if color_range == "limited" else y / 255.0 * ((1 << bits) - 1)
        code = np.clip(np.rint(code), 0, (1 << bits) - 1).astype(np.uint8 if bits <= 8 else np.uint16)
        return _frame_from_plane(code, pix_fmt)
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    return f.reformat(format=pix_fmt, dst_colorspace=_SWS_CS.get(matrix, 1), dst_color_range=_AVRANGE[color_range],
                      interpolation=flags)


def _KR_KB_Y(matrix: str) -> Tuple[float, float, float]:
    kr, kb = {"bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593), "smpte240m": (0.212, 0.087)}.get(
        matrix, (0.299, 0.114))
    return kr, 1.0 - kr - kb, kb


def as_rgb_u8(frame: Any, index: int = 0) -> np.ndarray:
    """One user frame -> H x W x 3 uint8 RGB numpy array.

    Accepts numpy arrays or torch tensors: H x W x 3 (or x 4, alpha dropped) or H x W (gray) uint8; float arrays
    in [0, 1]; torch tensors may also be 3 x H x W. Raises :class:`VsrInputError` naming the frame otherwise.
    """
    a = frame
    if not isinstance(a, np.ndarray):
        try:
            import torch
        except ImportError:  # pragma: no cover
            torch = None
        if torch is not None and isinstance(a, torch.Tensor):
            t = a.detach()
            if t.dim() == 3 and t.shape[-1] not in (1, 3, 4) and t.shape[0] in (1, 3, 4):
                t = t.permute(1, 2, 0)
            a = t.cpu().numpy()
        elif hasattr(a, "to_ndarray"):  # a PyAV VideoFrame
            return frame_to_rgb(a)
        else:
            try:
                a = np.asarray(a)
            except Exception:
                a = None
            if a is None or a.dtype == object:
                raise VsrInputError(f"frame {index}: expected an H x W x 3 uint8 RGB array or tensor, "
                                    f"got {type(frame).__name__}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise VsrInputError(f"frame {index}: expected H x W x 3 RGB, got shape {tuple(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise VsrInputError(f"frame {index}: contains NaN or infinity")
        return np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise VsrInputError(f"frame {index}: integer values outside 0..255")
        return a.astype(np.uint8)
    raise VsrInputError(f"frame {index}: unsupported dtype {a.dtype}")
