"""Server side of STDO: make the LR video, label patches by difficulty, chunk them, overfit the models.

Pipeline of :func:`fit` (one call = one bundle):

1. HR frames are cropped (bottom/right) to a multiple of 2x the scale (even LR sides, for 4:2:0 video); LR = MATLAB-compatible bicubic (``vsr_engine.imresize``).
2. The LR frames are encoded with the engine's video sink (x264, default crf 10 yuv420p; the source's audio over
   the clip's span is copied, PTS kept) and **decoded again** with the engine's reader: every model trains on, and every figure is measured on, what the client will decode.
3. Patch grid (:mod:`.patches`): the paper's LR cell size (48x54 at x2/x4, 64x60 at x3), adapted to the frame.
4. Difficulty labels: no pretrained general WDSR exists offline, so a *general* model of the same architecture
   is first fitted on all patches of the video; each cell's label is its Y-PSNR under that model
   (``label="bicubic"`` labels with the bicubic Y-PSNR instead).
5. K chunks at the label quantiles (equal counts, chunk 0 = lowest PSNR = hardest).
6. STDO: one model per chunk, trained on that chunk's cells only. JSTDO (``joint=True``): one model trained on the
   data-aware mix (all of chunk 0, none of chunk K-1, random subsets in between, :func:`.patches.jstdo_mix`).
   Chunk/joint models start from the general model by default (``init="general"``; ``"scratch"`` = paper).
7. The bundle holds the LR video bytes, fp16 models, the chunk map and the geometry (:mod:`.bundle`).

Training: random ``crop`` x ``crop`` LR crops (and their HR) drawn around a cell of the training set (the crop
overlaps the cell and stays within its cell + margin when the window allows), Adam, L1, cosine learning-rate
decay to lr/100; everything seeded (``seed``), numpy ``default_rng`` for sampling, ``torch.manual_seed`` for init.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .. import __version__
from ..imresize import imresize
from ..metrics import rgb_to_y
from ..video import FrameInfo, SourceInfo, VideoBytes, VideoFileSink, VideoReader
from . import models as M
from .bundle import Bundle
from .patches import PatchGrid, check_mix_fractions, jstdo_mix, quantile_chunks

Progress = Optional[Callable[[str], None]]


def _default_progress(msg: str):
    print(f"[stdo] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class FitConfig:
    scale: int = 4
    chunks: int = 4
    joint: bool = False
    model: str = "wdsr"
    arch: Dict = dataclasses.field(default_factory=dict)    # overrides of the paper config (e.g. smaller WDSR)
    steps: int = 2000                 # per chunk model (or for the joint model)
    general_steps: Optional[int] = None  # general (labelling) model; default = steps
    batch: int = 16
    crop: int = 32                    # LR crop side for training (0 = whole cell windows)
    lr: Optional[float] = None        # default: 1e-3 WDSR, 1e-4 EDSR (the paper's)
    init: str = "general"             # chunk/joint models start from the general model, or "scratch"
    skip_init: str = "bicubic"        # WDSR: 5x5 skip conv starts as bicubic upsampling ("bicubic") or random
    label: str = "general"            # difficulty label: "general" model PSNR or "bicubic" PSNR
    margin: int = 4                   # LR context pixels around each cell at upscale time
    grid: Optional[Tuple[int, int]] = None   # (gw, gh); default: paper cell size
    joint_fractions: Optional[Sequence[float]] = None
    seed: int = 0
    device: str = "auto"
    lr_codec: str = "libx264"
    lr_crf: int = 10
    lr_pix_fmt: str = "yuv420p"

    def check(self) -> "FitConfig":
        """Refuse a bad configuration before any work (reading the video, training the general model)."""
        if self.init not in ("general", "scratch"):
            raise ValueError("init must be 'general' or 'scratch'")
        if self.label not in ("general", "bicubic"):
            raise ValueError("label must be 'general' or 'bicubic'")
        if self.joint_fractions is not None:
            if not self.joint:
                raise ValueError("joint_fractions (the JSTDO mix) needs joint=True")
            check_mix_fractions(self.joint_fractions, int(self.chunks))
        return self

    def resolved_device(self) -> torch.device:
        if self.device in (None, "", "auto"):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclasses.dataclass
class FitResult:
    bundle: Bundle
    grid: PatchGrid
    lr_frames: List[np.ndarray]          # decoded LR (what the client sees)
    hr_frames: List[np.ndarray]          # cropped HR
    labels: np.ndarray                   # (T, gh, gw) labels used for chunking
    labels_general: np.ndarray           # (T, gh, gw) Y-PSNR of the general model per cell
    labels_bicubic: np.ndarray           # (T, gh, gw) Y-PSNR of bicubic per cell
    chunk_map: np.ndarray                # (T, gh, gw) uint8
    general: nn.Module                   # the general model (float32, trainable form)
    models: List[nn.Module]              # the bundle's models (float32, trainable form)
    timings: Dict[str, float]


# ---- data ------------------------------------------------------------------------------------------------------

def crop_to_scale(hr: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so the LR frame has even sides (4:2:0 video needs them): multiples of 2*scale."""
    h, w = hr.shape[:2]
    q = 2 * scale
    return hr[:h - h % q, :w - w % q]


