"""Scale-out on Ray: many videos and long videos split into segments across GPUs and machines.

``run_batch(inputs, out_dir, BatchOptions(...))`` or ``vsr-engine batch INPUT... --out DIR``. Ray is an optional
extra (``pip install vsr_engine[ray]``); planning, the manifest, the worker's segment code and the merge import
without it.
"""
from .index import FrameIndex, index_video
from .job import BatchOptions, JobError, expand_inputs, run_batch, shutdown_workers
from .manifest import ResumeError
from .plan import Segment, plan_segments

__all__ = ["BatchOptions", "JobError", "ResumeError", "FrameIndex", "Segment", "expand_inputs", "index_video",
           "plan_segments", "run_batch", "shutdown_workers"]
