// pybind11 module vsr_engine._C: thin wrappers over the extern "C" launchers of csrc/*.cu (vsr_kernels.h).
// Pointers and the stream arrive as integers (tensor.data_ptr(), torch.cuda.current_stream().cuda_stream);
// a non-zero launcher result becomes a RuntimeError. No torch or CUDA header is included here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "vsr_kernels.h"

namespace py = pybind11;
using u = std::uintptr_t;
using i64 = std::int64_t;

namespace {
void check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string(what) + ": " + vsr_error_string(rc));
}
template <typename P = void> P* p(u v) { return reinterpret_cast<P*>(v); }
void* s(u v) { return reinterpret_cast<void*>(v); }
}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "vsr_engine CUDA kernels (raw-pointer launchers; see csrc/vsr_kernels.h)";
  m.def("probe", [](int device) -> std::string {
    const int rc = vsr_probe(device);
    return rc == 0 ? std::string() : std::string(vsr_error_string(rc));
  });
  m.def("flow_warp_fwd", [](u x, u flow, u out, i64 N, i64 C, i64 H, i64 W, i64 sfn, i64 sfh, i64 sfw, i64 sfc,
                            int border, int align, int dt, int fdt, int dev, u st) {
    check(vsr_flow_warp_fwd(p(x), p(flow), p(out), N, C, H, W, sfn, sfh, sfw, sfc, border, align, dt, fdt, dev,
                            s(st)), "flow_warp_fwd");
  });
  m.def("flow_warp_bwd", [](u x, u flow, u grad, u gx, u gflow, i64 N, i64 C, i64 H, i64 W, i64 sfn, i64 sfh,
                            i64 sfw, i64 sfc, int border, int align, int dt, int fdt, int dev, u st) {
    check(vsr_flow_warp_bwd(p(x), p(flow), p(grad), p(gx), p(gflow), N, C, H, W, sfn, sfh, sfw, sfc, border, align,
                            dt, fdt, dev, s(st)), "flow_warp_bwd");
  });
  m.def("pixel_shuffle_fwd", [](u x, u bias, u out, i64 N, i64 C, i64 H, i64 W, int r, int act, double slope,
                                int dt, int dev, u st) {
    check(vsr_pixel_shuffle_fwd(p(x), p(bias), p(out), N, C, H, W, r, act, slope, dt, dev, s(st)),
          "pixel_shuffle_fwd");
  });
  m.def("pixel_shuffle_bwd", [](u grad, u x, u bias, u gx, i64 N, i64 C, i64 H, i64 W, int r, int act,
                                double slope, int dt, int gdt, int dev, u st) {
    check(vsr_pixel_shuffle_bwd(p(grad), p(x), p(bias), p(gx), N, C, H, W, r, act, slope, dt, gdt, dev, s(st)),
          "pixel_shuffle_bwd");
  });
  m.def("clean_step_fwd", [](u x, u r, u out, u partials, i64 numel, int nblocks, int dt, int dev, u st) {
    check(vsr_clean_step_fwd(p(x), p(r), p(out), p<double>(partials), numel, nblocks, dt, dev, s(st)),
          "clean_step_fwd");
  });
  m.def("clean_step_bwd", [](u grad, u r, u gmean, u gr, i64 numel, int dt, int gmdt, int dev, u st) {
    check(vsr_clean_step_bwd(p(grad), p(r), p(gmean), p(gr), numel, dt, gmdt, dev, s(st)), "clean_step_bwd");
  });
  m.def("dwpw_fwd", [](u x, u dww, u dwb, u pww, u pwb, u res, u grad, u out, i64 N, i64 C, i64 O, i64 H, i64 W,
                       int k, int act, double slope, int dt, int dev, u st) {
    check(vsr_dwpw_fwd(p(x), p(dww), p(dwb), p(pww), p(pwb), p(res), p(grad), p(out), N, C, O, H, W, k, act, slope,
                       dt, dev, s(st)), "dwpw_fwd");
  });
  m.def("dw_fwd", [](u x, u dww, u dwb, u y, i64 N, i64 C, i64 H, i64 W, int k, int dt, int dev, u st) {
    check(vsr_dw_fwd(p(x), p(dww), p(dwb), p(y), N, C, H, W, k, dt, dev, s(st)), "dw_fwd");
  });
  m.def("dw_bwd", [](u gy, u x, u dww, u gx, u part, i64 N, i64 C, i64 H, i64 W, int k, int splits, int dt, int dev,
                     u st) {
    check(vsr_dw_bwd(p(gy), p(x), p(dww), p(gx), p(part), N, C, H, W, k, splits, dt, dev, s(st)), "dw_bwd");
  });
  m.def("meta_upscale_fwd", [](u feat, u wt, u ih, u ch, u iw, u cw, u out, i64 N, i64 C, i64 H, i64 W, i64 OH,
                               i64 OW, i64 DW, int O, int k, int dt, int dev, u st) {
    check(vsr_meta_upscale_fwd(p(feat), p(wt), p<const int32_t>(ih), p<const int32_t>(ch), p<const int32_t>(iw),
                               p<const int32_t>(cw), p(out), N, C, H, W, OH, OW, DW, O, k, dt, dev, s(st)),
          "meta_upscale_fwd");
  });
  m.def("meta_upscale_bwd", [](u grad, u feat, u wt, u ih, u ch, u oh_, u sh, u iw, u cw, u ow_, u sw, u gfeat,
                               u gwt, i64 N, i64 C, i64 H, i64 W, i64 OH, i64 OW, i64 DH, i64 DW, int O, int k, int dt,
                               int dev, u st) {
    check(vsr_meta_upscale_bwd(p(grad), p(feat), p(wt), p<const int32_t>(ih), p<const int32_t>(ch),
                               p<const int32_t>(oh_), p<const int32_t>(sh), p<const int32_t>(iw),
                               p<const int32_t>(cw), p<const int32_t>(ow_), p<const int32_t>(sw), p(gfeat), p(gwt), N,
                               C, H, W, OH, OW, DH, DW, O, k, dt, dev, s(st)),
          "meta_upscale_bwd");
  });
  m.def("dyn_upsample_fwd", [](u x, u f, u res, u out, i64 N, i64 C, i64 H, i64 W, int r, int dt, int dev, u st) {
    check(vsr_dyn_upsample_fwd(p(x), p(f), p(res), p(out), N, C, H, W, r, dt, dev, s(st)), "dyn_upsample_fwd");
  });
  m.def("dyn_upsample_bwd", [](u x, u f, u grad, u gx, u gf, u gres, u a, i64 N, i64 C, i64 H, i64 W, int r, int dt,
                               int dev, u st) {
    check(vsr_dyn_upsample_bwd(p(x), p(f), p(grad), p(gx), p(gf), p(gres), p(a), N, C, H, W, r, dt, dev, s(st)),
          "dyn_upsample_bwd");
  });
  m.def("deform_conv2d_fwd", [](u x, u off, u msk, u w, u bias, u out, i64 N, i64 Cin, i64 H, i64 W, i64 Cout,
                                i64 Ho, i64 Wo, int G, int groups, int KH, int KW, int sh, int sw, int ph, int pw,
                                int dh, int dw, int dt, int dev, u st) {
    check(vsr_deform_conv2d_fwd(p(x), p(off), p(msk), p(w), p(bias), p(out), N, Cin, H, W, Cout, Ho, Wo, G, groups,
                                KH, KW, sh, sw, ph, pw, dh, dw, dt, dev, s(st)),
          "deform_conv2d_fwd");
  });
  m.def("deform_conv2d_bwd", [](u x, u off, u msk, u w, u grad, u gx, u goff, u gmsk, u part, i64 N, i64 Cin, i64 H,
                                i64 W, i64 Cout, i64 Ho, i64 Wo, int G, int groups, int KH, int KW, int sh, int sw,
                                int ph, int pw, int dh, int dw, int splits, int dt, int dev, u st) {
    check(vsr_deform_conv2d_bwd(p(x), p(off), p(msk), p(w), p(grad), p(gx), p(goff), p(gmsk), p(part), N, Cin, H, W,
                                Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw, splits, dt, dev, s(st)),
          "deform_conv2d_bwd");
  });
}
