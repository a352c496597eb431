"""vsr_engine: GPU video super-resolution inference with hand-written kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops
from .checkpoint import CheckpointError
from .models import UnknownModelError, build_model, load_model, model_names
from .weights import WeightsError

__all__ = ["ops", "load_model", "build_model", "model_names", "CheckpointError", "WeightsError",
           "UnknownModelError", "__version__"]
