// pybind11 bindings of bbimg._core. This is the one place where the engine's REQUIRES:
// preconditions are checked; violations raise RecError (a ValueError subclass) and malformed
// compressed data raises CorruptDataError (a RecError subclass). Heavy work releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "blocked_ops.h"
#include "detmath.h"
#include "philox.h"
#include "range_coder.h"
#include "rec.h"

namespace py = pybind11;
using namespace bbimg;

#ifndef VERSION_INFO
#define VERSION_INFO "dev"
#endif
#ifndef BBIMG_SOURCE_HASH
#define BBIMG_SOURCE_HASH ""
#endif

// Bumped whenever the binding API or the coded bitstream changes.
constexpr int CORE_API_VERSION = 3;

namespace {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using U32 = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;

[[noreturn]] void fail(const std::string& msg) { throw ArgError(msg); }

template <class A>
int64_t vec_len(const A& a, const char* name) {
    if (a.ndim() != 1) fail(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + "-D");
    return (int64_t)a.shape(0);
}

void check_kappa(int kappa) {
    if (kappa < REC_KAPPA_MIN || kappa > REC_KAPPA_MAX)
        fail("kappa must be in [" + std::to_string(REC_KAPPA_MIN) + ", " +
             std::to_string(REC_KAPPA_MAX) + "], got " + std::to_string(kappa));
}

int resolve_threads(int threads) {
    if (threads < 0) fail("threads must be >= 1 (or 0 for all cores), got " + std::to_string(threads));
    if (threads == 0) {
        const unsigned hc = std::thread::hardware_concurrency();
        threads = hc ? (int)hc : 1;
    }
    return std::min(threads, 256);
}

// Checks a plan (lengths, exponents) for n dims; returns the view.
PlanView check_plan(const I32& lens, const U8& ks, int kappa, int64_t n) {
    check_kappa(kappa);
    const int64_t B = vec_len(lens, "plan lengths");
    if (vec_len(ks, "plan exponents") != B) fail("plan lengths and exponents differ in length");
    const int32_t* L = lens.data();
    const uint8_t* K = ks.data();
    int64_t total = 0;
    for (int64_t b = 0; b < B; ++b) {
        if (L[b] < 1 || L[b] > REC_MAX_BLOCK_LEN)
            fail("plan block " + std::to_string(b) + " has length " + std::to_string(L[b]) +
                 " (must be 1.." + std::to_string(REC_MAX_BLOCK_LEN) + ")");
        if (K[b] > kappa)
            fail("plan block " + std::to_string(b) + " has exponent " + std::to_string(K[b]) +
                 " > kappa " + std::to_string(kappa));
        total += L[b];
    }
    if (total != n)
        fail("plan covers " + std::to_string(total) + " dims but the inputs have " + std::to_string(n));
    if (B > 0xFFFFFFFFll) fail("too many blocks");
    return PlanView{L, K, B, kappa};
}

void check_vec(const F32& a, const char* name, int64_t n, bool positive) {
    if (vec_len(a, name) != n)
        fail(std::string(name) + " has " + std::to_string(a.shape(0)) + " elements, expected " +
             std::to_string(n));
    const float* p = a.data();
    for (int64_t i = 0; i < n; ++i) {
        const float v = p[i];
        if (!std::isfinite(v))
            fail(std::string(name) + "[" + std::to_string(i) + "] is not finite (" +
                 std::to_string(v) + ")");
        if (positive && !(v > 0.0f))
            fail(std::string(name) + "[" + std::to_string(i) + "] must be > 0, got " +
                 std::to_string(v));
    }
}

// The selection rule: no temperature is the "nearest" rule, a temperature tau >= 0 the tempered one.
struct Rule {
    bool nearest;
    double tau;
};

Rule check_rule(const std::optional<double>& temperature) {
    if (!temperature) return Rule{true, 0.0};
    const double tau = *temperature;
    if (!std::isfinite(tau) || tau < 0.0)
        fail("temperature must be finite and >= 0 (or None for the nearest rule), got " +
             std::to_string(tau));
    return Rule{false, tau};
}

// "cpu" always; "cuda" only when this build has CUDA and a device is usable.
void check_device(const std::string& device) {
    if (device != "cpu" && device != "cuda") fail("device must be 'cpu' or 'cuda', got '" + device + "'");
    if (device == "cuda" && !rec_cuda_available())
        fail("device 'cuda' is not available: " + rec_cuda_info());
}

py::bytes to_bytes(const std::vector<uint8_t>& v) {
    return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

std::string bytes_of(const py::bytes& b) { return std::string(b); }

// ----- range coder -------------------------------------------------------------------------------
struct StaticTables {
    int64_t C = 0, A = 0;
    std::vector<uint32_t> cdf;  // [C][A + 1]
};

StaticTables make_tables(const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& f) {
    StaticTables t;
    if (f.ndim() == 1) {
        t.C = 1;
        t.A = f.shape(0);
    } else if (f.ndim() == 2) {
        t.C = f.shape(0);
        t.A = f.shape(1);
    } else {
        fail("frequency table must be 1-D or 2-D");
    }
    if (t.A < 1 || t.C < 1) fail("frequency table is empty");
    if (t.A > (1 << 16)) fail("alphabet larger than 65536 symbols");
    t.cdf.resize(t.C * (t.A + 1));
    const uint32_t* p = f.data();
    for (int64_t c = 0; c < t.C; ++c) {
        uint64_t acc = 0;
        uint32_t* cdf = t.cdf.data() + c * (t.A + 1);
        cdf[0] = 0;
        for (int64_t s = 0; s < t.A; ++s) {
            acc += p[c * t.A + s];
            if (acc > RC_MAX_TOTAL)
                fail("frequency table " + std::to_string(c) + " sums to more than " +
                     std::to_string(RC_MAX_TOTAL));
            cdf[s + 1] = (uint32_t)acc;
        }
        if (acc == 0) fail("frequency table " + std::to_string(c) + " sums to 0");
    }
    return t;
}

const int32_t* check_contexts(const py::object& ctx, int64_t n, int64_t C, I32& holder) {
    if (ctx.is_none()) {
        if (C != 1) fail("contexts are required with a 2-D frequency table / several contexts");
        return nullptr;
    }
    holder = I32::ensure(ctx);
    if (!holder) fail("contexts must be an integer array");
    if (vec_len(holder, "contexts") != n) fail("contexts must have one entry per symbol");
    const int32_t* c = holder.data();
    for (int64_t i = 0; i < n; ++i)
        if (c[i] < 0 || c[i] >= C)
            fail("context " + std::to_string(c[i]) + " at position " + std::to_string(i) +
                 " is outside [0, " + std::to_string(C) + ")");
    return c;
}

py::bytes rc_encode_static(const I32& symbols,
                           const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& freqs,
                           const py::object& contexts) {
    const int64_t n = vec_len(symbols, "symbols");
    StaticTables t = make_tables(freqs);
    I32 ch;
    const int32_t* ctx = check_contexts(contexts, n, t.C, ch);
    const int32_t* s = symbols.data();
    for (int64_t i = 0; i < n; ++i) {
        const int64_t c = ctx ? ctx[i] : 0;
        if (s[i] < 0 || s[i] >= t.A)
            fail("symbol " + std::to_string(s[i]) + " at position " + std::to_string(i) +
                 " is outside [0, " + std::to_string(t.A) + ")");
        const uint32_t* cdf = t.cdf.data() + c * (t.A + 1);
        if (cdf[s[i] + 1] == cdf[s[i]])
            fail("symbol " + std::to_string(s[i]) + " at position " + std::to_string(i) +
                 " has zero frequency");
    }
    std::vector<uint8_t> out;
    {
        py::gil_scoped_release nogil;
        RangeEncoder enc;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t c = ctx ? ctx[i] : 0;
            const uint32_t* cdf = t.cdf.data() + c * (t.A + 1);
            enc.encode(cdf[s[i]], cdf[s[i] + 1] - cdf[s[i]], cdf[t.A]);
        }
        out = enc.finish();
    }
    return to_bytes(out);
}

py::array_t<int32_t> rc_decode_static(const py::bytes& data,
                                      const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& freqs,
                                      int64_t count, const py::object& contexts) {
    if (count < 0) fail("count must be >= 0");
    StaticTables t = make_tables(freqs);
    I32 ch;
    const int32_t* ctx = check_contexts(contexts, count, t.C, ch);
    const std::string buf = bytes_of(data);
    py::array_t<int32_t> out(count);
    int32_t* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        RangeDecoder dec(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
        for (int64_t i = 0; i < count; ++i) {
            const int64_t c = ctx ? ctx[i] : 0;
            const uint32_t* cdf = t.cdf.data() + c * (t.A + 1);
            const uint32_t v = dec.get_freq(cdf[t.A]);
            // first s with cdf[s + 1] > v (skips zero-frequency symbols)
            int64_t lo = 0, hi = t.A - 1;
            while (lo < hi) {
                const int64_t mid = (lo + hi) / 2;
                if (cdf[mid + 1] > v)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            dec.update(cdf[lo], cdf[lo + 1] - cdf[lo]);
            o[i] = (int32_t)lo;
            if (dec.missing() > 4) throw CorruptError("range decoder: truncated data");
        }
        dec.check_finished("range decoder");
    }
    return out;
}

void check_adaptive(int64_t alphabet, int64_t n_contexts, int64_t increment, int64_t limit) {
    if (alphabet < 1 || alphabet > 4096) fail("alphabet_size must be in [1, 4096]");
    if (n_contexts < 1 || n_contexts > (1 << 16)) fail("n_contexts must be in [1, 65536]");
    if (increment < 1) fail("increment must be >= 1");
    if (limit > RC_MAX_TOTAL || limit < alphabet + increment)
        fail("limit must be in [alphabet_size + increment, 65536]");
}

py::bytes rc_encode_adaptive(const I32& symbols, int64_t alphabet, const py::object& contexts,
                             int64_t n_contexts, int64_t increment, int64_t limit) {
    check_adaptive(alphabet, n_contexts, increment, limit);
    const int64_t n = vec_len(symbols, "symbols");
    I32 ch;
    const int32_t* ctx = check_contexts(contexts, n, n_contexts, ch);
    const int32_t* s = symbols.data();
    for (int64_t i = 0; i < n; ++i)
        if (s[i] < 0 || s[i] >= alphabet)
            fail("symbol " + std::to_string(s[i]) + " at position " + std::to_string(i) +
                 " is outside [0, " + std::to_string(alphabet) + ")");
    std::vector<uint8_t> out;
    {
        py::gil_scoped_release nogil;
        std::vector<AdaptiveModel> models(n_contexts, AdaptiveModel((int)alphabet, (uint32_t)increment,
                                                                    (uint32_t)limit));
        RangeEncoder enc;
        for (int64_t i = 0; i < n; ++i) models[ctx ? ctx[i] : 0].encode(enc, s[i]);
        out = enc.finish();
    }
    return to_bytes(out);
}

py::array_t<int32_t> rc_decode_adaptive(const py::bytes& data, int64_t count, int64_t alphabet,
                                        const py::object& contexts, int64_t n_contexts,
                                        int64_t increment, int64_t limit) {
    check_adaptive(alphabet, n_contexts, increment, limit);
    if (count < 0) fail("count must be >= 0");
    I32 ch;
    const int32_t* ctx = check_contexts(contexts, count, n_contexts, ch);
    const std::string buf = bytes_of(data);
    py::array_t<int32_t> out(count);
    int32_t* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        std::vector<AdaptiveModel> models(n_contexts, AdaptiveModel((int)alphabet, (uint32_t)increment,
                                                                    (uint32_t)limit));
        RangeDecoder dec(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
        for (int64_t i = 0; i < count; ++i) {
            o[i] = models[ctx ? ctx[i] : 0].decode(dec);
            if (dec.missing() > 4) throw CorruptError("range decoder: truncated data");
        }
        dec.check_finished("range decoder");
    }
    return out;
}

// ----- REC ------------------------------------------------------------------------------------------
void check_indices(const PlanView& plan, const U32& idx) {
    if (vec_len(idx, "indices") != plan.B)
        fail("got " + std::to_string(idx.shape(0)) + " indices for " + std::to_string(plan.B) +
             " blocks");
    const uint32_t* p = idx.data();
    for (int64_t b = 0; b < plan.B; ++b)
        if ((uint64_t)p[b] >= ((uint64_t)1 << plan.k[b]))
            fail("index " + std::to_string(p[b]) + " of block " + std::to_string(b) +
                 " is out of range for 2^" + std::to_string(plan.k[b]) + " candidates");
}

int64_t plan_total(const I32& lens) {
    int64_t t = 0;
    for (int64_t b = 0; b < lens.shape(0); ++b) t += lens.data()[b];
    return t;
}

py::bytes encode_indices_py(const I32& lens, const U8& ks, int kappa, const U32& idx) {
    vec_len(lens, "plan lengths");
    const PlanView plan = check_plan(lens, ks, kappa, plan_total(lens));
    check_indices(plan, idx);
    return to_bytes(encode_indices(plan, idx.data()));
}

py::array_t<uint32_t> decode_indices_py(const py::bytes& data, const I32& lens, const U8& ks,
                                        int kappa) {
    vec_len(lens, "plan lengths");
    const PlanView plan = check_plan(lens, ks, kappa, plan_total(lens));
    const std::string buf = bytes_of(data);
    py::array_t<uint32_t> out(plan.B);
    decode_indices(plan, reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), out.mutable_data());
    return out;
}

struct Checked {
    RecInputs in;
    PlanView plan;
};

Checked check_encode_inputs(const F32& mu_q, const F32& sg_q, const F32& mu_p, const F32& sg_p,
                            const I32& lens, const U8& ks, int kappa) {
    const int64_t n = vec_len(mu_q, "mu_q");
    check_vec(mu_q, "mu_q", n, false);
    check_vec(sg_q, "sigma_q", n, true);
    check_vec(mu_p, "mu_p", n, false);
    check_vec(sg_p, "sigma_p", n, true);
    Checked c;
    c.plan = check_plan(lens, ks, kappa, n);
    c.in = RecInputs{mu_q.data(), sg_q.data(), mu_p.data(), sg_p.data(), n};
    return c;
}

py::array_t<uint32_t> encode_py(const F32& mu_q, const F32& sg_q, const F32& mu_p, const F32& sg_p,
                                const I32& lens, const U8& ks, int kappa, uint64_t seed,
                                const std::optional<double>& temperature, int threads,
                                const std::string& device) {
    const Checked c = check_encode_inputs(mu_q, sg_q, mu_p, sg_p, lens, ks, kappa);
    const Rule rule = check_rule(temperature);
    threads = resolve_threads(threads);
    check_device(device);
    py::array_t<uint32_t> out(c.plan.B);
    uint32_t* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        RecSetup S;
        rec_setup(c.in, c.plan, seed, rule.tau, rule.nearest, threads, S);
        if (device == "cuda") {
            std::vector<ChunkStat> stats;
            rec_stats_cuda(S, stats);
            rec_combine(S, stats, o);
        } else {
            rec_search_cpu(S, threads, o);
        }
    }
    return out;
}

