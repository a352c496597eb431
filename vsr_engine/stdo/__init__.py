"""STDO: content-aware per-video overfitting for video delivery (Li et al., CVPR 2023).

Server: :func:`fit` cuts the HR video's bicubic LR frames into a patch grid, labels every patch by the PSNR a
general model (fitted on the whole video) reaches on it, splits the patches into K chunks at the PSNR quantiles
(chunk 0 = hardest), and overfits one small WDSR/EDSR per chunk (STDO) or one model on a data-aware mix (JSTDO).
The result is a :class:`Bundle` (LR video bytes + fp16 models + chunk map, one validated file).

Client: :func:`upscale_bundle` / :class:`Upscaler` upscale every patch with its chunk's model and reassemble the
frames without seams (context margin), keeping audio and timestamps.

    from vsr_engine import stdo
    res = stdo.fit_video("clip.mp4", stdo.FitConfig(scale=4, chunks=4))
    res.bundle.save("clip.stdo")
    stdo.upscale_bundle("clip.stdo", "clip_x4.mp4")
"""
from .bundle import Bundle, BundleError, load
from .fit import FitConfig, FitResult, fit, prepare
from .patches import PatchGrid, default_grid, jstdo_mix, quantile_chunks
from .upscale import Upscaler, upscale_bundle
from .api import fit_video, read_hr

__all__ = ["Bundle", "BundleError", "load", "FitConfig", "FitResult", "fit", "fit_video", "prepare", "read_hr",
           "PatchGrid", "default_grid", "jstdo_mix", "quantile_chunks", "Upscaler", "upscale_bundle"]
