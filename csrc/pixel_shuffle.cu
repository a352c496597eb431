// pixel_shuffle: out[n, c, h*r+i, w*r+j] = act(in[n, c*r*r + i*r + j, h, w] + bias[c*r*r + i*r + j]).
// Forward walks the output (coalesced stores), backward walks the input (each input gradient written once).
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxY = 65535;  // planes go on grid-y, launched in pieces

// I: the index type. The launchers pick int32_t when every offset (out.numel(), x.numel()) fits in 31 bits, so
// the per-element divisions are 32-bit (the 64-bit ones take a slow path); int64_t otherwise.
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const T* __restrict__ bias,
                                                       T* __restrict__ out, int64_t plane0, int64_t C, int64_t H,
                                                       int64_t W, int r, bool act,
                                                       typename vsr::Acc<T>::type slope) {
  using A = typename vsr::Acc<T>::type;
  const I nc = static_cast<I>(plane0) + static_cast<I>(blockIdx.y);  // output plane n * C + c
  const I Hi = static_cast<I>(H), Wi = static_cast<I>(W), ri = static_cast<I>(r);
  const I OW = Wi * ri, plane = Hi * ri * OW;
  const I q = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (q >= plane) return;
  const I oh = q / OW, ow = q - oh * OW;
  const I ih = oh / ri, iw = ow / ri;
  const I k = (oh - ih * ri) * ri + (ow - iw * ri);
  A v = vsr::ld<A>(x + (nc * ri * ri + k) * Hi * Wi + ih * Wi + iw);
  if (bias != nullptr) v += vsr::ld<A>(bias + (nc % static_cast<I>(C)) * ri * ri + k);
  if (act) v = v > static_cast<A>(0) ? v : v * slope;
  out[nc * plane + q] = vsr::cvt<T>(v);
}

template <typename T, typename G, typename I>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                                       const T* __restrict__ bias, G* __restrict__ gx,
                                                       int64_t plane0, int64_t C, int64_t H, int64_t W, int r,
                                                       bool act, typename vsr::Acc<T>::type slope) {
  using A = typename vsr::Acc<T>::type;
  const I nk = static_cast<I>(plane0) + static_cast<I>(blockIdx.y);  // input plane (n * C + c) * r * r + k
  const I Hi = static_cast<I>(H), Wi = static_cast<I>(W), ri = static_cast<I>(r);
  const I p = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (p >= Hi * Wi) return;
  const I nc = nk / (ri * ri), k = nk - nc * (ri * ri), h = p / Wi, w = p - h * Wi, OW = Wi * ri;
  const I ky = k / ri, kx = k - ky * ri;
  A g = vsr::ld<A>(grad + nc * Hi * ri * OW + (h * ri + ky) * OW + w * ri + kx);
  if (act) {
    A pre = vsr::ld<A>(x + nk * Hi * Wi + p);
    if (bias != nullptr) pre += vsr::ld<A>(bias + (nc % static_cast<I>(C)) * ri * ri + k);
    g = pre > static_cast<A>(0) ? g : g * slope;
  }
  gx[nk * Hi * Wi + p] = vsr::cvt<G>(g);
}

}  // namespace

#if VSR_HOST
namespace {

template <typename T>
int fwd(const void* x, const void* bias, void* out, int64_t N, int64_t C, int64_t H, int64_t W, int r, int act,
        double slope, void* stream) {
  using A = typename vsr::Acc<T>::type;
  const int64_t planes = N * C;
  const unsigned bx = static_cast<unsigned>(vsr::cdiv(H * W * r * r, kThreads));
  const bool small = planes * H * W * r * r < (int64_t{1} << 31);
  auto kernel = small ? fwd_kernel<T, int32_t> : fwd_kernel<T, int64_t>;
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
  const bool small = planes * H * W < (int64_t{1} << 31);
  auto kernel = small ? bwd_kernel<T, G, int32_t> : bwd_kernel<T, G, int64_t>;
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
#endif  // VSR_HOST