// Decoding is O(n) integer-keyed regeneration; it runs on the CPU for either device.
py::array_t<float> decode_py(const F32& mu_p, const F32& sg_p, const I32& lens, const U8& ks,
                             int kappa, uint64_t seed, const U32& idx, int threads,
                             const std::string& device) {
    const int64_t n = vec_len(mu_p, "mu_p");
    check_vec(mu_p, "mu_p", n, false);
    check_vec(sg_p, "sigma_p", n, true);
    const PlanView plan = check_plan(lens, ks, kappa, n);
    check_indices(plan, idx);
    threads = resolve_threads(threads);
    check_device(device);
    py::array_t<float> out(n);
    float* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        rec_decode(mu_p.data(), sg_p.data(), plan, seed, idx.data(), threads, o);
    }
    return out;
}

void check_block(const PlanView& plan, int64_t b) {
    if (b < 0 || b >= plan.B) fail("block " + std::to_string(b) + " out of range");
}

py::array_t<float> debug_scores_py(const F32& mu_q, const F32& sg_q, const F32& mu_p,
                                   const F32& sg_p, const I32& lens, const U8& ks, int kappa,
                                   uint64_t seed, const std::optional<double>& temperature, int64_t b) {
    const Checked c = check_encode_inputs(mu_q, sg_q, mu_p, sg_p, lens, ks, kappa);
    const Rule rule = check_rule(temperature);
    check_block(c.plan, b);
    RecSetup S;
    rec_setup(c.in, c.plan, seed, rule.tau, rule.nearest, 1, S);
    const std::vector<float> v = rec_debug_scores(S, b);
    py::array_t<float> out(v.size());
    std::memcpy(out.mutable_data(), v.data(), v.size() * 4);
    return out;
}

