"""An independent NumPy (float64) transcription of the official DUF TensorFlow graph, for tests only.

Written from github yhjo09/VSR-DUF (nets.py FR_16L/28L/52L, utils.py BatchNorm/Conv3D/DynFilter3D/
depth_to_space_3D, test.py G and its frame padding) op by op, in TF's NHWC layout, with the weights as TF holds
them (names ``G/<scope>/<var>``, conv kernels [kt, kh, kw, in, out]). It shares nothing with vsr_engine.
"""
from __future__ import annotations

import numpy as np

T_IN = 7
STP = [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]]
SP = [[0, 0], [0, 0], [1, 1], [1, 1], [0, 0]]
# L -> (blocks padded in time, blocks shrinking time, growth, conv2 input channels), as in nets.py
NETS = {16: (3, 3, 32, 256), 28: (9, 3, 16, 256), 52: (21, 3, 16, 448)}


def official_param_shapes(L: int, R: int) -> dict:
    """{TF variable name (without ':0'): shape} of the generator G, from nets.py / utils.py."""
    n_keep, n_shrink, G, c2 = NETS[L]
    shp = {}

    def conv(name, k):
        shp[f"G/{name}/W"] = tuple(k)
        shp[f"G/{name}/b"] = (k[-1],)

    def bnorm(name, c):
        for v in ("beta", "gamma", "moving_mean", "moving_variance"):
            shp[f"G/{name}/{v}"] = (c,)

    conv("conv1", [1, 3, 3, 3, 64])
    F = 64
    for r in range(n_keep + n_shrink):
        bnorm(f"Rbn{r + 1}a", F)
        conv(f"Rconv{r + 1}a", [1, 1, 1, F, F])
        bnorm(f"Rbn{r + 1}b", F)
        conv(f"Rconv{r + 1}b", [3, 3, 3, F, G])
        F += G
    assert F == c2
    bnorm("fbn1", F)
    conv("conv2", [1, 3, 3, c2, 256])
    conv("rconv1", [1, 1, 1, 256, 256])
    conv("rconv2", [1, 1, 1, 256, 3 * R * R])
    conv("fconv1", [1, 1, 1, 256, 512])
    conv("fconv2", [1, 1, 1, 512, 25 * R * R])
    return shp


