// vsr_engine host-side staging: a bounded, ordered ring of slot indices and GIL-free strided copies.
//
// The ring owns no memory. The Python side (vsr_engine/_host.py) allocates the slot buffers with torch
// (pinned when CUDA is available) and uses this module for the two things Python threads do badly:
//   * blocking producer/consumer hand-off without holding the GIL (waits release it, wake on close/cancel,
//     and stay interruptible: the main thread checks signals every 50 ms while it waits);
//   * copying decoded planes (strided rows, as PyAV gives them) into packed slots and back, with the GIL
//     released and, for large frames, split over a few threads.
//
// Slot life cycle:  FREE --acquire_free--> WRITING --commit--> READY --acquire_ready--> READING --release--> FREE
//                                          WRITING --discard--> FREE (its sequence number is skipped)
// acquire_free hands out sequence numbers 0, 1, 2, ...; acquire_ready returns slots strictly in that order,
// whatever order producers commit in. close() ends the stream (consumers drain, then RingClosed); fail(exc)
// ends it with an error (consumers drain the frames committed before, then `exc` is raised); cancel() aborts
// (every waiter and every later call raises RingCancelled, ready frames are dropped).
//
// Built either by torch.utils.cpp_extension (JIT load or a setup.py CppExtension, which define
// TORCH_EXTENSION_NAME) or as a plain pybind11 module named _host_ext. Uses no torch headers.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _host_ext
#endif

namespace py = pybind11;

namespace {

// Exception types, registered from Python (vsr_engine._host) so both backends raise the same classes.
// Deliberately leaked references: they must outlive every Ring and never be decref'd at interpreter exit.
PyObject* g_closed_type = nullptr;
PyObject* g_cancelled_type = nullptr;
unsigned long g_main_thread = 0;

[[noreturn]] void raise_type(PyObject* type, PyObject* fallback, const std::string& msg) {
    PyErr_SetString(type ? type : fallback, msg.c_str());
    throw py::error_already_set();
}

[[noreturn]] void raise_closed(const std::string& msg) { raise_type(g_closed_type, PyExc_RuntimeError, msg); }
[[noreturn]] void raise_cancelled(const std::string& msg) {
    raise_type(g_cancelled_type ? g_cancelled_type : g_closed_type, PyExc_RuntimeError, msg);
}
[[noreturn]] void raise_timeout(const std::string& msg) { raise_type(PyExc_TimeoutError, PyExc_TimeoutError, msg); }

double parse_timeout(const py::object& t) {
    if (t.is_none()) return std::numeric_limits<double>::infinity();
    double v = t.cast<double>();
    if (v != v) throw py::value_error("timeout is NaN");
    return v < 0 ? 0.0 : v;
}

enum SlotState : int { FREE = 0, WRITING = 1, READY = 2, READING = 3 };
const char* state_name(int s) {
    switch (s) {
        case FREE: return "free";
        case WRITING: return "writing";
        case READY: return "ready";
        case READING: return "reading";
    }
    return "?";
}

class Ring {
public:
    explicit Ring(int num_slots) : n_(num_slots) {
        if (num_slots < 1) throw py::value_error("num_slots must be >= 1");
        state_.assign(n_, FREE);
        seq_.assign(n_, 0);
        meta_.resize(n_);
        for (int i = 0; i < n_; ++i) free_.push_back(i);
    }

    // -- producer ---------------------------------------------------------------------------------------------
    py::tuple acquire_free(const py::object& timeout) {
        const double t = parse_timeout(timeout);
        int slot = -1;
        uint64_t seq = 0;
        int why = 0;  // 0 ok, 1 timeout, 2 cancelled, 3 closed
        {
            py::gil_scoped_release nogil;
            std::unique_lock<std::mutex> lk(mu_);
            bool ok = wait(lk, [&] { return cancelled_ || closed_ || !free_.empty(); }, t);
            if (cancelled_) why = 2;
            else if (closed_) why = 3;
            else if (!ok) why = 1;
            else {
                slot = free_.front();
                free_.pop_front();
                seq = next_write_seq_++;
                state_[slot] = WRITING;
                seq_[slot] = seq;
                pending_.emplace(seq, slot);
            }
        }
        if (why == 1) raise_timeout("acquire_free: no free slot within the timeout");
        if (why == 2) raise_cancelled("ring cancelled");
        if (why == 3) raise_closed("ring closed for writing");
        return py::make_tuple(slot, seq);
    }

