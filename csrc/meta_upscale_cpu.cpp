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
// Threads: std::thread over independent work (no OpenMP runtime next to torch's own): the forward and the weight
// backward split row classes (each thread owns its classes' outputs / weights: no atomics, a fixed summation order,
// deterministic), the feature backward splits frames.
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

// The k x k neighbourhood of LR pixel (y, x) of one frame: a pointer to each tap's C values, `zero` outside
template <typename T>
inline void gather_taps(const MetaGeom &g, const T *f, const T *zero, int64_t y, int64_t x, const T **tap) {
    const int64_t pad = g.k / 2, C = g.c;
    for (int64_t ky = 0; ky < g.k; ++ky) {
        const int64_t yy = y + ky - pad;
        for (int64_t kx = 0; kx < g.k; ++kx) {
            const int64_t xx = x + kx - pad;
            tap[ky * g.k + kx] = (yy < 0 || yy >= g.h || xx < 0 || xx >= g.w) ? zero : f + (yy * g.w + xx) * C;
        }
    }
}

// All three passes walk the output class-major (row class, then its rows, then frames, then columns): the weights
// of one row class (DW pairs x O x k*k x C, ~0.3 MB for a 32-channel head at x3.7) stay in cache while every
// output pixel that uses them is done; in output-row order each row reloaded its class's weights from memory.

// One output pixel's O values from its k*k tap pointers, with C and O fixed at compile time (the heads here: 32
// channels, RGB): the O x C partial sums stay in registers across the taps.
template <typename T, int CC, int OO>
inline void pixel_fixed(const T *const *tap, const T *wp, int64_t kk, T *res) {
    T acc[OO][CC] = {};
    for (int64_t t = 0; t < kk; ++t) {
        const T *f = tap[t];
        for (int o = 0; o < OO; ++o) {
            const T *wv = wp + (o * kk + t) * CC;
#pragma omp simd
            for (int c = 0; c < CC; ++c) acc[o][c] += wv[c] * f[c];
        }
    }
    for (int o = 0; o < OO; ++o) res[o] = sum(acc[o], CC);
}

template <typename T>
void forward(const MetaGeom &g, const T *feat, const T *wt, T *out, int threads) {
    // out[n, o, i, j] = sum_{tap, c} wt[pair(i, j), o, tap, c] * feat[n, tap pixel, c]; threads own row classes
    const int64_t kk = g.k * g.k, C = g.c;
    const bool fixed = (C == 32 && g.o == 3);
    const std::vector<T> zero(C, T(0));
    vsr_parallel(g.dh, threads, [&](int64_t a0, int64_t a1) {
        std::vector<T> acc(C);
        std::vector<const T *> tap(kk);
        for (int64_t cls = a0; cls < a1; ++cls) {
            for (int64_t r = g.start_h[cls]; r < g.start_h[cls + 1]; ++r) {
                const int64_t i = g.order_h[r], y = g.idx_h[i];
                for (int64_t ni = 0; ni < g.n; ++ni) {
                    const T *f = feat + ni * g.h * g.w * C;
                    for (int64_t j = 0; j < g.ow; ++j) {
                        gather_taps(g, f, zero.data(), y, static_cast<int64_t>(g.idx_w[j]), tap.data());
                        const T *wp = wt + (cls * g.dw + g.cls_w[j]) * g.o * kk * C;
                        if (fixed) {
                            T res[3];
                            pixel_fixed<T, 32, 3>(tap.data(), wp, kk, res);
                            for (int64_t o = 0; o < 3; ++o) out[((ni * g.o + o) * g.oh + i) * g.ow + j] = res[o];
                            continue;
                        }
                        for (int64_t o = 0; o < g.o; ++o) {
                            std::fill(acc.begin(), acc.end(), T(0));
                            for (int64_t t = 0; t < kk; ++t) mul_add(acc.data(), wp + (o * kk + t) * C, tap[t], C);
                            out[((ni * g.o + o) * g.oh + i) * g.ow + j] = sum(acc.data(), C);
                        }
                    }
                }
            }
        }
    });
}

