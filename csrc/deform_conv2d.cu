// deform_conv2d: deformable convolution v1 / modulated v2 (vsr_engine/ops/deform_conv2d.py has the contract).
// Operands as the Python side lays them out: input channels-last (N, H, W, Cin); weight (groups, taps, CPG, COG)
// (a K row = one tap and input channel of a conv group, contiguous in the output channel); offset (N, 2*G*taps,
// Ho, Wo), mask (N, G*taps, Ho, Wo) or null, output / grad (N, Cout, Ho, Wo).
//
// Implicit GEMM with accumulation in the Acc type (fp32 for fp32/fp16/bf16, fp64 for fp64); every K chunk is one
// tap x kKC input channels of one conv group.
// Forward: a block owns kTP output pixels x kTO output channels of one (image, conv group). Per K chunk it gathers
//   the bilinear im2col tile (masked samples, zero outside the image) and the weight tile into shared memory, then
//   multiplies: fp32 / fp64 on CUDA cores (each thread a 4 x 4 (pixel, output) micro-tile in registers, fwd_simt),
//   fp16 / bf16 on tensor cores (WMMA 16x16x16 with fp32 accumulators, fwd_tc_kernel; the host emulation of the
//   tests runs csrc/vsr_emulate.h's wmma).
// The weight gradient multiplies the same way (bwd_weight_kernel on CUDA cores, bwd_weight_tc_kernel with WMMA for
// 16-bit); the data gradient on CUDA cores in every dtype.
// Backward, data (one block per kTP pixels of one (image, conv group)): per K chunk, d/dcolumns = grad @ W^T
//   (a [kTP][kKC] tile over output chunks of kTOD), then d/dinput by atomics into a channels-last acc buffer at
//   the four corners, and the per-channel d/doffset, d/dmask terms summed over each deformable group's channels in
//   shared memory before one atomic per (pixel, group, tap) and chunk.
// Backward, weight: part[s, gi, t, c, o] = sum over split s's pixel tiles (all images) of columns^T @ grad, one
//   block per (K chunk, output block, conv group, split); the caller sums the splits in a fixed order, so d/dweight
//   is deterministic. d/dinput, d/doffset, d/dmask use float atomics (order-dependent rounding), as the Triton
//   kernels do.
#include "vsr_cuda.cuh"
#if !defined(VSR_EMULATE)
#include <mma.h>  // nvcuda::wmma (the host emulation brings its own: csrc/vsr_emulate.h)
#endif

