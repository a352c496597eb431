"""DUF: Deep Video Super-Resolution Network Using Dynamic Upsampling Filters (Jo et al., CVPR 2018).

As the official TensorFlow code (github yhjo09/VSR-DUF, nets.py ``FR_16L/28L/52L``, test.py ``G``):

- input: 7 LR frames (RGB in [0, 1]) centred on the frame to upscale; frames beyond the clip ends are zeros
  (test.py pads the clip with zero frames);
- ``conv1``: 1x3x3 conv 3 -> 64 (spatial zero padding, no temporal padding);
- dense blocks: [BN, ReLU, 1x1x1 conv F -> F, BN, ReLU, 3x3x3 conv F -> G], output concatenated to the input.
  The first blocks pad time by 1 (T stays 7); the last 3 do not pad time and drop the input's first and last
  frame before concatenating (T: 7 -> 5 -> 3 -> 1). 16L: 3 + 3 blocks, G = 32; 28L: 9 + 3, G = 16;
  52L: 21 + 3, G = 16;
- ``fbn1``, ReLU, ``conv2`` 1x3x3 F -> 256, ReLU; two 1x1 heads: residual ``rconv1`` 256 -> 256, ReLU,
  ``rconv2`` -> 3 r^2; filters ``fconv1`` 256 -> 512, ReLU, ``fconv2`` -> 25 r^2 (channel t*r^2 + k: tap t of
  sub-pixel k, in TF's channel order);
- dynamic upsampling (``vsr_engine.ops.dyn_upsample``): softmax over the 25 taps, each output sub-pixel a 5x5
  filtered neighbourhood of the centre frame, TF depth-to-space, plus the residual (TF depth-to-space).

Batch norm is the inference form ``(x - mean) * gamma / sqrt(var + 1e-3) + beta`` (``nn.BatchNorm3d``, eps 1e-3,
the running statistics = TF's moving mean / variance). Any H, W.

Sliding-window protocol read by the Engine (``vsr_engine.window.SlidingWindow``): ``temporal_radius`` (3: frames
t-3 .. t+3 make output t), ``temporal_pad`` (``"zeros"``: missing frames beyond the clip ends are zeros) and
``forward_window(x)`` (N, 2R+1, 3, H, W) -> (N, 3, sH, sW) for the centre frame.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..imresize import imresize_torch
from ..ops import dyn_upsample
from ..ops.meta_upscale import meta_out_size

# variant -> (dense blocks keeping T, dense blocks shrinking T, growth G)
VARIANTS = {"16L": (3, 3, 32), "28L": (9, 3, 16), "52L": (21, 3, 16)}
NATIVE_SCALES = (2, 3, 4)
T_IN = 7
BN_EPS = 1e-3


def parse_variant(variant) -> str:
    v = str(variant or "16L").upper()
    if v.isdigit():
        v += "L"
    if v not in VARIANTS:
        raise ValueError(f"duf variant {variant!r} unknown; choose from {', '.join(VARIANTS)}")
    return v


def native_scale(scale) -> int:
    """The official upscaling factor used for output scale ``scale``: itself for 2, 3, 4; else the next one up
    (4 above 4), the output then resampled (MATLAB bicubic) to ``scale``."""
    r = float(scale)
    for n in NATIVE_SCALES:
        if r <= n:
            return n
    return NATIVE_SCALES[-1]


def bn(ch: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(ch, eps=BN_EPS, momentum=0.01)


class DenseLayer(nn.Module):
    """BN, ReLU, 1x1x1 conv, BN, ReLU, 3x3x3 conv; ``keep_t``: time padded by 1 (the 'stp' padding), else not."""

    def __init__(self, fin: int, growth: int, keep_t: bool):
        super().__init__()
        self.keep_t = keep_t
        self.bn_a = bn(fin)
        self.conv_a = nn.Conv3d(fin, fin, 1)
        self.bn_b = bn(fin)
        self.conv_b = nn.Conv3d(fin, growth, 3, padding=(1 if keep_t else 0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv_a(F.relu(self.bn_a(x)))
        t = self.conv_b(F.relu(self.bn_b(t)))
        return torch.cat([x if self.keep_t else x[:, :, 1:-1], t], 1)


class DUF(nn.Module):
    temporal_radius = T_IN // 2
    temporal_pad = "zeros"

    def __init__(self, variant: str = "16L", scale: float = 4, uf: Optional[int] = None, chunk: int = 4):
        super().__init__()
        self.variant = parse_variant(variant)
        n_keep, n_shrink, g = VARIANTS[self.variant]
        self.uf = int(uf) if uf else native_scale(scale)   # the network's own factor; other scales: resampled
        if self.uf not in NATIVE_SCALES:
            raise ValueError(f"duf: native factor {uf} not in {NATIVE_SCALES}")
        self.scale = int(scale) if float(scale) == self.uf else float(scale)
        self.chunk = chunk                     # output frames per batched call in forward()
        self.conv1 = nn.Conv3d(3, 64, (1, 3, 3), padding=(0, 1, 1))
        layers, fin = [], 64
        for i in range(n_keep + n_shrink):
            layers.append(DenseLayer(fin, g, keep_t=i < n_keep))
            fin += g
        self.dense = nn.ModuleList(layers)
        self.num_feat = fin                    # 256 (16L, 28L), 448 (52L)
        self.fbn1 = bn(fin)
        self.conv2 = nn.Conv3d(fin, 256, (1, 3, 3), padding=(0, 1, 1))
        r2 = self.uf * self.uf
        self.rconv1 = nn.Conv3d(256, 256, 1)
        self.rconv2 = nn.Conv3d(256, 3 * r2, 1)
        self.fconv1 = nn.Conv3d(256, 512, 1)
        self.fconv2 = nn.Conv3d(512, 25 * r2, 1)

    def filters_residual(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, 7, 3, H, W) -> raw filter logits (N, 25 r^2, H, W) and residual (N, 3 r^2, H, W), TF channel order."""
        if x.dim() != 5 or x.shape[1] != T_IN or x.shape[2] != 3:
            raise ValueError(f"DUF step expects (N, {T_IN}, 3, H, W) frames, got {tuple(x.shape)}")
        h = self.conv1(x.transpose(1, 2))                     # N, C, T, H, W
        for layer in self.dense:
            h = layer(h)
        h = F.relu(self.conv2(F.relu(self.fbn1(h))))          # T = 1
        res = self.rconv2(F.relu(self.rconv1(h)))
        f = self.fconv2(F.relu(self.fconv1(h)))
        return f[:, :, 0], res[:, :, 0]

    def forward_window(self, x: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        """Seven frames (N, 7, 3, H, W) -> the centre frame upscaled (N, 3, sH, sW)."""
        f, res = self.filters_residual(x)
        y = dyn_upsample(x[:, T_IN // 2], f, res, self.uf)
        return self.resample(y, x.shape[-2:], self.scale if scale is None else scale)

    def resample(self, y: torch.Tensor, lr_hw, scale) -> torch.Tensor:
        """Native-factor output -> floor(scale * h) x floor(scale * w) (identity at the native factor)."""
        oh, ow = meta_out_size(lr_hw[0], lr_hw[1], scale)
        if (oh, ow) == tuple(y.shape[-2:]):
            return y
        return imresize_torch(y, oh, ow, float(scale) / self.uf)

    def output_size(self, h: int, w: int, scale: Optional[float] = None) -> Tuple[int, int]:
        return meta_out_size(h, w, self.scale if scale is None else float(scale))

    def forward(self, lqs: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        """(N, T, 3, H, W) clip -> (N, T, 3, sH, sW): output t from frames t-3 .. t+3, zeros beyond the ends."""
        if lqs.dim() != 5 or lqs.shape[2] != 3:
            raise ValueError(f"DUF expects (N, T, 3, H, W) frames, got {tuple(lqs.shape)}")
        n, t = lqs.shape[:2]
        rad = self.temporal_radius
        xp = F.pad(lqs, (0, 0, 0, 0, 0, 0, rad, rad))          # zero frames on both ends of the clip
        outs = []
        for a in range(0, t, self.chunk):
            b = min(t, a + self.chunk)
            win = torch.stack([xp[:, k:k + T_IN] for k in range(a, b)], 1)      # N, c, 7, 3, H, W
            y = self.forward_window(win.flatten(0, 1), scale)
            outs.append(y.view(n, b - a, *y.shape[1:]))
        return torch.cat(outs, 1)


# ------------------------------------------------------------------------------------------------------------
# the official checkpoint layout (params_{16,28,52}L_x{2,3,4}.h5)
# ------------------------------------------------------------------------------------------------------------
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
# TF bookkeeping a saved graph may hold besides G's variables (batch-norm zero-debias slots, Adam slots)
_IGNORED = ("/biased", "/local_step", "/Adam", "beta1_power", "beta2_power")


def parse_tf_name(key: str) -> str:
    """An HDF5 entry name as the official ``LoadParams`` reads it: each '_' with no '_' beside it becomes '/',
    then '__' becomes '_' (``G_Rbn1a_moving__mean:0`` -> ``G/Rbn1a/moving_mean:0``); ':0' dropped."""
    p = list(key)
    for i in range(1, len(p) - 1):
        if p[i] == "_" and p[i - 1] != "_" and p[i + 1] != "_":
            p[i] = "/"
    name = "".join(p).replace("__", "_")
    return name[:-2] if name.endswith(":0") else name


def _tf_to_torch_name(tf: str) -> Optional[str]:
    """``Rconv3b/W`` -> ``dense.2.conv_b.weight``; None for names that are not DUF weights."""
    import re
    scope, _, var = tf.rpartition("/")
    m = re.fullmatch(r"R(bn|conv)(\d+)([ab])", scope)
    if m:
        base = f"dense.{int(m.group(2)) - 1}.{m.group(1)}_{m.group(3)}"
    elif scope in ("conv1", "fbn1", "conv2", "rconv1", "rconv2", "fconv1", "fconv2"):
        base = scope
    else:
        return None
    if var in ("W", "b"):
        return f"{base}.{'weight' if var == 'W' else 'bias'}"
    return f"{base}.{_BN[var]}" if var in _BN else None


def official_to_state_dict(entries, source: str = "checkpoint"):
    """{HDF5 entry name: array} in the official layout -> (torch state dict, n ignored entries). Conv kernels
    [kt, kh, kw, in, out] become (out, in, kt, kh, kw). The ``filter_localexpand`` constants must be the identity
    DynFilter3D builds (the official loader assigns them too), else the file describes another network."""
    from ..checkpoint import CheckpointError
    import numpy as np
    sd, ignored, unknown = {}, 0, []
    eye = np.reshape(np.eye(25, 25), (5, 5, 1, 25))
    for key, val in entries.items():
        name = parse_tf_name(key)
        name = name[2:] if name.startswith("G/") else name
        if name.split("/")[-1].startswith("filter_localexpand"):
            if np.shape(val) != eye.shape or not np.array_equal(np.asarray(val), eye):
                raise CheckpointError(f"{source}: {key} is not DynFilter3D's identity 5x5x1x25 constant")
            ignored += 1
            continue
        if any(s in name for s in _IGNORED):
            ignored += 1
            continue
        tn = _tf_to_torch_name(name)
        if tn is None:
            unknown.append(key)
            continue
        t = torch.from_numpy(np.array(val, dtype=np.float32))
        if tn.endswith(".weight") and t.dim() == 5:
            t = t.permute(4, 3, 0, 1, 2).contiguous()
        sd[tn] = t
    if unknown:
        from ..checkpoint import describe_keys
        raise CheckpointError(f"{source}: {len(unknown)} entries are not DUF weights: {describe_keys(unknown)}")
    for k in [k for k in sd if k.endswith(".running_mean")]:
        sd[k[:-len("running_mean")] + "num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return sd, ignored


def read_official_h5(path: str):
    """(torch state dict, layout description) of an official ``params_*.h5`` file (HDF5 group ``params``)."""
    from ..checkpoint import CheckpointError
    try:
        import h5py
    except ImportError:
        raise CheckpointError(f"{path} is an HDF5 file (official DUF layout); reading it needs h5py: "
                              "pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            if "params" not in f:
                raise CheckpointError(f"{path}: HDF5 file without the group 'params' (not an official DUF "
                                      f"checkpoint; top level: {', '.join(list(f)[:6]) or 'empty'})")
            g = f["params"]
            entries = {k: g[k][()] for k in g}
    except CheckpointError:
        raise
    except Exception as e:   # h5py raises OSError / KeyError / ValueError for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot read {path} as an HDF5 checkpoint (truncated or damaged?): {first[:200]}") \
            from None
    sd, ignored = official_to_state_dict(entries, path)
    return sd, f"official DUF HDF5 ['params'], TF names ({len(sd)} tensors, {ignored} constants/slots ignored)"


def arch_of(sd) -> Tuple[str, int]:
    """(variant, native scale) of a DUF state dict: depth from the dense layers, r from the residual head."""
    from ..checkpoint import CheckpointError, count_indexed
    n = count_indexed(sd, "dense")
    found = [v for v, (a, b, _) in VARIANTS.items() if a + b == n]
    w = sd.get("rconv2.weight")
    if not found or w is None:
        raise CheckpointError(f"not a DUF checkpoint: {n} dense layers" + ("" if w is not None else
                                                                          ", no rconv2 (residual head)"))
    r2 = int(w.shape[0]) // 3
    r = int(round(r2 ** 0.5))
    if r * r != r2 or r not in NATIVE_SCALES:
        raise CheckpointError(f"DUF residual head with {w.shape[0]} channels is not 3 r^2 for r in 2, 3, 4")
    return found[0], r
