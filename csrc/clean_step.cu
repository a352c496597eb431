// clean_step: out = x + r and per-block partial sums of |r| (double), in one pass. The grid is fixed by the
// caller (nblocks, grid-stride loop), so the partials -- summed afterwards in a fixed order -- are deterministic.
#include "vsr_cuda.cuh"

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const T* __restrict__ r,
                                                       T* __restrict__ out, double* __restrict__ partials,
                                                       int64_t numel) {
  using A = typename vsr::Acc<T>::type;
  __shared__ double red[kThreads];
  double s = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const A rv = vsr::ld<A>(r + i);
    out[i] = vsr::cvt<T>(vsr::ld<A>(x + i) + rv);
    s += static_cast<double>(rv < static_cast<A>(0) ? -rv : rv);
  }
  red[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = red[0];
}

template <typename T, typename M>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* __restrict__ grad, const T* __restrict__ r,
                                                       const M* __restrict__ gmean, T* __restrict__ gr,
                                                       int64_t numel) {
  using A = typename vsr::Acc<T>::type;
  const A gm = static_cast<A>(*gmean) / static_cast<A>(numel);
  const A zero = static_cast<A>(0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const A rv = vsr::ld<A>(r + i);
    const A sgn = rv > zero ? static_cast<A>(1) : (rv < zero ? static_cast<A>(-1) : zero);
    gr[i] = vsr::cvt<T>(vsr::ld<A>(grad + i) + gm * sgn);
  }
}

}  // namespace

#if VSR_HOST

extern "C" int vsr_clean_step_fwd(const void* x, const void* r, void* out, double* partials, int64_t numel,
                                  int nblocks, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (nblocks < 1 || nblocks > 65535) return VSR_ERR_ARG;
  VSR_DISPATCH(dtype, T, {
    auto kernel = fwd_kernel<T>;
    VSR_LAUNCH(kernel, dim3(nblocks), dim3(kThreads), 0, stream, static_cast<const T*>(x),
               static_cast<const T*>(r), static_cast<T*>(out), partials, numel);
  });
  return vsr::epilogue();
}

extern "C" int vsr_clean_step_bwd(const void* grad, const void* r, const void* gmean, void* gr, int64_t numel,
                                  int dtype, int gmean_dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (numel == 0) return 0;
  const unsigned blocks = static_cast<unsigned>(vsr::vmin<int64_t>(vsr::cdiv(numel, kThreads), 4096));
  if (gmean_dtype != VSR_F32 && gmean_dtype != VSR_F64) return VSR_ERR_DTYPE;
  VSR_DISPATCH(dtype, T, {
    if (gmean_dtype == VSR_F32) {
      auto kernel = bwd_kernel<T, float>;
      VSR_LAUNCH(kernel, dim3(blocks), dim3(kThreads), 0, stream, static_cast<const T*>(grad),
                 static_cast<const T*>(r), static_cast<const float*>(gmean), static_cast<T*>(gr), numel);
    } else {
      auto kernel = bwd_kernel<T, double>;
      VSR_LAUNCH(kernel, dim3(blocks), dim3(kThreads), 0, stream, static_cast<const T*>(grad),
                 static_cast<const T*>(r), static_cast<const double*>(gmean), static_cast<T*>(gr), numel);
    }
  });
  return vsr::epilogue();
}
#endif  // VSR_HOST
