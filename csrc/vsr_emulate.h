// Host emulation of the small part of the CUDA execution model the csrc/ kernels use (see vsr_cuda.cuh), and of
// the warp-level matrix API (nvcuda::wmma, 16x16x16 tiles) at the end of this file.
// Test-only: tests/ops/test_cuda_build.py compiles csrc/*.cu with g++ -DVSR_EMULATE and runs the launchers on
// CPU tensors, with the CUDA threads of a block run as fibers (see below), so __syncthreads and shared memory
// behave as on a GPU. Not built into the package. The CUDA runtime is not
// called (vsr_cuda.cuh's prologue/epilogue return 0), so nothing links against libcudart.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>
#include <math.h>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __shared__
#define __shared__ static  // one block runs at a time, so a function-static array is that block's
#undef __align__
#define __align__(n) alignas(n)
#undef __launch_bounds__
#define __launch_bounds__(...)

// Each CUDA thread of a block is a fiber (ucontext) on the calling OS thread. The scheduler resumes every
// unfinished fiber in turn; a fiber runs until it finishes or reaches __syncthreads(), where it yields. One
// round therefore brings every live thread to the barrier before any passes it: barrier semantics, no locks,
// deterministic order. Blocks run one after another.
namespace vsr_emu {
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};
inline dim3 g_block, g_thread, g_block_dim, g_grid_dim;
inline ucontext_t g_sched;
inline std::vector<Fiber> g_fibers;
inline unsigned g_cur = 0;
inline std::function<void()> g_body;
inline std::vector<double> g_dyn_smem;  // double: 8-byte aligned

inline void fiber_entry() {
  g_body();
  g_fibers[g_cur].done = true;
  swapcontext(&g_fibers[g_cur].ctx, &g_sched);
}

inline void yield() { swapcontext(&g_fibers[g_cur].ctx, &g_sched); }

template <typename F> void launch(dim3 grid, dim3 block, size_t smem, F&& body) {
  g_grid_dim = grid;
  g_block_dim = block;
  g_dyn_smem.assign((smem + sizeof(double) - 1) / sizeof(double) + 1, 0.0);
  g_body = std::forward<F>(body);
  const unsigned nthreads = block.x * block.y * block.z;
  g_fibers.resize(nthreads);
  for (auto& f : g_fibers) f.stack.resize(128 * 1024);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_block = dim3(bx, by, bz);
        for (unsigned t = 0; t < nthreads; ++t) {
          Fiber& f = g_fibers[t];
          f.done = false;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack.data();
          f.ctx.uc_stack.ss_size = f.stack.size();
          f.ctx.uc_link = &g_sched;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        for (bool live = true; live;) {
          live = false;
          for (unsigned t = 0; t < nthreads; ++t) {
            if (g_fibers[t].done) continue;
            g_cur = t;
            g_thread = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            swapcontext(&g_sched, &g_fibers[t].ctx);
            live = live || !g_fibers[t].done;
          }
        }
      }
}
}  // namespace vsr_emu

#define blockIdx (vsr_emu::g_block)
#define threadIdx (vsr_emu::g_thread)
#define blockDim (vsr_emu::g_block_dim)
#define gridDim (vsr_emu::g_grid_dim)

inline void __syncthreads() { vsr_emu::yield(); }

template <typename T> T atomicAdd(T* p, T v) {  // one OS thread: a plain read-modify-write is atomic here
  T old = *p;
  *p = old + v;
  return old;
}

#define VSR_LAUNCH(kernel, grid, block, smem, stream, ...) \
  vsr_emu::launch((grid), (block), (smem), [&] { kernel(__VA_ARGS__); })
#define VSR_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(vsr_emu::g_dyn_smem.data())

// nvcuda::wmma for 16 x 16 x 16 tiles. On a GPU a fragment is spread over a warp's 32 threads in an unspecified
// layout and every call is warp-collective (all 32 threads, the same arguments). Here every thread holds the whole
// tile (as float: 16-bit operands are exactly representable) and does the whole operation, which gives the same
// result for code that uses fragments only through these calls (no per-element access). mma_sync accumulates in
// float (the hardware's fp32 accumulation; the summation order may differ).
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  float v[rows * cols];
};

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.v[r * F::cols + c] = static_cast<float>(std::is_same_v<Layout, col_major> ? p[c * ldm + r] : p[r * ldm + c]);
}

template <int M, int N, int K, typename T> void fill_fragment(fragment<accumulator, M, N, K, T>& f, float v) {
  for (float& e : f.v) e = v;
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  float out[M * N];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float s = c.v[m * N + n];
      for (int k = 0; k < K; ++k) s += a.v[m * K + k] * b.v[k * N + n];
      out[m * N + n] = s;
    }
  std::memcpy(d.v, out, sizeof(out));
}

template <int M, int N, int K, typename T>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) (layout == mem_col_major ? p[n * ldm + m] : p[m * ldm + n]) = f.v[m * N + n];
}
}  // namespace wmma
}  // namespace nvcuda
