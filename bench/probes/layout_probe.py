"""GPU probe (2026-12-04, issue 27): what channels_last, fused cuDNN epilogues and CUDA graphs buy on this model.

    python3 bench/probes/layout_probe.py --weights build/weights/BasicVSR_REDS4.pth --out $OUT/probe.json

Measures, fp16, on the GPU: one 3x3 64->64 convolution at 540x960 (NCHW vs channels_last, cuDNN's fused
conv+bias+ReLU and conv+add+ReLU), an elementwise add; one propagation trunk step (67->64 conv + 30 residual
blocks) eager NCHW / eager channels_last / CUDA-graph replay; a whole 30-frame BasicVSR window in channels_last with
the top kernels of its profile. Each part is timed alone with CUDA events (median of a few) and written as JSON.
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def ms(fn, iters=10, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = {}
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True

    def save():
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2, default=str)
        os.replace(tmp, a.out)

    def part(name, fn):
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:
            res[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}", "tb": traceback.format_exc()[-800:]}
        print(name, json.dumps(res[name], default=str)[:1500], f"({time.perf_counter() - t:.1f}s)", flush=True)
        save()

    def conv_part():
        r = {}
        for h, w in ((180, 320), (540, 960)):
            x = torch.randn(1, 64, h, w, device=dev, dtype=torch.float16)
            wt = torch.randn(64, 64, 3, 3, device=dev, dtype=torch.float16) * 0.05
            b = torch.randn(64, device=dev, dtype=torch.float16)
            z = torch.randn_like(x)
            flop = 2 * 64 * 64 * 9 * h * w
            xc, zc, wc = (t.contiguous(memory_format=torch.channels_last) for t in (x, z, wt))
            d = {
                "nchw conv": ms(lambda: F.conv2d(x, wt, b, 1, 1)),
                "cl conv": ms(lambda: F.conv2d(xc, wc, b, 1, 1)),
                "cl conv+relu (2 kernels)": ms(lambda: F.relu_(F.conv2d(xc, wc, b, 1, 1))),
                "cl add": ms(lambda: xc + zc),
            }
            try:
                d["cl cudnn_convolution_relu"] = ms(lambda: torch.cudnn_convolution_relu(xc, wc, b, (1, 1), (1, 1), (1, 1), 1))
                d["cl cudnn_convolution_add_relu"] = ms(
                    lambda: torch.cudnn_convolution_add_relu(xc, wc, zc, 1.0, b, (1, 1), (1, 1), (1, 1), 1))
                y1 = torch.cudnn_convolution_relu(xc, wc, b, (1, 1), (1, 1), (1, 1), 1)
                d["cudnn_relu_err"] = (y1.float() - F.relu(F.conv2d(xc, wc, b, 1, 1)).float()).abs().max().item()
                d["cudnn_relu_out_cl"] = y1.is_contiguous(memory_format=torch.channels_last)
            except Exception as e:
                d["cudnn fused"] = f"{type(e).__name__}: {str(e)[:200]}"
            d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
            d["tflops cl conv"] = round(flop / d["cl conv"] / 1e9, 1)
            d["tflops nchw conv"] = round(flop / d["nchw conv"] / 1e9, 1)
            r[f"{h}x{w}"] = d
        return r

    def trunk_part():
        from vsr_engine.models.basicvsr import ConvResidualBlocks
        r = {}
        torch.manual_seed(0)
        trunk = ConvResidualBlocks(67, 64, 30).to(dev, torch.float16).eval()
        for h, w in ((180, 320), (540, 960)):
            x = torch.randn(1, 67, h, w, device=dev, dtype=torch.float16)
            d = {}
            with torch.inference_mode():
                d["eager nchw"] = ms(lambda: trunk(x))
                tc = trunk.to(memory_format=torch.channels_last)
                xc = x.contiguous(memory_format=torch.channels_last)
                d["eager cl"] = ms(lambda: tc(xc))
                d["out cl"] = tc(xc).is_contiguous(memory_format=torch.channels_last)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        tc(xc)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    y = tc(xc)
                d["graph cl"] = ms(g.replay)
                d["graph err"] = (y.float() - tc(xc).float()).abs().max().item()
                trunk = tc.to(memory_format=torch.contiguous_format)
            flop = 2 * 9 * 64 * (67 + 60 * 64) * h * w
            d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
            d["tflops graph cl"] = round(flop / d["graph cl"] / 1e9, 1)
            r[f"{h}x{w}"] = d
        return r

    def model_part():
        from torch.profiler import ProfilerActivity, profile
        from vsr_engine import load_model
        m = load_model("basicvsr", weights=a.weights or False).eval().to(dev, torch.float16)
        r = {}
        x = torch.rand(1, 30, 3, 540, 960, device=dev, dtype=torch.float16)
        with torch.inference_mode():
            m(x[:, :3])
            torch.cuda.synchronize()
            t = time.perf_counter()
            y0 = m(x)
            torch.cuda.synchronize()
            r["nchw ms/window"] = round((time.perf_counter() - t) * 1e3, 1)
            mc = m.to(memory_format=torch.channels_last)
            mc(x[:, :3])
            torch.cuda.synchronize()
            t = time.perf_counter()
            y1 = mc(x)
            torch.cuda.synchronize()
            r["cl ms/window"] = round((time.perf_counter() - t) * 1e3, 1)
            r["cl vs nchw max diff"] = (y1.float() - y0.float()).abs().max().item()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                mc(x)
                torch.cuda.synchronize()
        tot = sum(e.device_time_total for e in prof.key_averages())
        top = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:14]
        r["profile cl top"] = [(e.key[:90], round(100 * e.device_time_total / max(tot, 1), 1), e.count) for e in top]
        return r

    part("env", lambda: {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                         "device": torch.cuda.get_device_name(0)})
    part("conv", conv_part)
    part("trunk", trunk_part)
    part("model", model_part)
    return 0


if __name__ == "__main__":
    sys.exit(main())
