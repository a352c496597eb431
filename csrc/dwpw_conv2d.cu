// dwpw_conv2d: fused depthwise k x k + pointwise 1 x 1 conv (+ bias, activation, residual).
//
// Forward: a block owns kTileP pixels of one image and up to kMaxOB output channels. For each chunk of kChunkC
// input channels it computes the depthwise result into shared memory, then every thread adds pw[o, c] * y[c, p]
// into its (o, p) accumulators, which live in shared memory across chunks. The C x H x W intermediate never
// reaches global memory. With `grad` set, the epilogue writes g * act'(z) (the backward's first step) instead.
// Backward helpers: dw forward into an acc buffer, d/dx (transposed depthwise) and per-split dW partial sums
// (fixed split count, summed by the caller: deterministic).
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kTileP = 32;
constexpr int kChunkC = 32;
constexpr int kMaxOB = 128;

template <typename T, typename A>
__device__ __forceinline__ A depthwise(const T* __restrict__ x, const T* __restrict__ dw_w,
                                       const T* __restrict__ dw_b, int64_t n, int64_t c, int64_t C, int64_t h,
                                       int64_t w, int64_t H, int64_t W, int k) {
  const T* xc = x + (n * C + c) * H * W;
  const T* wc = dw_w + c * k * k;
  const int pad = k / 2;
  A y = static_cast<A>(0);
  for (int ky = 0; ky < k; ++ky) {
    const int64_t hh = h + ky - pad;
    if (hh < 0 || hh >= H) continue;
    for (int kx = 0; kx < k; ++kx) {
      const int64_t ww = w + kx - pad;
      if (ww < 0 || ww >= W) continue;
      y += vsr::ld<A>(xc + hh * W + ww) * vsr::ld<A>(wc + ky * k + kx);
    }
  }
  if (dw_b != nullptr) y += vsr::ld<A>(dw_b + c);
  return y;
}

