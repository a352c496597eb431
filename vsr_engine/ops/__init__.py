"""Hot ops of vsr_engine. Each op lives in ``ops/<op>.py``: its torch reference ``<op>_ref``, the Triton kernels,
the CUDA binding (kernels in ``csrc/<op>.cu``) and the ``torch.library.custom_op`` registration
(``vsr_engine::<op>`` and ``vsr_engine::<op>_backward``).

Backends ``"cuda"``, ``"cupy"``, ``"triton"``, ``"torch"``: chosen per call from the tensor's device and the choice
table (see ``_backend``, ``_choice``);
force one with ``set_backend(name, op=None)``, ``with use_backend(name): ...`` or ``VSR_ENGINE_BACKEND``;
``backend_info()`` says which are live and why the others are not.
"""
from ._backend import (BACKENDS, OPS, BackendUnavailable, backend_info, format_backend_info, get_backend,
                       set_backend, use_backend)
from .clean_step import clean_step, clean_step_ref
from .deform_conv2d import deform_conv2d, deform_conv2d_ref
from .dwpw_conv2d import dwpw_conv2d, dwpw_conv2d_ref
from .dyn_upsample import dyn_upsample, dyn_upsample_ref
from .flow_warp import flow_warp, flow_warp_ref
from .meta_upscale import meta_upscale, meta_upscale_ref
from .pixel_shuffle import pixel_shuffle, pixel_shuffle_lrelu, pixel_shuffle_lrelu_ref, pixel_shuffle_ref

__all__ = [
    "flow_warp", "flow_warp_ref",
    "pixel_shuffle", "pixel_shuffle_ref", "pixel_shuffle_lrelu", "pixel_shuffle_lrelu_ref",
    "clean_step", "clean_step_ref",
    "dwpw_conv2d", "dwpw_conv2d_ref",
    "deform_conv2d", "deform_conv2d_ref",
    "meta_upscale", "meta_upscale_ref",
    "dyn_upsample", "dyn_upsample_ref",
    "set_backend", "get_backend", "use_backend", "backend_info", "format_backend_info", "BackendUnavailable",
    "BACKENDS", "OPS",
]