def make_lr(hr_frames: Sequence[np.ndarray], scale: int) -> List[np.ndarray]:
    return [imresize(h, 1.0 / scale) for h in hr_frames]


def encode_lr(lr_frames: Sequence[np.ndarray], fps: Fraction, time_base: Fraction, pts: Sequence[int],
              codec="libx264", crf=10, pix_fmt="yuv420p", audio_src=None) -> bytes:
    """The LR video as mp4 bytes, written by the engine's video sink (PTS and time base kept; BT.709 tags; the
    audio of ``audio_src`` that overlaps the frames copied as it is). One x264 thread: same input, same bytes."""
    h, w = lr_frames[0].shape[:2]
    fps, time_base = Fraction(fps), Fraction(time_base)
    span = (float(pts[0] * time_base), float(pts[-1] * time_base + 1 / fps))
    info = SourceInfo(kind="frames", width=w, height=h, frames=len(lr_frames), fps=fps, time_base=time_base,
                      matrix=None, color_range="full")
    dur = max(1, int(round(1 / (fps * time_base))))
    with tempfile.TemporaryDirectory(prefix="stdo_lr_") as d:
        path = os.path.join(d, "lr.mp4")
        sink = VideoFileSink(path, codec=codec, crf=crf, pix_fmt=pix_fmt, options={"threads": "1"},
                             audio_from=audio_src, copy_span=span)
        try:
            sink.prepare(info)
            sink.open(info, w, h)
            for i, (f, p) in enumerate(zip(lr_frames, pts)):
                sink.write(np.ascontiguousarray(f), FrameInfo(index=i, pts=int(p), duration=dur, time_base=time_base))
            sink.finish()
        except BaseException as e:
            sink.abort(e)
            raise
        with open(path, "rb") as fh:
            return fh.read()


def decode_video(data: bytes) -> Tuple[List[np.ndarray], SourceInfo]:
    """All frames (RGB uint8) of video bytes, decoded as the client decodes them (``vsr_engine.video``)."""
    frames = []
    with VideoReader(VideoBytes(data, "LR video")) as r:
        for rgb, _ in r:
            frames.append(np.array(rgb))
        return frames, r.info