template <typename T>
void backward_feat(const MetaGeom &g, const T *grad, const T *wt, T *gfeat, int threads) {
    // gfeat[n, yy, xx, :] += sum_o grad[n, o, i, j] * wt[pair(i, j), o, tap, :]; threads own frames (gfeat is
    // zeroed by the caller)
    const int64_t kk = g.k * g.k, C = g.c;
    const bool fixed = (C == 32 && g.o == 3);
    vsr_parallel(g.n, threads, [&](int64_t n0, int64_t n1) {
        std::vector<T> sink(C);                  // taps outside the image accumulate here, unread
        std::vector<const T *> tap(kk);
        for (int64_t cls = 0; cls < g.dh; ++cls) {
            for (int64_t r = g.start_h[cls]; r < g.start_h[cls + 1]; ++r) {
                const int64_t i = g.order_h[r], y = g.idx_h[i];
                for (int64_t ni = n0; ni < n1; ++ni) {
                    T *gf = gfeat + ni * g.h * g.w * C;
                    for (int64_t j = 0; j < g.ow; ++j) {
                        const int64_t x = g.idx_w[j];
                        const T *wp = wt + (cls * g.dw + g.cls_w[j]) * g.o * kk * C;
                        if (fixed) {             // all three outputs' weights of a tap in one pass over its C values
                            const T g0 = grad[((ni * 3 + 0) * g.oh + i) * g.ow + j];
                            const T g1 = grad[((ni * 3 + 1) * g.oh + i) * g.ow + j];
                            const T g2 = grad[((ni * 3 + 2) * g.oh + i) * g.ow + j];
                            gather_taps(g, static_cast<const T *>(gf), static_cast<const T *>(sink.data()), y, x,
                                        tap.data());
                            for (int64_t t = 0; t < kk; ++t) {
                                T *d = const_cast<T *>(tap[t]);
                                const T *w0 = wp + t * 32, *w1 = wp + (kk + t) * 32, *w2 = wp + (2 * kk + t) * 32;
#pragma omp simd
                                for (int c = 0; c < 32; ++c) d[c] += g0 * w0[c] + g1 * w1[c] + g2 * w2[c];
                            }
                            continue;
                        }
                        for (int64_t o = 0; o < g.o; ++o) {
                            const T go = grad[((ni * g.o + o) * g.oh + i) * g.ow + j];
                            if (go == T(0)) continue;
                            each_tap(g, y, x, [&](int64_t t, int64_t p) { axpy(gf + p * C, go, wp + (o * kk + t) * C, C); });
                        }
                    }
                }
            }
        }
    });
}

template <typename T>
void backward_wt(const MetaGeom &g, const T *grad, const T *feat, T *gwt, int threads) {
    // gwt[pair, o, tap, :] = sum grad[n, o, i, j] * feat[n, tap pixel, :]; row class a owns pairs a*DW ..
    // a*DW + DW - 1 (zeroed here, then summed in a fixed order: deterministic, no atomics)
    const int64_t kk = g.k * g.k, C = g.c;
    const bool fixed = (C == 32 && g.o == 3);
    const std::vector<T> zero(C, T(0));
    vsr_parallel(g.dh, threads, [&](int64_t a0, int64_t a1) {
        std::vector<const T *> tap(kk);
        for (int64_t cls = a0; cls < a1; ++cls) {
            T *block = gwt + cls * g.dw * g.o * kk * C;
            std::fill(block, block + g.dw * g.o * kk * C, T(0));
            for (int64_t r = g.start_h[cls]; r < g.start_h[cls + 1]; ++r) {
                const int64_t i = g.order_h[r];
                const int64_t y = g.idx_h[i];
                for (int64_t ni = 0; ni < g.n; ++ni) {
                    const T *f = feat + ni * g.h * g.w * C;
                    for (int64_t j = 0; j < g.ow; ++j) {
                        const int64_t x = g.idx_w[j];
                        T *wp = block + g.cls_w[j] * g.o * kk * C;
                        if (fixed) {             // each tap's C values loaded once for the three outputs
                            const T g0 = grad[((ni * 3 + 0) * g.oh + i) * g.ow + j];
                            const T g1 = grad[((ni * 3 + 1) * g.oh + i) * g.ow + j];
                            const T g2 = grad[((ni * 3 + 2) * g.oh + i) * g.ow + j];
                            gather_taps(g, f, zero.data(), y, x, tap.data());
                            for (int64_t t = 0; t < kk; ++t) {
                                const T *fv = tap[t];
                                T *w0 = wp + t * 32, *w1 = wp + (kk + t) * 32, *w2 = wp + (2 * kk + t) * 32;
#pragma omp simd
                                for (int c = 0; c < 32; ++c) {
                                    w0[c] += g0 * fv[c];
                                    w1[c] += g1 * fv[c];
                                    w2[c] += g2 * fv[c];
                                }
                            }
                            continue;
                        }
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