py::array_t<float> debug_candidate_py(const F32& mu_p, const F32& sg_p, const I32& lens,
                                      const U8& ks, int kappa, uint64_t seed, int64_t b, uint32_t n) {
    const Checked c = check_encode_inputs(mu_p, sg_p, mu_p, sg_p, lens, ks, kappa);
    check_block(c.plan, b);
    if ((uint64_t)n >= ((uint64_t)1 << c.plan.k[b])) fail("candidate index out of range");
    RecSetup S;
    rec_setup(c.in, c.plan, seed, 0.0, false, 1, S);
    const std::vector<float> v = rec_debug_candidate(S, mu_p.data(), sg_p.data(), b, n);
    py::array_t<float> out(v.size());
    std::memcpy(out.mutable_data(), v.data(), v.size() * 4);
    return out;
}

py::array_t<float> pool_normals_py(uint64_t seed, uint32_t n0, int64_t rows, int64_t cols,
                                   bool scalar) {
    if (rows < 0 || cols < 0 || rows > (1 << 24) || cols > (1 << 20)) fail("bad pool shape");
    if ((uint64_t)n0 + (uint64_t)rows > (1ull << 32)) fail("rows exceed the 32-bit counter");
    py::array_t<float> out({rows, cols});
    float* o = out.mutable_data();
    if (scalar) {
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c)
                o[r * cols + c] = pool_normal(seed, n0 + (uint32_t)r, (uint32_t)c);
        return out;
    }
    const int64_t R8 = (rows + 7) / 8 * 8, C4 = (cols + 3) / 4 * 4;
    std::vector<float> E(R8 * C4), E2(R8 * C4);
    if (R8 && C4) rec_kernels().gen_pool(seed, n0, R8, C4, R8, E.data(), E2.data(), nullptr, nullptr);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = E[c * R8 + r];
    return out;
}

