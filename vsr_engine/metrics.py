"""Image-quality metrics as the VSR literature computes them (BasicSR / mmagic conventions)."""
from __future__ import annotations

import math

import numpy as np
import torch

_Y = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_uint8(img) -> np.ndarray:
    """Model output (float RGB in [0, 1], HWC numpy or CHW/HWC tensor) -> clamped, rounded uint8 HWC."""
    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)


def rgb_to_y(img_u8: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of a uint8 RGB image: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, in [16, 235]."""
    return 16.0 + img_u8.astype(np.float64) @ _Y / 255.0


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(max_val * max_val / mse)


def psnr_y(out, gt, crop_border: int = 0) -> float:
    """Y-channel PSNR between uint8 RGB images (outputs are clamped and rounded first)."""
    a, b = rgb_to_y(to_uint8(out)), rgb_to_y(to_uint8(gt))
    if a.shape != b.shape:
        raise ValueError(f"psnr_y: shapes differ {a.shape} vs {b.shape}")
    if crop_border:
        a, b = a[crop_border:-crop_border, crop_border:-crop_border], b[crop_border:-crop_border, crop_border:-crop_border]
    return psnr(a, b)


def lpips(out, gt, device="cpu", weights=None) -> float:
    """LPIPS (AlexNet, v0.1) between two RGB images; weights offline (``vsr_engine.lpips``). Lower is better."""
    from .lpips import lpips as _lpips
    return _lpips(out, gt, device=device, weights=weights)


def niqe(img, crop_border: int = 0, params=None) -> float:
    """NIQE of one RGB image (no reference; MATLAB parameters, ``vsr_engine.niqe``). Lower is better."""
    from .niqe import niqe as _niqe
    return _niqe(img, crop_border=crop_border, params=params)
