"""RealBasicVSR (Chan et al., CVPR 2022): an image pre-cleaning module in front of BasicVSR.

Same function as mmagic's ``RealBasicVSRNet``: the cleaning module C (conv 3->64, LeakyReLU(0.1), 20 residual
blocks, conv 64->3) predicts a residue; the loop x <- x + C(x) runs at most 3 times and stops once
mean|C(x)| over the whole window falls below ``dynamic_refine_thres`` / 255 (checked after the update, so at
least one pass always runs). The cleaned frames then go through BasicVSR with 20 blocks per branch.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn

from .. import ops
from .basicvsr import BasicVSR, ConvResidualBlocks, check_input

MAX_CLEANING_PASSES = 3  # "at most 3 cleaning, determined empirically" (official code)


class RealBasicVSR(nn.Module):
    scale = 4

    def __init__(self, num_feat: int = 64, num_propagation_blocks: int = 20, num_cleaning_blocks: int = 20,
                 dynamic_refine_thres: float = 255.0):
        super().__init__()
        self.image_cleaning = nn.Sequential(
            ConvResidualBlocks(3, num_feat, num_cleaning_blocks), nn.Conv2d(num_feat, 3, 3, 1, 1))
        self.basicvsr = BasicVSR(num_feat, num_propagation_blocks)
        self.dynamic_refine_thres = dynamic_refine_thres  # on the 0-255 scale, as in the official configs
        self.last_cleaning_passes = 0

    def clean(self, lqs: torch.Tensor) -> Tuple[torch.Tensor, int]:
        """The dynamic refinement loop; returns the cleaned frames and the number of passes run."""
        n, t, c, h, w = lqs.shape
        x = lqs.reshape(n * t, c, h, w)
        thres = self.dynamic_refine_thres / 255.0
        passes = 0
        for passes in range(1, MAX_CLEANING_PASSES + 1):
            x, mean_abs = ops.clean_step(x, self.image_cleaning(x))
            if passes == MAX_CLEANING_PASSES or bool(mean_abs < thres):
                break
        return x.view(n, t, c, h, w), passes

    def forward(self, lqs: torch.Tensor, return_lqs: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        check_input(lqs)
        cleaned, self.last_cleaning_passes = self.clean(lqs)
        out = self.basicvsr(cleaned)
        return (out, cleaned) if return_lqs else out
