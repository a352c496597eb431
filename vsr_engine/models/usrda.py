"""USR-DA: the super-resolution path of unsupervised domain adaptation (Wang et al., ICCV 2021), CPU-sized.

The paper decomposes real-world SR into an encoder E, shared by the clean source domain and the user's degraded
target domain (trained so that a feature discriminator cannot tell the two apart: degradation-indistinguishable
features), and a decoder G_SR from those features to HR. At inference only G_SR(E(x)) runs, frame by frame:

    E:    conv3x3 (3 -> C), LeakyReLU, ``enc_blocks`` residual blocks (conv, ReLU, conv) + identity
    G_SR: ``dec_blocks`` residual blocks, + E's output (global residual), 2 x [conv C -> 4C, pixel shuffle 2,
          LeakyReLU], conv3x3 (C -> 3), + bilinear x4 of the input only when ``lr_skip``

``lr_skip=False`` is the method's G_SR: the output is a function of E's features alone, as in the paper and the
reference code (anse3832/USR_DA), so what the feature alignment strips from the features (the target's noise and
compression artifacts) cannot come back. With ``lr_skip=True`` (the first checkpoints) the bilinear x4 of the raw
input is added to the output, which carries the target's degradation straight to the output whatever E learned.
A checkpoint without the skip holds a ``decoder.no_lr_skip`` marker (a scalar), which is how loading tells them apart.

The paper's E and G_SR are RRDB stacks (ESRGAN size); here they are small enough to train on a CPU. The training
decoders and discriminators (G_t, D_f, D_t) live in ``vsr_engine.training.adapt``; the checkpoint holds E and G_SR
only. forward: (N, T, 3, H, W) in [0, 1] -> (N, T, 3, 4H, 4W), frames independent.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import pixel_shuffle


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class Encoder(nn.Module):
    def __init__(self, num_feat: int = 32, num_block: int = 4):
        super().__init__()
        self.head = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResBlock(num_feat) for _ in range(num_block)])

    def forward(self, x):
        return self.body(F.leaky_relu(self.head(x), 0.1))


class SRDecoder(nn.Module):
    def __init__(self, num_feat: int = 32, num_block: int = 4, lr_skip: bool = True):
        super().__init__()
        self.lr_skip = bool(lr_skip)
        if not self.lr_skip:
            self.register_buffer("no_lr_skip", torch.ones(()))
        self.body = nn.Sequential(*[ResBlock(num_feat) for _ in range(num_block)])
        self.up1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.up2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, f, lr):
        y = self.body(f) + f
        y = F.leaky_relu(pixel_shuffle(self.up1(y), 2), 0.1)
        y = F.leaky_relu(pixel_shuffle(self.up2(y), 2), 0.1)
        y = self.last(y)
        return y + F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False) if self.lr_skip else y


class USRDA(nn.Module):
    scale = 4

    def __init__(self, num_feat: int = 32, enc_blocks: int = 4, dec_blocks: int = 4, lr_skip: bool = True):
        super().__init__()
        self.num_feat = num_feat
        self.encoder = Encoder(num_feat, enc_blocks)
        self.decoder = SRDecoder(num_feat, dec_blocks, lr_skip)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, 4H, 4W)."""
        return self.decoder(self.encoder(x), x)

    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        if lqs.dim() != 5 or lqs.shape[2] != 3:
            raise ValueError(f"expected lqs of shape (N, T, 3, H, W), got {tuple(lqs.shape)}")
        n, t = lqs.shape[:2]
        y = self.sr(lqs.flatten(0, 1))
        return y.view(n, t, *y.shape[1:])
