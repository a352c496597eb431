// meta_upscale: Meta-SR's Meta-Upscale, the gather-dot part. The weight-prediction MLP has already run once per
// distinct (row offset, column offset) pair (Python side); wt holds (pairs, O, C*k*k) weights.
//   out[n, o, i, j] = sum_{c, ky, kx} wt[pair(i, j), o, (c*k + ky)*k + kx] * feat[n, c, idx_h[i]+ky-k/2, idx_w[j]+kx-k/2]
// (zero padding, no bias). Backward: d/dfeat scattered with atomics (one thread per output pixel); d/dwt reduced
// per pair: a block per (pair, slice of kThreads weight indices) walks the pair's pixels, no atomics.
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kOChunk = 4;  // output channels accumulated together in registers

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ feat,
                                                       const typename vsr::Acc<T>::type* __restrict__ wt,
                                                       const int32_t* __restrict__ idx_h,
                                                       const int32_t* __restrict__ cls_h,
                                                       const int32_t* __restrict__ idx_w,
                                                       const int32_t* __restrict__ cls_w, T* __restrict__ out,
                                                       int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                                       int64_t DW, int O, int k) {
  using A = typename vsr::Acc<T>::type;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (pix >= OH * OW) return;
  const int64_t i = pix / OW, j = pix % OW, pr = idx_h[i], qc = idx_w[j];
  const int64_t KT = C * k * k, pad = k / 2;
  const A* wp = wt + (static_cast<int64_t>(cls_h[i]) * DW + cls_w[j]) * O * KT;
  const T* fn = feat + n * C * H * W;
  for (int o0 = 0; o0 < O; o0 += kOChunk) {
    const int on = O - o0 < kOChunk ? O - o0 : kOChunk;
    A acc[kOChunk];
#pragma unroll
    for (int q = 0; q < kOChunk; ++q) acc[q] = static_cast<A>(0);
    for (int64_t c = 0; c < C; ++c) {
      for (int t = 0; t < k * k; ++t) {
        const int64_t hh = pr + t / k - pad, ww = qc + t % k - pad;
        if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
        const A f = vsr::ld<A>(fn + (c * H + hh) * W + ww);
        const int64_t kk = c * k * k + t;
#pragma unroll
        for (int q = 0; q < kOChunk; ++q)  // constant trip count: acc stays in registers
          if (q < on) acc[q] += wp[(o0 + q) * KT + kk] * f;
      }
    }
#pragma unroll
    for (int q = 0; q < kOChunk; ++q)
      if (q < on) out[((n * O + o0 + q) * OH + i) * OW + j] = vsr::cvt<T>(acc[q]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_feat_kernel(const T* __restrict__ grad,
                                                            const typename vsr::Acc<T>::type* __restrict__ wt,
                                                            const int32_t* __restrict__ idx_h,
                                                            const int32_t* __restrict__ cls_h,
                                                            const int32_t* __restrict__ idx_w,
                                                            const int32_t* __restrict__ cls_w,
                                                            typename vsr::Acc<T>::type* __restrict__ gfeat, int64_t C,
                                                            int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t DW,
                                                            int O, int k) {
  using A = typename vsr::Acc<T>::type;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (pix >= OH * OW) return;
  const int64_t i = pix / OW, j = pix % OW, pr = idx_h[i], qc = idx_w[j];
  const int64_t KT = C * k * k, pad = k / 2;
  const A* wp = wt + (static_cast<int64_t>(cls_h[i]) * DW + cls_w[j]) * O * KT;
  A* gn = gfeat + n * C * H * W;
  for (int64_t c = 0; c < C; ++c) {
    for (int t = 0; t < k * k; ++t) {
      const int64_t hh = pr + t / k - pad, ww = qc + t % k - pad;
      if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
      const int64_t kk = c * k * k + t;
      A s = static_cast<A>(0);
      for (int o = 0; o < O; ++o) s += wp[o * KT + kk] * vsr::ld<A>(grad + ((n * O + o) * OH + i) * OW + j);
      atomicAdd(gn + (c * H + hh) * W + ww, s);
    }
  }
}

// grid (pairs, cdiv(KT, kThreads)); thread = one weight index kk, all O, summed over the pair's pixels and n.
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_wt_kernel(const T* __restrict__ grad, const T* __restrict__ feat,
                                                          const int32_t* __restrict__ idx_h,
                                                          const int32_t* __restrict__ order_h,
                                                          const int32_t* __restrict__ start_h,
                                                          const int32_t* __restrict__ idx_w,
                                                          const int32_t* __restrict__ order_w,
                                                          const int32_t* __restrict__ start_w,
                                                          typename vsr::Acc<T>::type* __restrict__ gwt, int64_t N,
                                                          int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                                          int64_t DW, int O, int k) {
  using A = typename vsr::Acc<T>::type;
  const int64_t pair = blockIdx.x, a = pair / DW, b = pair % DW;
  const int64_t KT = C * k * k, pad = k / 2;
  const int64_t kk = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (kk >= KT) return;
  const int64_t c = kk / (k * k), dy = (kk % (k * k)) / k - pad, dx = kk % k - pad;
  const int64_t rs = start_h[a], re = start_h[a + 1], cs = start_w[b], ce = start_w[b + 1];
  for (int o0 = 0; o0 < O; o0 += kOChunk) {
    const int on = O - o0 < kOChunk ? O - o0 : kOChunk;
    A acc[kOChunk];
#pragma unroll
    for (int q = 0; q < kOChunk; ++q) acc[q] = static_cast<A>(0);
    for (int64_t n = 0; n < N; ++n) {
      const T* fc = feat + (n * C + c) * H * W;
      for (int64_t ri = rs; ri < re; ++ri) {
        const int64_t i = order_h[ri], hh = idx_h[i] + dy;
        if (hh < 0 || hh >= H) continue;
        // two-level sum (a row, then the rows): the rounding error grows with rows + columns, not their product
        // (one running sum over a class's ~1e4 pixels was 2-6x less accurate than PyTorch's fp32 reference)
        A row[kOChunk];
#pragma unroll
        for (int q = 0; q < kOChunk; ++q) row[q] = static_cast<A>(0);
        for (int64_t ci = cs; ci < ce; ++ci) {
          const int64_t j = order_w[ci], ww = idx_w[j] + dx;
          if (ww < 0 || ww >= W) continue;
          const A f = vsr::ld<A>(fc + hh * W + ww);
#pragma unroll
          for (int q = 0; q < kOChunk; ++q)  // constant trip count: row / acc stay in registers
            if (q < on) row[q] += vsr::ld<A>(grad + ((n * O + o0 + q) * OH + i) * OW + j) * f;
        }
#pragma unroll
        for (int q = 0; q < kOChunk; ++q) acc[q] += row[q];
      }
    }
#pragma unroll
    for (int q = 0; q < kOChunk; ++q)
      if (q < on) gwt[(pair * O + o0 + q) * KT + kk] = acc[q];
  }
}

}  // namespace

#if VSR_HOST

extern "C" int vsr_meta_upscale_fwd(const void* feat, const void* wt, const int32_t* idx_h, const int32_t* cls_h,
                                    const int32_t* idx_w, const int32_t* cls_w, void* out, int64_t N, int64_t C,
                                    int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t DW, int O, int k,
                                    int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (k < 1 || k % 2 == 0 || O < 1 || N > 65535) return VSR_ERR_ARG;
  if (N * OH * OW == 0) return 0;
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(OH * OW, kThreads)), static_cast<unsigned>(N));
  VSR_DISPATCH(dtype, T, {
    using A = typename vsr::Acc<T>::type;
    auto kernel = fwd_kernel<T>;
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(feat), static_cast<const A*>(wt),
               idx_h, cls_h, idx_w, cls_w, static_cast<T*>(out), C, H, W, OH, OW, DW, O, k);
  });
  return vsr::epilogue();
}