// The active kernel set's pool rows given as 8-row groups (gen_pool's starts): row 8 i + j is
// pool row starts[i] + j, float32 [8 len(starts), cols].
py::array_t<float> pool_normals_groups_py(uint64_t seed, py::array_t<uint32_t, py::array::c_style | py::array::forcecast> starts,
                                          int64_t cols) {
    const int64_t ng = starts.size();
    if (ng < 1 || ng > 4096 || cols < 1 || cols > (1 << 16)) fail("bad group list or width");
    const uint32_t* st = starts.data();
    for (int64_t i = 0; i < ng; ++i)
        if ((uint64_t)st[i] + 8 > (1ull << 32)) fail("rows exceed the 32-bit counter");
    const int64_t rows = 8 * ng, C4 = (cols + 3) / 4 * 4;
    std::vector<float> E(rows * C4), E2(rows * C4);
    rec_kernels().gen_pool(seed, 0u, rows, C4, rows, E.data(), E2.data(), nullptr, st);
    py::array_t<float> out({rows, cols});
    float* o = out.mutable_data();
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = E[c * rows + r];
    return out;
}

// The active kernel set's screen words of pool rows [n0, n0 + rows) (rows % 64 == 0) and the
// given quads: uint32 [rows, 4 len(quads)] (row-major; the kernel's strip layout undone), as the
// search makes a compact tile's (rec_pool_words). Empty where the set has no screen.
py::array_t<uint32_t> pool_words_py(uint64_t seed, uint32_t n0, int64_t rows,
                                    py::array_t<int32_t, py::array::c_style | py::array::forcecast> quads,
                                    std::optional<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>> pairs) {
    const int64_t nq = quads.size(), cols = 4 * nq;
    if (rows < 64 || rows % 64 || rows > (1 << 16) || nq < 1 || nq > 4096) fail("bad words shape");
    if ((uint64_t)n0 + (uint64_t)rows > (1ull << 32)) fail("rows exceed the 32-bit counter");
    const RecKernels& K = rec_kernels();
    if (!K.screen) return py::array_t<uint32_t>(std::vector<py::ssize_t>{0, cols});
    std::vector<uint32_t> EB(rows * cols);
    std::vector<float> E, E2;
    if (pairs && pairs->size() != nq) fail("pairs must match quads");
    rec_pool_words(K, seed, n0, rows, nq, quads.data(), E, E2, EB.data(), pairs ? pairs->data() : nullptr);
    py::array_t<uint32_t> out({rows, cols});
    uint32_t* o = out.mutable_data();
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = EB[(r >> 6) * 64 * cols + 64 * c + (r & 63)];
    return out;
}