namespace {

constexpr int kThreads = 256;
constexpr int kTP = 64;   // output pixels per tile
constexpr int kKC = 16;   // input channels per K chunk
constexpr int kTO = 64;   // output channels per block (forward, weight gradient)
constexpr int kTOD = 32;  // output channels per GEMM step of the data gradient

// sizes, as passed to every kernel
#define DC_ARGS                                                                                                  \
  int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t Ho, int64_t Wo, int G, int groups, int KH, int KW, \
      int sh, int sw, int ph, int pw, int dh, int dw
#define DC_PASS Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw

struct Dims {
  int64_t Cin, H, W, Cout, Wo, HWo;
  int G, groups, KW, taps, cpg, cog, cg, sh, sw, ph, pw, dh, dw;
};

__host__ __device__ __forceinline__ Dims dims(DC_ARGS) {
  Dims d;
  d.Cin = Cin, d.H = H, d.W = W, d.Cout = Cout, d.Wo = Wo, d.HWo = Ho * Wo;
  d.G = G, d.groups = groups, d.KW = KW, d.taps = KH * KW;
  d.cpg = static_cast<int>(Cin / groups), d.cog = static_cast<int>(Cout / groups), d.cg = static_cast<int>(Cin / G);
  d.sh = sh, d.sw = sw, d.ph = ph, d.pw = pw, d.dh = dh, d.dw = dw;
  return d;
}

// The bilinear geometry of tap t, deformable group dg at output pixel p of image n: the four corners' pixel
// indices (-1 outside the image: that corner counts 0) in the order (y0,x0), (y0,x0+1), (y0+1,x0), (y0+1,x0+1),
// their weights, the fractional parts and the mask value (1 without a mask).
template <typename A> struct Corners {
  int64_t i[4];
  A w[4];
  A ly, lx, m;
};

template <typename T, typename A>
__device__ __forceinline__ void geometry(const T* __restrict__ off, const T* __restrict__ msk, const Dims& d,
                                         int64_t n, int64_t p, int dg, int t, Corners<A>& c) {
  const int64_t oh = p / d.Wo, ow = p - oh * d.Wo;
  const int64_t ch = static_cast<int64_t>(dg) * d.taps + t;
  const T* ob = off + (n * 2 * d.G * d.taps + 2 * ch) * d.HWo + p;
  A Y = static_cast<A>(oh * d.sh - d.ph + (t / d.KW) * d.dh) + vsr::ld<A>(ob);
  A X = static_cast<A>(ow * d.sw - d.pw + (t % d.KW) * d.dw) + vsr::ld<A>(ob + d.HWo);
  c.m = msk != nullptr ? vsr::ld<A>(msk + (n * d.G * d.taps + ch) * d.HWo + p) : static_cast<A>(1);
  // beyond one pixel outside every corner is zero; the clamp keeps the integer conversion in range
  Y = vsr::vmin(vsr::vmax(Y, static_cast<A>(-2)), static_cast<A>(d.H + 1));
  X = vsr::vmin(vsr::vmax(X, static_cast<A>(-2)), static_cast<A>(d.W + 1));
  const A y0f = vsr::vfloor(Y), x0f = vsr::vfloor(X);
  c.ly = Y - y0f;
  c.lx = X - x0f;
  const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
  const bool vy0 = y0 >= 0 && y0 < d.H, vy1 = y0 + 1 >= 0 && y0 + 1 < d.H;
  const bool vx0 = x0 >= 0 && x0 < d.W, vx1 = x0 + 1 >= 0 && x0 + 1 < d.W;
  c.i[0] = vy0 && vx0 ? y0 * d.W + x0 : -1;
  c.i[1] = vy0 && vx1 ? y0 * d.W + x0 + 1 : -1;
  c.i[2] = vy1 && vx0 ? (y0 + 1) * d.W + x0 : -1;
  c.i[3] = vy1 && vx1 ? (y0 + 1) * d.W + x0 + 1 : -1;
  const A one = static_cast<A>(1);
  c.w[0] = (one - c.ly) * (one - c.lx);
  c.w[1] = (one - c.ly) * c.lx;
  c.w[2] = c.ly * (one - c.lx);
  c.w[3] = c.ly * c.lx;
}

// the four corner values of channel xc (channels-last pixel stride Cin), 0 outside
template <typename T, typename A>
__device__ __forceinline__ void corner_values(const T* __restrict__ xc, int64_t Cin, const Corners<A>& c, A* v) {
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = c.i[k] >= 0 ? vsr::ld<A>(xc + c.i[k] * Cin) : static_cast<A>(0);
}

// the masked bilinear sample of column (pixel p0 + pl, channel c0 + c) of conv group gi, tap t; 0 when out of range
template <typename T, typename A>
__device__ __forceinline__ A column(const T* __restrict__ xn, const T* __restrict__ off, const T* __restrict__ msk,
                                    const Dims& d, int64_t n, int64_t gi, int64_t p, int cc, int t) {
  if (p >= d.HWo || cc >= d.cpg) return static_cast<A>(0);
  const int dg = static_cast<int>((gi * d.cpg + cc) / d.cg);
  Corners<A> c;
  geometry<T, A>(off, msk, d, n, p, dg, t, c);
  A v[4];
  corner_values<T, A>(xn + cc, d.Cin, c, v);
  return (v[0] * c.w[0] + v[1] * c.w[1] + v[2] * c.w[2] + v[3] * c.w[3]) * c.m;
}

// the forward on CUDA cores: fp32 / fp64, and 16-bit below sm_80
template <typename T>
__device__ __forceinline__ void fwd_simt(const T* __restrict__ x, const T* __restrict__ off,
                                         const T* __restrict__ msk, const T* __restrict__ w,
                                         const T* __restrict__ bias, T* __restrict__ out, DC_ARGS) {
  using A = typename vsr::Acc<T>::type;
  __shared__ A cs[kKC][kTP + 1];  // columns [channel][pixel] (+1: conflict-free stores along channels)
  __shared__ A ws[kKC][kTO];      // weight [channel][output]
  const Dims d = dims(DC_PASS);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t n = blockIdx.z / d.groups, gi = blockIdx.z % d.groups;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTP;
  const int o0 = blockIdx.y * kTO;
  const T* xn = x + n * d.H * d.W * d.Cin + gi * d.cpg;
  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = static_cast<A>(0);
  for (int t = 0; t < d.taps; ++t) {
    for (int c0 = 0; c0 < d.cpg; c0 += kKC) {
      __syncthreads();  // the previous chunk's tiles are consumed
      for (int e = tid; e < kKC * kTP; e += kThreads) {  // a warp: 16 channels of 2 pixels (contiguous gathers)
        const int c = e % kKC, pl = e / kKC;
        cs[c][pl] = column<T, A>(xn, off, msk, d, n, gi, p0 + pl, c0 + c, t);
      }
      const T* wr = w + ((gi * d.taps + t) * d.cpg + c0) * static_cast<int64_t>(d.cog) + o0;
      for (int e = tid; e < kKC * kTO; e += kThreads) {
        const int o = e % kTO, k = e / kTO;
        ws[k][o] = (c0 + k < d.cpg && o0 + o < d.cog) ? vsr::ld<A>(wr + static_cast<int64_t>(k) * d.cog + o)
                                                      : static_cast<A>(0);
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kKC; ++k) {
        A a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = cs[k][tx + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = ws[k][ty + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int o = o0 + ty + 16 * j;
    if (o >= d.cog) continue;
    const A bv = bias != nullptr ? vsr::ld<A>(bias + gi * d.cog + o) : static_cast<A>(0);
    T* orow = out + (n * d.Cout + gi * d.cog + o) * d.HWo;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t p = p0 + tx + 16 * i;
      if (p < d.HWo) orow[p] = vsr::cvt<T>(acc[i][j] + bv);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* __restrict__ x, const T* __restrict__ off,
                                                       const T* __restrict__ msk, const T* __restrict__ w,
                                                       const T* __restrict__ bias, T* __restrict__ out, DC_ARGS) {
  fwd_simt<T>(x, off, msk, w, bias, out, DC_PASS);
}

// The 16-bit forward on tensor cores (WMMA 16x16x16, fp32 accumulation; sm_80+, else fwd_simt): the same tiles,
// the im2col tile rounded to the data type (as the Triton kernel's 16-bit tl.dot does). Warp w computes pixels
// 16 (w % 4) .. + 16 and outputs 32 (w / 4) .. + 32 of the block's 64 x 64 tile; the accumulators stay in
// registers over the whole K loop and leave through shared memory (coalesced stores along pixels).
template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_tc_kernel(const T* __restrict__ x, const T* __restrict__ off,
                                                          const T* __restrict__ msk, const T* __restrict__ w,
                                                          const T* __restrict__ bias, T* __restrict__ out,
                                                          DC_ARGS) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  fwd_simt<T>(x, off, msk, w, bias, out, DC_PASS);
#else
  namespace wm = nvcuda::wmma;
  constexpr int kLA = kKC + 8, kLB = kTO + 8, kLC = kTP + 4;  // leading dimensions (multiples of 8 / 4 elements)
  struct __align__(32) Tiles {  // every wmma pointer below is 32-byte aligned
    T as[kTP * kLA];             // columns [pixel][channel]
    T bs[kKC * kLB];             // weight [channel][output]
    float cs[kTO * kLC];         // result [output][pixel]
  };
  __shared__ Tiles sm;
  T* as = sm.as;
  T* bs = sm.bs;
  float* cs = sm.cs;
  const Dims d = dims(DC_PASS);
  const int tid = threadIdx.x, wm_ = (tid / 32) % 4, wn = (tid / 32) / 4;
  const int64_t n = blockIdx.z / d.groups, gi = blockIdx.z % d.groups;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTP;
  const int o0 = blockIdx.y * kTO;
  const T* xn = x + n * d.H * d.W * d.Cin + gi * d.cpg;
  const T zero = vsr::cvt<T>(0.0f);
  wm::fragment<wm::accumulator, 16, 16, 16, float> acc[2];
  wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> fa;
  wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::row_major> fb;
  wm::fill_fragment(acc[0], 0.0f);
  wm::fill_fragment(acc[1], 0.0f);
  for (int t = 0; t < d.taps; ++t) {
    for (int c0 = 0; c0 < d.cpg; c0 += kKC) {
      __syncthreads();  // the previous chunk's tiles are consumed
      for (int e = tid; e < kKC * kTP; e += kThreads) {
        const int c = e % kKC, pl = e / kKC;
        as[pl * kLA + c] = vsr::cvt<T>(column<T, float>(xn, off, msk, d, n, gi, p0 + pl, c0 + c, t));
      }
      const T* wr = w + ((gi * d.taps + t) * d.cpg + c0) * static_cast<int64_t>(d.cog) + o0;
      for (int e = tid; e < kKC * kTO; e += kThreads) {
        const int o = e % kTO, k = e / kTO;
        bs[k * kLB + o] = (c0 + k < d.cpg && o0 + o < d.cog) ? wr[static_cast<int64_t>(k) * d.cog + o] : zero;
      }
      __syncthreads();
      wm::load_matrix_sync(fa, as + wm_ * 16 * kLA, kLA);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wm::load_matrix_sync(fb, bs + wn * 32 + j * 16, kLB);
        wm::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wm::store_matrix_sync(cs + (wn * 32 + j * 16) * kLC + wm_ * 16, acc[j], kLC, wm::mem_col_major);
  __syncthreads();
  for (int e = tid; e < kTO * kTP; e += kThreads) {
    const int pl = e % kTP, o = e / kTP;
    const int64_t p = p0 + pl;
    if (p >= d.HWo || o0 + o >= d.cog) continue;
    const float bv = bias != nullptr ? vsr::ld<float>(bias + gi * d.cog + o0 + o) : 0.0f;
    out[(n * d.Cout + gi * d.cog + o0 + o) * d.HWo + p] = vsr::cvt<T>(cs[o * kLC + pl] + bv);
  }
#endif
}

template <typename T> struct TensorCores { static constexpr bool value = false; };
template <> struct TensorCores<__half> { static constexpr bool value = true; };
template <> struct TensorCores<__nv_bfloat16> { static constexpr bool value = true; };

// gx (acc, channels-last like x, zero-filled), goff (acc, like offset), gmsk (acc, like mask): each may be null
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_data_kernel(const T* __restrict__ x, const T* __restrict__ off,
                                                            const T* __restrict__ msk, const T* __restrict__ w,
                                                            const T* __restrict__ grad,
                                                            typename vsr::Acc<T>::type* __restrict__ gx,
                                                            typename vsr::Acc<T>::type* __restrict__ goff,
                                                            typename vsr::Acc<T>::type* __restrict__ gmsk, DC_ARGS) {
  using A = typename vsr::Acc<T>::type;
  __shared__ A gs[kTOD][kTP];         // grad [output][pixel]
  __shared__ A ws[kTOD][kKC];         // weight [output][channel]
  __shared__ A red[3][kTP][kKC + 1];  // per (pixel, channel): d/doffset_y, d/doffset_x, d/dmask terms
  const Dims d = dims(DC_PASS);
  const int tid = threadIdx.x, c = tid % kKC, pr = tid / kKC;  // this thread: channel c of pixels pr + 16 i
  const int64_t n = blockIdx.y / d.groups, gi = blockIdx.y % d.groups;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTP;
  const T* xn = x + n * d.H * d.W * d.Cin + gi * d.cpg;
  const T* gn = grad + (n * d.Cout + gi * d.cog) * d.HWo;
  const bool reduce = goff != nullptr || gmsk != nullptr;
  const int nob = (d.cog + kTOD - 1) / kTOD;
  for (int t = 0; t < d.taps; ++t) {
    for (int c0 = 0; c0 < d.cpg; c0 += kKC) {
      A gcol[4] = {static_cast<A>(0), static_cast<A>(0), static_cast<A>(0), static_cast<A>(0)};
      for (int ob = 0; ob < nob; ++ob) {
        const int o0 = ob * kTOD;
        __syncthreads();  // the previous step's tiles (and reduction rows) are consumed
        if (nob > 1 || (t == 0 && c0 == 0)) {  // one output chunk: the grad tile is loaded once per block
          for (int e = tid; e < kTOD * kTP; e += kThreads) {
            const int pl = e % kTP, o = e / kTP;
            const int64_t p = p0 + pl;
            gs[o][pl] = (p < d.HWo && o0 + o < d.cog) ? vsr::ld<A>(gn + (o0 + o) * d.HWo + p) : static_cast<A>(0);
          }
        }
        const T* wr = w + ((gi * d.taps + t) * d.cpg + c0) * static_cast<int64_t>(d.cog) + o0;
        for (int e = tid; e < kTOD * kKC; e += kThreads) {
          const int o = e % kTOD, k = e / kTOD;
          ws[o][k] = (c0 + k < d.cpg && o0 + o < d.cog) ? vsr::ld<A>(wr + static_cast<int64_t>(k) * d.cog + o)
                                                        : static_cast<A>(0);
        }
        __syncthreads();
#pragma unroll 8
        for (int o = 0; o < kTOD; ++o) {
          const A wv = ws[o][c];
#pragma unroll
          for (int i = 0; i < 4; ++i) gcol[i] += gs[o][pr + 16 * i] * wv;
        }
      }
      const int cc = c0 + c;
      const int dg = static_cast<int>((gi * d.cpg + cc) / d.cg);
      const A one = static_cast<A>(1);
#pragma unroll
      for (int i = 0; i < 4; ++i) red[0][pr + 16 * i][c] = gcol[i];  // own entries only: no barrier needed
#pragma unroll 1
      for (int i = 0; i < 4; ++i) {  // not unrolled: four inlined geometry + scatter bodies spilled at sm_90
        const int pl = pr + 16 * i;
        const int64_t p = p0 + pl;
        const A gc = red[0][pl][c];
        A ry = static_cast<A>(0), rx = static_cast<A>(0), rm = static_cast<A>(0);
        if (p < d.HWo && cc < d.cpg) {
          Corners<A> cr;
          geometry<T, A>(off, msk, d, n, p, dg, t, cr);
          const A gm = gc * cr.m;
          if (gx != nullptr) {
            A* gb = gx + n * d.H * d.W * d.Cin + gi * d.cpg + cc;
#pragma unroll
            for (int k = 0; k < 4; ++k)
              if (cr.i[k] >= 0) atomicAdd(gb + cr.i[k] * d.Cin, gm * cr.w[k]);
          }
          if (reduce) {
            A v[4];
            corner_values<T, A>(xn + cc, d.Cin, cr, v);
            ry = gm * ((one - cr.lx) * (v[2] - v[0]) + cr.lx * (v[3] - v[1]));
            rx = gm * ((one - cr.ly) * (v[1] - v[0]) + cr.ly * (v[3] - v[2]));
            rm = gc * ((one - cr.ly) * ((one - cr.lx) * v[0] + cr.lx * v[1]) +
                            cr.ly * ((one - cr.lx) * v[2] + cr.lx * v[3]));
          }
        }
        red[0][pl][c] = ry;  // (unread when not reducing)
        if (reduce) {
          red[1][pl][c] = rx;
          red[2][pl][c] = rm;
        }
      }
      if (reduce) {
        __syncthreads();
        const int64_t p = p0 + tid;
        if (tid < kTP && p < d.HWo) {  // one thread per pixel: sum each deformable group's run of channels
          const int cn = vsr::vmin(kKC, d.cpg - c0);
          A sy = static_cast<A>(0), sx = static_cast<A>(0), sm = static_cast<A>(0);
          for (int k = 0; k < cn; ++k) {
            sy += red[0][tid][k];
            sx += red[1][tid][k];
            sm += red[2][tid][k];
            const int g = static_cast<int>((gi * d.cpg + c0 + k) / d.cg);
            if (k + 1 == cn || static_cast<int>((gi * d.cpg + c0 + k + 1) / d.cg) != g) {
              const int64_t ch = static_cast<int64_t>(g) * d.taps + t;
              if (goff != nullptr) {
                A* ob = goff + (n * 2 * d.G * d.taps + 2 * ch) * d.HWo + p;
                atomicAdd(ob, sy);
                atomicAdd(ob + d.HWo, sx);
              }
              if (gmsk != nullptr) atomicAdd(gmsk + (n * d.G * d.taps + ch) * d.HWo + p, sm);
              sy = sx = sm = static_cast<A>(0);
            }
          }
        }
      }
    }
  }
}

// part (acc): (splits, groups, taps, CPG, COG); grid (taps * ceil(CPG / kKC), ceil(COG / kTO), groups * splits).
// On CUDA cores: fp32 / fp64, and 16-bit below sm_80.
template <typename T>
__device__ __forceinline__ void bwd_weight_simt(const T* __restrict__ x, const T* __restrict__ off,
                                                const T* __restrict__ msk, const T* __restrict__ grad,
                                                typename vsr::Acc<T>::type* __restrict__ part, int64_t N, int splits,
                                                DC_ARGS) {
  using A = typename vsr::Acc<T>::type;
  __shared__ A cs[kTP][kKC + 1];  // columns [pixel][channel]
  __shared__ A gs[kTP][kTO + 1];  // grad [pixel][output] (+1: conflict-free stores along pixels)
  const Dims d = dims(DC_PASS);
  const int tid = threadIdx.x, o = tid % kTO, cr = tid / kTO;  // this thread: output o, channels cr * 4 + i
  const int nch = (d.cpg + kKC - 1) / kKC;
  const int t = blockIdx.x / nch, c0 = (blockIdx.x % nch) * kKC;
  const int o0 = blockIdx.y * kTO;
  const int64_t gi = blockIdx.z / splits, s = blockIdx.z % splits;
  const int64_t ntp = (d.HWo + kTP - 1) / kTP;
  A acc[4] = {static_cast<A>(0), static_cast<A>(0), static_cast<A>(0), static_cast<A>(0)};
  for (int64_t tile = s; tile < N * ntp; tile += splits) {
    const int64_t n = tile / ntp, p0 = (tile % ntp) * kTP;
    const T* xn = x + n * d.H * d.W * d.Cin + gi * d.cpg;
    const T* gn = grad + (n * d.Cout + gi * d.cog + o0) * d.HWo;
    __syncthreads();  // the previous tile is consumed
    for (int e = tid; e < kKC * kTP; e += kThreads) {
      const int c = e % kKC, pl = e / kKC;
      cs[pl][c] = column<T, A>(xn, off, msk, d, n, gi, p0 + pl, c0 + c, t);
    }
    for (int e = tid; e < kTO * kTP; e += kThreads) {
      const int pl = e % kTP, oo = e / kTP;
      const int64_t p = p0 + pl;
      gs[pl][oo] = (p < d.HWo && o0 + oo < d.cog) ? vsr::ld<A>(gn + oo * d.HWo + p) : static_cast<A>(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int pl = 0; pl < kTP; ++pl) {
      const A g = gs[pl][o];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += cs[pl][cr * 4 + i] * g;
    }
  }
  if (o0 + o < d.cog) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int c = c0 + cr * 4 + i;
      const int64_t row = ((s * d.groups + gi) * d.taps + t) * d.cpg + c;
      if (c < d.cpg) part[row * d.cog + o0 + o] = acc[i];
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_weight_kernel(const T* __restrict__ x, const T* __restrict__ off,
                                                              const T* __restrict__ msk, const T* __restrict__ grad,
                                                              typename vsr::Acc<T>::type* __restrict__ part,
                                                              int64_t N, int splits, DC_ARGS) {
  bwd_weight_simt<T>(x, off, msk, grad, part, N, splits, DC_PASS);
}

// The 16-bit weight gradient on tensor cores (sm_80+, else bwd_weight_simt): the same blocks and splits; the
// columns rounded to 16 bits (grad already is). Warp w accumulates outputs 16 (w % 4) .. + 16 over pixels
// 32 (w / 4) .. + 32 of every tile (two 16-pixel k-steps); the two pixel halves are added at the end in a fixed
// order through shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_weight_tc_kernel(const T* __restrict__ x, const T* __restrict__ off,
                                                                 const T* __restrict__ msk,
                                                                 const T* __restrict__ grad, float* __restrict__ part,
                                                                 int64_t N, int splits, DC_ARGS) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  bwd_weight_simt<T>(x, off, msk, grad, part, N, splits, DC_PASS);
#else
  namespace wm = nvcuda::wmma;
  constexpr int kLA = kKC + 8, kLB = kTO + 8, kLC = kTO + 4;  // leading dimensions (multiples of 8 / 4 elements)
  struct __align__(32) Tiles {  // every wmma pointer below is 32-byte aligned
    T cs[kTP * kLA];             // columns [pixel][channel] (= A^T: A is channels x pixels, column-major)
    T gs[kTP * kLB];             // grad [pixel][output]
    float red[2][kKC * kLC];     // the two pixel halves' sums [channel][output]
  };
  __shared__ Tiles sm;
  const Dims d = dims(DC_PASS);
  const int tid = threadIdx.x, nt = (tid / 32) % 4, kh = (tid / 32) / 4;
  const int nch = (d.cpg + kKC - 1) / kKC;
  const int t = blockIdx.x / nch, c0 = (blockIdx.x % nch) * kKC;
  const int o0 = blockIdx.y * kTO;
  const int64_t gi = blockIdx.z / splits, s = blockIdx.z % splits;
  const int64_t ntp = (d.HWo + kTP - 1) / kTP;
  const T zero = vsr::cvt<T>(0.0f);
  wm::fragment<wm::accumulator, 16, 16, 16, float> acc;
  wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::col_major> fa;
  wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::row_major> fb;
  wm::fill_fragment(acc, 0.0f);
  for (int64_t tile = s; tile < N * ntp; tile += splits) {
    const int64_t n = tile / ntp, p0 = (tile % ntp) * kTP;
    const T* xn = x + n * d.H * d.W * d.Cin + gi * d.cpg;
    const T* gn = grad + (n * d.Cout + gi * d.cog + o0) * d.HWo;
    __syncthreads();  // the previous tile is consumed
    for (int e = tid; e < kKC * kTP; e += kThreads) {
      const int c = e % kKC, pl = e / kKC;
      sm.cs[pl * kLA + c] = vsr::cvt<T>(column<T, float>(xn, off, msk, d, n, gi, p0 + pl, c0 + c, t));
    }
    for (int e = tid; e < kTO * kTP; e += kThreads) {
      const int pl = e % kTP, oo = e / kTP;
      const int64_t p = p0 + pl;
      sm.gs[pl * kLB + oo] = (p < d.HWo && o0 + oo < d.cog) ? gn[oo * d.HWo + p] : zero;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      const int pk = kh * 32 + ks * 16;
      wm::load_matrix_sync(fa, sm.cs + pk * kLA, kLA);
      wm::load_matrix_sync(fb, sm.gs + pk * kLB + nt * 16, kLB);
      wm::mma_sync(acc, fa, fb, acc);
    }
  }
  wm::store_matrix_sync(sm.red[kh] + nt * 16, acc, kLC, wm::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kKC * kTO; e += kThreads) {
    const int o = e % kTO, c = e / kTO;
    if (c0 + c >= d.cpg || o0 + o >= d.cog) continue;
    const int64_t row = ((s * d.groups + gi) * d.taps + t) * d.cpg + c0 + c;
    part[row * d.cog + o0 + o] = sm.red[0][c * kLC + o] + sm.red[1][c * kLC + o];
  }
#endif
}

}  // namespace

#if VSR_HOST
namespace {

bool bad_sizes(int64_t N, DC_ARGS) {
  if (N < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || Ho < 1 || Wo < 1 || G < 1 || groups < 1 || KH < 1 ||
      KW < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0)
    return true;
  return Cin % groups != 0 || Cout % groups != 0 || Cin % G != 0 || N * groups > 65535 ||
         vsr::cdiv(Cout / groups, kTO) > 65535;
}

template <typename T>
int fwd(const void* x, const void* off, const void* msk, const void* w, const void* bias, void* out, int64_t N,
        DC_ARGS, void* stream) {
  const dim3 grid(static_cast<unsigned>(vsr::cdiv(Ho * Wo, kTP)),
                  static_cast<unsigned>(vsr::cdiv(Cout / groups, kTO)), static_cast<unsigned>(N * groups));
  const T *xp = static_cast<const T*>(x), *op = static_cast<const T*>(off), *mp = static_cast<const T*>(msk);
  const T *wp = static_cast<const T*>(w), *bp = static_cast<const T*>(bias);
  if constexpr (TensorCores<T>::value) {
    auto kernel = fwd_tc_kernel<T>;
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, xp, op, mp, wp, bp, static_cast<T*>(out), DC_PASS);
  } else {
    auto kernel = fwd_kernel<T>;
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, xp, op, mp, wp, bp, static_cast<T*>(out), DC_PASS);
  }
  return vsr::epilogue();
}

template <typename T>
int bwd(const void* x, const void* off, const void* msk, const void* w, const void* grad, void* gx, void* goff,
        void* gmsk, void* part, int64_t N, int splits, DC_ARGS, void* stream) {
  using A = typename vsr::Acc<T>::type;
  if (gx != nullptr || goff != nullptr || gmsk != nullptr) {
    const dim3 grid(static_cast<unsigned>(vsr::cdiv(Ho * Wo, kTP)), static_cast<unsigned>(N * groups));
    auto kernel = bwd_data_kernel<T>;
    VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(off),
               static_cast<const T*>(msk), static_cast<const T*>(w), static_cast<const T*>(grad), static_cast<A*>(gx),
               static_cast<A*>(goff), static_cast<A*>(gmsk), DC_PASS);
  }
  if (part != nullptr) {
    const int64_t cpg = Cin / groups;
    const dim3 grid(static_cast<unsigned>(KH * KW * vsr::cdiv(cpg, kKC)),
                    static_cast<unsigned>(vsr::cdiv(Cout / groups, kTO)), static_cast<unsigned>(groups * splits));
    if constexpr (TensorCores<T>::value) {
      auto kernel = bwd_weight_tc_kernel<T>;
      VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(off),
                 static_cast<const T*>(msk), static_cast<const T*>(grad), static_cast<A*>(part), N, splits, DC_PASS);
    } else {
      auto kernel = bwd_weight_kernel<T>;
      VSR_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(off),
                 static_cast<const T*>(msk), static_cast<const T*>(grad), static_cast<A*>(part), N, splits, DC_PASS);
    }
  }
  return vsr::epilogue();
}

}  // namespace

extern "C" int vsr_deform_conv2d_fwd(const void* x, const void* off, const void* msk, const void* w,
                                     const void* bias, void* out, int64_t N, int64_t Cin, int64_t H, int64_t W,
                                     int64_t Cout, int64_t Ho, int64_t Wo, int G, int groups, int KH, int KW, int sh,
                                     int sw, int ph, int pw, int dh, int dw, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (bad_sizes(N, DC_PASS)) return VSR_ERR_ARG;
  if (N == 0) return 0;
  VSR_DISPATCH(dtype, T, return fwd<T>(x, off, msk, w, bias, out, N, DC_PASS, stream));
  return 0;
}

extern "C" int vsr_deform_conv2d_bwd(const void* x, const void* off, const void* msk, const void* w,
                                     const void* grad, void* gx, void* goff, void* gmsk, void* part, int64_t N,
                                     int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t Ho, int64_t Wo, int G,
                                     int groups, int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw,
                                     int splits, int dtype, int device, void* stream) {
  VSR_TRY(vsr::prologue(device));
  if (bad_sizes(N, DC_PASS) || (part != nullptr && (splits < 1 || static_cast<int64_t>(groups) * splits > 65535)))
    return VSR_ERR_ARG;
  if (N == 0) return 0;
  VSR_DISPATCH(dtype, T, return bwd<T>(x, off, msk, w, grad, gx, goff, gmsk, part, N, splits, DC_PASS, stream));
  return 0;
}
#endif  // VSR_HOST
