/* C API of the vsr_engine CUDA kernels (csrc/<op>.cu), wrapped by cuda_bindings.cpp.
 *
 * Every launcher takes raw device pointers, sizes, a dtype code and the device / stream to launch on, and
 * returns 0 or a cudaError_t value (VSR_ERR_* for argument errors); vsr_error_string() names it. Tensor
 * bookkeeping (allocation, contiguity, dtype checks) is done by the Python side (vsr_engine/ops/<op>.py).
 * "acc" buffers are float for fp32/fp16/bf16 data and double for fp64 data. Index tables are int32.
 * No torch header is needed anywhere: the extension builds against any torch wheel.
 */
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { VSR_F32 = 0, VSR_F16 = 1, VSR_BF16 = 2, VSR_F64 = 3 };
enum { VSR_ERR_DTYPE = -1, VSR_ERR_ARG = -2 };

const char* vsr_error_string(int code);
int vsr_probe(int device); /* launches an empty kernel and synchronises: 0 when kernels can run here */

int vsr_flow_warp_fwd(const void* x, const void* flow, void* out, int64_t N, int64_t C, int64_t H, int64_t W,
                      int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc, int border, int align, int dtype,
                      int flow_dtype, int device, void* stream);
/* gx: acc buffer (zero-filled by the caller) or NULL; gflow: (N, H, W, 2) contiguous, flow dtype, or NULL */
int vsr_flow_warp_bwd(const void* x, const void* flow, const void* grad, void* gx, void* gflow, int64_t N,
                      int64_t C, int64_t H, int64_t W, int64_t sfn, int64_t sfh, int64_t sfw, int64_t sfc,
                      int border, int align, int dtype, int flow_dtype, int device, void* stream);

/* x (N, C*r*r, H, W) -> out (N, C, H*r, W*r); bias (C*r*r) or NULL; act: LeakyReLU(slope) */
int vsr_pixel_shuffle_fwd(const void* x, const void* bias, void* out, int64_t N, int64_t C, int64_t H, int64_t W,
                          int r, int act, double slope, int dtype, int device, void* stream);
/* gx in gx_dtype (the data dtype, or acc when the caller sums it for the bias gradient); x read only if act */
int vsr_pixel_shuffle_bwd(const void* grad, const void* x, const void* bias, void* gx, int64_t N, int64_t C,
                          int64_t H, int64_t W, int r, int act, double slope, int dtype, int gx_dtype, int device,
                          void* stream);

/* out = x + r; partials[b] (double, nblocks of them) = sum of |r| over block b's grid-stride share */
int vsr_clean_step_fwd(const void* x, const void* r, void* out, double* partials, int64_t numel, int nblocks,
                       int dtype, int device, void* stream);
/* gr = grad + gmean[0] * sign(r) / numel; gmean is one value of gmean_dtype (fp32 or fp64) */
int vsr_clean_step_bwd(const void* grad, const void* r, const void* gmean, void* gr, int64_t numel, int dtype,
                       int gmean_dtype, int device, void* stream);

/* out = act(pw . dw(x) + pwb) + res, all (N, *, H, W); grad != NULL: out (acc) = grad * act'(pw . dw(x) + pwb).
 * act: 0 none, 1 relu, 2 leaky relu(slope). dw_b, pw_b, res may be NULL. */
int vsr_dwpw_fwd(const void* x, const void* dw_w, const void* dw_b, const void* pw_w, const void* pw_b,
                 const void* res, const void* grad, void* out, int64_t N, int64_t C, int64_t O, int64_t H,
                 int64_t W, int k, int act, double slope, int dtype, int device, void* stream);
/* y (acc) = depthwise(x) + dw_b */
int vsr_dw_fwd(const void* x, const void* dw_w, const void* dw_b, void* y, int64_t N, int64_t C, int64_t H,
               int64_t W, int k, int dtype, int device, void* stream);
/* gy (acc) -> gx (data dtype, or NULL) and part (acc, (C, splits, k*k), or NULL): per-split sums of dW */
int vsr_dw_bwd(const void* gy, const void* x, const void* dw_w, void* gx, void* part, int64_t N, int64_t C,
               int64_t H, int64_t W, int k, int splits, int dtype, int device, void* stream);

/* wt (acc): (pairs, O, C*k*k) predicted weights, pair = cls_h[i] * DW + cls_w[j] */
int vsr_meta_upscale_fwd(const void* feat, const void* wt, const int32_t* idx_h, const int32_t* cls_h,
                         const int32_t* idx_w, const int32_t* cls_w, void* out, int64_t N, int64_t C, int64_t H,
                         int64_t W, int64_t OH, int64_t OW, int64_t DW, int O, int k, int dtype, int device,
                         void* stream);
/* gfeat (acc, zero-filled by the caller) or NULL; gwt (acc, like wt) or NULL. order_* / start_*: the rows
 * (columns) sorted by offset class and each class's start in that order (DH+1 / DW+1 entries). */
int vsr_meta_upscale_bwd(const void* grad, const void* feat, const void* wt, const int32_t* idx_h,
                         const int32_t* cls_h, const int32_t* order_h, const int32_t* start_h, const int32_t* idx_w,
                         const int32_t* cls_w, const int32_t* order_w, const int32_t* start_w, void* gfeat,
                         void* gwt, int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t DH,
                         int64_t DW, int O, int k, int dtype, int device, void* stream);

/* DUF dynamic upsampling: x (N, C, H, W), f (N, 25*r*r, H, W) logits, res (N, C*r*r, H, W), all one dtype, TF
 * channel orders -> out (N, C, r*H, r*W). N <= 65535. */
int vsr_dyn_upsample_fwd(const void* x, const void* f, const void* res, void* out, int64_t N, int64_t C, int64_t H,
                         int64_t W, int r, int dtype, int device, void* stream);
/* gx, gf, gres (data dtype) or NULL each; a: acc buffer (N, C, 25, H, W), needed when gx is asked for. N*C <= 65535 */
int vsr_dyn_upsample_bwd(const void* x, const void* f, const void* grad, void* gx, void* gf, void* gres, void* a,
                         int64_t N, int64_t C, int64_t H, int64_t W, int r, int dtype, int device, void* stream);

/* deformable conv v1 / v2: x channels-last (N, H, W, Cin); offset (N, 2*G*KH*KW, Ho, Wo); mask (N, G*KH*KW, Ho, Wo)
 * or NULL; w (groups, KH*KW, Cin/groups, Cout/groups); bias (Cout) or NULL; out (N, Cout, Ho, Wo); one dtype.
 * N*groups <= 65535. */
int vsr_deform_conv2d_fwd(const void* x, const void* off, const void* msk, const void* w, const void* bias, void* out,
                          int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t Ho, int64_t Wo, int G,
                          int groups, int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw, int dtype,
                          int device, void* stream);
/* gx (acc, channels-last like x), goff (acc, like offset), gmsk (acc, like mask): zero-filled by the caller, or
 * NULL; part (acc, (splits, groups, KH*KW, Cin/groups, Cout/groups)): per-split d/dweight sums, or NULL */
int vsr_deform_conv2d_bwd(const void* x, const void* off, const void* msk, const void* w, const void* grad, void* gx,
                          void* goff, void* gmsk, void* part, int64_t N, int64_t Cin, int64_t H, int64_t W,
                          int64_t Cout, int64_t Ho, int64_t Wo, int G, int groups, int KH, int KW, int sh, int sw,
                          int ph, int pw, int dh, int dw, int splits, int dtype, int device, void* stream);

#ifdef __cplusplus
}
#endif
