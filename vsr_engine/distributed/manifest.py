"""The job manifest of one output: source fingerprint, settings, frame index, plan and per-segment state.

It lives in the job folder next to the segments (``OUT/.NAME.vsrjob/manifest.json``) and is always replaced
atomically (written to a temporary file, synced, renamed), so a crash leaves either the old or the new one.
``--resume`` reuses the verified segments it lists, and refuses with one message when the source or the
settings are not those the job was started with.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from ..io.resume import _atomic_write as atomic_write
from ..video import VsrError

__all__ = ["ResumeError", "fingerprint", "job_dir_for", "load", "save", "check_resume", "MANIFEST", "VERSION"]

MANIFEST = "manifest.json"
VERSION = 1
_EDGE = 1 << 20


class ResumeError(VsrError):
    """``--resume`` cannot continue this job (the message says why)."""


def job_dir_for(output: str) -> str:
    d, name = os.path.split(os.path.abspath(output))
    return os.path.join(d, f".{name}.vsrjob")


def fingerprint(path: str) -> dict:
    """Size and SHA-256 of the first and last MiB: cheap, and changes when the content does (a copy of the
    same file on another machine has the same fingerprint)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(_EDGE)).hexdigest()
        f.seek(max(0, size - _EDGE))
        tail = hashlib.sha256(f.read(_EDGE)).hexdigest()
    return {"size": size, "head_sha256": head, "tail_sha256": tail}


def save(job_dir: str, manifest: dict) -> None:
    atomic_write(os.path.join(job_dir, MANIFEST), json.dumps(manifest, separators=(",", ":")).encode())


def load(job_dir: str) -> Optional[dict]:
    p = os.path.join(job_dir, MANIFEST)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ResumeError(f"{p}: unreadable job manifest ({e}); remove {job_dir} or pass --force to start over") \
            from None
    if m.get("version") != VERSION:
        raise ResumeError(f"{p}: job manifest version {m.get('version')} (this is {VERSION}); pass --force to start "
                          "over")
    return m


def _diff(old: dict, new: dict, prefix: str = "") -> list:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def check_resume(old: dict, source: str, fp: dict, settings: dict, index_digest: str) -> None:
    """Raise :class:`ResumeError` (one line) unless ``old`` was made from this source with these settings."""
    out = old.get("output", "?")
    if old.get("fingerprint") != fp or old.get("index_digest") != index_digest:
        raise ResumeError(f"cannot resume {out}: the source {source} changed since the job started (size or content "
                          "differs); pass --force to start over")
    d = _diff(old.get("settings", {}), settings)
    if d:
        raise ResumeError(f"cannot resume {out}: the settings changed since the job started ({'; '.join(d)}); use the "
                          "same options, or --force to start over")
