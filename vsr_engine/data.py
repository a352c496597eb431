"""Reading frame folders and making BI low-resolution inputs."""
from __future__ import annotations

import glob
import os
from typing import List

import numpy as np

from .imresize import imresize

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