template <typename T, typename OutT>
__global__ void __launch_bounds__(kThreads) fused_kernel(const T* __restrict__ x, const T* __restrict__ dw_w,
                                                         const T* __restrict__ dw_b, const T* __restrict__ pw_w,
                                                         const T* __restrict__ pw_b, const T* __restrict__ res,
                                                         const T* __restrict__ grad, OutT* __restrict__ out,
                                                         int64_t C, int64_t O, int64_t H, int64_t W, int k, int act,
                                                         typename vsr::Acc<T>::type slope) {
  using A = typename vsr::Acc<T>::type;
  VSR_DYN_SMEM(A, smem);
  const int64_t HW = H * W;
  const int64_t n = blockIdx.z;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTileP;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kMaxOB;
  const int64_t ob = vsr::vmin<int64_t>(kMaxOB, O - o0);
  A* ys = smem;                     // [kChunkC][kTileP]
  A* acc = smem + kChunkC * kTileP;  // [ob][kTileP]
  for (int64_t i = threadIdx.x; i < ob * kTileP; i += blockDim.x) acc[i] = static_cast<A>(0);
  for (int64_t c0 = 0; c0 < C; c0 += kChunkC) {
    const int64_t cn = vsr::vmin<int64_t>(kChunkC, C - c0);
    __syncthreads();  // previous chunk's ys fully consumed (and acc zeroed)
    for (int64_t i = threadIdx.x; i < kChunkC * kTileP; i += blockDim.x) {
      const int64_t cl = i / kTileP, p = p0 + i % kTileP;
      ys[i] = (cl < cn && p < HW) ? depthwise<T, A>(x, dw_w, dw_b, n, c0 + cl, C, p / W, p % W, H, W, k)
                                  : static_cast<A>(0);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < ob * kTileP; i += blockDim.x) {
      const int64_t o = o0 + i / kTileP, pl = i % kTileP;
      const T* wrow = pw_w + o * C + c0;
      A a = acc[i];
      for (int64_t cl = 0; cl < cn; ++cl) a += vsr::ld<A>(wrow + cl) * ys[cl * kTileP + pl];
      acc[i] = a;
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < ob * kTileP; i += blockDim.x) {
    const int64_t o = o0 + i / kTileP, p = p0 + i % kTileP;
    if (p >= HW) continue;
    A z = acc[i];
    if (pw_b != nullptr) z += vsr::ld<A>(pw_b + o);
    const int64_t off = (n * O + o) * HW + p;
    const A zero = static_cast<A>(0);
    if (grad != nullptr) {
      A g = vsr::ld<A>(grad + off);
      if (act == 1) g = z > zero ? g : zero;
      else if (act == 2) g = z > zero ? g : g * slope;
      out[off] = vsr::cvt<OutT>(g);
    } else {
      if (act == 1) z = z > zero ? z : zero;
      else if (act == 2) z = z > zero ? z : z * slope;
      if (res != nullptr) z += vsr::ld<A>(res + off);
      out[off] = vsr::cvt<OutT>(z);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dw_kernel(const T* __restrict__ x, const T* __restrict__ dw_w,
                                                      const T* __restrict__ dw_b,
                                                      typename vsr::Acc<T>::type* __restrict__ y, int64_t N,
                                                      int64_t C, int64_t H, int64_t W, int k) {
  using A = typename vsr::Acc<T>::type;
  const int64_t total = N * C * H * W;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t p = i % (H * W), nc = i / (H * W);
    y[i] = depthwise<T, A>(x, dw_w, dw_b, nc / C, nc % C, C, p / W, p % W, H, W, k);
  }
}

// gx[n, c, h, w] = sum_t gy[n, c, h - dy_t, w - dx_t] * w[c, t]
template <typename T>
__global__ void __launch_bounds__(kThreads) dw_bwd_x_kernel(const typename vsr::Acc<T>::type* __restrict__ gy,
                                                            const T* __restrict__ dw_w, T* __restrict__ gx,
                                                            int64_t N, int64_t C, int64_t H, int64_t W, int k) {
  using A = typename vsr::Acc<T>::type;
  const int64_t total = N * C * H * W;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int pad = k / 2;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t p = i % (H * W), nc = i / (H * W), c = nc % C, h = p / W, w = p % W;
    const A* g = gy + nc * H * W;
    A s = static_cast<A>(0);
    for (int ky = 0; ky < k; ++ky) {
      const int64_t hh = h - (ky - pad);
      if (hh < 0 || hh >= H) continue;
      for (int kx = 0; kx < k; ++kx) {
        const int64_t ww = w - (kx - pad);
        if (ww < 0 || ww >= W) continue;
        s += g[hh * W + ww] * vsr::ld<A>(dw_w + (c * k + ky) * k + kx);
      }
    }
    gx[i] = vsr::cvt<T>(s);
  }
}

constexpr int kMaxTaps = 49;  // k <= 7
constexpr int kWThreads = 64;  // dW kernel: every thread keeps k*k sums; one shared [taps][threads] reduction

// part[c, s, t] = sum over split s's share of (n, p) of gy[n, c, p] * x[n, c, p + off_t]; grid (C, splits)
template <typename T>
__global__ void __launch_bounds__(kWThreads) dw_bwd_w_kernel(const typename vsr::Acc<T>::type* __restrict__ gy,
                                                             const T* __restrict__ x,
                                                             typename vsr::Acc<T>::type* __restrict__ part,
                                                             int64_t N, int64_t C, int64_t H, int64_t W, int k) {
  using A = typename vsr::Acc<T>::type;
  VSR_DYN_SMEM(A, red);  // [taps][kWThreads]
  const int64_t c = blockIdx.x, s = blockIdx.y, splits = gridDim.y;
  const int taps = k * k, pad = k / 2;
  A acc[kMaxTaps];
  for (int t = 0; t < taps; ++t) acc[t] = static_cast<A>(0);
  const int64_t HW = H * W, total = N * HW;
  for (int64_t i = s * blockDim.x + threadIdx.x; i < total; i += splits * blockDim.x) {
    const int64_t n = i / HW, p = i % HW, h = p / W, w = p % W;
    const A g = gy[(n * C + c) * HW + p];
    const T* xc = x + (n * C + c) * HW;
    for (int t = 0; t < taps; ++t) {
      const int64_t hh = h + t / k - pad, ww = w + t % k - pad;
      if (hh >= 0 && hh < H && ww >= 0 && ww < W) acc[t] += g * vsr::ld<A>(xc + hh * W + ww);
    }
  }
  for (int t = 0; t < taps; ++t) red[t * kWThreads + threadIdx.x] = acc[t];
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < taps) {
    A sum = static_cast<A>(0);
    for (int j = 0; j < kWThreads; ++j) sum += red[threadIdx.x * kWThreads + j];
    part[(c * splits + s) * taps + threadIdx.x] = sum;
  }
}

}  // namespace

