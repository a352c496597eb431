"""Client side of STDO: decode the bundle's LR video, send every patch through its chunk's model, reassemble.
Reading and writing go through the engine's I/O (``vsr_engine.video``): audio and timestamps kept, atomic and
resumable output.

Each cell is upscaled from a window of the cell plus ``margin`` LR pixels of context (replicate padding at the
frame border), the window's output is cropped back to the cell and pasted: there is no blending, and with the
context the seams vanish (the bench measures whole-frame and seam-band PSNR against naive tiling, margin 0).
Windows of one frame are batched per model. A bundle with a single model (JSTDO) is run on whole frames
(``tile=None`` default; ``tile=True`` forces patches), which is the same function without any seam.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..video import FrameInfo, VideoBytes, VideoReader, VsrInputError, open_sink
from .bundle import Bundle


def _auto_device(device) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Upscaler:
    """Holds a bundle's models on a device and upscales LR frames (index t uses row t of the chunk map)."""

    def __init__(self, bundle: Bundle, device="auto", dtype: Optional[torch.dtype] = None,
                 tile: Optional[bool] = None, margin: Optional[int] = None):
        self.bundle = bundle
        self.device = _auto_device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        self.models = bundle.build_models(self.device, dtype)
        if self.device.type == "cuda":
            self.models = [m.to(memory_format=torch.channels_last) for m in self.models]
        grid = bundle.grid
        if margin is not None:
            from .patches import PatchGrid
            grid = PatchGrid(grid.lr_h, grid.lr_w, grid.gh, grid.gw, grid.scale, int(margin))
        self.grid = grid
        self.chunk_models = np.asarray(bundle.manifest["chunk_models"], np.int64)
        self.tile = (len(self.models) > 1) if tile is None else bool(tile)

    @property
    def scale(self) -> int:
        return self.grid.scale

    def model_of_cells(self, t: int) -> np.ndarray:
        cm = self.bundle.chunk_map
        if not 0 <= t < cm.shape[0]:
            raise IndexError(f"frame {t} is outside the bundle's chunk map ({cm.shape[0]} frames)")
        return self.chunk_models[cm[t].reshape(-1)]

    @torch.no_grad()
    def upscale_tensor(self, x: torch.Tensor, frame_ids: Sequence[int]) -> torch.Tensor:
        """(B, 3, h, w) float in [0, 1] on the device -> (B, 3, sh, sw) float (unclamped)."""
        x = x.to(self.device, self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.tile:
            return self.models[0](x)
        g = self.grid
        win = g.windows(x)
        ids = torch.from_numpy(np.concatenate([self.model_of_cells(int(t)) for t in frame_ids]))
        if len(self.models) == 1:
            out = self.models[0](win)
        else:
            out = None
            for mi in torch.unique(ids).tolist():
                sel = (ids == mi).nonzero().squeeze(1).to(self.device)
                y = self.models[mi](win.index_select(0, sel))
                if out is None:
                    out = y.new_empty((win.shape[0],) + tuple(y.shape[1:]))
                out.index_copy_(0, sel, y)
        return g.assemble(out, x.shape[0])

    def upscale_frames(self, lr_frames: Sequence[np.ndarray], first_index: int = 0, batch: int = 1
                       ) -> Iterator[np.ndarray]:
        """Yield HR uint8 RGB frames for LR uint8 RGB frames (frame indices from ``first_index``)."""
        for i in range(0, len(lr_frames), batch):
            chunk = lr_frames[i:i + batch]
            x = torch.from_numpy(np.stack(chunk)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            y = self.upscale_tensor(x, range(first_index + i, first_index + i + len(chunk)))
            y = y.float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            yield from y


class PipelineStep:
    """Adapter for the shared streaming pipeline (``vsr_engine.pipeline.StreamPipeline``): a ``step`` that takes
    each decoded ``DeviceFrame`` (frames in stream order; frame t uses row t of the chunk map), upscales it with
    the bundle's models on the device and returns an ``OutputFrame`` in ``out_format``.

    The LR video carries its colour tags (BT.709, limited range, written by the engine's sink); ``frame.rgb()``
    must convert with that matrix for the models to see what they were trained on.
    """

    def __init__(self, upscaler: Upscaler, out_format: str = "yuv420p", first_index: int = 0):
        self.up = upscaler
        self.out_format = out_format
        self.index = int(first_index)

    def __call__(self, frame):
        from ..pipeline import OutputFrame
        x = frame.rgb(dtype=torch.float32).unsqueeze(0)
        y = self.up.upscale_tensor(x, [self.index])[0].float().clamp_(0, 1)
        self.index += 1
        return OutputFrame.from_rgb(y, frame.info, fmt=self.out_format)


def decode_lr(bundle: Bundle) -> Iterator[Tuple[np.ndarray, FrameInfo]]:
    """(LR RGB uint8, FrameInfo) of the bundle's LR video, decoded by the engine's reader."""
    with VideoReader(VideoBytes(bundle.lr_video, "the bundle's LR video")) as r:
        yield from r


COMMIT_EVERY = 100   # frames per committed segment of the output (what an interrupted run can resume from)


def upscale_bundle(bundle: Union[Bundle, str, os.PathLike], output: Union[str, os.PathLike], device="auto",
                   codec: str = "libx264", crf: Optional[float] = 18, preset: Optional[str] = "medium",
                   pix_fmt: str = "yuv420p", batch: int = 1, tile: Optional[bool] = None, progress=None,
                   force: bool = False, resume: bool = False, options: Optional[dict] = None) -> dict:
    """Decode the LR video of ``bundle``, upscale every frame, write ``output`` through the engine's sinks: a
    video file (audio copied, PTS and time base kept, written atomically: an interrupted run leaves only
    ``OUTPUT.partial``, which ``resume=True`` continues) or a folder of PNG frames.
    Returns stats: frames, seconds, fps (model + reassembly only, and end-to-end)."""
    bundle_path = None
    if not isinstance(bundle, Bundle):
        bundle_path = os.fspath(bundle)
        bundle = Bundle.load(bundle_path)
    up = Upscaler(bundle, device=device, tile=tile)
    man = bundle.manifest
    g = up.grid
    frames = int(man["frames"])
    settings = {"stdo_bundle": hashlib.sha256(bundle.to_bytes()).hexdigest(), "dtype": str(up.dtype),
                "tile": up.tile, "margin": g.margin}
    sink = open_sink(output, inputs=[bundle_path] if bundle_path else [], force=force, resume=resume,
                     settings=settings, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, options=options)
    start, _ = sink.resume_point()
    n, t_model, t0 = start, 0.0, time.time()
    last_report = [0.0]
    pending: list = []

    def flush():
        nonlocal t_model, n
        if not pending:
            return
        ts = time.time()
        outs = list(up.upscale_frames([f for f, _ in pending], pending[0][1].index, batch=len(pending)))
        if up.device.type == "cuda":
            torch.cuda.synchronize()
        t_model += time.time() - ts
        for (_, fi), o in zip(pending, outs):
            sink.write(o, fi)
        done_before, n = n, n + len(pending)
        pending.clear()
        if n // COMMIT_EVERY != done_before // COMMIT_EVERY:
            sink.commit(n)
        if progress and (n == frames or time.time() - last_report[0] > 2.0):
            last_report[0] = time.time()
            progress(f"upscaled {n}/{frames} frames ({(n - start) / max(t_model, 1e-9):.2f} fps model, "
                     f"{(n - start) / (time.time() - t0):.2f} fps end-to-end)")

    src = None
    try:
        src = VideoReader(VideoBytes(bundle.lr_video, "the bundle's LR video"), start=start)
        if (src.info.width, src.info.height) != (g.lr_w, g.lr_h):
            raise VsrInputError(f"the bundle's LR video is {src.info.width}x{src.info.height}, its grid says "
                                f"{g.lr_w}x{g.lr_h}")
        sink.prepare(src.info)
        sink.open(src.info, g.lr_w * g.scale, g.lr_h * g.scale)
        for f, fi in src:
            if fi.index >= frames:
                raise VsrInputError(f"the bundle's LR video has more frames than its chunk map ({frames})")
            pending.append((f, fi))
            if len(pending) >= batch:
                flush()
        flush()
        if n != frames:
            raise VsrInputError(f"the bundle's LR video decoded to {n} frames, its chunk map has {frames}"
                                + (f" ({src.damage_report()})" if src.damage_report() else ""))
        out_path = sink.finish()
    except BaseException as e:
        sink.abort(e)
        raise
    finally:
        if src is not None:
            src.close()
    total = time.time() - t0
    return {"frames": n - start, "resumed_from": start, "seconds": total,
            "fps_model": (n - start) / max(t_model, 1e-9), "fps": (n - start) / max(total, 1e-9),
            "device": str(up.device), "output": out_path}


def _stderr(msg):
    print(f"[stdo] {msg}", file=sys.stderr, flush=True)
