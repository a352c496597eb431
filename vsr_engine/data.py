"""Moved to :mod:`vsr_engine.training.data`; this alias keeps code written before the move importing (remove once no
branch uses ``vsr_engine.data``)."""
from .training.data import *  # noqa: F401,F403
from .training.data import IMAGE_EXTS, bi_degrade, list_images, read_folder, read_rgb  # noqa: F401