    void commit(int slot, py::object meta) {
        check_slot(slot);
        py::object old;
        {
            std::unique_lock<std::mutex> lk(mu_);
            if (cancelled_) {
                lk.unlock();
                raise_cancelled("ring cancelled");
            }
            if (state_[slot] != WRITING) {
                std::string s = state_name(state_[slot]);
                lk.unlock();
                throw py::value_error("commit: slot " + std::to_string(slot) + " is " + s + ", not writing");
            }
            // The producer owns the slot while WRITING; the GIL is held, so the swap is safe.
            old = std::move(meta_[slot]);
            meta_[slot] = std::move(meta);
            state_[slot] = READY;
            ++committed_;
        }
        cv_.notify_all();
    }

    void discard(int slot) {
        check_slot(slot);
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (cancelled_) return;
            if (state_[slot] != WRITING)
                throw py::value_error("discard: slot " + std::to_string(slot) + " is " + state_name(state_[slot]) +
                                      ", not writing");
            pending_[seq_[slot]] = -1;  // the consumer skips this sequence number
            state_[slot] = FREE;
            free_.push_back(slot);
            ++discarded_;
        }
        cv_.notify_all();
    }

    // -- consumer ---------------------------------------------------------------------------------------------
    py::tuple acquire_ready(const py::object& timeout) {
        const double t = parse_timeout(timeout);
        int slot = -1;
        uint64_t seq = 0;
        int why = 0;  // 0 ok, 1 timeout, 2 cancelled, 3 closed and drained, 4 failed and drained
        {
            py::gil_scoped_release nogil;
            std::unique_lock<std::mutex> lk(mu_);
            wait(lk, [&] { return cancelled_ || head_ready() || (closed_ && pending_.empty()); }, t);
            if (cancelled_) why = 2;
            else if (head_ready()) {
                auto it = pending_.begin();
                slot = it->second;
                seq = it->first;
                pending_.erase(it);
                ++next_read_seq_;
                state_[slot] = READING;
                ++consumed_;
            } else if (closed_ && pending_.empty()) why = has_error_ ? 4 : 3;
            else why = 1;  // timed out
        }
        if (why == 1) raise_timeout("acquire_ready: no ready slot within the timeout");
        if (why == 2) raise_cancelled("ring cancelled");
        if (why == 3) raise_closed("ring closed: end of stream");
        if (why == 4) {
            // Re-raise the producer's exception object itself.
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error_.ptr())), error_.ptr());
            throw py::error_already_set();
        }
        // The consumer now owns the slot (READING): nobody else touches meta_[slot]; the GIL is held again.
        py::object meta = std::move(meta_[slot]);
        meta_[slot] = py::none();
        return py::make_tuple(slot, seq, meta);
    }

    void release(int slot) {
        check_slot(slot);
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (cancelled_) return;
            if (state_[slot] != READING)
                throw py::value_error("release: slot " + std::to_string(slot) + " is " + state_name(state_[slot]) +
                                      ", not reading");
            state_[slot] = FREE;
            free_.push_back(slot);
        }
        cv_.notify_all();
    }

    // -- shutdown ---------------------------------------------------------------------------------------------
    void close() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            closed_ = true;
        }
        cv_.notify_all();
    }

    void fail(py::object exc) {
        if (!PyExceptionInstance_Check(exc.ptr())) throw py::type_error("fail() needs an exception instance");
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (!has_error_ && !cancelled_) {
                error_ = std::move(exc);  // GIL held
                has_error_ = true;
            }
            closed_ = true;
        }
        cv_.notify_all();
    }

    void cancel() {
        std::vector<py::object> drop;  // decref'd after the lock is released, with the GIL held
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (cancelled_) return;
            cancelled_ = true;
            closed_ = true;
            for (int i = 0; i < n_; ++i) {
                if (state_[i] == READY) drop.push_back(std::move(meta_[i]));
                meta_[i] = py::object();
                state_[i] = FREE;
            }
            pending_.clear();
            free_.clear();
            for (int i = 0; i < n_; ++i) free_.push_back(i);
        }
        cv_.notify_all();
    }

    // -- introspection ----------------------------------------------------------------------------------------
    int num_slots() const { return n_; }
    bool closed() { std::lock_guard<std::mutex> lk(mu_); return closed_; }
    bool cancelled() { std::lock_guard<std::mutex> lk(mu_); return cancelled_; }
    bool failed() { std::lock_guard<std::mutex> lk(mu_); return has_error_; }
    py::dict stats() {
        std::lock_guard<std::mutex> lk(mu_);
        int counts[4] = {0, 0, 0, 0};
        for (int s : state_) counts[s]++;
        py::dict d;
        d["num_slots"] = n_;
        d["free"] = counts[FREE];
        d["writing"] = counts[WRITING];
        d["ready"] = counts[READY];
        d["reading"] = counts[READING];
        d["committed"] = committed_;
        d["consumed"] = consumed_;
        d["discarded"] = discarded_;
        d["next_write_seq"] = next_write_seq_;
        d["next_read_seq"] = next_read_seq_;
        d["closed"] = closed_;
        d["cancelled"] = cancelled_;
        d["failed"] = has_error_;
        return d;
    }
    std::vector<std::string> states() {
        std::lock_guard<std::mutex> lk(mu_);
        std::vector<std::string> out;
        for (int s : state_) out.emplace_back(state_name(s));
        return out;
    }

