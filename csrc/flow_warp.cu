// flow_warp: bilinear backward warp by a per-pixel flow in pixels (BasicSR / mmagic flow_warp semantics).
// Sampling point X = (x + dx) * sx + ox in fp32 (fp64 for fp64 data), the exact grid_sample reading of the
// official normalisation: align_corners -> sx = (W-1)/max(W-1,1), ox = 0; else sx = W/max(W-1,1), ox = -0.5.
// 'zeros': out-of-image corners contribute 0; 'border': X clamps to [0, W-1] and its gradient is 0 there.
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kChanChunk = 16;  // channels per block in the forward (more blocks for small N*H*W)

template <typename A> struct Corners {
  int64_t i00, i01, i10, i11;
  bool m00, m01, m10, m11;
  A wx0, wx1, wy0, wy1, mx, my;
};

template <typename F, typename A>
__device__ __forceinline__ Corners<A> corners(const F* flow, int64_t n, int64_t p, int64_t H, int64_t W,
                                              int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc, bool border,
                                              bool align) {
  const int64_t h = p / W, w = p % W;
  const F* f = flow + n * sfn + h * sfh + w * sfw;
  const A fx = vsr::ld<A>(f), fy = vsr::ld<A>(f + sfc);
  const A wm1 = static_cast<A>(W - 1), hm1 = static_cast<A>(H - 1), one = static_cast<A>(1);
  A sx, sy, X, Y;
  if (align) {
    sx = wm1 / vsr::vmax(wm1, one);
    sy = hm1 / vsr::vmax(hm1, one);
    X = (static_cast<A>(w) + fx) * sx;
    Y = (static_cast<A>(h) + fy) * sy;
  } else {
    sx = (wm1 + one) / vsr::vmax(wm1, one);
    sy = (hm1 + one) / vsr::vmax(hm1, one);
    X = (static_cast<A>(w) + fx) * sx - static_cast<A>(0.5);
    Y = (static_cast<A>(h) + fy) * sy - static_cast<A>(0.5);
  }
  Corners<A> c;
  const A zero = static_cast<A>(0);
  if (border) {
    c.mx = (X > zero && X < wm1) ? sx : zero;
    c.my = (Y > zero && Y < hm1) ? sy : zero;
    X = vsr::vmin(vsr::vmax(X, zero), wm1);
    Y = vsr::vmin(vsr::vmax(Y, zero), hm1);
  } else {
    c.mx = sx;
    c.my = sy;
    X = vsr::vmin(vsr::vmax(X, static_cast<A>(-2)), wm1 + static_cast<A>(2));
    Y = vsr::vmin(vsr::vmax(Y, static_cast<A>(-2)), hm1 + static_cast<A>(2));
  }
  const A x0f = vsr::vfloor(X), y0f = vsr::vfloor(Y);
  c.wx1 = X - x0f;
  c.wx0 = (x0f + one) - X;
  c.wy1 = Y - y0f;
  c.wy0 = (y0f + one) - Y;
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f), x1 = x0 + 1, y1 = y0 + 1;
  const bool vx0 = x0 >= 0 && x0 < W, vx1 = x1 >= 0 && x1 < W, vy0 = y0 >= 0 && y0 < H, vy1 = y1 >= 0 && y1 < H;
  c.m00 = vy0 && vx0;
  c.m01 = vy0 && vx1;
  c.m10 = vy1 && vx0;
  c.m11 = vy1 && vx1;
  c.i00 = y0 * W + x0;
  c.i01 = y0 * W + x1;
  c.i10 = y1 * W + x0;
  c.i11 = y1 * W + x1;
  return c;
}

template <typename T, typename F>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const F* __restrict__ flow,
                                                       T* __restrict__ out, int64_t C, int64_t H, int64_t W,
                                                       int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc,
                                                       bool border, bool align, int64_t chunks) {
  using A = typename vsr::Acc<T>::type;
  const int64_t HW = H * W;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y / chunks, c0 = (blockIdx.y % chunks) * kChanChunk;
  if (p >= HW) return;
  const Corners<A> k = corners<F, A>(flow, n, p, H, W, sfn, sfh, sfw, sfc, border, align);
  const A w00 = k.wx0 * k.wy0, w01 = k.wx1 * k.wy0, w10 = k.wx0 * k.wy1, w11 = k.wx1 * k.wy1;
  const int64_t c1 = vsr::vmin<int64_t>(C, c0 + kChanChunk);
  const A zero = static_cast<A>(0);
  for (int64_t c = c0; c < c1; ++c) {
    const T* xc = x + (n * C + c) * HW;
    const A v00 = k.m00 ? vsr::ld<A>(xc + k.i00) : zero;
    const A v01 = k.m01 ? vsr::ld<A>(xc + k.i01) : zero;
    const A v10 = k.m10 ? vsr::ld<A>(xc + k.i10) : zero;
    const A v11 = k.m11 ? vsr::ld<A>(xc + k.i11) : zero;
    out[(n * C + c) * HW + p] = vsr::cvt<T>(v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11);
  }
}

