"""Streaming video in/out for the engine (PyAV / FFmpeg): the public names of :mod:`vsr_engine.io`.

The code lives in one file per stage (``vsr_engine/io``): ``decode`` (sources), ``frames`` (YUV <-> RGB),
``encode`` (the video file sink, final remux, option checks), ``sinks`` (folders, callables, ``open_sink``),
``resume`` (the ``OUTPUT.partial/`` folder and its state) and ``common`` (errors, shared types; the leaf).

Reading (:class:`VideoReader`, :func:`open_source`)
    Any FFmpeg-readable file (or an open PyAV input container, or a whole file held in memory as
    :class:`VideoBytes`), decoded on a background thread into a bounded queue. YUV -> RGB uses the stream's own
    matrix and range; every frame keeps its PTS, duration and time base; damaged input is not fatal. Image folders
    and any iterable of frames are sources too.

Writing (:class:`VideoFileSink`, :class:`FolderSink`, :class:`CallableSink`, :func:`open_sink`)
    Default H.264 (libx264), yuv420p, CRF 18, preset medium. The output keeps the source's PTS and time base,
    frame rate, colour tags and rotation, and copies its audio and subtitle streams packet for packet. Frames are
    encoded into committed segments inside ``OUTPUT.partial/``; the target is renamed into place only when
    complete, and ``resume=True`` continues after the last committed window.
"""
from __future__ import annotations

from .io.common import (IMAGE_EXTS, VIDEO_EXTS, FrameInfo, FrameRange, SourceInfo, VideoBytes, VsrError,
                        VsrInputError, VsrOutputError)
from .io.decode import FolderSource, IterableSource, VideoReader, open_source, read_video_frames
from .io.encode import (VideoFileSink, check_output_size, check_stream_copy, check_video_options, open_sink,
                        SegmentSink)
from .io.frames import as_rgb_u8, frame_to_rgb, guess_matrix, rgb_to_frame
from .io.resume import check_output_path, partial_dir_for
from .io.sinks import CallableSink, FolderSink, Sink

__all__ = ["VsrError", "VsrInputError", "VsrOutputError", "FrameInfo", "SourceInfo", "VideoReader",
           "FolderSource", "IterableSource", "open_source", "VideoFileSink", "FolderSink", "CallableSink",
           "open_sink", "frame_to_rgb", "as_rgb_u8", "IMAGE_EXTS", "VIDEO_EXTS", "partial_dir_for",
           "read_video_frames", "VideoBytes", "check_output_size", "check_stream_copy", "check_video_options",
           "guess_matrix", "rgb_to_frame", "check_output_path", "Sink", "SegmentSink", "FrameRange"]