private:
    void check_slot(int slot) const {
        if (slot < 0 || slot >= n_) throw py::index_error("slot " + std::to_string(slot) + " out of range");
    }

    // True when the next sequence number to hand out is committed; skips discarded sequence numbers.
    bool head_ready() {
        while (!pending_.empty() && pending_.begin()->second < 0) {
            pending_.erase(pending_.begin());
            ++next_read_seq_;
        }
        if (pending_.empty()) return false;
        auto it = pending_.begin();
        return it->first == next_read_seq_ && state_[it->second] == READY;
    }

    // Waits (GIL NOT held, lk locked) until pred() or the timeout. Every 50 ms the main thread briefly takes
    // the GIL to run signal handlers, so Ctrl-C interrupts a blocked wait (the exception propagates).
    template <class Pred>
    bool wait(std::unique_lock<std::mutex>& lk, Pred pred, double timeout_s) {
        using clock = std::chrono::steady_clock;
        const bool infinite = timeout_s == std::numeric_limits<double>::infinity();
        const auto start = clock::now();
        const auto limit = std::chrono::duration<double>(infinite ? 0.0 : timeout_s);
        const bool main_thread = PyThread_get_thread_ident() == g_main_thread;
        const auto slice = std::chrono::milliseconds(50);
        while (!pred()) {
            auto elapsed = clock::now() - start;
            if (!infinite && elapsed >= limit) return false;
            auto step = infinite ? std::chrono::duration<double>(slice)
                                 : std::min(std::chrono::duration<double>(slice),
                                            std::chrono::duration<double>(limit - elapsed));
            cv_.wait_for(lk, step);
            if (pred()) return true;
            if (main_thread) {
                lk.unlock();  // never wait for the GIL while holding the ring mutex
                {
                    py::gil_scoped_acquire gil;
                    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                }
                lk.lock();
            }
        }
        return true;
    }

    const int n_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<int> state_;
    std::vector<uint64_t> seq_;
    std::vector<py::object> meta_;  // touched only with the GIL held, by the slot's current owner
    std::deque<int> free_;
    std::map<uint64_t, int> pending_;  // seq -> slot (WRITING or READY), or -1 for a discarded seq
    uint64_t next_write_seq_ = 0, next_read_seq_ = 0;
    uint64_t committed_ = 0, consumed_ = 0, discarded_ = 0;
    bool closed_ = false, cancelled_ = false, has_error_ = false;
    py::object error_;
};

