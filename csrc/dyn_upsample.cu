// dyn_upsample: DUF's dynamic upsampling (vsr_engine/ops/dyn_upsample.py has the contract). With RR = r*r,
//   out[n, c, h*r + i, w*r + j] = sum_t softmax_t(f[n, t*RR + k, h, w]) * x[n, c, h + t/5 - 2, w + t%5 - 2]
//                                 + res[n, k*C + c, h, w],      k = i*r + j, x = 0 outside the frame.
// Forward: one thread per (low-res pixel, sub-pixel k): 25 logits -> softmax -> every channel.
// Backward: one thread per low-res pixel walks the sub-pixels (softmax recomputed): d/dres, d/df and
// a[n, c, t, p] = sum_k g[c, k] w[t, k] (acc buffer, written by its own thread only); then d/dx gathers the 25 a's
// that read each pixel. No atomics: the gradients are bit-reproducible.
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kTaps = 25;

__host__ __device__ __forceinline__ float vexp(float v) { return expf(v); }
__host__ __device__ __forceinline__ double vexp(double v) { return exp(v); }

// softmax over the 25 taps of sub-pixel k at pixel p (channel t*RR + k); w in the accumulation type
template <typename T, typename A>
__device__ __forceinline__ void softmax_taps(const T* f, int64_t n, int64_t k, int64_t p, int64_t RR, int64_t HW,
                                             A* w) {
  const T* fp = f + (n * kTaps * RR + k) * HW + p;
  A m = vsr::ld<A>(fp);
#pragma unroll
  for (int t = 0; t < kTaps; ++t) {
    w[t] = vsr::ld<A>(fp + t * RR * HW);
    m = vsr::vmax(m, w[t]);
  }
  A s = static_cast<A>(0);
#pragma unroll
  for (int t = 0; t < kTaps; ++t) {
    w[t] = vexp(w[t] - m);
    s += w[t];
  }
  const A inv = static_cast<A>(1) / s;
#pragma unroll
  for (int t = 0; t < kTaps; ++t) w[t] *= inv;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const T* __restrict__ f,
                                                       const T* __restrict__ res, T* __restrict__ out, int64_t C,
                                                       int64_t H, int64_t W, int r) {
  using A = typename vsr::Acc<T>::type;
  const int64_t HW = H * W, RR = static_cast<int64_t>(r) * r;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t k = blockIdx.y, n = blockIdx.z;
  if (p >= HW) return;
  A w[kTaps];
  softmax_taps<T, A>(f, n, k, p, RR, HW, w);
  const int64_t h = p / W, wc = p - h * W;
  const int64_t oy = h * r + k / r, ox = wc * r + k % r;
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = x + (n * C + c) * HW;
    A y = vsr::ld<A>(res + (n * RR * C + k * C + c) * HW + p);
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      const int64_t sy = h + t / 5 - 2, sx = wc + t % 5 - 2;
      if (sy >= 0 && sy < H && sx >= 0 && sx < W) y += w[t] * vsr::ld<A>(xc + sy * W + sx);
    }
    out[(n * C + c) * HW * RR + oy * W * r + ox] = vsr::cvt<T>(y);
  }
}

// gf / gres (data dtype) and a (acc, (N, C, 25, H, W)) may each be null
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* __restrict__ x, const T* __restrict__ f,
                                                       const T* __restrict__ grad, T* __restrict__ gf,
                                                       T* __restrict__ gres,
                                                       typename vsr::Acc<T>::type* __restrict__ a, int64_t C,
                                                       int64_t H, int64_t W, int r) {
  using A = typename vsr::Acc<T>::type;
  const int64_t HW = H * W, RR = static_cast<int64_t>(r) * r;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (p >= HW) return;
  const int64_t h = p / W, wc = p - h * W;
  for (int64_t k = 0; k < RR; ++k) {
    A w[kTaps], gw[kTaps];
    if (gf != nullptr || a != nullptr) softmax_taps<T, A>(f, n, k, p, RR, HW, w);
#pragma unroll
    for (int t = 0; t < kTaps; ++t) gw[t] = static_cast<A>(0);
    const int64_t oy = h * r + k / r, ox = wc * r + k % r;
    for (int64_t c = 0; c < C; ++c) {
      const A g = vsr::ld<A>(grad + (n * C + c) * HW * RR + oy * W * r + ox);
      if (gres != nullptr) gres[(n * RR * C + k * C + c) * HW + p] = vsr::cvt<T>(g);
      if (gf != nullptr) {
        const T* xc = x + (n * C + c) * HW;
#pragma unroll
        for (int t = 0; t < kTaps; ++t) {
          const int64_t sy = h + t / 5 - 2, sx = wc + t % 5 - 2;
          if (sy >= 0 && sy < H && sx >= 0 && sx < W) gw[t] += g * vsr::ld<A>(xc + sy * W + sx);
        }
      }
      if (a != nullptr) {
        A* ac = a + (n * C + c) * kTaps * HW + p;
#pragma unroll
        for (int t = 0; t < kTaps; ++t) ac[t * HW] = (k == 0 ? static_cast<A>(0) : ac[t * HW]) + g * w[t];
      }
    }
    if (gf != nullptr) {
      A s = static_cast<A>(0);
#pragma unroll
      for (int t = 0; t < kTaps; ++t) s += w[t] * gw[t];
      T* gfp = gf + (n * kTaps * RR + k) * HW + p;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) gfp[t * RR * HW] = vsr::cvt<T>(w[t] * (gw[t] - s));
    }
  }
}

