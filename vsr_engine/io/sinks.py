"""Stage 5, encode: where output frames go -- the sink protocol (:class:`Sink`, the base of every sink, the
video file sink of ``encode`` included), PNG folders (:class:`FolderSink`) and callables (:class:`CallableSink`).
``encode.open_sink`` picks a sink from a path or object."""
from __future__ import annotations

import os
import shutil
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from .common import FrameInfo, SourceInfo, VsrOutputError
from .resume import STATE_VERSION, _abort_partial, _commit_state, _prepare_partial, check_output_path, partial_dir_for


class Sink:
    """Base of the sinks the engine writes to: ``prepare(info)`` (before any work), ``open(info, width, height)``
    (first frame), ``write(rgb, FrameInfo)``,
    ``commit(frames_done, state)`` at each window end, ``finish()`` -> result path, ``abort(exc)``."""
    resumable = False
    path: Optional[str] = None

    def resume_point(self) -> Tuple[int, Optional[dict]]:
        return 0, None

    def prepare(self, info: SourceInfo) -> None:
        pass

    def open(self, info: SourceInfo, width: int, height: int) -> None:
        pass

    def write(self, rgb: np.ndarray, finfo: FrameInfo) -> None:
        raise NotImplementedError

    def commit(self, frames_done: int, state: Optional[dict] = None) -> None:
        pass

    def finish(self) -> Optional[str]:
        return None

    def abort(self, exc: Optional[BaseException] = None) -> None:
        pass


class CallableSink(Sink):
    """Calls ``fn(rgb)`` (or ``fn(rgb, FrameInfo)`` when ``with_info``) for every output frame, in order."""

    def __init__(self, fn: Callable, with_info: bool = False):
        self.fn = fn
        self.with_info = with_info

    def write(self, rgb, finfo):
        if self.with_info:
            self.fn(rgb, finfo)
        else:
            self.fn(rgb)


class FolderSink(Sink):
    """PNG files ``00000000.png``, ... (named by frame index) into a folder created for them; written into
    ``FOLDER.partial/`` and renamed to ``FOLDER`` when complete (resumable: committed frames are kept)."""
    resumable = True

    def __init__(self, folder, *, force: bool = False, resume: bool = False, inputs: Sequence[str] = (),
                 settings: Optional[dict] = None, compress_level: int = 1):
        self.path = check_output_path(os.fspath(folder), inputs=inputs, force=force, resume=resume, is_folder=True)
        self.force, self.resume = force, resume
        self.partial = partial_dir_for(self.path)
        self.settings = dict(settings or {})
        self.compress_level = compress_level
        self._state = {"version": STATE_VERSION, "kind": "folder", "settings": self.settings, "frames_done": 0}
        self._start = 0
        self._carry = None
        _prepare_partial(self, inputs)

    def resume_point(self):
        return self._start, self._carry

    def write(self, rgb, finfo):
        from PIL import Image
        tmp = os.path.join(self.partial, f"{finfo.index:08d}.png.tmp")
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=self.compress_level)
        os.replace(tmp, os.path.join(self.partial, f"{finfo.index:08d}.png"))

    def commit(self, frames_done, state=None):
        _commit_state(self, frames_done, state)

    def finish(self):
        for f in os.listdir(self.partial):
            if not f.endswith(".png"):
                p = os.path.join(self.partial, f)
                (shutil.rmtree if os.path.isdir(p) else os.remove)(p)
        if os.path.lexists(self.path):
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                shutil.rmtree(self.path)
            else:
                os.remove(self.path)
        os.replace(self.partial, self.path)
        return self.path

    def abort(self, exc=None):
        _abort_partial(self)
