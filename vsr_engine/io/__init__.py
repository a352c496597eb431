"""Video in/out for the engine (PyAV / FFmpeg), one file per engine stage (1 decode, 2 stage, 3 step -- the
window step itself lives in ``vsr_engine.window`` / ``engine`` --, 4 unstage, 5 encode):

- ``common``      all stages: errors, :class:`FrameInfo`, :class:`SourceInfo`, :class:`FrameRange`,
                  :class:`VideoBytes`, the lazy PyAV import (the leaf: imports nothing else from the package)
- ``accounting``  1 decode: packets read vs frames decoded vs frames written (a leaf too)
- ``decode``      1 decode: sources (:class:`VideoReader` -- a whole file, or a frame range with seek --, folders,
                  iterables, :func:`open_source`)
- ``frames``      1 and 5: host-side YUV <-> RGB with the stream's own matrix and range
- ``stage``       2 stage: decoded frames handed to the pipeline as they are (YUV planes or RGB)
- ``unstage``     4 unstage: the format output frames are converted to on the device, delivery to a sink
- ``sinks``       5 encode: the sink protocol (:class:`Sink`), PNG folders, callables
- ``resume``      5 encode: ``OUTPUT.partial/``, ``state.json``, atomic writes, output-path checks
- ``encode``      5 encode: :class:`VideoFileSink` (segments, final remux with audio/subtitles),
                  :class:`SegmentSink` (one segment of a batch job), option checks, :func:`open_sink`

The imports form a tree (``tests/test_io_tree.py`` fails on any cycle). ``vsr_engine.video`` re-exports the
public names of all of them (the stable API). Importing this package imports only numpy; PyAV and torch are
imported when needed.
"""