extern "C" int vsr_meta_upscale_bwd(const void* grad, const void* feat, const void* wt, const int32_t* idx_h,
                                    const int32_t* cls_h, const int32_t* order_h, const int32_t* start_h,
                                    const int32_t* idx_w, const int32_t* cls_w, const int32_t* order_w,
                                    const int32_t* start_w, void* gfeat, void* gwt, int64_t N, int64_t C, int64_t H,
                                    int64_t W, int64_t OH, int64_t OW, int64_t DH, int64_t DW, int O, int k,
                                    int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (k < 1 || k % 2 == 0 || O < 1 || N > 65535) return VSR_ERR_ARG;
  const int64_t KT = C * k * k;
  VSR_DISPATCH(dtype, T, {
    using A = typename vsr::Acc<T>::type;
    if (gfeat != nullptr && N * OH * OW > 0) {
      auto kernel = bwd_feat_kernel<T>;
      const dim3 grid(static_cast<unsigned>(vsr::cdiv(OH * OW, kThreads)), static_cast<unsigned>(N));
      VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(grad), static_cast<const A*>(wt),
                 idx_h, cls_h, idx_w, cls_w, static_cast<A*>(gfeat), C, H, W, OH, OW, DW, O, k);
    }
    if (gwt != nullptr && DH * DW > 0 && KT > 0) {
      if (vsr::cdiv(KT, kThreads) > 65535) return VSR_ERR_ARG;
      auto kernel = bwd_wt_kernel<T>;
      const dim3 grid(static_cast<unsigned>(DH * DW), static_cast<unsigned>(vsr::cdiv(KT, kThreads)));
      VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(grad), static_cast<const T*>(feat),
                 idx_h, order_h, start_h, idx_w, order_w, start_w, static_cast<A*>(gwt), N, C, H, W, OH, OW, DW, O,
                 k);
    }
  });
  return vsr::epilogue();
}
#endif  // VSR_HOST
