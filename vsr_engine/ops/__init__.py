"""Hot ops of vsr_engine. Each op lives in ``ops/<op>.py`` beside its torch reference ``<op>_ref``."""
from .clean_step import clean_step, clean_step_ref
from .flow_warp import flow_warp, flow_warp_ref
from .pixel_shuffle import pixel_shuffle, pixel_shuffle_lrelu, pixel_shuffle_lrelu_ref, pixel_shuffle_ref

__all__ = [
    "flow_warp", "flow_warp_ref",
    "pixel_shuffle", "pixel_shuffle_ref", "pixel_shuffle_lrelu", "pixel_shuffle_lrelu_ref",
    "clean_step", "clean_step_ref",
]
