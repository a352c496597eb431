"""The Engine streams sliding-window models (DUF) exactly: any window equals whole-clip processing on a real clip
(zeros only at the real clip ends), tiles, --scale, bf16, resume; the edge policies a model can ask for."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.training.data import read_rgb
from vsr_engine.engine import Engine
from vsr_engine.window import SlidingWindow, pad_time


def real_clip(data_dir, n=11, h=10, w=13):
    folder = os.path.join(data_dir, "reds_lr_demo_000")
    names = sorted(os.listdir(folder))[:n]
    return [np.ascontiguousarray(read_rgb(os.path.join(folder, f))[60:60 + h, 100:100 + w]) for f in names]


def tiny_duf(scale=4, seed=0):
    """DUF-16L with random weights (batch norm statistics too), deterministic."""
    torch.manual_seed(seed)
    m = load_model("duf", weights=False, scale=scale)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0.0, 0.05 if p.dim() > 1 else 0.02)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.running_mean.normal_(0, 0.05)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def whole(model, frames, dtype=torch.float32):
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]).unsqueeze(0)
    with torch.inference_mode():
        y = model.to(dtype)(x.to(dtype))[0].float()
    model.float()
    return [(t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for t in y]


def maxdiff(a, b):
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("window", [1, 2, 3, 5, 64])
def test_windowed_equals_whole_clip_on_a_real_clip(data_dir, window):
    m = tiny_duf()
    fr = real_clip(data_dir)
    ref = whole(m, fr)
    e = Engine(m, window=window, overlap=0, dtype="fp32", tile=0)
    assert e.mode == "sliding" and e.overlap == 3
    out = list(e.run(fr))
    assert maxdiff(out, ref) == 0


def test_sliding_window_float_outputs_equal_model_forward(data_dir):
    """Below the uint8 rounding: the processor's float frames equal the model's whole-clip forward."""
    m = tiny_duf(scale=3)
    fr = real_clip(data_dir, n=8, h=7, w=9)
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in fr]).unsqueeze(0)
    with torch.no_grad():
        want = m(x)[0]
        proc = SlidingWindow(m)
        got = {}
        for s, e in ((0, 3), (3, 5), (5, 8)):            # windows with their context cut as the Engine cuts it
            lo, hi = max(0, s - 3), min(8, e + 3)
            for i, y in proc.process(x[:, lo:hi], s, e - s, left=s - lo):
                got[i] = y
    assert sorted(got) == list(range(8))
    assert max((got[i] - want[i]).abs().max().item() for i in range(8)) < 1e-6


def test_scale_tiles_and_bf16(data_dir):
    fr = real_clip(data_dir, n=7, h=12, w=14)
    m = tiny_duf()
    y = list(Engine(m, window=2, dtype="fp32", tile=0, scale=None).run(fr))
    assert y[0].shape == (48, 56, 3)
    m25 = load_model("duf", weights=False, scale=2.5)
    m25.load_state_dict(tiny_duf(scale=3).state_dict())
    out = list(Engine(m25, window=3, dtype="fp32", tile=0).run(fr))
    assert out[0].shape == (30, 35, 3) and maxdiff(out, whole(m25, fr)) == 0
    tiled = list(Engine(m, window=3, dtype="fp32", tile=8).run(fr))
    assert maxdiff(tiled, y) <= 3                              # tiles with context: a few grey levels at most
    bf = list(Engine(tiny_duf(), window=2, dtype="bf16", tile=0).run(fr))
    assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(bf, y)]) < 2.0


def test_pad_policies():
    x = torch.arange(4.0).view(1, 4, 1)
    assert pad_time(x, 2, 2, "zeros").flatten().tolist() == [0, 0, 0, 1, 2, 3, 0, 0]
    assert pad_time(x, 2, 2, "replicate").flatten().tolist() == [0, 0, 0, 1, 2, 3, 3, 3]
    assert pad_time(x, 2, 2, "reflect").flatten().tolist() == [2, 1, 0, 1, 2, 3, 2, 1]


class MeanOf5(torch.nn.Module):
    """A toy sliding-window model of another radius and edge policy (the way TDAN registers): the mean of
    frames t-2 .. t+2, edges replicated."""
    temporal_radius = 2
    temporal_pad = "replicate"
    scale = 1

    def forward_window(self, x):
        return x.mean(1)

    def forward(self, x):
        xp = pad_time(x, 2, 2, "replicate")
        return torch.stack([xp[:, t:t + 5].mean(1) for t in range(x.shape[1])], 1)


def test_other_radius_and_edge_policy(data_dir):
    fr = real_clip(data_dir, n=9)
    m = MeanOf5()
    e = Engine(m, window=2, dtype="fp32", tile=0)
    assert e.mode == "sliding" and e.overlap == 2
    assert maxdiff(list(e.run(fr)), whole(m, fr)) == 0


def test_resume_equals_uninterrupted(tmp_path, data_dir, monkeypatch):
    """Interrupted after a window, resumed: the same frames as one run (left context re-read from the input)."""
    from test_video import make_video   # noqa: E402 (tests/ on sys.path)
    fr = real_clip(data_dir, n=9, h=16, w=16)
    src = str(tmp_path / "in.mkv")
    make_video(src, n=9, w=16, h=16, frames=fr)
    m = tiny_duf()
    full = str(tmp_path / "full")
    Engine(m, window=3, dtype="fp32", tile=0).run(src, full)

    class Stop(Exception):
        pass

    def stop(done):
        if done >= 3:
            raise Stop()
    out = str(tmp_path / "res")
    monkeypatch.setattr(Engine, "_after_window", staticmethod(stop))
    with pytest.raises(Stop):
        Engine(m, window=3, dtype="fp32", tile=0).run(src, out)
    monkeypatch.setattr(Engine, "_after_window", None)
    Engine(m, window=3, dtype="fp32", tile=0).run(src, out, resume=True)
    a = sorted(os.listdir(full))
    assert a == sorted(os.listdir(out)) and len(a) == 9
    for n in a:
        assert np.array_equal(read_rgb(os.path.join(full, n)), read_rgb(os.path.join(out, n)))


def test_cli_knows_duf(tmp_path, data_dir, capsys):
    from vsr_engine.cli import main
    from test_video import make_video   # noqa: E402
    assert main(["models"]) == 0
    so = capsys.readouterr().out
    assert "duf:" in so and "16L-x4 (default)" in so and "bundled" in so and "52L-x4" in so
    walk = os.path.join(data_dir, "vid4_gt", "walk")
    assert main(["eval", walk, "--model", "duf-16l", "--degradation", "bd", "--frames", "3", "--crop", "32",
                 "--window", "2"]) == 0
    so = capsys.readouterr().out
    assert "trained here" in so and "walk:" in so
    src, dst = str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")
    make_video(src, n=4, w=12, h=8)
    assert main(["upscale", src, dst, "--model", "duf-16l", "--window", "2", "--dtype", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "duf-16l" in err and "NOT the official weights" in err and "overlap 3" in err
    import av
    with av.open(dst) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (48, 32) and sum(1 for _ in c.decode(video=0)) == 4


def duf_engine(window=4):
    """A spec factory (``"test_duf_engine:duf_engine"``) for the batch worker: the tiny DUF in an Engine."""
    return Engine(tiny_duf(), window=window, overlap=0, dtype="fp32", tile=0)


@pytest.mark.parametrize("ctx", [3, 5])
def test_batch_segments_equal_whole_clip(data_dir, ctx):
    """`vsr-engine batch` for DUF: each segment runs its frames plus ``ctx`` context frames on each side through the
    worker's own `upscale_range`, and the kept outputs joined equal the whole clip's (context >= the model's radius
    3; the default context, twice the overlap, is 6+)."""
    from vsr_engine.distributed import plan_segments
    from vsr_engine.distributed.worker import upscale_range
    fr = real_clip(data_dir, n=17)
    ref = list(duf_engine().run(fr))
    got = []
    segs = plan_segments(len(fr), segment_frames=5, left=ctx, right=ctx)
    assert len(segs) >= 3
    for s in segs:
        got += list(upscale_range(duf_engine(), fr[s.ctx_start:s.ctx_end], s.start - s.ctx_start, s.frames))
    assert maxdiff(got, ref) == 0


def test_batch_worker_runs_duf_segments_to_a_complete_file(data_dir, tmp_path):
    """The whole batch path without Ray: segments of a real clip through SegmentWorker (decode range, Engine with the
    DUF, segment encoder), merged: every frame once, at the source's timestamps."""
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    av = pytest.importorskip("av")
    from distributed_helpers import FAST_ENC, video_pts
    from vsr_engine.distributed import index_video, plan_segments
    from vsr_engine.distributed.merge import merge_segments
    from vsr_engine.distributed.worker import SegmentWorker
    clip = str(tmp_path / "clip.mp4")
    with av.open(clip, "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 16, 12, "yuv420p"
        vs.codec_context.options = {"g": "4", "crf": "18"}
        for f in real_clip(data_dir, n=14, h=12, w=16):
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    spec = {"factory": "test_duf_engine:duf_engine", "threads": 1}
    ix = index_video(clip)
    src = {"width": 16, "height": 12, "fps": "25", "matrix": None, "color_range": None, "tags": {}, "rotation": 0}
    w = SegmentWorker(spec)
    files, packets = [], []
    for s in plan_segments(len(ix), segment_frames=5, left=3, right=3):
        res = w.run({"spec": spec, "path": clip, "index": ix.as_dict(), "segment": s.as_dict(), "src": src,
                     "enc": FAST_ENC, "seg_format": "mp4"})
        assert res["frames"] == s.frames
        p = str(tmp_path / f"seg{s.id}.mp4")
        with open(p, "wb") as f:
            f.write(res["data"])
        files.append(p)
        packets.append(res["packets"])
    out = str(tmp_path / "out.mp4")
    st = merge_segments(files, packets, ix.time_base, clip, out, "mp4", ix.pts, work_dir=str(tmp_path))
    assert st["frames"] == 14 and len(files) >= 2
    assert video_pts(out)[1] == video_pts(clip)[1]
    with av.open(out) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
