// Error strings and the load-time probe of the CUDA extension.
#include "vsr_cuda.cuh"

namespace {
__global__ void probe_kernel(int* flag) {
  if (flag != nullptr) *flag = 1;
}
}  // namespace

#if VSR_HOST

extern "C" const char* vsr_error_string(int code) {
  if (code == VSR_ERR_DTYPE) return "vsr_engine CUDA kernels: unsupported dtype";
  if (code == VSR_ERR_ARG) return "vsr_engine CUDA kernels: invalid argument (size out of range)";
#ifdef VSR_EMULATE
  return code == 0 ? "no error" : "emulated CUDA error";
#else
  return cudaGetErrorString(static_cast<cudaError_t>(code));
#endif
}

extern "C" int vsr_probe(int device) {
  VSR_TRY(vsr::prologue(device));
  auto kernel = probe_kernel;
  VSR_LAUNCH(kernel, dim3(1), dim3(1), 0, nullptr, nullptr);
  VSR_TRY(vsr::epilogue());
#ifdef VSR_EMULATE
  return 0;
#else
  return static_cast<int>(cudaDeviceSynchronize());
#endif
}
#endif  // VSR_HOST
