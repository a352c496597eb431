// vsr_engine host (CPU) kernels: shared declarations. Each kernel file (csrc/<op>_cpu.cpp) defines one entry point
// taking raw buffer addresses (the Python side passes contiguous torch tensors' data_ptr()); csrc/cpu_bindings.cpp
// binds them (pybind11, no torch header). Built on first use by vsr_engine/ops/_host_kernels.py.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

// Run fn(begin, end) over [0, items) split into at most `threads` contiguous parts, each on its own std::thread
// (no OpenMP runtime next to torch's own). The split depends only on (items, threads).
template <typename F>
inline void vsr_parallel(int64_t items, int threads, F fn) {
    threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
    if (threads == 1) {
        fn(int64_t(0), items);
        return;
    }
    std::vector<std::thread> pool;
    const int64_t per = (items + threads - 1) / threads;
    for (int t = 0; t < threads; ++t) {
        const int64_t a = t * per, b = std::min(items, a + per);
        if (a < b) pool.emplace_back([=] { fn(a, b); });
    }
    for (auto &th : pool) th.join();
}

// meta_upscale (csrc/meta_upscale_cpu.cpp)
struct MetaGeom {
    int64_t n, c, h, w, oh, ow, o, k, dw, dh;
    const int32_t *idx_h, *cls_h, *idx_w, *cls_w, *order_h, *start_h;
};
void meta_upscale_cpu(const std::string &what, const MetaGeom &g, uintptr_t a, uintptr_t b, uintptr_t out, int bits,
                      int threads);

// residual_cast (csrc/residual_cast_cpu.cpp): acc += y (+ lo where lo != 0); x = bf16(acc), n elements
void residual_cast_cpu(uintptr_t acc, uintptr_t y, uintptr_t lo, uintptr_t x, int64_t n, int threads);
