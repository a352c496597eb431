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
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace {

struct Geom {
    int64_t n, c, h, w, oh, ow, o, k, dw, pairs;
    const int32_t *idx_h, *cls_h, *idx_w, *cls_w, *order_h, *start_h;
    int64_t dh;
};

template <typename F>
void parallel(int64_t items, int threads, F fn) {
    threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
    if (threads == 1) {
        fn(0, items);
        return;
    }
    std::vector<std::thread> pool;
    int64_t per = (items + threads - 1) / threads;
    for (int t = 0; t < threads; ++t) {
        int64_t a = t * per, b = std::min(items, a + per);
        if (a < b) pool.emplace_back([=] { fn(a, b); });
    }
    for (auto &th : pool) th.join();
}

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

template <typename T>
void forward(const Geom &g, const T *feat, const T *wt, T *out, int threads) {
    const int64_t kk = g.k * g.k, pad = g.k / 2, C = g.c;
    parallel(g.n * g.oh, threads, [&](int64_t a, int64_t b) {
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
                    for (int64_t ky = 0; ky < g.k; ++ky) {
                        const int64_t yy = y + ky - pad;
                        if (yy < 0 || yy >= g.h) continue;
                        for (int64_t kx = 0; kx < g.k; ++kx) {
                            const int64_t xx = x + kx - pad;
                            if (xx < 0 || xx >= g.w) continue;
                            mul_add(acc.data(), wp + o * kk * C + (ky * g.k + kx) * C, f + (yy * g.w + xx) * C, C);
                        }
                    }
                    out[((ni * g.o + o) * g.oh + i) * g.ow + j] = sum(acc.data(), C);
                }
            }
        }
    });
}

template <typename T>
void backward_feat(const Geom &g, const T *grad, const T *wt, T *gfeat, int threads) {
    // gfeat[n, yy, xx, :] += sum_o grad[n, o, i, j] * wt[pair(i, j), o, tap, :]; frames are independent
    const int64_t kk = g.k * g.k, pad = g.k / 2, C = g.c;
    parallel(g.n, threads, [&](int64_t a, int64_t b) {
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
                        for (int64_t ky = 0; ky < g.k; ++ky) {
                            const int64_t yy = y + ky - pad;
                            if (yy < 0 || yy >= g.h) continue;
                            for (int64_t kx = 0; kx < g.k; ++kx) {
                                const int64_t xx = x + kx - pad;
                                if (xx < 0 || xx >= g.w) continue;
                                axpy(gf + (yy * g.w + xx) * C, go, wp + o * kk * C + (ky * g.k + kx) * C, C);
                            }
                        }
                    }
                }
            }
        }
    });
}

template <typename T>
void backward_wt(const Geom &g, const T *grad, const T *feat, T *gwt, int threads) {
    // gwt[pair, o, tap, :] += grad[n, o, i, j] * feat[n, yy, xx, :]; row class a owns pairs a*DW .. a*DW + DW - 1
    const int64_t kk = g.k * g.k, pad = g.k / 2, C = g.c;
    parallel(g.dh, threads, [&](int64_t a0, int64_t a1) {
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
                            for (int64_t ky = 0; ky < g.k; ++ky) {
                                const int64_t yy = y + ky - pad;
                                if (yy < 0 || yy >= g.h) continue;
                                for (int64_t kx = 0; kx < g.k; ++kx) {
                                    const int64_t xx = x + kx - pad;
                                    if (xx < 0 || xx >= g.w) continue;
                                    axpy(wp + o * kk * C + (ky * g.k + kx) * C, go, f + (yy * g.w + xx) * C, C);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

template <typename P>
const P *ptr(uintptr_t p) { return reinterpret_cast<const P *>(p); }

Geom geom(py::dict d) {
    Geom g;
    g.n = d["n"].cast<int64_t>(); g.c = d["c"].cast<int64_t>(); g.h = d["h"].cast<int64_t>();
    g.w = d["w"].cast<int64_t>(); g.oh = d["oh"].cast<int64_t>(); g.ow = d["ow"].cast<int64_t>();
    g.o = d["o"].cast<int64_t>(); g.k = d["k"].cast<int64_t>(); g.dw = d["dw"].cast<int64_t>();
    g.dh = d["dh"].cast<int64_t>(); g.pairs = g.dh * g.dw;
    g.idx_h = ptr<int32_t>(d["idx_h"].cast<uintptr_t>()); g.cls_h = ptr<int32_t>(d["cls_h"].cast<uintptr_t>());
    g.idx_w = ptr<int32_t>(d["idx_w"].cast<uintptr_t>()); g.cls_w = ptr<int32_t>(d["cls_w"].cast<uintptr_t>());
    g.order_h = ptr<int32_t>(d["order_h"].cast<uintptr_t>());
    g.start_h = ptr<int32_t>(d["start_h"].cast<uintptr_t>());
    if (g.n < 0 || g.c < 1 || g.k < 1 || g.o < 1 || g.dw < 1 || g.dh < 1) throw std::invalid_argument("meta_upscale_cpu: bad geometry");
    return g;
}

// bits: 32 or 64 (fp32 / fp64 buffers)
void run(const std::string &what, py::dict d, uintptr_t a, uintptr_t b, uintptr_t out, int bits, int threads) {
    Geom g = geom(d);
    py::gil_scoped_release nogil;
    if (bits == 32) {
        using T = float;
        if (what == "forward") forward<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else if (what == "feat") backward_feat<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else if (what == "wt") backward_wt<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else throw std::invalid_argument("meta_upscale_cpu: unknown pass " + what);
    } else if (bits == 64) {
        using T = double;
        if (what == "forward") forward<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else if (what == "feat") backward_feat<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else if (what == "wt") backward_wt<T>(g, ptr<T>(a), ptr<T>(b), reinterpret_cast<T *>(out), threads);
        else throw std::invalid_argument("meta_upscale_cpu: unknown pass " + what);
    } else {
        throw std::invalid_argument("meta_upscale_cpu: fp32 or fp64 only");
    }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "vsr_engine host kernels: meta_upscale forward / backward on the CPU";
    m.def("meta_upscale", &run, py::arg("what"), py::arg("geom"), py::arg("a"), py::arg("b"), py::arg("out"),
          py::arg("bits"), py::arg("threads"));
}
