// pixel_shuffle: out[n, c, h*r+i, w*r+j] = act(in[n, c*r*r + i*r + j, h, w] + bias[c*r*r + i*r + j]).
// Forward walks the output (coalesced stores), backward walks the input (each input gradient written once).
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxY = 65535;  // planes go on grid-y, launched in pieces

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const T* __restrict__ bias,
                                                       T* __restrict__ out, int64_t plane0, int64_t C, int64_t H,
                                                       int64_t W, int r, bool act,
                                                       typename vsr::Acc<T>::type slope) {
  using A = typename vsr::Acc<T>::type;
  const int64_t nc = plane0 + blockIdx.y;  // output plane n * C + c
  const int64_t OW = W * r, plane = H * r * OW;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= plane) return;
  const int64_t oh = q / OW, ow = q % OW;
  const int64_t k = (oh % r) * r + ow % r;
  A v = vsr::ld<A>(x + (nc * r * r + k) * H * W + (oh / r) * W + ow / r);
  if (bias != nullptr) v += vsr::ld<A>(bias + (nc % C) * r * r + k);
  if (act) v = v > static_cast<A>(0) ? v : v * slope;
  out[nc * plane + q] = vsr::cvt<T>(v);
}

template <typename T, typename G>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                                       const T* __restrict__ bias, G* __restrict__ gx,
                                                       int64_t plane0, int64_t C, int64_t H, int64_t W, int r,
                                                       bool act, typename vsr::Acc<T>::type slope) {
  using A = typename vsr::Acc<T>::type;
  const int64_t nk = plane0 + blockIdx.y;  // input plane (n * C + c) * r * r + k
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= H * W) return;
  const int64_t k = nk % (r * r), nc = nk / (r * r), h = p / W, w = p % W, OW = W * r;
  A g = vsr::ld<A>(grad + nc * H * r * OW + (h * r + k / r) * OW + w * r + k % r);
  if (act) {
    A pre = vsr::ld<A>(x + nk * H * W + p);
    if (bias != nullptr) pre += vsr::ld<A>(bias + (nc % C) * r * r + k);
    g = pre > static_cast<A>(0) ? g : g * slope;
  }
  gx[nk * H * W + p] = vsr::cvt<G>(g);
}

template <typename T>
int fwd(const void* x, const void* bias, void* out, int64_t N, int64_t C, int64_t H, int64_t W, int r, int act,
        double slope, void* stream) {
  using A = typename vsr::Acc<T>::type;
  const int64_t planes = N * C;
  const unsigned bx = static_cast<unsigned>(vsr::cdiv(H * W * r * r, kThreads));
  auto kernel = fwd_kernel<T>;
  for (int64_t p0 = 0; p0 < planes; p0 += kMaxY) {
    const dim3 grid(bx, static_cast<unsigned>(vsr::vmin(kMaxY, planes - p0)));
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(bias),
               static_cast<T*>(out), p0, C, H, W, r, act != 0, static_cast<A>(slope));
  }
  return vsr::epilogue();
}

template <typename T, typename G>
int bwd(const void* grad, const void* x, const void* bias, void* gx, int64_t N, int64_t C, int64_t H, int64_t W,
        int r, int act, double slope, void* stream) {
  using A = typename vsr::Acc<T>::type;
  const int64_t planes = N * C * r * r;
  const unsigned bx = static_cast<unsigned>(vsr::cdiv(H * W, kThreads));
  auto kernel = bwd_kernel<T, G>;
  for (int64_t p0 = 0; p0 < planes; p0 += kMaxY) {
    const dim3 grid(bx, static_cast<unsigned>(vsr::vmin(kMaxY, planes - p0)));
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(grad), static_cast<const T*>(x),
               static_cast<const T*>(bias), static_cast<G*>(gx), p0, C, H, W, r, act != 0, static_cast<A>(slope));
  }
  return vsr::epilogue();
}

}  // namespace

extern "C" int vsr_pixel_shuffle_fwd(const void* x, const void* bias, void* out, int64_t N, int64_t C, int64_t H,
                                     int64_t W, int r, int act, double slope, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (r < 1) return VSR_ERR_ARG;
  if (N * C * H * W == 0) return 0;
  VSR_DISPATCH(dtype, T, return fwd<T>(x, bias, out, N, C, H, W, r, act, slope, stream));
  return 0;
}

extern "C" int vsr_pixel_shuffle_bwd(const void* grad, const void* x, const void* bias, void* gx, int64_t N,
                                     int64_t C, int64_t H, int64_t W, int r, int act, double slope, int dtype,
                                     int gx_dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (r < 1 || (act && x == nullptr)) return VSR_ERR_ARG;
  if (N * C * H * W == 0) return 0;
  if (gx_dtype == dtype) {
    VSR_DISPATCH(dtype, T, return (bwd<T, T>(grad, x, bias, gx, N, C, H, W, r, act, slope, stream)));
  }
  if (gx_dtype != VSR_F32) return VSR_ERR_DTYPE;  // acc gradient buffer: float for 32/16-bit data
  VSR_DISPATCH(dtype, T, return (bwd<T, float>(grad, x, bias, gx, N, C, H, W, r, act, slope, stream)));
  return 0;
}
