"""Video in/out for the engine (PyAV / FFmpeg), one file per stage:

- ``common``  errors, :class:`FrameInfo`, :class:`SourceInfo`, the lazy PyAV import
- ``decode``  stage 1: sources (:class:`VideoReader`, folders, iterables, :func:`open_source`)
- ``frames``  host-side YUV <-> RGB with the stream's own matrix and range
- ``encode``  stage 5: :class:`VideoFileSink` (segments, final remux with audio/subtitles), option checks
- ``sinks``   the sink protocol, PNG folders, callables, :func:`open_sink`
- ``resume``  ``OUTPUT.partial/``, ``state.json``, atomic writes, output-path checks

``vsr_engine.video`` re-exports the public names of all of them (the stable API). Importing this package
imports only numpy; PyAV and torch are imported when needed.
"""
