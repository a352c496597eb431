"""``vsr-engine compare IN OUT``: before/after pictures and a per-frame quality plot.

* grid PNG: one row per chosen frame, columns input (nearest-upscaled), bicubic (MATLAB ``imresize``), the model's
  output and, with ``--gt``, the ground truth; ``--crop x,y,w,h`` (output pixels) zooms in;
* plot PNG: per-frame PSNR (Y) and LPIPS against ``--gt``, or NIQE of the output and of bicubic without one.
  Needs matplotlib (an optional dependency: ``pip install matplotlib``).

IN and OUT are videos or folders of frames (OUT as written by ``vsr-engine upscale``).
"""
from __future__ import annotations

import argparse
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

__all__ = ["register", "frames", "make_grid", "make_plot", "per_frame"]


def frames(path: str) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or an image folder, in order."""
    from .video import VsrInputError
    if os.path.isdir(path):
        from .data import list_images, read_rgb
        for f in list_images(path):
            yield read_rgb(f)
        return
    if not os.path.isfile(path):
        raise VsrInputError(f"{path}: no such file or folder")
    import av
    with av.open(path) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def _parse_ints(text: str, n: Optional[int] = None, what: str = "") -> List[int]:
    from .video import VsrInputError
    try:
        v = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise VsrInputError(f"{what}: expected comma-separated integers (got {text!r})") from None
    if n is not None and len(v) != n:
        raise VsrInputError(f"{what}: expected {n} numbers (got {text!r})")
    return v


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    w = 6 * len(text) + 6
    d.rectangle([0, 0, w, 12], fill=(0, 0, 0))
    d.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(im)


def _tiles(lr: np.ndarray, out: np.ndarray, gt: Optional[np.ndarray], crop) -> List[tuple]:
    from .imresize import imresize
    oh, ow = out.shape[:2]
    sy, sx = oh / lr.shape[0], ow / lr.shape[1]
    near = lr[(np.arange(oh) / sy).astype(int)[:, None], (np.arange(ow) / sx).astype(int)[None, :]]
    bic = imresize(lr, output_shape=(oh, ow))
    cols = [("input (nearest)", near), ("bicubic", bic), ("model", out)]
    if gt is not None:
        cols.append(("ground truth", gt[:oh, :ow]))
    if crop:
        x, y, w, h = crop
        cols = [(n, c[y:y + h, x:x + w]) for n, c in cols]
    return cols


def make_grid(lr_frames: Sequence[np.ndarray], out_frames: Sequence[np.ndarray], indices: Sequence[int],
              gt_frames: Optional[Sequence[np.ndarray]] = None, crop=None, pad: int = 4) -> np.ndarray:
    """The grid image (uint8 RGB): a row per index, columns input / bicubic / model [/ GT]."""
    rows = []
    for i in indices:
        tiles = _tiles(lr_frames[i], out_frames[i], gt_frames[i] if gt_frames is not None else None, crop)
        row = [_label(t, f"{name} #{i}") for name, t in tiles]
        h = max(t.shape[0] for t in row)
        gap = np.full((h, pad, 3), 255, np.uint8)
        parts = []
        for t in row:
            parts += [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0)), constant_values=255), gap]
        rows.append(np.concatenate(parts[:-1], axis=1))
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, pad), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)[:-pad]


def per_frame(lr_frames, out_frames, gt_frames=None, metrics: Optional[Sequence[str]] = None) -> dict:
    """{metric: {"model": [...], "bicubic": [...]}} per frame: PSNR-Y and LPIPS with GT, NIQE without."""
    from .imresize import imresize
    from .metrics import lpips, niqe, psnr_y
    metrics = metrics or (["psnr", "lpips"] if gt_frames is not None else ["niqe"])
    res = {m: {"model": [], "bicubic": []} for m in metrics}
    for i, (lr, out) in enumerate(zip(lr_frames, out_frames)):
        bic = imresize(lr, output_shape=out.shape[:2])
        gt = gt_frames[i][:out.shape[0], :out.shape[1]] if gt_frames is not None else None
        for name, img in (("model", out), ("bicubic", bic)):
            if "psnr" in res:
                res["psnr"][name].append(psnr_y(img, gt))
            if "lpips" in res:
                res["lpips"][name].append(lpips(img, gt))
            if "niqe" in res:
                res["niqe"][name].append(niqe(img))
    return res


def make_plot(values: dict, path: str, title: str = "") -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .video import VsrError
        raise VsrError("the per-frame plot needs matplotlib, which is not installed: pip install matplotlib "
                       "(or pass --no-plot)") from None
    names = {"psnr": "PSNR-Y (dB, higher is better)", "lpips": "LPIPS (lower is better)",
             "niqe": "NIQE (lower is better)"}
    fig, axes = plt.subplots(len(values), 1, figsize=(6.4, 2.2 * len(values)), sharex=True, squeeze=False)
    for ax, (m, series) in zip(axes[:, 0], values.items()):
        for name, ys in series.items():
            ax.plot(range(len(ys)), ys, label=f"{name} (mean {np.mean(ys):.3f})", lw=1.2)
        ax.set_ylabel(names.get(m, m), fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cmd_compare(args) -> int:
    from PIL import Image
    from .video import VsrInputError
    lr = list(frames(args.input))
    out = list(frames(args.output))
    gt = list(frames(args.gt)) if args.gt else None
    if not lr or len(lr) != len(out) or (gt is not None and len(gt) < len(out)):
        raise VsrInputError(f"frame counts differ: input {len(lr)}, output {len(out)}"
                            + (f", gt {len(gt)}" if gt is not None else ""))
    idx = _parse_ints(args.frames, what="--frames") if args.frames else [0, len(lr) // 2, len(lr) - 1]
    bad = [i for i in idx if not 0 <= i < len(lr)]
    if bad:
        raise VsrInputError(f"--frames: {bad} outside 0..{len(lr) - 1}")
    crop = _parse_ints(args.crop, 4, "--crop") if args.crop else None
    if crop and (crop[2] < 1 or crop[3] < 1):
        raise VsrInputError("--crop: width and height must be at least 1")
    stem = args.prefix or os.path.splitext(args.output.rstrip("/"))[0]
    grid_path = stem + "_grid.png"
    os.makedirs(os.path.dirname(os.path.abspath(grid_path)), exist_ok=True)
    Image.fromarray(make_grid(lr, out, idx, gt, crop)).save(grid_path, optimize=True)
    print(f"wrote {grid_path}")
    if not args.no_plot:
        vals = per_frame(lr, out, gt)
        p = make_plot(vals, stem + "_plot.png", title=os.path.basename(args.output))
        print(f"wrote {p}: " + ", ".join(f"{m} model {np.mean(v['model']):.3f} / bicubic {np.mean(v['bicubic']):.3f}"
                                        for m, v in vals.items()))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="before/after grid (input, bicubic, model[, GT]) and per-frame plot",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    p.add_argument("input", metavar="IN", help="the low-resolution input (video or frame folder)")
    p.add_argument("output", metavar="OUT", help="the upscaled result of IN (video or frame folder)")
    p.add_argument("--frames", default=None, help="frame indices, e.g. 0,30,59 (default first, middle, last)")
    p.add_argument("--crop", default=None, metavar="X,Y,W,H", help="crop of the output (output pixels)")
    p.add_argument("--gt", default=None, help="ground-truth frames (video or folder): PSNR/LPIPS plot and a GT column")
    p.add_argument("--prefix", default=None, help="write PREFIX_grid.png and PREFIX_plot.png (default: next to OUT)")
    p.add_argument("--no-plot", action="store_true", help="only the grid (no matplotlib needed)")
    p.set_defaults(func=cmd_compare)
    return p
