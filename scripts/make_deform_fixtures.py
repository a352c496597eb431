#!/usr/bin/env python3
"""Write tests/ops/data/deform_conv2d_torchvision.pt: torchvision.ops.deform_conv2d's outputs and gradients on small
random cases (v1 and modulated v2, conv groups, deformable groups, stride / padding / dilation, offsets that sample
outside the image), so tests/ops/test_deform_conv2d.py checks the op against torchvision itself without importing it.

Run in a separate environment with torchvision (it cannot be installed beside this project's torch):
    python3 -m venv /work/venv-tv && /work/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/venv-tv/bin/python scripts/make_deform_fixtures.py
Everything is fp64 on CPU (torchvision's CPU kernel), seeded; the file records the versions used.
"""
import os

import torch
import torchvision
from torchvision.ops import deform_conv2d

# (n, cin, cout, h, w, (kh, kw), stride, padding, dilation, deformable groups, conv groups, mask, bias, offset scale)
CASES = [
    (1, 4, 5, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, True, 3.0),
    (2, 16, 8, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), 2, 1, True, True, 4.0),
    (2, 6, 4, 7, 5, (3, 2), (2, 1), (1, 0), (1, 2), 3, 2, True, False, 2.5),
    (1, 64, 16, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 8, 1, False, True, 2.0),  # TDAN alignment: 64 channels in 8 groups
    (1, 8, 16, 9, 8, (1, 1), (1, 1), (0, 0), (1, 1), 4, 1, True, True, 6.0),
    (1, 3, 2, 4, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, 1, True, True, 1e3),  # every sample far outside
]


def main():
    g = torch.Generator().manual_seed(24)
    out = {"versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}", "cases": []}
    for (n, cin, cout, h, w, (kh, kw), s, p, d, dg, groups, has_mask, has_bias, scale) in CASES:
        ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
        wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
        t = {"input": torch.randn(n, cin, h, w, generator=g, dtype=torch.float64),
             "offset": torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=torch.float64) * scale,
             "weight": torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=torch.float64)}
        t["bias"] = torch.randn(cout, generator=g, dtype=torch.float64) if has_bias else None
        t["mask"] = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=torch.float64) if has_mask else None
        leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in t.items()}
        res = deform_conv2d(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], s, p, d,
                            leaves["mask"])
        gout = torch.randn(res.shape, generator=g, dtype=torch.float64)
        res.backward(gout)
        case = {"stride": s, "padding": p, "dilation": d, "out": res.detach(), "grad_out": gout}
        for k, v in leaves.items():
            case[k] = t[k]
            case["grad_" + k] = v.grad if v is not None else None
        out["cases"].append(case)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "ops", "data",
                        "deform_conv2d_torchvision.pt")
    torch.save(out, path)
    print(path, os.path.getsize(path), "bytes;", out["versions"])


if __name__ == "__main__":
    main()