def to_tensor_u8(frames: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


class CellSampler:
    """Random training crops around the cells of one training set (flat cell indices t*n_cells + k)."""

    def __init__(self, lr: torch.Tensor, hr: torch.Tensor, grid: PatchGrid, cells: np.ndarray, crop: int,
                 rng: np.random.Generator):
        self.lr, self.hr, self.grid, self.rng = lr, hr, grid, rng
        self.cells = np.asarray(cells, np.int64)
        if self.cells.size == 0:
            raise ValueError("empty training set")
        h, w = grid.lr_h, grid.lr_w
        self.crop_h = min(crop, h) if crop else grid.window[0]
        self.crop_w = min(crop, w) if crop else grid.window[1]
        self.crop_h, self.crop_w = min(self.crop_h, h), min(self.crop_w, w)
        geo = list(grid.cells())
        m = grid.margin
        self.ranges = []
        for _, y0, y1, x0, x1 in geo:
            self.ranges.append((self._range(y0, y1, m, self.crop_h, h), self._range(x0, x1, m, self.crop_w, w)))

    @staticmethod
    def _range(a, b, m, c, n):
        lo, hi = max(0, a - m), min(n - c, b + m - c)
        if hi < lo:   # window smaller than the crop: centre the crop on the cell, inside the frame
            lo = hi = min(max(0, (a + b - c) // 2), n - c)
        return lo, hi

    def batch(self, n: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.grid.scale
        pick = self.cells[self.rng.integers(0, self.cells.size, n)]
        xs, ys = [], []
        nc = self.grid.n_cells
        ch, cw = self.crop_h, self.crop_w
        for flat in pick:
            t, k = divmod(int(flat), nc)
            (ylo, yhi), (xlo, xhi) = self.ranges[k]
            y = int(self.rng.integers(ylo, yhi + 1))
            x = int(self.rng.integers(xlo, xhi + 1))
            xs.append(self.lr[t, :, y:y + ch, x:x + cw])
            ys.append(self.hr[t, :, y * s:(y + ch) * s, x * s:(x + cw) * s])
        lr = torch.stack(xs).to(device, non_blocking=True).float().div_(255.0)
        hr = torch.stack(ys).to(device, non_blocking=True).float().div_(255.0)
        return lr, hr


def train(model: nn.Module, sampler: CellSampler, steps: int, lr: float, batch: int, device, seed: int,
          progress: Progress = None, tag: str = "") -> Dict[str, float]:
    """Adam + L1 + cosine decay (to lr/100) for ``steps`` steps; returns stats."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    eta_min = lr / 100.0
    t0 = time.time()
    every = max(1, steps // 10)
    run = 0.0
    torch.manual_seed(seed)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = eta_min + (lr - eta_min) * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        x, y = sampler.batch(batch, device)
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run += loss.item()
        if progress and ((step + 1) % every == 0 or step + 1 == steps):
            n = (step % every) + 1
            progress(f"{tag} step {step + 1}/{steps} loss {run / n:.4f} lr {opt.param_groups[0]['lr']:.1e} "
                     f"{time.time() - t0:.1f}s")
            run = 0.0
    model.eval()
    return {"steps": steps, "seconds": time.time() - t0}


# ---- inference helpers (server side) ---------------------------------------------------------------------------

@torch.no_grad()
def sr_whole(model: nn.Module, lr: torch.Tensor, device, batch: int = 4) -> torch.Tensor:
    """Whole-frame SR of (T, 3, h, w) uint8 -> (T, 3, H, W) uint8 on CPU (clamped, rounded)."""
    out = []
    for i in range(0, lr.shape[0], batch):
        x = lr[i:i + batch].to(device).float().div(255.0)
        out.append(model(x).clamp_(0, 1).mul_(255).round_().to("cpu", torch.uint8))
    return torch.cat(out)


@torch.no_grad()
def sr_tiled(models: Sequence[nn.Module], model_of_cell: np.ndarray, lr: torch.Tensor, grid: PatchGrid, device,
             frames_per_batch: int = 1) -> torch.Tensor:
    """Each cell through its model (``model_of_cell``: (T, n_cells) model indices), windows with ``grid.margin``
    context, cropped and reassembled. (T, 3, h, w) uint8 -> (T, 3, H, W) uint8."""
    out = []
    mc = np.asarray(model_of_cell).reshape(lr.shape[0], grid.n_cells)
    for i in range(0, lr.shape[0], frames_per_batch):
        x = lr[i:i + frames_per_batch].to(device).float().div(255.0)
        win = grid.windows(x)
        ids = torch.from_numpy(mc[i:i + x.shape[0]].reshape(-1).astype(np.int64))
        res = None
        for mi in torch.unique(ids).tolist():
            sel = (ids == mi).nonzero().squeeze(1).to(device)
            y = models[mi](win.index_select(0, sel))
            if res is None:
                res = y.new_empty((win.shape[0],) + y.shape[1:])
            res.index_copy_(0, sel, y)
        out.append(grid.assemble(res, x.shape[0]).clamp_(0, 1).mul_(255).round_().to("cpu", torch.uint8))
    return torch.cat(out)


def cell_psnr_y(sr: torch.Tensor, hr: torch.Tensor, grid: PatchGrid) -> np.ndarray:
    """(T, gh, gw) Y-PSNR of each cell (uint8 (T,3,H,W) tensors)."""
    s = grid.scale
    ysr = rgb_to_y(sr.permute(0, 2, 3, 1).numpy())
    yhr = rgb_to_y(hr.permute(0, 2, 3, 1).numpy())
    out = np.empty((sr.shape[0], grid.gh, grid.gw))
    for k, y0, y1, x0, x1 in grid.cells():
        d = ysr[:, y0 * s:y1 * s, x0 * s:x1 * s] - yhr[:, y0 * s:y1 * s, x0 * s:x1 * s]
        mse = (d * d).reshape(d.shape[0], -1).mean(1)
        with np.errstate(divide="ignore"):
            out[:, k // grid.gw, k % grid.gw] = 10 * np.log10(255.0 ** 2 / mse)
    return out


def bicubic_up(lr_frames: Sequence[np.ndarray], scale: int) -> torch.Tensor:
    return to_tensor_u8([imresize(f, float(scale)) for f in lr_frames])


def _fresh(cfg: FitConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = M.build(cfg.model, int(cfg.scale), cfg.arch)
    if cfg.skip_init == "bicubic" and cfg.model == "wdsr":
        from ..models.wdsr import bicubic_skip_
        bicubic_skip_(m)
    return m


# ---- the pipeline ----------------------------------------------------------------------------------------------

def fit(hr_frames: Sequence[np.ndarray], cfg: FitConfig, fps: Fraction = Fraction(25), time_base: Optional[Fraction] = None,
        pts: Optional[Sequence[int]] = None, audio_src=None,
        progress: Progress = _default_progress, general: Optional[nn.Module] = None,
        prepared: Optional[Dict] = None) -> FitResult:
    """Fit STDO (or JSTDO) models to one video's HR frames and build the bundle.

    ``fps``/``time_base``/``pts`` describe the frames' timing (default: ``fps`` with pts 0, 1, 2, ... in 1/fps);
    ``audio_src`` (a path or ``VideoBytes``) has the audio that overlaps the frames copied into the LR video.
    ``general``: a general model already fitted to this video (skips step 4's training; used by the bench).
    ``prepared``: the dict :func:`prepare` returns (skips LR making and encoding; used by the bench).
    """
    progress = progress or (lambda m: None)
    timings: Dict[str, float] = {}
    device = cfg.resolved_device()
    s = int(cfg.scale)
    cfg.check()
    t0 = time.time()
    p = prepared or prepare(hr_frames, cfg, fps, time_base, pts, audio_src, progress)
    timings["prepare"] = time.time() - t0
    grid, lr_t, hr_t, lr_dec = p["grid"], p["lr_t"], p["hr_t"], p["lr_frames"]
    T = lr_t.shape[0]
    if device.type == "cuda" and lr_t.numel() + hr_t.numel() < 4 << 30:
        lr_t, hr_t = lr_t.to(device), hr_t.to(device)   # sample crops on the GPU (uint8 frames fit)
    lr_rate = cfg.lr if cfg.lr is not None else M.DEFAULT_LR[cfg.model]
    all_cells = np.arange(T * grid.n_cells)

    # 4. general model + labels
    if general is None:
        general = _fresh(cfg, cfg.seed)
        sampler = CellSampler(lr_t, hr_t, grid, all_cells, cfg.crop, np.random.default_rng(cfg.seed))
        gsteps = cfg.general_steps if cfg.general_steps is not None else cfg.steps
        progress(f"general model ({cfg.model}, {M.count_params(general)} params) on {all_cells.size} patches, "
                 f"{gsteps} steps, device {device}")
        timings["general"] = train(general, sampler, gsteps, lr_rate, cfg.batch, device, cfg.seed, progress,
                                   "general")["seconds"]
    general.to(device).eval()
    labels_general = cell_psnr_y(sr_whole(general, lr_t, device), p["hr_t"], grid)
    labels_bicubic = p.get("labels_bicubic")
    if labels_bicubic is None:
        labels_bicubic = cell_psnr_y(bicubic_up(lr_dec, s), p["hr_t"], grid)
        p["labels_bicubic"] = labels_bicubic
    labels = labels_general if cfg.label == "general" else labels_bicubic

    # 5. chunks
    k = int(cfg.chunks)
    chunk_map, thresholds = quantile_chunks(labels, k)
    flat_chunks = chunk_map.reshape(-1)
    progress(f"{k} chunks by {cfg.label} PSNR quantiles; thresholds {np.round(thresholds, 2).tolist()} dB")

    # 6. models
    def new_model(seed):
        if cfg.init == "general":
            return M.clone(general).train()
        return _fresh(cfg, seed)

    models: List[nn.Module] = []
    t1 = time.time()
    if cfg.joint:
        cells = jstdo_mix(chunk_map, k, seed=cfg.seed + 1000, fractions=cfg.joint_fractions)
        progress(f"JSTDO: one model on {cells.size}/{flat_chunks.size} patches "
                 f"(per chunk: {[int(np.sum(flat_chunks[cells] == c)) for c in range(k)]})")
        m = new_model(cfg.seed + 1000)
        train(m, CellSampler(lr_t, hr_t, grid, cells, cfg.crop, np.random.default_rng(cfg.seed + 1000)),
              cfg.steps, lr_rate, cfg.batch, device, cfg.seed + 1000, progress, "joint")
        models.append(m)
        chunk_models = [0] * k
    else:
        for c in range(k):
            cells = np.flatnonzero(flat_chunks == c)
            m = new_model(cfg.seed + 1 + c)
            train(m, CellSampler(lr_t, hr_t, grid, cells, cfg.crop, np.random.default_rng(cfg.seed + 1 + c)),
                  cfg.steps, lr_rate, cfg.batch, device, cfg.seed + 1 + c, progress, f"chunk {c + 1}/{k}")
            models.append(m)
        chunk_models = list(range(k))
    timings["models"] = time.time() - t1

    manifest = {
        "scale": s, "frames": T, "grid": grid.to_dict(),
        "fps": str(Fraction(p["fps"])), "time_base": str(Fraction(p["time_base"])),
        "lr_video": {"codec": cfg.lr_codec, "crf": cfg.lr_crf, "pix_fmt": cfg.lr_pix_fmt, "container": "mp4",
                     "audio": bool(p.get("has_audio", False))},
        "arch": M.arch_spec(models[0]), "chunks": k, "joint": bool(cfg.joint), "chunk_models": chunk_models,
        "label": cfg.label, "thresholds": [float(x) for x in thresholds],
        "fit": {"steps": cfg.steps, "general_steps": cfg.general_steps if cfg.general_steps is not None else cfg.steps,
                "batch": cfg.batch, "crop": cfg.crop, "lr": lr_rate, "init": cfg.init, "skip_init": cfg.skip_init, "seed": cfg.seed,
                "joint_fractions": list(cfg.joint_fractions) if cfg.joint_fractions else None},
        "created_by": f"vsr_engine {__version__}",
    }
    bundle = Bundle(manifest=manifest, lr_video=p["lr_video"], models=[M.fp16_state(m) for m in models],
                    chunk_map=chunk_map.astype(np.uint8))
    timings["total"] = time.time() - t0
    return FitResult(bundle, grid, lr_dec, p["hr_frames"], labels, labels_general, labels_bicubic, chunk_map,
                     general, models, timings)


def prepare(hr_frames: Sequence[np.ndarray], cfg: FitConfig, fps: Fraction = Fraction(25),
            time_base: Optional[Fraction] = None, pts: Optional[Sequence[int]] = None, audio_src=None,
            progress: Progress = None) -> Dict:
    """Steps 1-3: crop, bicubic LR, encode + decode the LR video, grid, uint8 tensors."""
    progress = progress or (lambda m: None)
    s = int(cfg.scale)
    if s not in (2, 3, 4):
        raise ValueError("scale must be 2, 3 or 4")
    hr = [crop_to_scale(np.asarray(f), s) for f in hr_frames]
    if not hr:
        raise ValueError("no frames")
    fps = Fraction(fps).limit_denominator(100000)
    time_base = Fraction(time_base) if time_base is not None else 1 / fps
    pts = list(pts) if pts is not None else [int(round(i / (fps * time_base))) for i in range(len(hr))]
    progress(f"{len(hr)} HR frames {hr[0].shape[1]}x{hr[0].shape[0]} -> LR x{s} (MATLAB bicubic)")
    lr = make_lr(hr, s)
    lr_video = encode_lr(lr, fps, time_base, pts, cfg.lr_codec, cfg.lr_crf, cfg.lr_pix_fmt, audio_src)
    lr_dec, lr_info = decode_video(lr_video)
    if len(lr_dec) != len(lr):
        raise RuntimeError(f"LR video decodes to {len(lr_dec)} frames, {len(lr)} were encoded")
    progress(f"LR video {lr[0].shape[1]}x{lr[0].shape[0]}: {len(lr_video)} bytes ({cfg.lr_codec} crf {cfg.lr_crf} "
             f"{cfg.lr_pix_fmt})")
    grid = PatchGrid.for_frame(lr[0].shape[0], lr[0].shape[1], s, cfg.grid, cfg.margin)
    return {"grid": grid, "lr_t": to_tensor_u8(lr_dec), "hr_t": to_tensor_u8(hr), "lr_frames": lr_dec,
            "hr_frames": hr, "lr_video": lr_video, "fps": fps, "time_base": time_base, "pts": pts,
            "has_audio": lr_info.has_audio}