// gx[n, c, q] = sum_t a[n, c, t, q - (t/5 - 2, t%5 - 2)] over the neighbours inside the frame
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_x_kernel(const typename vsr::Acc<T>::type* __restrict__ a,
                                                         T* __restrict__ gx, int64_t C, int64_t H, int64_t W) {
  using A = typename vsr::Acc<T>::type;
  const int64_t HW = H * W;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nc = blockIdx.y;
  if (q >= HW) return;
  const int64_t qy = q / W, qx = q - qy * W;
  const A* ac = a + nc * kTaps * HW;
  A s = static_cast<A>(0);
#pragma unroll
  for (int t = 0; t < kTaps; ++t) {
    const int64_t py = qy - t / 5 + 2, px = qx - t % 5 + 2;
    if (py >= 0 && py < H && px >= 0 && px < W) s += ac[t * HW + py * W + px];
  }
  gx[nc * HW + q] = vsr::cvt<T>(s);
}

}  // namespace

#if VSR_HOST
namespace {

template <typename T>
int fwd(const void* x, const void* f, const void* res, void* out, int64_t N, int64_t C, int64_t H, int64_t W, int r,
        void* stream) {
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(H * W, kThreads)), static_cast<unsigned>(r * r),
                  static_cast<unsigned>(N));
  auto kernel = fwd_kernel<T>;
  VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(f),
             static_cast<const T*>(res), static_cast<T*>(out), C, H, W, r);
  return vsr::epilogue();
}

template <typename T>
int bwd(const void* x, const void* f, const void* grad, void* gx, void* gf, void* gres, void* a, int64_t N, int64_t C,
        int64_t H, int64_t W, int r, void* stream) {
  using A = typename vsr::Acc<T>::type;
  const unsigned bx = static_cast<unsigned>(vsr::cdiv(H * W, kThreads));
  auto kernel = bwd_kernel<T>;
  VSR_LAUNCH(kernel, dim3(bx, static_cast<unsigned>(N)), dim3(kThreads), 0, stream, static_cast<const T*>(x),
             static_cast<const T*>(f), static_cast<const T*>(grad), static_cast<T*>(gf), static_cast<T*>(gres),
             static_cast<A*>(gx != nullptr ? a : nullptr), C, H, W, r);
  if (gx != nullptr) {
    auto kx = bwd_x_kernel<T>;
    VSR_LAUNCH(kx, dim3(bx, static_cast<unsigned>(N * C)), dim3(kThreads), 0, stream, static_cast<const A*>(a),
               static_cast<T*>(gx), C, H, W);
  }
  return vsr::epilogue();
}

}  // namespace

extern "C" int vsr_dyn_upsample_fwd(const void* x, const void* f, const void* res, void* out, int64_t N, int64_t C,
                                    int64_t H, int64_t W, int r, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (r < 1 || N > 65535) return VSR_ERR_ARG;
  if (N * C * H * W == 0) return 0;
  VSR_DISPATCH(dtype, T, return fwd<T>(x, f, res, out, N, C, H, W, r, stream));
  return 0;
}

extern "C" int vsr_dyn_upsample_bwd(const void* x, const void* f, const void* grad, void* gx, void* gf, void* gres,
                                    void* a, int64_t N, int64_t C, int64_t H, int64_t W, int r, int dtype, int device,
                                    void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (r < 1 || N > 65535 || N * C > 65535 || (gx != nullptr && a == nullptr)) return VSR_ERR_ARG;
  if (N * C * H * W == 0) return 0;
  VSR_DISPATCH(dtype, T, return bwd<T>(x, f, grad, gx, gf, gres, a, N, C, H, W, r, stream));
  return 0;
}
#endif  // VSR_HOST