// One thread per output pixel, all channels: d/dflow is reduced in registers, d/dx scattered with atomics.
template <typename T, typename F>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* __restrict__ x, const F* __restrict__ flow,
                                                       const T* __restrict__ grad,
                                                       typename vsr::Acc<T>::type* __restrict__ gx,
                                                       F* __restrict__ gflow, int64_t C, int64_t H, int64_t W,
                                                       int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc,
                                                       bool border, bool align) {
  using A = typename vsr::Acc<T>::type;
  const int64_t HW = H * W;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (p >= HW) return;
  const Corners<A> k = corners<F, A>(flow, n, p, H, W, sfn, sfh, sfw, sfc, border, align);
  const A zero = static_cast<A>(0);
  A gfx = zero, gfy = zero;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = (n * C + c) * HW;
    const A g = vsr::ld<A>(grad + off + p);
    if (gx != nullptr) {
      if (k.m00) atomicAdd(gx + off + k.i00, g * (k.wx0 * k.wy0));
      if (k.m01) atomicAdd(gx + off + k.i01, g * (k.wx1 * k.wy0));
      if (k.m10) atomicAdd(gx + off + k.i10, g * (k.wx0 * k.wy1));
      if (k.m11) atomicAdd(gx + off + k.i11, g * (k.wx1 * k.wy1));
    }
    if (gflow != nullptr) {
      const T* xc = x + off;
      const A v00 = k.m00 ? vsr::ld<A>(xc + k.i00) : zero;
      const A v01 = k.m01 ? vsr::ld<A>(xc + k.i01) : zero;
      const A v10 = k.m10 ? vsr::ld<A>(xc + k.i10) : zero;
      const A v11 = k.m11 ? vsr::ld<A>(xc + k.i11) : zero;
      gfx += g * ((v01 - v00) * k.wy0 + (v11 - v10) * k.wy1);
      gfy += g * ((v10 - v00) * k.wx0 + (v11 - v01) * k.wx1);
    }
  }
  if (gflow != nullptr) {
    gflow[(n * HW + p) * 2] = vsr::cvt<F>(gfx * k.mx);
    gflow[(n * HW + p) * 2 + 1] = vsr::cvt<F>(gfy * k.my);
  }
}

}  // namespace

#if VSR_HOST
namespace {

template <typename T, typename F>
int fwd(const void* x, const void* flow, void* out, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sfn,
        int64_t sfh, int64_t sfw, int64_t sfc, int border, int align, void* stream) {
  const int64_t chunks = vsr::cdiv(C, kChanChunk);
  if (N * chunks > 65535) return VSR_ERR_ARG;
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(H * W, kThreads)), static_cast<unsigned>(N * chunks));
  auto kernel = fwd_kernel<T, F>;
  VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const F*>(flow),
             static_cast<T*>(out), C, H, W, sfn, sfh, sfw, sfc, border != 0, align != 0, chunks);
  return vsr::epilogue();
}

template <typename T, typename F>
int bwd(const void* x, const void* flow, const void* grad, void* gx, void* gflow, int64_t N, int64_t C, int64_t H,
        int64_t W, int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc, int border, int align, void* stream) {
  using A = typename vsr::Acc<T>::type;
  if (N > 65535) return VSR_ERR_ARG;
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(H * W, kThreads)), static_cast<unsigned>(N));
  auto kernel = bwd_kernel<T, F>;
  VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const F*>(flow),
             static_cast<const T*>(grad), static_cast<A*>(gx), static_cast<F*>(gflow), C, H, W, sfn, sfh, sfw,
             sfc, border != 0, align != 0);
  return vsr::epilogue();
}

}  // namespace

extern "C" int vsr_flow_warp_fwd(const void* x, const void* flow, void* out, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc, int border,
                                 int align, int dtype, int flow_dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (N * C * H * W == 0) return 0;
  VSR_DISPATCH(dtype, T, VSR_DISPATCH(flow_dtype, F,
      return fwd<T, F>(x, flow, out, N, C, H, W, sfn, sfh, sfw, sfc, border, align, stream)));
  return 0;
}

extern "C" int vsr_flow_warp_bwd(const void* x, const void* flow, const void* grad, void* gx, void* gflow,
                                 int64_t N, int64_t C, int64_t H, int64_t W, int64_t sfn, int64_t sfh, int64_t sfw,
                                 int64_t sfc, int border, int align, int dtype, int flow_dtype, int device,
                                 void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (N * H * W == 0) return 0;
  VSR_DISPATCH(dtype, T, VSR_DISPATCH(flow_dtype, F,
      return bwd<T, F>(x, flow, grad, gx, gflow, N, C, H, W, sfn, sfh, sfw, sfc, border, align, stream)));
  return 0;
}
#endif  // VSR_HOST
