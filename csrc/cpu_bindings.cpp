// pybind11 bindings of the host (CPU) kernels (csrc/*_cpu.cpp); the GIL is released while a kernel runs.
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "vsr_cpu.h"

namespace py = pybind11;

namespace {

template <typename P>
const P *addr(py::dict d, const char *k) { return reinterpret_cast<const P *>(d[k].cast<uintptr_t>()); }

void meta_upscale(const std::string &what, py::dict d, uintptr_t a, uintptr_t b, uintptr_t out, int bits,
                  int threads) {
    MetaGeom g;
    g.n = d["n"].cast<int64_t>(); g.c = d["c"].cast<int64_t>(); g.h = d["h"].cast<int64_t>();
    g.w = d["w"].cast<int64_t>(); g.oh = d["oh"].cast<int64_t>(); g.ow = d["ow"].cast<int64_t>();
    g.o = d["o"].cast<int64_t>(); g.k = d["k"].cast<int64_t>(); g.dw = d["dw"].cast<int64_t>();
    g.dh = d["dh"].cast<int64_t>();
    g.idx_h = addr<int32_t>(d, "idx_h"); g.cls_h = addr<int32_t>(d, "cls_h");
    g.idx_w = addr<int32_t>(d, "idx_w"); g.cls_w = addr<int32_t>(d, "cls_w");
    g.order_h = addr<int32_t>(d, "order_h"); g.start_h = addr<int32_t>(d, "start_h");
    py::gil_scoped_release nogil;
    meta_upscale_cpu(what, g, a, b, out, bits, threads);
}

void residual_cast(uintptr_t acc, uintptr_t y, uintptr_t x, int64_t n, int threads, uintptr_t lo) {
    if (n < 0) throw std::invalid_argument("residual_cast_cpu: negative size");
    py::gil_scoped_release nogil;
    residual_cast_cpu(acc, y, lo, x, n, threads);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "vsr_engine host kernels (CPU): meta_upscale, residual_cast";
    m.def("meta_upscale", &meta_upscale, py::arg("what"), py::arg("geom"), py::arg("a"), py::arg("b"), py::arg("out"),
          py::arg("bits"), py::arg("threads"));
    m.def("residual_cast", &residual_cast, py::arg("acc"), py::arg("y"), py::arg("x"), py::arg("n"),
          py::arg("threads"), py::arg("lo") = 0);
}
