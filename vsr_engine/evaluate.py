"""Moved to :mod:`vsr_engine.training.evaluate`; this alias keeps code written before the move importing (remove once
no branch uses ``vsr_engine.evaluate``)."""
from .training.evaluate import _psnr_fit, add_arguments, eval_clip, main, run  # noqa: F401
