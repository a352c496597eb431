// residual_cast on the CPU: one pass of the fast step's fp32 residual island (vsr_engine/fast.py, _trunk_step):
//   acc (fp32) += y (bf16, a residual block's output);  x (bf16) = acc rounded to nearest even
// which torch runs as two passes (acc.add_(y); x = acc.to(bfloat16)), re-reading the fp32 stream. Same bits:
// the add is one fp32 add of the widened bf16 value, the rounding is torch's (round to nearest even; a NaN becomes
// 0xFFFF, as torch's vectorised conversion writes it). Reference: vsr_engine/ops/residual_cast.py residual_cast_ref.
// With a low part (lo != 0, bf16, the compensated block output y + lo of vsr_engine/fast.py): acc += (y + lo), the
// inner sum in fp32 (exact for a lo that is y's rounding residual: 16 significant bits), one rounding into acc.
#include "vsr_cpu.h"

#include <cstring>

namespace {

inline uint16_t to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffffu;   // NaN: as torch's vectorised conversion
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

inline float from_bf16(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

void run(float *__restrict acc, const uint16_t *__restrict y, uint16_t *__restrict x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float v = acc[i] + from_bf16(y[i]);
        acc[i] = v;
        x[i] = to_bf16(v);
    }
}

void run_lo(float *__restrict acc, const uint16_t *__restrict y, const uint16_t *__restrict lo,
            uint16_t *__restrict x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float v = acc[i] + (from_bf16(y[i]) + from_bf16(lo[i]));
        acc[i] = v;
        x[i] = to_bf16(v);
    }
}

}  // namespace

void residual_cast_cpu(uintptr_t acc, uintptr_t y, uintptr_t lo_p, uintptr_t x, int64_t n, int threads) {
    constexpr int64_t kChunk = 1 << 16;                    // threads split whole chunks
    vsr_parallel((n + kChunk - 1) / kChunk, threads, [&](int64_t a, int64_t b) {
        const int64_t a0 = a * kChunk, hi = std::min(n, b * kChunk);
        if (lo_p == 0) {
            run(reinterpret_cast<float *>(acc) + a0, reinterpret_cast<const uint16_t *>(y) + a0,
                reinterpret_cast<uint16_t *>(x) + a0, hi - a0);
        } else {
            run_lo(reinterpret_cast<float *>(acc) + a0, reinterpret_cast<const uint16_t *>(y) + a0,
                   reinterpret_cast<const uint16_t *>(lo_p) + a0, reinterpret_cast<uint16_t *>(x) + a0, hi - a0);
        }
    });
}
