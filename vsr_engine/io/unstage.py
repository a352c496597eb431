"""Stage 4, unstage: the sink side of the streaming pipeline: which format output frames are converted to on the device, and how a
downloaded frame (a view into a pinned ring slot) reaches a sink.

A video file sink whose pixel format is planar YUV (``yuv420p``, ``yuv422p``, ``yuv444p``, 8 or 10 bit) with a
BT.601 / BT.709 / BT.2020 matrix gets its frames converted on the device (``vsr_engine.colour``), downloaded at
1.5 B/px (4:2:0) and copied into an ``av.VideoFrame`` by the C++ host part without the GIL. Everything else
(PNG folders, callables, iterators, other pixel formats) gets rgb24, rounded on the device.
"""
from __future__ import annotations

from typing import Tuple

from .stage import STAGED_YUV_FORMATS, _DEVICE_MATRICES

__all__ = ["device_output_format", "deliver"]


def device_output_format(sink) -> Tuple[str, dict]:
    """``(format, colour kwargs)`` the engine converts each output frame to before the download."""
    fmt = getattr(sink, "pix_fmt", None)
    if (callable(getattr(sink, "write_frame", None)) and fmt in STAGED_YUV_FORMATS and not fmt.startswith("yuvj")
            and getattr(sink, "matrix", None) in _DEVICE_MATRICES
            and getattr(sink, "color_range", None) in ("limited", "full")):
        return fmt, {"matrix": sink.matrix, "color_range": sink.color_range}
    return "rgb24", {}


def deliver(sink, hf, finfo) -> None:
    """Hand one downloaded frame to ``sink`` (on the sink thread; the slot is reused after this returns)."""
    if hf.layout.format == "rgb24":
        sink.write(hf.planes()[0].copy(), finfo)
    else:
        sink.write_frame(hf.to_av(), finfo)
