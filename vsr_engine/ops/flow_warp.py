"""flow_warp: bilinear backward warp of a feature map by a per-pixel flow (in pixels).

Contract (BasicSR ``arch_util.flow_warp`` / mmagic ``flow_warp``): out[n, c, y, x] is a bilinear sample of
``x[n, c]`` at pixel coordinates (x + flow[n, y, x, 0], y + flow[n, y, x, 1]), pixel centres on integers.
``padding_mode='zeros'``: neighbours outside the image count as 0 (weights not renormalised);
``'border'``: coordinates clamp to the image. Coordinates are always computed in fp32, whatever x's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_warp_ref(x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear",
                  padding_mode: str = "zeros", align_corners: bool = True) -> torch.Tensor:
    """Reference: the official normalise + ``grid_sample`` path, with the grid built in fp32."""
    if x.dim() != 4 or flow.dim() != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow_warp expects x (N,C,H,W) and flow (N,H,W,2), got {tuple(x.shape)} and {tuple(flow.shape)}")
    if x.shape[-2:] != flow.shape[1:3] or x.shape[0] != flow.shape[0]:
        raise ValueError(f"flow_warp: flow {tuple(flow.shape)} does not match x {tuple(x.shape)}")
    _, _, h, w = x.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                            torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    f = flow.float()
    vx = 2.0 * (gx + f[..., 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + f[..., 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((vx, vy), dim=3)
    xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = F.grid_sample(xs, grid.to(xs.dtype), mode=interp_mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    return out.to(x.dtype)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear",
              padding_mode: str = "zeros", align_corners: bool = True) -> torch.Tensor:
    """Drop-in for BasicSR's / mmagic's ``flow_warp``; dispatches to the active backend."""
    return flow_warp_ref(x, flow, interp_mode, padding_mode, align_corners)