// ---------------------------------------------------------------------------------------------------------------
// Copies
// ---------------------------------------------------------------------------------------------------------------

// A C-contiguous buffer held for the duration of a call (released with the GIL held).
class Held {
public:
    Held(const py::handle& obj, bool writable) {
        int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) {
            PyErr_Clear();
            std::string what = py::str(py::type::handle_of(obj)).cast<std::string>();
            throw py::type_error(std::string(writable ? "destination" : "source") +
                                 " must support the buffer protocol, C-contiguous" +
                                 (writable ? " and writable" : "") + " (got " + what + ")");
        }
        ok_ = true;
    }
    ~Held() {
        if (ok_) PyBuffer_Release(&view_);
    }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    char* ptr() const { return static_cast<char*>(view_.buf); }
    size_t size() const { return static_cast<size_t>(view_.len); }

private:
    Py_buffer view_{};
    bool ok_ = false;
};

struct Job {
    char* dst;
    const char* src;
    size_t dst_stride, src_stride, row_bytes, rows;
};

void check_extent(const char* what, size_t buf_size, int64_t offset, int64_t stride, int64_t row_bytes,
                  int64_t rows) {
    if (offset < 0 || stride < 0 || row_bytes < 0 || rows < 0)
        throw py::value_error(std::string(what) + ": negative offset, stride, row_bytes or rows");
    if (rows == 0 || row_bytes == 0) return;
    // offset + (rows - 1) * stride + row_bytes <= size, without overflow
    const uint64_t need_rows = static_cast<uint64_t>(rows - 1);
    if (stride > 0 && need_rows > (std::numeric_limits<uint64_t>::max() / 4) / static_cast<uint64_t>(stride))
        throw py::value_error(std::string(what) + ": extent overflows");
    const uint64_t end = static_cast<uint64_t>(offset) + need_rows * static_cast<uint64_t>(stride) +
                         static_cast<uint64_t>(row_bytes);
    if (end > buf_size)
        throw py::value_error(std::string(what) + ": rows reach byte " + std::to_string(end) + " of a " +
                              std::to_string(buf_size) + "-byte buffer (offset " + std::to_string(offset) +
                              ", stride " + std::to_string(stride) + ", row_bytes " + std::to_string(row_bytes) +
                              ", rows " + std::to_string(rows) + ")");
}

bool overlaps(const Job& j) {
    if (j.rows == 0 || j.row_bytes == 0) return false;
    const char* d0 = j.dst;
    const char* d1 = j.dst + (j.rows - 1) * j.dst_stride + j.row_bytes;
    const char* s0 = j.src;
    const char* s1 = j.src + (j.rows - 1) * j.src_stride + j.row_bytes;
    return d0 < s1 && s0 < d1;
}

// Part `part` of `parts` of one job: contiguous jobs split by bytes, strided ones by rows.
void run_part(const Job& j, size_t part, size_t parts) {
    if (j.rows == 0 || j.row_bytes == 0) return;
    const bool contiguous = (j.rows == 1) || (j.dst_stride == j.row_bytes && j.src_stride == j.row_bytes);
    if (contiguous) {
        const size_t total = j.rows * j.row_bytes;
        const size_t chunk = (total + parts - 1) / parts;
        const size_t b0 = std::min(total, part * chunk), b1 = std::min(total, b0 + chunk);
        if (b1 > b0) std::memcpy(j.dst + b0, j.src + b0, b1 - b0);
        return;
    }
    const size_t chunk = (j.rows + parts - 1) / parts;
    const size_t r0 = std::min(j.rows, part * chunk), r1 = std::min(j.rows, r0 + chunk);
    for (size_t r = r0; r < r1; ++r) std::memcpy(j.dst + r * j.dst_stride, j.src + r * j.src_stride, j.row_bytes);
}

