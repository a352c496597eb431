"""Stage 5, encode: crash safety and resume: the ``OUTPUT.partial/`` folder next to a target, its ``state.json`` (frames done,
settings, the engine's carried state), atomic writes, and the output-path checks made before any work."""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional, Sequence

from .common import VsrOutputError


# Sinks
STATE_VERSION = 1


def partial_dir_for(path: str) -> str:
    """The folder that holds an unfinished output (segments + resume state): ``OUTPUT.partial``."""
    return os.fspath(path) + ".partial"


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - not all filesystems allow it
        pass


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file renamed into place (the folder synced too)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def publish_file(tmp: str, path: str) -> None:
    """Make a fully written ``tmp`` the file ``path``: sync its data, rename it into place, sync the folder."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def discard_file(container, tmp: str) -> None:
    """On a failed write: close the half-written ``container`` (if any) without raising and remove ``tmp``, so
    nothing that looks complete is left behind."""
    if container is not None:
        try:
            container.close()
        except Exception:
            pass
    if os.path.exists(tmp):
        os.remove(tmp)


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:  # pragma: no cover
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: str, *, inputs: Sequence[str] = (), force: bool = False, resume: bool = False,
                      is_folder: bool = False) -> str:
    """Refuse an unusable output before any work: its folder must exist and be writable, it must not be an
    input, and an existing output needs ``force``. Returns the absolute path."""
    path = os.fspath(path)
    if not path or path.endswith(os.sep) and not is_folder:
        raise VsrOutputError(f"output {path!r}: give a file name")
    ap = os.path.abspath(path.rstrip(os.sep) if is_folder else path)
    for src in inputs:
        if src is None:
            continue
        s = os.path.abspath(os.fspath(src))
        if _same_file(ap, s) or (os.path.isdir(s) and os.path.commonpath([ap, s]) == s and is_folder):
            raise VsrOutputError(f"output {path} is the input itself; choose another output path")
    parent = os.path.dirname(ap) or "."
    if not os.path.isdir(parent):
        raise VsrOutputError(f"output folder {os.path.dirname(path) or parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VsrOutputError(f"output folder {parent} is not writable")
    if os.path.lexists(ap) and not force:
        what = "folder" if os.path.isdir(ap) else "file"
        if not (is_folder and os.path.isdir(ap) and not os.listdir(ap)):
            raise VsrOutputError(f"output {path} already exists ({what}); pass --force (force=True) to overwrite")
    if os.path.isdir(ap) and not is_folder:
        raise VsrOutputError(f"output {path} is a folder; give a video file name")
    if os.path.lexists(partial_dir_for(ap)) and not (force or resume):
        raise VsrOutputError(f"an unfinished output of an earlier run is in {partial_dir_for(ap)}; pass --resume to "
                             "continue it or --force to start over")
    return ap


def _prepare_partial(sink, inputs) -> None:
    """Create (or, with resume, reopen) the partial folder of a resumable sink."""
    p = sink.partial
    state_path = os.path.join(p, "state.json")
    if os.path.isdir(p) and os.path.isfile(state_path) and sink.resume:
        try:
            with open(state_path) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            raise VsrOutputError(f"{p}: cannot read the resume state ({e}); pass --force to start over") from None
        if st.get("version") != STATE_VERSION or st.get("kind") != sink._state["kind"]:
            raise VsrOutputError(f"{p} was written by another version or kind of output; pass --force to start over")
        old, new = st.get("settings", {}), sink.settings
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            k = diff[0]
            raise VsrOutputError(f"{p} was made with different settings ({k}: {old.get(k)!r} then, {new.get(k)!r} "
                                 f"now); use the same options to resume, or --force to start over")
        sink._state = st
        sink._start = int(st.get("frames_done", 0))
        carry_file = os.path.join(p, "carry.pt")
        if sink._start and st.get("carry") and os.path.isfile(carry_file):
            import torch
            sink._carry = torch.load(carry_file, map_location="cpu", weights_only=True)
        elif sink._start and st.get("carry"):
            raise VsrOutputError(f"{p}: the resume state is incomplete (carry.pt missing); pass --force to start over")
        _clean_uncommitted(sink)
        return
    if os.path.lexists(p):
        if not (sink.force or sink.resume):
            raise VsrOutputError(f"an unfinished output of an earlier run is in {p}; pass --resume to continue it "
                                 "or --force to start over")
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    try:
        os.makedirs(p)
    except OSError as e:
        raise VsrOutputError(f"cannot create {p}: {e.strerror or e}") from None
    _atomic_write(state_path, json.dumps(sink._state, indent=1).encode())


def _clean_uncommitted(sink) -> None:
    """Remove files in the partial folder that the state does not account for (work after the last commit)."""
    keep = {"state.json", "carry.pt"}
    done = int(sink._state.get("frames_done", 0))
    if sink._state["kind"] == "video":
        keep |= {s["file"] for s in sink._state.get("segments", [])}
        keep |= {s["file"] + ".json" for s in sink._state.get("segments", [])}
    for f in os.listdir(sink.partial):
        if f in keep:
            continue
        if sink._state["kind"] == "folder" and f.endswith(".png") and f[:-4].isdigit() and int(f[:-4]) < done:
            continue
        p = os.path.join(sink.partial, f)
        (shutil.rmtree if os.path.isdir(p) and not os.path.islink(p) else os.remove)(p)


def _commit_state(sink, frames_done: int, carry: Optional[dict]) -> None:
    p = sink.partial
    if carry is not None:
        import io as _io
        import torch
        buf = _io.BytesIO()
        torch.save({k: (v.detach().to("cpu").contiguous() if hasattr(v, "detach") else v) for k, v in carry.items()},
                   buf)
        _atomic_write(os.path.join(p, "carry.pt"), buf.getvalue())
    sink._state["frames_done"] = int(frames_done)
    sink._state["carry"] = carry is not None
    _atomic_write(os.path.join(p, "state.json"), json.dumps(sink._state, indent=1).encode())


def _abort_partial(sink) -> None:
    """On failure or interrupt: drop uncommitted work; an empty partial folder (nothing committed) goes too."""
    p = sink.partial
    if not os.path.isdir(p):
        return
    try:
        _clean_uncommitted(sink)
        if int(sink._state.get("frames_done", 0)) == 0:
            shutil.rmtree(p, ignore_errors=True)
    except OSError:  # pragma: no cover
        pass