#if VSR_HOST
namespace {

unsigned grid_stride_blocks(int64_t total) {
  return static_cast<unsigned>(vsr::vmax<int64_t>(1, vsr::vmin<int64_t>(vsr::cdiv(total, kThreads), 65535)));
}

}  // namespace

extern "C" int vsr_dwpw_fwd(const void* x, const void* dw_w, const void* dw_b, const void* pw_w, const void* pw_b,
                            const void* res, const void* grad, void* out, int64_t N, int64_t C, int64_t O,
                            int64_t H, int64_t W, int k, int act, double slope, int dtype, int device,
                            void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (k < 1 || k % 2 == 0 || N > 65535) return VSR_ERR_ARG;
  if (N * O * H * W == 0) return 0;
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(H * W, kTileP)), static_cast<unsigned>(vsr::cdiv(O, kMaxOB)),
                  static_cast<unsigned>(N));
  VSR_DISPATCH(dtype, T, {
    using A = typename vsr::Acc<T>::type;
    const size_t smem = sizeof(A) * (kChunkC + vsr::vmin<int64_t>(O, kMaxOB)) * kTileP;
    if (grad != nullptr) {
      auto kernel = fused_kernel<T, A>;
      VSR_LAUNCH(kernel, grid, dim3(kThreads), smem, stream, static_cast<const T*>(x), static_cast<const T*>(dw_w),
                 static_cast<const T*>(dw_b), static_cast<const T*>(pw_w), static_cast<const T*>(pw_b), nullptr,
                 static_cast<const T*>(grad), static_cast<A*>(out), C, O, H, W, k, act, static_cast<A>(slope));
    } else {
      auto kernel = fused_kernel<T, T>;
      VSR_LAUNCH(kernel, grid, dim3(kThreads), smem, stream, static_cast<const T*>(x), static_cast<const T*>(dw_w),
                 static_cast<const T*>(dw_b), static_cast<const T*>(pw_w), static_cast<const T*>(pw_b),
                 static_cast<const T*>(res), nullptr, static_cast<T*>(out), C, O, H, W, k, act,
                 static_cast<A>(slope));
    }
  });
  return vsr::epilogue();
}

extern "C" int vsr_dw_fwd(const void* x, const void* dw_w, const void* dw_b, void* y, int64_t N, int64_t C,
                          int64_t H, int64_t W, int k, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  const int64_t total = N * C * H * W;
  if (total == 0) return 0;
  VSR_DISPATCH(dtype, T, {
    using A = typename vsr::Acc<T>::type;
    auto kernel = dw_kernel<T>;
    VSR_LAUNCH(kernel, dim3(grid_stride_blocks(total)), dim3(kThreads), 0, stream, static_cast<const T*>(x),
               static_cast<const T*>(dw_w), static_cast<const T*>(dw_b), static_cast<A*>(y), N, C, H, W, k);
  });
  return vsr::epilogue();
}

extern "C" int vsr_dw_bwd(const void* gy, const void* x, const void* dw_w, void* gx, void* part, int64_t N,
                          int64_t C, int64_t H, int64_t W, int k, int splits, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (k < 1 || k * k > kMaxTaps || splits < 1 || splits > 65535 || C > 2147483647) return VSR_ERR_ARG;
  const int64_t total = N * C * H * W;
  VSR_DISPATCH(dtype, T, {
    using A = typename vsr::Acc<T>::type;
    if (gx != nullptr && total > 0) {
      auto kernel = dw_bwd_x_kernel<T>;
      VSR_LAUNCH(kernel, dim3(grid_stride_blocks(total)), dim3(kThreads), 0, stream, static_cast<const A*>(gy),
                 static_cast<const T*>(dw_w), static_cast<T*>(gx), N, C, H, W, k);
    }
    if (part != nullptr && C > 0) {
      auto kernel = dw_bwd_w_kernel<T>;
      VSR_LAUNCH(kernel, dim3(static_cast<unsigned>(C), static_cast<unsigned>(splits)), dim3(kWThreads),
                 sizeof(A) * k * k * kWThreads, stream,
                 static_cast<const A*>(gy), static_cast<const T*>(x), static_cast<A*>(part), N, C, H, W, k);
    }
  });
  return vsr::epilogue();
}
#endif  // VSR_HOST