constexpr size_t kBytesPerThread = size_t(1) << 21;  // do not split copies below ~2 MB per thread

int pick_threads(const std::vector<Job>& jobs, int threads) {
    size_t total = 0;
    for (const auto& j : jobs) total += j.rows * j.row_bytes;
    if (threads > 0) return threads;
    unsigned hw = std::thread::hardware_concurrency();
    size_t cap = std::max<size_t>(1, std::min<size_t>(hw ? hw : 1, 8));
    return static_cast<int>(std::max<size_t>(1, std::min(cap, total / kBytesPerThread)));
}

// Runs the jobs with the GIL released, on `threads` threads (0: automatic).
void run_jobs(const std::vector<Job>& jobs, int threads) {
    const int nt = std::min(pick_threads(jobs, threads), 64);
    py::gil_scoped_release nogil;
    if (nt <= 1) {
        for (const auto& j : jobs) run_part(j, 0, 1);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int t = 1; t < nt; ++t)
        pool.emplace_back([&jobs, t, nt] {
            for (const auto& j : jobs) run_part(j, t, nt);
        });
    for (const auto& j : jobs) run_part(j, 0, nt);
    for (auto& th : pool) th.join();
}

// copy2d(dst, dst_offset, dst_stride, src, src_offset, src_stride, row_bytes, rows, threads=0)
void copy2d(py::object dst, int64_t dst_offset, int64_t dst_stride, py::object src, int64_t src_offset,
            int64_t src_stride, int64_t row_bytes, int64_t rows, int threads) {
    Held d(dst, true), s(src, false);
    check_extent("dst", d.size(), dst_offset, dst_stride, row_bytes, rows);
    check_extent("src", s.size(), src_offset, src_stride, row_bytes, rows);
    if (rows > 1 && dst_stride < row_bytes) throw py::value_error("dst_stride < row_bytes: rows would overlap");
    std::vector<Job> jobs{{d.ptr() + dst_offset, s.ptr() + src_offset, size_t(dst_stride), size_t(src_stride),
                           size_t(row_bytes), size_t(rows)}};
    if (overlaps(jobs[0])) throw py::value_error("copy2d: source and destination overlap");
    run_jobs(jobs, threads);
}

// stage_planes(dst, dst_offset, [(src, src_offset, src_stride, row_bytes, rows), ...], threads=0) -> end offset
// Packs each plane's rows back to back (dst stride == row_bytes), plane after plane.
int64_t stage_planes(py::object dst, int64_t dst_offset, py::sequence planes, int threads) {
    Held d(dst, true);
    std::vector<std::unique_ptr<Held>> held;
    std::vector<Job> jobs;
    if (dst_offset < 0) throw py::value_error("dst_offset < 0");
    int64_t off = dst_offset;
    for (auto item : planes) {
        py::tuple t = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
        if (t.size() != 5) throw py::value_error("plane must be (src, src_offset, src_stride, row_bytes, rows)");
        auto so = t[1].cast<int64_t>(), ss = t[2].cast<int64_t>(), rb = t[3].cast<int64_t>(), rows = t[4].cast<int64_t>();
        held.emplace_back(new Held(t[0], false));
        check_extent("src plane", held.back()->size(), so, ss, rb, rows);
        check_extent("dst", d.size(), off, rb, rb, rows);
        jobs.push_back({d.ptr() + off, held.back()->ptr() + so, size_t(rb), size_t(ss), size_t(rb), size_t(rows)});
        if (overlaps(jobs.back())) throw py::value_error("stage_planes: source and destination overlap");
        off += rb * rows;
    }
    run_jobs(jobs, threads);
    return off;
}