// Refined sums and chain bounds of rows (RecScreen::refined_rows of the kernel set in use, or the
// scalar reference where it has no screen), for tests: columns t of E/E2 (cols x ld) at rows
// row_off[i] + j (j < 8); returns (W, ch), each [8 n].
py::tuple refined_rows_py(py::array_t<double, py::array::c_style | py::array::forcecast> a,
                          py::array_t<double, py::array::c_style | py::array::forcecast> c,
                          py::array_t<double, py::array::c_style | py::array::forcecast> seg_n,
                          py::array_t<double, py::array::c_style | py::array::forcecast> seg_t, double ug,
                          py::array_t<float, py::array::c_style | py::array::forcecast> E,
                          py::array_t<float, py::array::c_style | py::array::forcecast> E2,
                          py::array_t<int64_t, py::array::c_style | py::array::forcecast> row_off) {
    const int64_t cols = a.size(), n = row_off.size();
    if (c.size() != cols || seg_n.size() != cols || seg_t.size() != cols) fail("weights must have one entry per column");
    if (E.ndim() != 2 || E.shape(0) != cols || E2.ndim() != 2 || E2.shape(0) != cols || E2.shape(1) != E.shape(1))
        fail("E and E2 must be (columns, rows)");
    const int64_t ld = E.shape(1);
    for (int64_t i = 0; i < n; ++i)
        if (row_off.data()[i] < 0 || row_off.data()[i] + 8 > ld) fail("row offsets out of range");
    std::vector<int64_t> col_off(cols);
    for (int64_t t = 0; t < cols; ++t) col_off[t] = t * ld;
    const RefinedCols w{a.data(), c.data(), seg_n.data(), seg_t.data(), cols, ug};
    py::array_t<double> W(8 * n), ch(8 * n);
    const RecKernels& K = rec_kernels();
    (K.screen ? K.screen->refined_rows : rec_refined_rows)(w, E.data(), E2.data(), col_off.data(), row_off.data(), n,
                                                         W.mutable_data(), ch.mutable_data());
    return py::make_tuple(W, ch);
}