def random_params(L: int, R: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    p = {}
    for name, s in official_param_shapes(L, R).items():
        if name.endswith("/W"):
            fan_in = int(np.prod(s[:-1]))
            p[name] = (rng.standard_normal(s) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif name.endswith("moving_variance"):
            p[name] = rng.uniform(0.5, 2.0, s).astype(np.float32)
        elif name.endswith("gamma"):
            p[name] = rng.uniform(0.5, 1.5, s).astype(np.float32)
        else:
            p[name] = (rng.standard_normal(s) * 0.1).astype(np.float32)
    return p


def tf_mangle(name: str) -> str:
    """The inverse of utils.LoadParams' parsing: '_' -> '__', then '/' -> '_'."""
    return name.replace("_", "__").replace("/", "_")


def localexpand() -> np.ndarray:
    """DynFilter3D's constant: np.eye(25) reshaped to (5, 5, 1, 25)."""
    return np.reshape(np.eye(25, 25), (5, 5, 1, 25)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ TF ops
def tf_pad(x, pads):
    return np.pad(x, pads, mode="constant")


def conv3d_valid(x, W):
    """tf.nn.conv3d(x, W, [1]*5, 'VALID'): x [B, T, H, W, C], W [kt, kh, kw, C, O]."""
    kt, kh, kw = W.shape[:3]
    B, T, H, Wd, _ = x.shape
    To, Ho, Wo = T - kt + 1, H - kh + 1, Wd - kw + 1
    out = np.zeros((B, To, Ho, Wo, W.shape[4]))
    for a in range(kt):
        for b in range(kh):
            for c in range(kw):
                out += np.tensordot(x[:, a:a + To, b:b + Ho, c:c + Wo, :], W[a, b, c], axes=([4], [0]))
    return out


def conv2d_same(x, W):
    """tf.nn.conv2d(x, W, [1,1,1,1], 'SAME') for an odd kernel: x [B, H, W, C], W [kh, kw, C, O]."""
    kh, kw = W.shape[:2]
    xp = np.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    H, Wd = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (W.shape[3],))
    for b in range(kh):
        for c in range(kw):
            out += np.tensordot(xp[:, b:b + H, c:c + Wd, :], W[b, c], axes=([3], [0]))
    return out


def batchnorm_inference(x, p, name):
    mean, var = p[f"G/{name}/moving_mean"], p[f"G/{name}/moving_variance"]
    beta, gamma = p[f"G/{name}/beta"], p[f"G/{name}/gamma"]
    return (x - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * gamma + beta


def Conv3D(x, p, name):
    return conv3d_valid(x, p[f"G/{name}/W"].astype(np.float64)) + p[f"G/{name}/b"]


def relu(x):
    return np.maximum(x, 0)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def depth_to_space(x, r):
    """tf.depth_to_space (NHWC): out[b, h*r + i, w*r + j, c] = in[b, h, w, (i*r + j)*C + c]."""
    B, H, W, D = x.shape
    C = D // (r * r)
    return x.reshape(B, H, W, r, r, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H * r, W * r, C)


# ------------------------------------------------------------------------------------------------ the nets
def FR(x, p, L, uf):
    n_keep, n_shrink, G, _ = NETS[L]
    x = Conv3D(tf_pad(x, SP), p, "conv1")
    for r in range(n_keep):
        t = relu(batchnorm_inference(x, p, f"Rbn{r + 1}a"))
        t = Conv3D(t, p, f"Rconv{r + 1}a")
        t = relu(batchnorm_inference(t, p, f"Rbn{r + 1}b"))
        t = Conv3D(tf_pad(t, STP), p, f"Rconv{r + 1}b")
        x = np.concatenate([x, t], 4)
    for r in range(n_keep, n_keep + n_shrink):
        t = relu(batchnorm_inference(x, p, f"Rbn{r + 1}a"))
        t = Conv3D(t, p, f"Rconv{r + 1}a")
        t = relu(batchnorm_inference(t, p, f"Rbn{r + 1}b"))
        t = Conv3D(tf_pad(t, SP), p, f"Rconv{r + 1}b")
        x = np.concatenate([x[:, 1:-1], t], 4)
    x = relu(batchnorm_inference(x, p, "fbn1"))
    x = relu(Conv3D(tf_pad(x, SP), p, "conv2"))
    r = relu(Conv3D(x, p, "rconv1"))
    r = Conv3D(r, p, "rconv2")
    f = relu(Conv3D(x, p, "fconv1"))
    f = Conv3D(f, p, "fconv2")
    B, T, H, W, _ = f.shape
    f = softmax(f.reshape(B, T, H, W, 25, uf * uf), axis=4)
    return f, r


def DynFilter3D(x, F):
    """x [B, 1, H, W] (one colour of the centre frame), F [B, H, W, 25, R*R] -> [B, H, W, R*R]."""
    x = np.transpose(x, (0, 2, 3, 1))
    xl = conv2d_same(x, localexpand().astype(np.float64))        # [B, H, W, 25]
    return np.matmul(xl[:, :, :, None, :], F)[:, :, :, 0, :]


def G(x, p, L, R):
    """test.py G: x [B, 7, H, W, 3] -> [B, 1, R*H, R*W, 3]."""
    Fx, Rx = FR(x, p, L, R)
    xc = []
    for c in range(3):
        t = DynFilter3D(x[:, T_IN // 2:T_IN // 2 + 1, :, :, c], Fx[:, 0])
        xc.append(depth_to_space(t, R))
    out = np.concatenate(xc, axis=3)[:, None]
    B, T = Rx.shape[:2]
    rx = depth_to_space(Rx.reshape(B * T, *Rx.shape[2:]), R)
    return out + rx.reshape(B, T, *rx.shape[1:])


def upscale_clip(frames, p, L, R):
    """test.py, 'L' inputs: frames [T, H, W, 3] in [0, 1] -> [T, R*H, R*W, 3] (before clipping): the clip padded
    with T_IN//2 zero frames on each side, one output per frame from its 7-frame window."""
    fp = np.pad(frames.astype(np.float64), ((T_IN // 2, T_IN // 2), (0, 0), (0, 0), (0, 0)), mode="constant")
    return np.stack([G(fp[i:i + T_IN][None], p, L, R)[0, 0] for i in range(frames.shape[0])])