// unstage_planes(src, src_offset, [(dst, dst_offset, dst_stride, row_bytes, rows), ...], threads=0) -> end offset
// The inverse: reads packed planes back to back from src into strided destinations (e.g. av.VideoFrame planes).
int64_t unstage_planes(py::object src, int64_t src_offset, py::sequence planes, int threads) {
    Held s(src, false);
    std::vector<std::unique_ptr<Held>> held;
    std::vector<Job> jobs;
    if (src_offset < 0) throw py::value_error("src_offset < 0");
    int64_t off = src_offset;
    for (auto item : planes) {
        py::tuple t = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
        if (t.size() != 5) throw py::value_error("plane must be (dst, dst_offset, dst_stride, row_bytes, rows)");
        auto doff = t[1].cast<int64_t>(), ds = t[2].cast<int64_t>(), rb = t[3].cast<int64_t>(), rows = t[4].cast<int64_t>();
        held.emplace_back(new Held(t[0], true));
        check_extent("dst plane", held.back()->size(), doff, ds, rb, rows);
        if (rows > 1 && ds < rb) throw py::value_error("dst_stride < row_bytes: rows would overlap");
        check_extent("src", s.size(), off, rb, rb, rows);
        jobs.push_back({held.back()->ptr() + doff, s.ptr() + off, size_t(ds), size_t(rb), size_t(rb), size_t(rows)});
        if (overlaps(jobs.back())) throw py::value_error("unstage_planes: source and destination overlap");
        off += rb * rows;
    }
    run_jobs(jobs, threads);
    return off;
}

void register_exceptions(py::object closed, py::object cancelled) {
    if (!PyExceptionClass_Check(closed.ptr()) || !PyExceptionClass_Check(cancelled.ptr()))
        throw py::type_error("register_exceptions needs two exception classes");
    Py_XINCREF(closed.ptr());
    Py_XINCREF(cancelled.ptr());
    g_closed_type = closed.ptr();  // old references, if any, are leaked on purpose
    g_cancelled_type = cancelled.ptr();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "vsr_engine host staging: ordered bounded slot ring and GIL-free strided plane copies";
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

    py::class_<Ring>(m, "Ring")
        .def(py::init<int>(), py::arg("num_slots"))
        .def("acquire_free", &Ring::acquire_free, py::arg("timeout") = py::none(),
             "Block until a slot is free; returns (slot, seq). TimeoutError / RingClosed / RingCancelled.")
        .def("commit", &Ring::commit, py::arg("slot"), py::arg("meta") = py::none())
        .def("discard", &Ring::discard, py::arg("slot"))
        .def("acquire_ready", &Ring::acquire_ready, py::arg("timeout") = py::none(),
             "Block until the next slot in sequence is committed; returns (slot, seq, meta).")
        .def("release", &Ring::release, py::arg("slot"))
        .def("close", &Ring::close)
        .def("fail", &Ring::fail, py::arg("exc"))
        .def("cancel", &Ring::cancel)
        .def("stats", &Ring::stats)
        .def("states", &Ring::states)
        .def_property_readonly("num_slots", &Ring::num_slots)
        .def_property_readonly("closed", &Ring::closed)
        .def_property_readonly("cancelled", &Ring::cancelled)
        .def_property_readonly("failed", &Ring::failed);

    m.def("copy2d", &copy2d, py::arg("dst"), py::arg("dst_offset"), py::arg("dst_stride"), py::arg("src"),
          py::arg("src_offset"), py::arg("src_stride"), py::arg("row_bytes"), py::arg("rows"),
          py::arg("threads") = 0, "Strided row copy with the GIL released.");
    m.def("stage_planes", &stage_planes, py::arg("dst"), py::arg("dst_offset"), py::arg("planes"),
          py::arg("threads") = 0);
    m.def("unstage_planes", &unstage_planes, py::arg("src"), py::arg("src_offset"), py::arg("planes"),
          py::arg("threads") = 0);
    m.def("register_exceptions", &register_exceptions, py::arg("closed"), py::arg("cancelled"));
    m.def("hardware_threads", [] { return static_cast<int>(std::thread::hardware_concurrency()); });
    m.attr("ABI_VERSION") = 1;
}
