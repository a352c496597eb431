"""Dead-leaves clips for data-free distillation (issue 25): BI-LR frames with layered motion, no data read."""
import torch

from vsr_engine.imresize import imresize_torch
from vsr_engine.training.procedural import LeafPool, dead_leaves_clips, render_leaves


def test_clips_are_the_bi_downscale_of_the_hr_render_and_move():
    hr = render_leaves(2, 3, 12, torch.Generator().manual_seed(3), leaves=60)
    lr = dead_leaves_clips(2, 3, 12, torch.Generator().manual_seed(3), leaves=60)
    assert hr.shape == (2, 3, 3, 48, 48) and lr.shape == (2, 3, 3, 12, 12)
    assert torch.equal(lr, imresize_torch(hr.flatten(0, 1), 12, 12).clamp(0, 1).view_as(lr))
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    assert (hr[:, 0] - hr[:, 2]).abs().mean() > 1e-3                  # the leaves move between frames
    # many flat regions with sharp borders: most HR pixels equal a neighbour, yet the frame is not one colour
    flat = (hr[..., 1:] == hr[..., :-1]).all(2).float().mean()
    assert 0.6 < float(flat) < 0.999


def test_leaves_move_independently_so_there_is_parallax():
    # not one rigid shift: no single integer translation maps frame 0 onto frame 2 of the HR render
    hr = render_leaves(1, 3, 16, torch.Generator().manual_seed(5), leaves=200, max_motion=2.0)[0]
    a, b = hr[0], hr[2]
    best = min(float((torch.roll(a, (dy, dx), (1, 2)) - b)[:, 12:-12, 12:-12].abs().mean())
               for dy in range(-12, 13) for dx in range(-12, 13))
    assert best > 1e-3


def test_pool_is_deterministic_and_refreshes():
    p1, p2 = (LeafPool(4, 3, 10, torch.Generator().manual_seed(7), margin=4) for _ in range(2))
    first = p1.pool.clone()
    for _ in range(4):
        x1, x2 = p1.sample(3), p2.sample(3)
        assert x1.shape == (3, 3, 3, 10, 10) and torch.equal(x1, x2)
    assert not torch.equal(first, p1.pool)                              # two of the four clips re-rendered


def test_pool_targets_follow_each_crop_flip_and_time_order():
    def up(c):   # nearest x4 commutes exactly with crops at multiples of 4, flips and time reversal
        return c.repeat_interleave(4, -1).repeat_interleave(4, -2)
    calls = []
    plain = LeafPool(4, 3, 10, torch.Generator().manual_seed(3))
    kept = LeafPool(4, 3, 10, torch.Generator().manual_seed(3), target=lambda c: calls.append(len(c)) or up(c))
    for _ in range(5):
        lr, hr = kept.sample(3)
        assert torch.equal(lr, plain.sample(3))        # the targets take nothing from the generator
        assert hr.shape == (3, 3, 3, 40, 40) and torch.equal(hr, up(lr))
    assert calls == [4, 1, 1]                           # the whole pool once, then each re-rendered clip