py::array_t<float> private_normals_py(uint64_t seed, uint64_t b, int64_t rows, int64_t cols,
                                      bool scalar) {
    if (rows < 0 || cols < 0 || rows > (1 << 16) || cols > (1 << 18)) fail("bad private shape");
    py::array_t<float> out({rows, cols});
    float* o = out.mutable_data();
    if (scalar) {
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c)
                o[r * cols + c] = private_normal(seed, b, (uint32_t)r, (uint32_t)c);
        return out;
    }
    const int64_t R8 = (rows + 7) / 8 * 8, C4 = (cols + 3) / 4 * 4;
    std::vector<float> E(R8 * C4), E2(R8 * C4);
    if (R8 && C4) rec_kernels().gen_private(seed, b, 0, R8, C4, R8, E.data(), E2.data());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = E[c * R8 + r];
    return out;
}

py::array_t<float> exp_weights_py(const F32& y) {
    const int64_t n = vec_len(y, "y");
    const int64_t n8 = (n + 7) / 8 * 8;
    std::vector<float> x(std::max<int64_t>(n8, 8), -INFINITY), w(x.size()), v(x.size() / 8);
    std::memcpy(x.data(), y.data(), n * 4);
    rec_kernels().weights(x.data(), (int64_t)x.size(), 0.0f, w.data(), v.data());
    py::array_t<float> out(n);
    std::memcpy(out.mutable_data(), w.data(), n * 4);
    return out;
}

