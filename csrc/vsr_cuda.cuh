// Shared by every csrc/<op>.cu: dtype dispatch, loads/stores through the accumulation type, launch macro.
//
// The same sources also compile as plain C++ with -DVSR_EMULATE (csrc/vsr_emulate.h): kernels then run on the
// CPU, one host thread per CUDA thread, so tests/ops/test_cuda_build.py can check their arithmetic and
// indexing against the references on a machine without a GPU. Kernels therefore use only what the emulator
// provides: blockIdx/threadIdx/blockDim/gridDim, __syncthreads, atomicAdd, static and dynamic shared memory
// (no warp shuffles), and every thread reaches every __syncthreads (no early return before a barrier).
//
// A third build: NVRTC (the ``cupy`` backend, vsr_engine/ops/_cupy.py, and the AOT check scripts/aot_kernels.py)
// compiles only the kernels. It defines __CUDACC_RTC__; every csrc/<op>.cu keeps its host launchers inside
// ``#if VSR_HOST`` and the cupy backend launches the kernels with the same grids from Python.
#pragma once
#if defined(__CUDACC_RTC__)
#define VSR_HOST 0
typedef long long int64_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#else
#define VSR_HOST 1
#include <stdint.h>
#endif

#if defined(__CUDACC_RTC__)
#define VSR_DYN_SMEM(type, name)                              \
  extern __shared__ __align__(16) unsigned char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#elif defined(VSR_EMULATE)
#include "vsr_emulate.h"
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define VSR_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#define VSR_DYN_SMEM(type, name)                              \
  extern __shared__ __align__(16) unsigned char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#endif

#if VSR_HOST
#include "vsr_kernels.h"
#endif

namespace vsr {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename A, typename T> __host__ __device__ __forceinline__ A ld(const T* p) {
  return static_cast<A>(*p);
}
template <typename A> __host__ __device__ __forceinline__ A ld(const __half* p) {
  return static_cast<A>(static_cast<float>(*p));
}
template <typename A> __host__ __device__ __forceinline__ A ld(const __nv_bfloat16* p) {
  return static_cast<A>(static_cast<float>(*p));
}
template <typename T, typename A> __host__ __device__ __forceinline__ T cvt(A v) { return static_cast<T>(v); }

__host__ __device__ __forceinline__ float vfloor(float v) { return floorf(v); }
__host__ __device__ __forceinline__ double vfloor(double v) { return floor(v); }
template <typename A> __host__ __device__ __forceinline__ A vmin(A a, A b) { return a < b ? a : b; }
template <typename A> __host__ __device__ __forceinline__ A vmax(A a, A b) { return a > b ? a : b; }

#if VSR_HOST
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
#endif

#if !VSR_HOST
#elif defined(VSR_EMULATE)
inline int prologue(int) { return 0; }
inline int epilogue() { return 0; }
#else
inline int prologue(int device) { return static_cast<int>(cudaSetDevice(device)); }
inline int epilogue() { return static_cast<int>(cudaGetLastError()); }
#endif

}  // namespace vsr

// Runs the statement with T bound to the element type of dtype code `code`; returns VSR_ERR_DTYPE otherwise.
#define VSR_DISPATCH(code, T, ...)                          \
  switch (code) {                                           \
    case VSR_F32: { using T = float; __VA_ARGS__; break; }  \
    case VSR_F16: { using T = __half; __VA_ARGS__; break; } \
    case VSR_BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
    case VSR_F64: { using T = double; __VA_ARGS__; break; } \
    default: return VSR_ERR_DTYPE;                          \
  }

#define VSR_TRY(expr)              \
  do {                             \
    int vsr_rc_ = (expr);          \
    if (vsr_rc_ != 0) return vsr_rc_; \
  } while (0)
