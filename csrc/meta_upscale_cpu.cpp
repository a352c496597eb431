// meta_upscale on the CPU: Meta-SR's per-pixel weights applied to the k x k neighbourhood of each output pixel's
// LR source, forward and backward, fp32 / fp64, threaded. The host kernel of vsr_engine/ops/meta_upscale.py (its
// reference: meta_upscale_ref; its GPU kernels: csrc/meta_upscale.cu and the Triton ones).
//
// Layouts (all contiguous, the Python side prepares them):
//   feat   (N, H, W, C)            channels-last, so each tap's C values are one contiguous run (vector loads)
//   wt     (pairs, O, k*k, C)      the weights of one (row class, column class) offset pair, tap-major
//   out    (N, O, OH, OW)
//   idx_h / cls_h (OH), idx_w / cls_w (OW): int32 LR source row / column and offset class of each output row /
//   column; order_h / start_h: output rows sorted by class and the class starts (the weight backward's split).
// Threads: std::thread over independent work (no OpenMP runtime next to torch's own): the forward and the
// feature backward split frames x output rows / frames, the weight backward splits row classes (each thread owns
// the weights of its classes: no atomics, a fixed summation order, deterministic).
#include "vsr_cpu.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {


template <typename T>
inline void mul_add(T *__restrict y, const T *__restrict a, const T *__restrict b, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] += a[i] * b[i];
}

template <typename T>
inline T sum(const T *__restrict a, int64_t n) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += a[i];
    return s;
}

template <typename T>
inline void axpy(T *__restrict y, T a, const T *__restrict x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// fn(tap, LR pixel) for every tap of the k x k neighbourhood of LR pixel (y, x) that lies inside the image
template <typename F>
inline void each_tap(const MetaGeom &g, int64_t y, int64_t x, F fn) {
    const int64_t pad = g.k / 2;
    for (int64_t ky = 0; ky < g.k; ++ky) {
        const int64_t yy = y + ky - pad;
        if (yy < 0 || yy >= g.h) continue;
        for (int64_t kx = 0; kx < g.k; ++kx) {
            const int64_t xx = x + kx - pad;
            if (xx >= 0 && xx < g.w) fn(ky * g.k + kx, yy * g.w + xx);
        }
    }
}

template <typename T>
void forward(const MetaGeom &g, const T *feat, const T *wt, T *out, int threads) {
    const int64_t kk = g.k * g.k, C = g.c;
    vsr_parallel(g.n * g.oh, threads, [&](int64_t a, int64_t b) {
        std::vector<T> acc(C);                   // one output channel's products, summed over the taps, then reduced
        for (int64_t row = a; row < b; ++row) {
            const int64_t ni = row / g.oh, i = row % g.oh;
            const int64_t y = g.idx_h[i];
            const T *f = feat + ni * g.h * g.w * C;
            for (int64_t j = 0; j < g.ow; ++j) {
                const int64_t x = g.idx_w[j];
                const T *wp = wt + (static_cast<int64_t>(g.cls_h[i]) * g.dw + g.cls_w[j]) * g.o * kk * C;
                for (int64_t o = 0; o < g.o; ++o) {
                    std::fill(acc.begin(), acc.end(), T(0));
                    each_tap(g, y, x, [&](int64_t t, int64_t p) { mul_add(acc.data(), wp + (o * kk + t) * C, f + p * C, C); });
                    out[((ni * g.o + o) * g.oh + i) * g.ow + j] = sum(acc.data(), C);
                }
            }
        }
    });
}

template <typename T>
void backward_feat(const MetaGeom &g, const T *grad, const T *wt, T *gfeat, int threads) {
    // gfeat[n, yy, xx, :] += sum_o grad[n, o, i, j] * wt[pair(i, j), o, tap, :]; frames are independent
    const int64_t kk = g.k * g.k, C = g.c;
    vsr_parallel(g.n, threads, [&](int64_t a, int64_t b) {
        for (int64_t ni = a; ni < b; ++ni) {
            T *gf = gfeat + ni * g.h * g.w * C;
            for (int64_t i = 0; i < g.oh; ++i) {
                const int64_t y = g.idx_h[i];
                for (int64_t j = 0; j < g.ow; ++j) {
                    const int64_t x = g.idx_w[j];
                    const T *wp = wt + (static_cast<int64_t>(g.cls_h[i]) * g.dw + g.cls_w[j]) * g.o * kk * C;
                    for (int64_t o = 0; o < g.o; ++o) {
                        const T go = grad[((ni * g.o + o) * g.oh + i) * g.ow + j];
                        if (go == T(0)) continue;
                        each_tap(g, y, x, [&](int64_t t, int64_t p) { axpy(gf + p * C, go, wp + (o * kk + t) * C, C); });
                    }
                }
            }
        }
    });
}

template <typename T>
void backward_wt(const MetaGeom &g, const T *grad, const T *feat, T *gwt, int threads) {
    // gwt[pair, o, tap, :] += grad[n, o, i, j] * feat[n, yy, xx, :]; row class a owns pairs a*DW .. a*DW + DW - 1
    const int64_t kk = g.k * g.k, C = g.c;
    vsr_parallel(g.dh, threads, [&](int64_t a0, int64_t a1) {
        for (int64_t cls = a0; cls < a1; ++cls) {
            for (int64_t r = g.start_h[cls]; r < g.start_h[cls + 1]; ++r) {
                const int64_t i = g.order_h[r];
                const int64_t y = g.idx_h[i];
                for (int64_t ni = 0; ni < g.n; ++ni) {
                    const T *f = feat + ni * g.h * g.w * C;
                    for (int64_t j = 0; j < g.ow; ++j) {
                        const int64_t x = g.idx_w[j];
                        T *wp = gwt + (cls * g.dw + g.cls_w[j]) * g.o * kk * C;
                        for (int64_t o = 0; o < g.o; ++o) {
                            const T go = grad[((ni * g.o + o) * g.oh + i) * g.ow + j];
                            if (go == T(0)) continue;
                            each_tap(g, y, x, [&](int64_t t, int64_t p) { axpy(wp + (o * kk + t) * C, go, f + p * C, C); });
                        }
                    }
                }
            }
        }
    });
}

}  // namespace


void meta_upscale_cpu(const std::string &what, const MetaGeom &geom, uintptr_t a, uintptr_t b, uintptr_t out,
                      int bits, int threads) {
    const MetaGeom &g = geom;
    if (g.n < 0 || g.c < 1 || g.k < 1 || g.o < 1 || g.dw < 1 || g.dh < 1)
        throw std::invalid_argument("meta_upscale_cpu: bad geometry");
    auto cp = [](uintptr_t p) { return reinterpret_cast<const void *>(p); };
    if (bits == 32) {
        using T = float;
        if (what == "forward") forward<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else if (what == "feat") backward_feat<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else if (what == "wt") backward_wt<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else throw std::invalid_argument("meta_upscale_cpu: unknown pass " + what);
    } else if (bits == 64) {
        using T = double;
        if (what == "forward") forward<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else if (what == "feat") backward_feat<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else if (what == "wt") backward_wt<T>(g, (const T *)cp(a), (const T *)cp(b), reinterpret_cast<T *>(out), threads);
        else throw std::invalid_argument("meta_upscale_cpu: unknown pass " + what);
    } else {
        throw std::invalid_argument("meta_upscale_cpu: fp32 or fp64 only");
    }
}