// The active kernel set's first argmax of y (padded with -inf to a multiple of 8): (max, index).
py::tuple argmax_py(const F32& y) {
    const int64_t n = vec_len(y, "y");
    if (n == 0) fail("argmax of an empty array");
    const int64_t n8 = (n + 7) / 8 * 8;
    std::vector<float> x(n8, -INFINITY);
    std::memcpy(x.data(), y.data(), n * 4);
    float m;
    int64_t idx;
    rec_kernels().argmax(x.data(), n8, &m, &idx);
    return py::make_tuple(m, idx);
}

// Writable float32 C-contiguous array `name` of exactly `n` floats (an output the caller owns).
float* out_floats(py::array_t<float>& a, size_t n, const char* name) {
    if (!(a.flags() & py::array::c_style) || !a.writeable() || (size_t)a.size() != n)
        fail(std::string(name) + " must be a writable C-contiguous float32 array of " + std::to_string(n) + " floats");
    return a.mutable_data();
}

void blocked_abs_py(const F32& x, py::array_t<float> out, int threads) {
    const size_t n = (size_t)x.size();
    float* o = out_floats(out, n, "out");
    threads = resolve_threads(threads);
    py::gil_scoped_release nogil;
    blocked_abs(x.data(), o, n, threads);
}

void blocked_divide_scale_shift_py(const F32& x, const F32& d, const F32& g, const F32& b, py::array_t<float> out,
                                   int64_t block, int threads) {
    if (block != 4 && block != 8 && block != 16) fail("block must be 4, 8 or 16, got " + std::to_string(block));
    const int64_t channels = g.size();
    if (b.size() != channels || channels == 0 || channels % block)
        fail("g and b must hold the same number of channels, a multiple of the block");
    if (x.ndim() != 4 || x.shape(0) != 1 || x.shape(1) != channels || d.ndim() != 4)
        fail("x must be a blocked tensor (1, channels, H, W)");
    for (int k = 0; k < 4; ++k)
        if (d.shape(k) != x.shape(k)) fail("x and d differ in shape");
    const size_t plane = (size_t)(x.shape(2) * x.shape(3));
    float* o = out_floats(out, (size_t)x.size(), "out");
    threads = resolve_threads(threads);
    py::gil_scoped_release nogil;
    blocked_divide_scale_shift(x.data(), d.data(), g.data(), b.data(), o, (size_t)channels, plane, (size_t)block, threads);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "bbimg native core: relative entropy coding engine and range coder";
    m.attr("__version__") = VERSION_INFO;
    m.attr("api_version") = CORE_API_VERSION;
    m.attr("source_hash") = BBIMG_SOURCE_HASH;
#ifdef BBIMG_DEBUG
    m.attr("debug_build") = true;
#else
    m.attr("debug_build") = false;
#endif
    m.attr("KAPPA_MIN") = REC_KAPPA_MIN;
    m.attr("KAPPA_MAX") = REC_KAPPA_MAX;
    m.attr("MAX_BLOCK_LEN") = REC_MAX_BLOCK_LEN;
    m.attr("NEAREST_SHIFT") = REC_NEAREST_SHIFT;
    m.attr("POOL_MIN_BITS") = REC_POOL_MIN_BITS;
    m.attr("CHUNK") = REC_CHUNK;
    m.attr("RC_MAX_TOTAL") = RC_MAX_TOTAL;

    auto& rec_error = py::register_exception<ArgError>(m, "RecError", PyExc_ValueError);
    py::register_exception<CorruptError>(m, "CorruptDataError", rec_error.ptr());

    m.def("encode_indices", &encode_indices_py, py::arg("lengths"), py::arg("exponents"),
          py::arg("kappa"), py::arg("indices"));
    m.def("decode_indices", &decode_indices_py, py::arg("data"), py::arg("lengths"),
          py::arg("exponents"), py::arg("kappa"));
    m.def("encode", &encode_py, py::arg("mu_q"), py::arg("sigma_q"), py::arg("mu_p"), py::arg("sigma_p"),
          py::arg("lengths"), py::arg("exponents"), py::arg("kappa"), py::arg("seed"),
          py::arg("temperature"), py::arg("threads"), py::arg("device"));
    m.def("decode", &decode_py, py::arg("mu_p"), py::arg("sigma_p"), py::arg("lengths"),
          py::arg("exponents"), py::arg("kappa"), py::arg("seed"), py::arg("indices"),
          py::arg("threads"), py::arg("device"));
    m.def("debug_scores", &debug_scores_py, py::arg("mu_q"), py::arg("sigma_q"), py::arg("mu_p"),
          py::arg("sigma_p"), py::arg("lengths"), py::arg("exponents"), py::arg("kappa"),
          py::arg("seed"), py::arg("temperature"), py::arg("block"));
    m.def("debug_candidate", &debug_candidate_py);
    m.def("pool_normals", &pool_normals_py, py::arg("seed"), py::arg("n0"), py::arg("rows"),
          py::arg("cols"), py::arg("scalar") = false);
    m.def("pool_normals_groups", &pool_normals_groups_py, py::arg("seed"), py::arg("starts"), py::arg("cols"));
    m.def("pool_words", &pool_words_py, py::arg("seed"), py::arg("n0"), py::arg("rows"), py::arg("quads"),
          py::arg("pairs") = py::none());
    m.def("refined_rows", &refined_rows_py, py::arg("a"), py::arg("c"), py::arg("seg_n"), py::arg("seg_t"),
          py::arg("ug"), py::arg("E"), py::arg("E2"), py::arg("row_off"));
    m.def("private_normals", &private_normals_py, py::arg("seed"), py::arg("block"), py::arg("rows"),
          py::arg("cols"), py::arg("scalar") = false);
    m.def("exp_weights", &exp_weights_py);
    m.def("blocked_abs", &blocked_abs_py, py::arg("x"), py::arg("out"), py::arg("threads"));
    m.def("blocked_divide_scale_shift", &blocked_divide_scale_shift_py, py::arg("x"), py::arg("d"), py::arg("g"),
          py::arg("b"), py::arg("out"), py::arg("block"), py::arg("threads"));
    m.def("argmax", &argmax_py);
    m.def("philox", [](uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
        const U32x4 w = philox_seed(seed, c0, c1, c2, c3);
        return py::make_tuple(w.v[0], w.v[1], w.v[2], w.v[3]);
    });
    m.def("set_kernels", [](const std::string& name) { return rec_set_kernels(name); });
    m.def("kernels", []() { return std::string(rec_kernels().name); });
    m.attr("screen_normal_bounds") = py::make_tuple(REC_SCREEN_E_MAX, REC_SCREEN_E2_MAX);
    m.def("cuda_compiled", &rec_cuda_compiled);
    m.def("cuda_available", &rec_cuda_available);
    m.def("cuda_info", &rec_cuda_info);

    m.def("rc_encode_static", &rc_encode_static, py::arg("symbols"), py::arg("freqs"),
          py::arg("contexts") = py::none());
    m.def("rc_decode_static", &rc_decode_static, py::arg("data"), py::arg("freqs"), py::arg("count"),
          py::arg("contexts") = py::none());
    m.def("rc_encode_adaptive", &rc_encode_adaptive, py::arg("symbols"), py::arg("alphabet_size"),
          py::arg("contexts"), py::arg("n_contexts"), py::arg("increment"), py::arg("limit"));
    m.def("rc_decode_adaptive", &rc_decode_adaptive, py::arg("data"), py::arg("count"),
          py::arg("alphabet_size"), py::arg("contexts"), py::arg("n_contexts"), py::arg("increment"),
          py::arg("limit"));
}
