"""vsr_engine: GPU video super-resolution inference with hand-written kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops
from .checkpoint import CheckpointError
from .models import UnknownModelError, build_model, load_model, model_names
from .patch import patch, unpatch  # the name vsr_engine.patch is the function; `from vsr_engine.patch import X` still works
from .weights import WeightsError

__all__ = ["ops", "load_model", "build_model", "model_names", "CheckpointError", "WeightsError",
           "UnknownModelError", "Engine", "patch", "unpatch", "__version__"]


def __getattr__(name):
    # lazy: the streaming engine (and PyAV behind it) loads only when asked for
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
