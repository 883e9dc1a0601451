// REC engine: setup, generic kernels, CPU statistics, selection and decoding.
#include "rec.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "detmath.h"
#include "parallel.h"
#include "philox.h"
#include "rec_select.h"

namespace bbimg {

namespace {

inline int64_t round4(int64_t x) { return (x + 3) & ~(int64_t)3; }

// Largest power of two r in [32, cap] with r * cols4 <= 2^20 floats (4 MiB per tile array).
int64_t tile_rows(int64_t cols4, int64_t cap) {
    int64_t r = cap;
    while (r > 32 && r * cols4 > (1 << 20)) r >>= 1;
    return r;
}

// ---------------------------------------------------------------------------------------------
// Generic (portable scalar) kernels. They define the arithmetic; the AVX2 set must match them.
void gen_pool_generic(uint64_t seed, uint32_t n0, int64_t rows, int64_t cols4, int64_t ld,
                      float* E, float* E2, const int32_t* quads, const uint32_t* starts) {
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; ++r) {
            float z[4];
            const uint32_t q = quads ? (uint32_t)quads[g] : (uint32_t)g;
            const uint32_t n = starts ? starts[r >> 3] + (uint32_t)(r & 7) : n0 + (uint32_t)r;
            det_normal4(philox_seed(seed, q, n, 0u, TAG_POOL), z);
            for (int i = 0; i < 4; ++i) {
                E[(4 * g + i) * ld + r] = z[i];
                E2[(4 * g + i) * ld + r] = BB_FMUL(z[i], z[i]);
            }
        }
}

void gen_private_generic(uint64_t seed, uint64_t b, uint32_t n0, int64_t rows, int64_t cols4,
                         int64_t ld, float* E, float* E2) {
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; ++r) {
            float z[4];
            const uint32_t n = n0 + (uint32_t)r;
            det_normal4(philox_seed(seed, (uint32_t)g | (n << 16), (uint32_t)b,
                                    (uint32_t)(b >> 32), TAG_PRIVATE),
                        z);
            for (int i = 0; i < 4; ++i) {
                E[(4 * g + i) * ld + r] = z[i];
                E2[(4 * g + i) * ld + r] = BB_FMUL(z[i], z[i]);
            }
        }
}

void score_group_generic(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t P,
                         const float* WA, const float* WC, int64_t Gp, float* S, int64_t ld_s) {
    for (int64_t g = 0; g < Gp; ++g)
        for (int64_t r = 0; r < rows; ++r) {
            float acc = 0.0f;
            for (int64_t k = 0; k < P; ++k) {
                acc = BB_FMAF(WA[k * Gp + g], E2[k * ld + r], acc);
                acc = BB_FMAF(WC[k * Gp + g], E[k * ld + r], acc);
            }
            S[g * ld_s + r] = acc;
        }
}

void score_single_generic(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t P,
                          const float* A, const float* C, float* S) {
    for (int64_t r = 0; r < rows; ++r) {
        float acc = 0.0f;
        for (int64_t k = 0; k < P; ++k) {
            acc = BB_FMAF(A[k], E2[k * ld + r], acc);
            acc = BB_FMAF(C[k], E[k * ld + r], acc);
        }
        S[r] = acc;
    }
}

void weights_generic(const float* x, int64_t rows, float m, float* w, float* v) {
    for (int64_t r = 0; r < rows; ++r) w[r] = det_exp_weight(BB_FSUB(x[r], m));
    for (int64_t i = 0; i < rows / 8; ++i) v[i] = tree8(w + 8 * i);
}

const RecKernels kGeneric = {"generic",           gen_pool_generic,     gen_private_generic,
                             nullptr,             score_group_generic, score_single_generic,
                             weights_generic,     first_argmax,        nullptr};

std::atomic<const RecKernels*> g_kernels{nullptr};

// Statistics of one chunk of candidate scores x[0..rows) (rows % 8 == 0; padding rows hold
// -inf). n_base: absolute index of x[0].
void chunk_stat(const RecKernels& K, const float* x, int64_t rows, bool sample, uint64_t seed,
                uint64_t b, uint32_t chunk, uint32_t n_base, float* w, float* v, ChunkStat& st) {
    float m;
    int64_t am;
    K.argmax(x, rows, &m, &am);
    st.m = m;
    if (!sample) {
        st.n = n_base + (uint32_t)am;
        st.s = 0.0;
        return;
    }
    K.weights(x, rows, m, w, v);
    const int64_t nv = rows / 8;
    double s = 0.0;
    for (int64_t i = 0; i < nv; ++i)
        if (v[i] != 0.0f) s = BB_DADD(s, (double)v[i]);  // identical to adding the zeros
    st.s = s;
    const double t = BB_DMUL(chunk_pick_u(seed, b, chunk), s);
    st.n = n_base + (uint32_t)pick_in_weights(w, v, nv, t);
}

template <class T>
void atomic_max(std::atomic<T>& a, T v) {
    T cur = a.load(std::memory_order_relaxed);
    while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
}

// A block's weights for the integer screen. Screened score = (sum_k qA_k q2_k + qC_k q1_k) / K with
// q1 = round(4096 e), q2 = round(512 e^2) (|q1| <= 23,636, q2 <= 17,049), qA = round(A K / 512),
// qC = round(C K / 4096). K is as large as int16 weights and exact int32 sums allow. `up` bounds
// how far the exact score can exceed the screened one, in score units (the search needs no
// other side: screen_chunk): the rounding of each weight and tile entry, times the largest factor
// it multiplies (|e| <= 5.7703, e^2 <= 33.297), plus the exact fp32 chain's own 2P roundings,
// and 1/1000 on top for the double arithmetic here. The rounding of A multiplies q2 / 512 >= 0,
// so it moves the exact score one way only: A rounded up (towards 0: A <= 0 under the nearest
// rule, and the many dims of near-zero weight round to 0) can only make the exact score lower
// than the screened one, and does not count.
struct ScreenBlock {
    double K = 1.0;
    double up = 0.0;
    double chain = 0.0;  // the part of `up` that bounds the exact fp32 chain's own rounding
    double ug = 0.0;     // u (1 + g) of that chain bound, for a block of this length
};

ScreenBlock screen_weights(const float* wa, const float* wc, int64_t stride, int64_t P, int16_t* qa,
                           int16_t* qc) {
    constexpr double kE = REC_SCREEN_E_MAX, kE2 = REC_SCREEN_E2_MAX;
    constexpr double s1 = REC_SCREEN_E_SCALE, s2 = REC_SCREEN_E2_SCALE;  // tile scales of e, e^2
    constexpr double kQ1 = 23636.0, kQ2 = 17049.0;  // >= round(s1 kE), round(s2 kE2)
    static_assert(kQ1 >= s1 * kE + 0.5 && kQ2 >= s2 * kE2 + 0.5 && kQ2 < 32768.0 && kQ1 < 32768.0,
                  "tile words");
    constexpr double kLimit = 2147483647.0;
    double sa = 0.0, sc = 0.0, ma = 0.0, mc = 0.0;
    for (int64_t k = 0; k < P; ++k) {
        const double a = std::fabs((double)wa[k * stride]), c = std::fabs((double)wc[k * stride]);
        sa += a;
        sc += c;
        ma = std::max(ma, a);
        mc = std::max(mc, c);
    }
    ScreenBlock out;
    // The fp32 chain's rounding (below): u (1 + g), g = n u / (1 - n u), over its n = 2P steps.
    const double n = 2.0 * (double)P, u = std::ldexp(1.0, -24), g = n * u / (1.0 - n * u);
    const double ug = u * (1.0 + g);
    out.ug = ug;
    if (sa + sc == 0.0) {
        for (int64_t k = 0; k < P; ++k) qa[k] = qc[k] = 0;
        return out;  // every score is exactly 0 both ways
    }
    double K = (0.999 * kLimit - 0.5 * (double)P * (kQ1 + kQ2)) / (sa * kQ2 / s2 + sc * kQ1 / s1);
    if (ma > 0.0) K = std::min(K, 32766.0 * s2 / ma);
    if (mc > 0.0) K = std::min(K, 32766.0 * s1 / mc);
    for (;;) {  // shrink until the exact worst-case sum fits int32 (normally the first pass)
        double worst = 0.0;
        for (int64_t k = 0; k < P; ++k) {
            qa[k] = (int16_t)std::lrint((double)wa[k * stride] * K / s2);
            qc[k] = (int16_t)std::lrint((double)wc[k * stride] * K / s1);
            worst += std::fabs((double)qa[k]) * kQ2 + std::fabs((double)qc[k]) * kQ1;
        }
        if (worst <= kLimit) break;
        K *= 0.9;
    }
    double up = 0.0;
    // The exact chain rounds each fma's result, by at most u times its magnitude, and after step i
    // that is at most the largest the first i terms can add up to (prefix): the sum of those
    // bounds is much tighter than 2P u times all terms when the heavy dims are few. Each partial
    // sum is at most prefix (1 + u)^i <= prefix (1 + g), g = n u / (1 - n u). A step also errs by
    // at most its own term (the running sum is a float at that distance from the exact result),
    // which bounds the many tiny terms of a long block's near-zero weights far more tightly.
    double prefix = 0.0, chain = 0.0;
    for (int64_t k = 0; k < P; ++k) {
        const double a = (double)wa[k * stride], c = (double)wc[k * stride];
        // exact - screened = (A - qA 512 / K) q2 / 512 - A (q2 - 512 e^2) / 512 + (the same for C
        // with q1 and e, whose sign is free): weight rounding times the largest tile value, and
        // tile rounding (half a step) times |weight|
        const double da = (a - (double)qa[k] * s2 / K) * (kE2 + 0.5 / s2);
        up += std::max(da, 0.0);
        up += std::fabs(a) * 0.5 / s2;
        up += std::fabs((double)qc[k] * s1 / K - c) * (kE + 0.5 / s1) + std::fabs(c) * 0.5 / s1;
        const double ta = std::fabs(a) * kE2, tc = std::fabs(c) * kE;
        prefix += ta;
        chain += std::min(ug * prefix, ta);
        prefix += tc;
        chain += std::min(ug * prefix, tc);
    }
    up += chain + 1e-35 * n;
    out.chain = chain + 1e-35 * n;
    out.K = K;
    out.up = 1.001 * up;
    return out;
}

struct Buffers {
    std::vector<float> E, E2, S, w, v;
    std::vector<uint32_t> EB;             // screen: packed int16 tile
    std::vector<float> RE, RE2;             // screen: rows generated again for exact scores
    std::vector<int32_t> SI, SM, rows, groups;  // screen: integer scores, their maxima, rows to rescore
    std::vector<float> ex;                  // screen: exact scores of those groups
    std::vector<float> RW, RW2;             // screen: weighed columns of rows generated again
    std::vector<double> ub;                 // screen: refined upper bounds of those groups' rows
    std::vector<int32_t> kept;              // screen: rows whose bound reaches the best found
    std::vector<double> rw;                 // screen: refined sums and chain bounds of those rows
    std::vector<int64_t> col_off, row_off;  // screen: where those rows' weighed columns lie
    std::vector<int32_t> top_gi, top_grp, top_row;  // screen: a group's blocks still open, their top rows
    std::vector<double> top_f;              // ... the best exact score found before, in integer units
    std::vector<float> top_ex;              // ... and the exact scores of those rows' 8-row groups
    std::vector<ChunkStat> st;              // screen: statistics of a sliced item's blocks
    std::vector<int32_t> cmax;              // screen: the compact pool's blocks' screened maxima
    float ex8[8];                           // screen: exact scores of the top row's group
    // The screen's buffers, for a packed tile of `words` words.
    void need_screen(int64_t words) {
        EB.resize(words);
        SI.resize(REC_CHUNK * REC_GROUP);
        SM.resize(16 * REC_GROUP);
        rows.resize(REC_CHUNK);
        groups.resize(REC_CHUNK / 8);
        ex.resize(REC_CHUNK);
    }
    void need(int64_t tile, int64_t scores) {
        if ((int64_t)E.size() < tile) {
            E.resize(tile);
            E2.resize(tile);
        }
        if ((int64_t)S.size() < scores) S.resize(scores);
        if ((int64_t)w.size() < REC_CHUNK) {
            w.resize(REC_CHUNK);
            v.resize(REC_CHUNK / 8);
        }
    }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
const RecKernels& rec_kernels_generic() { return kGeneric; }

// The AVX2 set with `screen` (and the tile generators `gen` where given), named `name`, in
// `slot`; nullptr when the AVX2 set or the screen is missing.
static const RecKernels* with_screen(RecKernels& slot, const char* name, const RecScreen* screen,
                                     const RecGenerators* gen = nullptr) {
    const RecKernels* a = rec_kernels_avx2();
    if (!a || !screen) return nullptr;
    slot = *a;
    slot.name = name;
    slot.screen = screen;
    if (gen) {
        slot.gen_pool = gen->pool;
        slot.gen_private = gen->priv;
        slot.gen_pool_words = gen->pool_words;
    }
    return &slot;
}

const RecKernels* rec_kernels_vnni() {
    static RecKernels slot;
    static const RecKernels* set =
        with_screen(slot, "avx512vnni", rec_screen_vnni(), rec_generators_avx512());
    return set;
}

const RecKernels* rec_kernels_avx2screen() {
    static RecKernels slot;
    static const RecKernels* set = with_screen(slot, "avx2screen", rec_screen_avx2());
    return set;
}

static const RecKernels* best_kernels() {
    if (const RecKernels* b = rec_kernels_vnni()) return b;
    if (const RecKernels* s = rec_kernels_avx2screen()) return s;
    if (const RecKernels* a = rec_kernels_avx2()) return a;
    return &kGeneric;
}

const RecKernels& rec_kernels() {
    const RecKernels* k = g_kernels.load();
    if (!k) {
        k = best_kernels();
        g_kernels.store(k);
    }
    return *k;
}

void rec_pool_words(const RecKernels& K, uint64_t seed, uint32_t n0, int64_t rows, int64_t nquads,
                    const int32_t* quads, std::vector<float>& E, std::vector<float>& E2, uint32_t* EB,
                    const uint8_t* pairs) {
    if (K.gen_pool_words) {
        K.gen_pool_words(seed, n0, rows, nquads, quads, pairs, EB);
        return;
    }
    const int64_t cols = 4 * nquads;
    if ((int64_t)E.size() < rows * cols) {
        E.resize(rows * cols);
        E2.resize(rows * cols);
    }
    K.gen_pool(seed, n0, rows, cols, rows, E.data(), E2.data(), quads, nullptr);
    K.screen->pack_tile(E.data(), E2.data(), rows, rows, cols, EB);
}

bool rec_set_kernels(const std::string& name) {
    const RecKernels* k = name == "generic"      ? &kGeneric
                          : name == "avx2"       ? rec_kernels_avx2()
                          : name == "avx2screen" ? rec_kernels_avx2screen()
                          : name == "avx512vnni" ? rec_kernels_vnni()
                          : name == "auto"       ? best_kernels()
                                                 : nullptr;
    if (!k) return false;
    g_kernels.store(k);
    return true;
}

void block_perm_signs(uint64_t seed, uint64_t b, int32_t len, int32_t* perm, float* sign) {
    thread_local std::vector<uint32_t> rnd;
    rnd.resize(len);
    for (int32_t i = 0; i < len; ++i) {
        const U32x4 w = philox_seed(seed, (uint32_t)i, (uint32_t)b, (uint32_t)(b >> 32), TAG_PERM);
        rnd[i] = w.v[0];
        sign[i] = (w.v[1] & 1u) ? -1.0f : 1.0f;
        perm[i] = i;
    }
    for (int32_t i = len - 1; i >= 1; --i) {
        const uint32_t j = u32_below(rnd[i], (uint32_t)i + 1u);
        std::swap(perm[i], perm[j]);
    }
}

void rec_setup(const RecInputs& in, const PlanView& plan, uint64_t seed, double tau, bool nearest,
               int threads, RecSetup& S) {
    S.n = in.n;
    S.B = plan.B;
    S.kappa = plan.kappa;
    S.seed = seed;
    S.tau = tau;
    S.start.resize(plan.B);
    S.len.assign(plan.len, plan.len + plan.B);
    S.k.assign(plan.k, plan.k + plan.B);
    int64_t off = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        S.start[b] = off;
        off += plan.len[b];
    }
    assert(off == in.n);
    S.A.assign(in.n, 0.0f);
    S.C.assign(in.n, 0.0f);
    // Score of candidate eps (z = mu_p + sigma_p eps), up to a per-block constant, with
    // r = sigma_p / sigma_q and delta = (mu_q - mu_p) / sigma_q:
    //   log q          = -0.5 r^2 eps^2 + r delta eps
    //   log p          = -0.5 eps^2
    // tempered: score = (log q) / tau - log p      (tau = 0: argmax of log q)
    // nearest:  score = -0.5 w sigma_p^2 (eps - d)^2, w = ((r^2 - 1) / sigma_p^2)^P, d = (t - mu_p) / sigma_p, the target
    //           t = mu_q + REC_NEAREST_SHIFT (mu_q - mu_p) / max(r^2, 1) (tau = 0 only; see rec.h)
    const double inv_tau = tau > 0.0 ? 1.0 / tau : 1.0;
    const double a_p = tau > 0.0 ? 0.5 : 0.0;  // coefficient of eps^2 from -log p
    const double a_q = -0.5 * inv_tau;         // ... from log q, times r^2
    const int64_t per = 256;
    const int64_t nitems = (plan.B + per - 1) / per;
    parallel_for(nitems, threads, [&](int64_t it, int) {
        std::vector<int32_t> perm;
        std::vector<float> sign;
        const int64_t b1 = std::min(plan.B, (it + 1) * per);
        for (int64_t b = it * per; b < b1; ++b) {
            const int32_t L = plan.len[b];
            perm.resize(L);
            sign.resize(L);
            block_perm_signs(seed, (uint64_t)b, L, perm.data(), sign.data());
            const int64_t s0 = S.start[b];
            for (int32_t j = 0; j < L; ++j) {
                const int64_t d = s0 + j;
                const double r = (double)in.sg_p[d] / (double)in.sg_q[d];
                const double delta = ((double)in.mu_q[d] - (double)in.mu_p[d]) / (double)in.sg_q[d];
                double a, c;
                if (nearest) {
                    // weight w = (u / sigma_p^2)^P in z units; times sigma_p^2 in eps units
                    const double r2 = r * r;
                    const double u = std::max(r2 - 1.0, 1e-8);
                    const double sp2 = (double)in.sg_p[d] * (double)in.sg_p[d];
                    const double we = std::pow(u / sp2, REC_NEAREST_WEIGHT_POWER) * sp2;
                    a = -0.5 * we;
                    c = we * (delta / r) * (1.0 + REC_NEAREST_SHIFT / std::max(r2, 1.0)) * (double)sign[j];
                } else {
                    a = a_p + a_q * r * r;
                    c = r * delta * (double)sign[j] * inv_tau;
                }
                a = std::min(std::max(a, -1e30), 1e30);
                c = std::min(std::max(c, -1e30), 1e30);
                S.A[s0 + perm[j]] = (float)a;
                S.C[s0 + perm[j]] = (float)c;
            }
        }
    });
    // Chunk statistics layout and block classes.
    S.stat_off.assign(plan.B, -1);
    S.n_stats = 0;
    S.pool_blocks.clear();
    S.private_blocks.clear();
    for (int64_t b = 0; b < plan.B; ++b) {
        const int k = plan.k[b];
        if (k == 0) continue;
        S.stat_off[b] = S.n_stats;
        if (k >= REC_POOL_MIN_BITS) {
            S.n_stats += (int64_t)1 << (k - REC_POOL_MIN_BITS);
            S.pool_blocks.push_back(b);
        } else {
            S.n_stats += 1;
            S.private_blocks.push_back(b);
        }
    }
    std::stable_sort(S.pool_blocks.begin(), S.pool_blocks.end(), [&](int64_t x, int64_t y) {
        if (plan.k[x] != plan.k[y]) return plan.k[x] > plan.k[y];
        return plan.len[x] < plan.len[y];
    });
    S.group_begin.assign(1, 0);
    S.group_P.clear();
    S.group_k.clear();
    const int64_t np = (int64_t)S.pool_blocks.size();
    int64_t i = 0;
    while (i < np) {
        const int k = plan.k[S.pool_blocks[i]];
        int64_t j = i;
        int32_t P = 0;
        // Close the group when lengths spread too far (zero padding would waste FMAs).
        const int32_t L0 = plan.len[S.pool_blocks[i]];
        while (j < np && j - i < REC_GROUP && plan.k[S.pool_blocks[j]] == k &&
               plan.len[S.pool_blocks[j]] <= L0 + L0 / 4 + 4) {
            P = std::max(P, plan.len[S.pool_blocks[j]]);
            ++j;
        }
        S.group_begin.push_back(j);
        S.group_P.push_back(P);
        S.group_k.push_back(k);
        i = j;
    }
}

namespace {

// Where the CPU search's chunk statistics go: per (block, chunk) for tempered sampling, which
// rec_combine picks from, or at temperature 0 straight into each block's winner. rec_combine's
// temperature-0 pick is the largest score, the first chunk on ties, and a chunk's statistic is its
// first maximal row, so the winner is the largest (score, -candidate index): one 64-bit key
// (order-preserving bits of the score, then the complement of the index) that threads merge with
// an atomic max. That saves the table of 16 bytes per chunk (360 MB for a 12 MP photo's y).
class ChunkSink {
  public:
    ChunkSink(const RecSetup& S, std::vector<ChunkStat>* stats) : S_(S), stats_(stats) {
        if (stats_) {
            stats_->assign(S.n_stats, ChunkStat{0.0f, 0u, 0.0});
            return;
        }
        keys_.reset(new std::atomic<uint64_t>[S.B]);
        const uint64_t none = key(-std::numeric_limits<float>::infinity(), 0u);  // index 0
        for (int64_t b = 0; b < S.B; ++b) keys_[b].store(none, std::memory_order_relaxed);
    }
    void put(int64_t b, int64_t c, const ChunkStat& st) {
        if (stats_) {
            (*stats_)[S_.stat_off[b] + c] = st;
            return;
        }
        if (st.m == -std::numeric_limits<float>::infinity()) return;  // cannot hold the pick
        atomic_max(keys_[b], key(st.m, st.n));
    }
    uint32_t index(int64_t b) const { return 0xFFFFFFFFu - (uint32_t)keys_[b].load(std::memory_order_relaxed); }
    // Temperature 0: the block's best exact score so far (-inf before any), against which the
    // screen holds its bound.
    float best(int64_t b) const {
        assert(!stats_);
        uint32_t u = (uint32_t)(keys_[b].load(std::memory_order_relaxed) >> 32);
        u = (u >> 31) ? (u & 0x7FFFFFFFu) : ~u;
        float m;
        std::memcpy(&m, &u, sizeof m);
        return m;
    }

  private:
    static uint64_t key(float m, uint32_t n) {
        uint32_t u;
        const float z = m == 0.0f ? 0.0f : m;  // -0 ties with +0, as in rec_combine
        std::memcpy(&u, &z, sizeof u);
        u = (u >> 31) ? ~u : (u | 0x80000000u);
        return ((uint64_t)u << 32) | (uint64_t)(0xFFFFFFFFu - n);
    }
    const RecSetup& S_;
    std::vector<ChunkStat>* stats_;
    std::unique_ptr<std::atomic<uint64_t>[]> keys_;
};

// What the screen adds up for each group. Per triple of blocks: the tile columns any of the
// three weighs (score_cols3), or each block's own columns (score_cols1), whichever takes fewer
// multiply-adds. A column a block weighs at zero (both int16 weights rounded to 0: dims of
// near-zero weight, which low-KL blocks are mostly made of) adds exactly nothing to its integer
// sums, so leaving it out changes no score. Groups too wide for a full-chunk tile whose blocks
// weigh few pool columns are screened on a tile of only such columns (kCompact: one tile for all
// of them, CompactPool) that records each block's screened maximum per chunk, and compact_chunks
// rescores its chunks afterwards, best first, with the rows generated again. Wide groups that weigh many
// columns are screened on row slices of their full tile (kSliced), and rescored from the slice at
// hand; the rows of both kinds of wide block face refined bounds before exact scores.
// Without the screen, wide groups are scored exactly on row slices (kNone).
struct ScreenPlan {
    enum Mode : int8_t { kTile = 0, kCompact = 1, kNone = 2, kSliced = 3 };
    struct Triple {
        int64_t c, w;    // offsets into cols, words
        int32_t n[3];    // single: each block's column count; else n[0] columns of 3 words
        bool single;
    };
    std::vector<int8_t> mode;        // [G]
    std::vector<int64_t> quad_off;   // [G + 1] kCompact: the pool quads it weighs, ascending
    std::vector<int32_t> quads;
    std::vector<uint8_t> quad_pairs; // their Box-Muller pairs that a block weighs (GenPoolWordsFn)
    std::vector<int64_t> tri_first;  // [G + 1] the group's triples in `tri`
    std::vector<Triple> tri;
    std::vector<int32_t> cols;       // pool columns (kCompact: placed in CompactPool's tile)
    std::vector<uint32_t> words;     // qA | qC << 16
};

// Cost of a score_cols1 column against a third of a score_cols3 column (measured on the y search
// of a 12 MP photo, Zen 4: score_cols1 pays for loading the tile once per block).
constexpr double kSingleColumnCost = 2.5;

// A wide group is screened on row slices (kSliced) when its triples weigh at most this part of its
// columns: on a 12 MP photo, a group of 24 blocks of 11,844 dims weighing 9% of them took 0.4-0.6 s
// less than in fp32; z's groups of 1,500-3,000 dims weighing 95% took 0.1 s more.
constexpr double kSlicedWork = 0.5;

// Adds group g (integer words WBg[k * Gp + j]) to the plan.
void plan_screen_group(ScreenPlan& SP, int64_t P, int64_t Gp, bool wide, const std::vector<uint32_t>& WBg) {
    int8_t mode = ScreenPlan::kTile;
    if (wide) {
        std::vector<char> used((P + 3) / 4, 0);
        for (int64_t k = 0; k < P; ++k)
            for (int64_t j = 0; j < Gp; ++j)
                if (WBg[k * Gp + j]) {
                    used[k / 4] = 1;
                    break;
                }
        int64_t nq = 0;
        for (char u : used) nq += u;
        mode = ScreenPlan::kCompact;
        if (tile_rows(4 * nq, REC_CHUNK) != REC_CHUNK) {
            // Screen them on row slices only where the triples' columns are a small part of the
            // fp32 work (the rescoring of a dense block's many near rows eats the rest).
            int64_t u = 0;
            for (int64_t k = 0; k < P; ++k)
                for (int64_t t = 0; t < Gp; t += 3) {
                    const uint32_t* w = &WBg[k * Gp + t];
                    u += (w[0] | w[1] | w[2]) != 0;
                }
            mode = (double)u <= kSlicedWork * (double)(P * (Gp / 3)) ? ScreenPlan::kSliced : ScreenPlan::kNone;
        }
        if (mode == ScreenPlan::kCompact)
            for (int64_t q = 0; q < (int64_t)used.size(); ++q)
                if (used[q]) {
                    uint8_t pairs = 0;
                    for (int64_t k = 4 * q; k < std::min<int64_t>(4 * q + 4, P); ++k)
                        for (int64_t j = 0; j < Gp; ++j)
                            if (WBg[k * Gp + j]) pairs |= (uint8_t)(k % 4 < 2 ? 1 : 2);
                    SP.quad_pairs.push_back(pairs);
                    SP.quads.push_back((int32_t)q);
                }
    }
    SP.mode.push_back(mode);
    SP.quad_off.push_back((int64_t)SP.quads.size());
    for (int64_t t = 0; t < (mode == ScreenPlan::kNone ? 0 : Gp); t += 3) {
        ScreenPlan::Triple T{(int64_t)SP.cols.size(), (int64_t)SP.words.size(), {0, 0, 0}, false};
        int64_t u = 0, nnz = 0;
        for (int64_t k = 0; k < P; ++k) {
            const uint32_t* w = &WBg[k * Gp + t];
            u += (w[0] | w[1] | w[2]) != 0;
            nnz += (w[0] != 0) + (w[1] != 0) + (w[2] != 0);
        }
        T.single = kSingleColumnCost * (double)nnz < 3.0 * (double)u;
        if (T.single) {
            for (int j = 0; j < 3; ++j)
                for (int64_t k = 0; k < P; ++k)
                    if (const uint32_t w = WBg[k * Gp + t + j]) {
                        SP.cols.push_back((int32_t)k);
                        SP.words.push_back(w);
                        ++T.n[j];
                    }
        } else {
            for (int64_t k = 0; k < P; ++k) {
                const uint32_t* w = &WBg[k * Gp + t];
                if ((w[0] | w[1] | w[2]) == 0) continue;
                SP.cols.push_back((int32_t)k);
                SP.words.insert(SP.words.end(), w, w + 3);
                ++T.n[0];
            }
        }
        SP.tri.push_back(T);
    }
    SP.tri_first.push_back((int64_t)SP.tri.size());
}

// Integer scores of group g's blocks for the `rows` rows held by EB (`width` tile columns):
// block column j's at SI[j * ld_s ...], their lane maxima at SM[16 j ...].
void score_triples(const RecScreen& scr, const ScreenPlan& SP, int64_t g, const uint32_t* EB, int64_t rows,
                   int64_t width, int32_t* SI, int64_t ld_s, int32_t* SM, const int32_t* cols = nullptr) {
    // cols: the group's triple columns in another tile (CompactPool), from the group's first one.
    const int64_t first = cols ? SP.tri[SP.tri_first[g]].c : 0;
    if (!cols) cols = SP.cols.data();
    for (int64_t t = SP.tri_first[g]; t < SP.tri_first[g + 1]; ++t) {
        const ScreenPlan::Triple& T = SP.tri[t];
        const int64_t j0 = 3 * (t - SP.tri_first[g]);
        if (!T.single) {
            scr.score_cols3(EB, rows, width, cols + (T.c - first), SP.words.data() + T.w, T.n[0], SI + j0 * ld_s,
                            ld_s, SM + 16 * j0);
            continue;
        }
        for (int64_t j = 0, o = 0; j < 3; o += T.n[j], ++j)
            scr.score_cols1(EB, rows, width, cols + (T.c - first) + o, SP.words.data() + T.w + o, T.n[j],
                            SI + (j0 + j) * ld_s, SM + 16 * (j0 + j));
    }
}

// The integer score threshold of rows that can reach x (integer units): floor(x), INT32_MIN below it.
inline int32_t screen_floor(double x) {
    const double t = std::floor(x);
    return t <= -2147483648.0 ? INT32_MIN : (int32_t)t;
}

// The distinct 8-row groups of rows[0..n) (ascending) other than group `top`, into groups; their count.
inline int64_t row_groups(const int32_t* rows, int64_t n, int32_t top, int32_t* groups) {
    int64_t ng = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int32_t grp = rows[i] >> 3;
        if (grp != top && (ng == 0 || groups[ng - 1] != grp)) groups[ng++] = grp;
    }
    return ng;
}

// Folds into st the exact scores of rows[0..n) (ascending; those of group `top`, when >= 0, already
// in B.ex8), in order, the first on ties; candidate index n_base + row.
template <class Exact>
void fold_exact(const int32_t* rows, int64_t n, int32_t top, uint32_t n_base, Exact&& exact, Buffers& B,
                ChunkStat& st) {
    const int64_t ng = row_groups(rows, n, top, B.groups.data());
    exact(B.groups.data(), ng, B.ex.data());
    for (int64_t i = 0, j = 0; i < n; ++i) {
        const int32_t r = rows[i];
        float v;
        if ((r >> 3) == top) {
            v = B.ex8[r & 7];
        } else {
            while (B.groups[j] != (r >> 3)) ++j;
            v = B.ex[8 * j + (r & 7)];
        }
        if (v > st.m) {
            st.m = v;
            st.n = n_base + (uint32_t)r;
        }
    }
}

// A wide block's weighed columns (nonzero screen words) with their weights, and what a row's exact
// score can add to its refined score (the double-precision sum over those columns): the other
// columns add at most max(A, 0) e^2 + |C| |e| each (nothing for the prior-skipped dims, whose A is
// below 0 and C is 0), and the fp32 chain errs at each step by at most u times the running sum's
// magnitude and by at most the step's own term. The running sum is the row's partial refined sum
// plus at most the other columns' terms so far, so the chain's bound follows the row's actual
// partial sums (refined_bound) instead of the largest they could be: on a block of thousands of
// near-zero weights and a few weighed columns, the screen's bound is tens of thousands of integer
// units, and most rows it cannot rule out are ruled out here without generating their thousands
// of other columns.
struct WeighedColumns {
    std::vector<int32_t> k;       // pool columns, ascending
    std::vector<int32_t> quads;   // their pool quads, ascending
    std::vector<uint8_t> pairs;   // ... and the Box-Muller pairs of each that it weighs
    std::vector<int32_t> qpos;    // column i's position in a tile of `quads`
    std::vector<uint32_t> words;  // screen words
    std::vector<double> a, c;     // weights
    std::vector<double> seg_n, seg_t;  // the other columns' chain steps up to the next weighed one: count, terms
    double base = 0.0;            // the row-independent part of the bound
    double ug = 0.0;              // u (1 + g) of the chain bound
};

// From block column gi of a group's weights wa/wc and screen words (stride Gp, P columns) and its
// ScreenBlock, as the search's setup made them.
WeighedColumns weighed_columns(const float* wa, const float* wc, const uint32_t* words, int64_t Gp, int64_t gi,
                               int64_t P, const ScreenBlock& sb) {
    WeighedColumns w;
    const double n = 2.0 * (double)P;
    w.ug = sb.ug;
    double rest = 0.0, mag = 0.0, tiny = 0.0, c0 = 0.0;
    for (int64_t k = 0; k < P; ++k) {
        const double A = (double)wa[k * Gp + gi], C = (double)wc[k * Gp + gi];
        const double ta = std::fabs(A) * REC_SCREEN_E2_MAX, tc = std::fabs(C) * REC_SCREEN_E_MAX;
        if (const uint32_t word = words[k * Gp + gi]) {
            mag += ta + tc;
            if (w.quads.empty() || w.quads.back() != (int32_t)(k / 4)) {
                w.quads.push_back((int32_t)(k / 4));
                w.pairs.push_back(0);
            }
            w.pairs.back() |= (uint8_t)(k % 4 < 2 ? 1 : 2);
            w.k.push_back((int32_t)k);
            w.qpos.push_back((int32_t)(4 * (w.quads.size() - 1) + k % 4));
            w.words.push_back(word);
            w.a.push_back(A);
            w.c.push_back(C);
            w.seg_n.push_back(0.0);
            w.seg_t.push_back(0.0);
            c0 += 2.0 * w.ug * tiny;  // the other columns' part of this column's two running sums
            continue;
        }
        rest += std::max(A, 0.0) * REC_SCREEN_E2_MAX + tc;
        for (const double t : {ta, tc}) {
            if (t == 0.0) continue;  // fma(0, x, s) == s: no rounding
            tiny += t;
            c0 += std::min(w.ug * tiny, t);
            if (!w.seg_n.empty()) {
                w.seg_n.back() += 1.0;
                w.seg_t.back() += t;
            }
        }
    }
    // Products of floats are exact in double; each of the 2n additions errs by 2^-53 of at most mag.
    const double dsum = 2.0 * (double)w.k.size() * std::ldexp(1.0, -53) * mag;
    // The fp32 running sum differs from the exact one by the chain's error so far (sb.chain at most).
    // 1e-35 n: results in the subnormal range err by up to 2^-150 whatever their magnitude.
    w.base = rest + dsum + c0 + w.ug * n * (sb.chain + dsum) + 1e-35 * n;
    return w;
}

}  // namespace

void rec_refined_rows(const RefinedCols& w, const float* E, const float* E2, const int64_t* col_off,
                      const int64_t* row_off, int64_t n, double* W, double* ch) {
    std::fill(W, W + 8 * n, 0.0);
    std::fill(ch, ch + 8 * n, 0.0);
    for (int64_t t = 0; t < w.cols; ++t)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < 8; ++j) {
                const int64_t o = col_off[t] + row_off[i] + j, r = 8 * i + j;
                const double w1 = W[r] + w.a[t] * (double)E2[o];
                const double w2 = w1 + w.c[t] * (double)E[o];
                ch[r] += w.ug * (std::fabs(w1) + std::fabs(w2)) + std::min(w.seg_n[t] * w.ug * std::fabs(w2), w.seg_t[t]);
                W[r] = w2;
            }
}

namespace {

// The upper bound of a row's exact score from its refined sum W and chain bound ch.
inline double bound_of(const WeighedColumns& w, double W, double ch) { return W + 1.001 * (w.base + ch) + 1e-30; }

inline RefinedCols refined_cols(const WeighedColumns& w) {
    return {w.a.data(), w.c.data(), w.seg_n.data(), w.seg_t.data(), (int64_t)w.k.size(), w.ug};
}

// Upper bounds ub[8 i + j] of the exact scores of n 8-row groups from their weighed columns'
// normals (column t of w at E/E2[col_off[t] + row_off[i] + j]).
void refined_bounds(const RecScreen& scr, const WeighedColumns& w, const float* E, const float* E2,
                    const int64_t* col_off, const int64_t* row_off, int64_t n, double* ub, Buffers& B) {
    B.rw.resize(16 * n);
    double* W = B.rw.data();
    double* ch = W + 8 * n;
    scr.refined_rows(refined_cols(w), E, E2, col_off, row_off, n, W, ch);
    for (int64_t r = 0; r < 8 * n; ++r) ub[r] = bound_of(w, W[r], ch[r]);
}

// Rows n0 + 8 grps[i] + j (i < n, j < 8) generated again over pool columns [0, c4) (or the pool
// quads `quads`, c4 / 4 of them), kRegenBatch 8-row groups at a time: use(i0, nb, ld) reads groups
// i0..i0 + nb from E/E2 (column-major, ld = 8 nb rows).
constexpr int64_t kRegenBatch = 4;

template <class Use>
void regen_groups(const RecSetup& S, const RecKernels& K, uint32_t n0, const int32_t* grps, int64_t n, int64_t c4,
                  const int32_t* quads, std::vector<float>& E, std::vector<float>& E2, Use&& use) {
    E.resize(8 * kRegenBatch * std::max<int64_t>(c4, 4));
    E2.resize(8 * kRegenBatch * std::max<int64_t>(c4, 4));
    for (int64_t i0 = 0; i0 < n; i0 += kRegenBatch) {
        const int64_t nb = std::min(kRegenBatch, n - i0), ld = 8 * nb;
        uint32_t starts[kRegenBatch];
        for (int64_t i = 0; i < nb; ++i) starts[i] = n0 + 8 * (uint32_t)grps[i0 + i];
        if (c4) K.gen_pool(S.seed, 0u, ld, c4, ld, E.data(), E2.data(), quads, starts);
        use(i0, nb, ld);
    }
}

// Refined upper bounds of rows n0 + 8 grps[i] + j (i < n, j < 8) into ub[8 i + j], from their
// weighed columns generated again.
void refined_regen(const RecSetup& S, const RecKernels& K, const WeighedColumns& w, uint32_t n0, const int32_t* grps,
                   int64_t n, double* ub, Buffers& B) {
    static const int64_t kGroupRows[kRegenBatch] = {0, 8, 16, 24};  // a regen_groups batch's 8-row groups
    regen_groups(S, K, n0, grps, n, 4 * (int64_t)w.quads.size(), w.quads.data(), B.RW, B.RW2,
                 [&](int64_t i0, int64_t nb, int64_t ld) {
                     B.col_off.resize(w.k.size());
                     for (size_t t = 0; t < w.k.size(); ++t) B.col_off[t] = (int64_t)w.qpos[t] * ld;
                     refined_bounds(*K.screen, w, B.RW.data(), B.RW2.data(), B.col_off.data(), kGroupRows, nb,
                                    ub + 8 * i0, B);
                 });
}

// The same from a tile of every pool column (E/E2[k * ld + r], rows 8 grps[i] + j).
void refined_tile(const RecScreen& scr, const WeighedColumns& w, const float* E, const float* E2, int64_t ld,
                  const int32_t* grps, int64_t n, double* ub, Buffers& B) {
    B.col_off.resize(w.k.size());
    for (size_t t = 0; t < w.k.size(); ++t) B.col_off[t] = (int64_t)w.k[t] * ld;
    B.row_off.resize(n);
    for (int64_t i = 0; i < n; ++i) B.row_off[i] = 8 * (int64_t)grps[i];
    refined_bounds(scr, w, E, E2, B.col_off.data(), B.row_off.data(), n, ub, B);
}

// rescore_rows for wide blocks: before their exact scores, the rows that can reach the best found
// get refined upper bounds (refine(groups, n, ub): 8 per 8-row group, score units), and only those
// whose bound reaches it are scored exactly. The first row at the screened maximum is scored
// exactly first only when nothing has been found yet (its score is then the bound). Same
// statistics as rescore_rows: every row left out is below an exact score found, strictly.
template <class Exact, class Refine>
bool rescore_rows_refined(const RecScreen& scr, const int32_t* x, int64_t rows, const int32_t* M, double Kb,
                          double up, float found, uint32_t n_base, Exact&& exact, Refine&& refine, Buffers& B,
                          ChunkStat& st) {
    float best = std::max(found, st.m);
    double f = (double)best * Kb;
    const double mi = (double)scr.max16(M);
    if (mi + up < f) return false;
    int32_t top = -1;
    if (best == -std::numeric_limits<float>::infinity()) {
        scr.rows_at_least(x, rows, (int32_t)mi, B.rows.data());
        top = B.rows[0] >> 3;
        exact(&top, 1, B.ex8);
        best = B.ex8[B.rows[0] & 7];
        f = (double)best * Kb;
    }
    const int64_t nr = scr.rows_at_least(x, rows, screen_floor(f - up), B.rows.data());
    const int64_t ng = row_groups(B.rows.data(), nr, top, B.groups.data());
    B.ub.resize(8 * std::max<int64_t>(ng, 1));
    refine(B.groups.data(), ng, B.ub.data());
    B.kept.resize(REC_CHUNK);
    int64_t nk = 0;
    for (int64_t i = 0, j = 0; i < nr; ++i) {
        const int32_t r = B.rows[i];
        if ((r >> 3) != top) {
            while (B.groups[j] != (r >> 3)) ++j;
            if (B.ub[8 * j + (r & 7)] < (double)best) continue;
        }
        B.kept[nk++] = r;
    }
    fold_exact(B.kept.data(), nk, top, n_base, exact, B, st);
    return true;
}

// Temperature-0 statistics of chunk c for the kTile groups [ga, gz) through the screen, from the
// tile in B.E/B.E2 (all of the groups' tcols columns): for each block, the chunk's exact maximum and
// its first row, or m = -inf when the chunk provably cannot hold the block's maximum (its screened
// maximum plus the bound stays below an exact maximum already found in another chunk).
// rec_combine then picks the same candidate as from exact statistics: the chunk holding the
// block's maximum is never skipped, and within a chunk every row that can equal its maximum or
// beat the best found is rescored exactly, in ascending order (first on ties). In integer units
// exact * K <= screened + up. The exact score v of each block's first row at its screened maximum
// comes first (the rows' maximum is at least v, so only rows within `up` of max(v, found) need
// theirs): those of a group's blocks in one call, four fp32 chains side by side instead of one
// waiting on each FMA's latency.
void screen_chunk(const RecSetup& S, const RecScreen& scr, int64_t c, int64_t ga, int64_t gz, int64_t tcols,
                  const std::vector<float>& WA, const std::vector<float>& WC, const ScreenPlan& SP,
                  const std::vector<ScreenBlock>& sb, const std::vector<int64_t>& gw_off,
                  const std::vector<int64_t>& gp, Buffers& B, ChunkSink& sink) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const uint32_t n0 = (uint32_t)(c * REC_CHUNK);
    B.need_screen(REC_CHUNK * tcols);
    scr.pack_tile(B.E.data(), B.E2.data(), REC_CHUNK, REC_CHUNK, tcols, B.EB.data());
    for (int64_t g = ga; g < gz; ++g) {
        score_triples(scr, SP, g, B.EB.data(), REC_CHUNK, tcols, B.SI.data(), REC_CHUNK, B.SM.data());
        const int64_t q0 = S.group_begin[g], P = S.group_P[g];
        const float* wa = WA.data() + gw_off[g];
        const float* wc = WC.data() + gw_off[g];
        // The blocks whose chunk can hold their pick, each with the first row at its screened maximum.
        B.top_gi.clear();
        B.top_grp.clear();
        B.top_row.clear();
        B.top_f.clear();
        for (int64_t q = q0; q < S.group_begin[g + 1]; ++q) {
            const int64_t gi = q - q0;
            const double f = (double)sink.best(S.pool_blocks[q]) * sb[q].K;
            const double mi = (double)scr.max16(B.SM.data() + 16 * gi);
            if (mi + sb[q].up * sb[q].K < f) {
                sink.put(S.pool_blocks[q], c, ChunkStat{-kInf, n0, 0.0});
                continue;
            }
            scr.rows_at_least(B.SI.data() + gi * REC_CHUNK, REC_CHUNK, (int32_t)mi, B.rows.data());
            B.top_gi.push_back((int32_t)gi);
            B.top_grp.push_back(B.rows[0] >> 3);
            B.top_row.push_back(B.rows[0]);
            B.top_f.push_back(f);
        }
        const int64_t nt = (int64_t)B.top_gi.size();
        B.top_ex.resize(8 * nt);
        scr.exact_rows(B.E.data(), B.E2.data(), REC_CHUNK, P, wa, wc, gp[g], 0, B.top_gi.data(), B.top_grp.data(), nt,
                       B.top_ex.data());
        for (int64_t i = 0; i < nt; ++i) {
            const int64_t gi = B.top_gi[i], q = q0 + gi;
            const double Kb = sb[q].K, up = sb[q].up * sb[q].K;
            std::copy(B.top_ex.begin() + 8 * i, B.top_ex.begin() + 8 * i + 8, B.ex8);
            const double f = std::max(B.top_f[i], (double)B.ex8[B.top_row[i] & 7] * Kb);
            const int64_t nr =
                scr.rows_at_least(B.SI.data() + gi * REC_CHUNK, REC_CHUNK, screen_floor(f - up), B.rows.data());
            ChunkStat st{-kInf, n0, 0.0};
            fold_exact(B.rows.data(), nr, B.top_grp[i], n0, [&](const int32_t* grps, int64_t n, float* out) {
                scr.exact_rows(B.E.data(), B.E2.data(), REC_CHUNK, P, wa, wc, gp[g], gi, nullptr, grps, n, out);
            }, B, st);
            sink.put(S.pool_blocks[q], c, st);
        }
    }
}

// The kCompact groups' tile, shared: the union of the pool quads their blocks weigh (with the
// Box-Muller pairs any of them weighs) and each group's triple columns as positions in it. The
// groups weigh largely the same quads (on a 12 MP photo's y, 26 groups of 1,000 to 24,000 dims
// weigh 912 quads per chunk in all, where their own tiles held 3,950), and a quad's words are the
// same in any tile: generated once per chunk instead of once per group.
struct CompactPool {
    std::vector<int64_t> groups;     // the kCompact groups
    std::vector<int32_t> quads;      // pool quads, ascending
    std::vector<uint8_t> pairs;
    std::vector<int32_t> cols;       // each group's triple columns (ScreenPlan::cols) as positions in this tile,
    std::vector<int64_t> cols_at;    // ... group i's from cols_at[i]
};

CompactPool compact_pool(const ScreenPlan& SP) {
    CompactPool CP;
    const int64_t G = (int64_t)SP.mode.size();
    int32_t top = -1;
    for (int64_t g = 0; g < G; ++g)
        if (SP.mode[g] == ScreenPlan::kCompact) {
            CP.groups.push_back(g);
            for (int64_t i = SP.quad_off[g]; i < SP.quad_off[g + 1]; ++i) top = std::max(top, SP.quads[i]);
        }
    std::vector<uint8_t> pairs(top + 1, 0);
    for (int64_t g : CP.groups)
        for (int64_t i = SP.quad_off[g]; i < SP.quad_off[g + 1]; ++i) pairs[SP.quads[i]] |= SP.quad_pairs[i];
    std::vector<int32_t> at(top + 1, -1);
    for (int32_t q = 0; q <= top; ++q)
        if (pairs[q]) {
            at[q] = (int32_t)CP.quads.size();
            CP.quads.push_back(q);
            CP.pairs.push_back(pairs[q]);
        }
    for (int64_t g : CP.groups) {
        const int64_t c0 = SP.tri[SP.tri_first[g]].c;
        const int64_t c1 = SP.tri_first[g + 1] < (int64_t)SP.tri.size() ? SP.tri[SP.tri_first[g + 1]].c
                                                                         : (int64_t)SP.cols.size();
        CP.cols_at.push_back((int64_t)CP.cols.size());
        for (int64_t i = c0; i < c1; ++i) CP.cols.push_back(4 * at[SP.cols[i] / 4] + SP.cols[i] % 4);
    }
    return CP;
}

// Chunk c's screened maxima of the blocks of every kCompact group with that many chunks, into
// maxima[q][c] (compact_chunks takes the chunks in their order and rescores): the pool's tile in
// row slices of 128 (its words only, generated straight where the kernels can), each screened by
// every group while at hand.
void screen_compact_pool(const RecScreen& scr, const RecKernels& K, const RecSetup& S, const ScreenPlan& SP,
                         const CompactPool& CP, int64_t c, const std::vector<int64_t>& gnch, Buffers& B,
                         std::vector<std::vector<int32_t>>& maxima) {
    constexpr int64_t RT = 128;  // score_cols1 takes rows in 128s
    const int64_t nq = (int64_t)CP.quads.size(), width = 4 * nq;
    B.need_screen(RT * width);
    B.cmax.assign(CP.groups.size() * REC_GROUP, INT32_MIN);
    for (int64_t r0 = 0; r0 < REC_CHUNK; r0 += RT) {
        rec_pool_words(K, S.seed, (uint32_t)(c * REC_CHUNK + r0), RT, nq, CP.quads.data(), B.E, B.E2, B.EB.data(),
                       CP.pairs.data());
        for (size_t i = 0; i < CP.groups.size(); ++i) {
            const int64_t g = CP.groups[i];
            if (gnch[g] <= c) continue;
            score_triples(scr, SP, g, B.EB.data(), RT, width, B.SI.data(), RT, B.SM.data(),
                          CP.cols.data() + CP.cols_at[i]);
            for (int64_t j = 0; j < S.group_begin[g + 1] - S.group_begin[g]; ++j)
                B.cmax[i * REC_GROUP + j] = std::max(B.cmax[i * REC_GROUP + j], scr.max16(B.SM.data() + 16 * j));
        }
    }
    for (size_t i = 0; i < CP.groups.size(); ++i) {
        const int64_t g = CP.groups[i];
        if (gnch[g] <= c) continue;
        for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q)
            maxima[q][c] = B.cmax[i * REC_GROUP + (q - S.group_begin[g])];
    }
}

// Temperature-0 statistics of kCompact block q (group g, column gi of its weights) from its
// chunks' screened maxima: chunks in descending order of them, each screened again over a tile of
// only the block's weighed columns and rescored as in screen_chunk, with its rows generated again
// over all of the block's columns for their exact scores, until a chunk's maximum plus the bound
// falls below the best exact score found (the later chunks' are no larger). Rescoring the
// likeliest chunk first leaves the block's others a bound to fall below: a compact block's rows
// cost thousands of generated normals each.
void compact_chunks(const RecSetup& S, const RecKernels& K, int64_t q, int64_t g, int64_t gi, int64_t Gp,
                    const float* wa, const float* wc, const ScreenBlock& sbq, const WeighedColumns& w,
                    const std::vector<int32_t>& maxima, Buffers& B, ChunkSink& sink) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    static const int32_t kIota[kRegenBatch] = {0, 1, 2, 3};  // a regen_groups batch's 8-row groups
    const RecScreen& scr = *K.screen;
    const int64_t b = S.pool_blocks[q], P = S.group_P[g], c4 = round4(P);
    const int64_t nq = (int64_t)w.quads.size();
    std::vector<int64_t> order(maxima.size());
    for (size_t c = 0; c < order.size(); ++c) order[c] = (int64_t)c;
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return maxima[x] > maxima[y]; });
    const double Kb = sbq.K, up = sbq.up * sbq.K;
    B.need_screen(REC_CHUNK * std::max<int64_t>(4 * nq, 4));
    for (int64_t c : order) {
        if ((double)maxima[c] + up < (double)sink.best(b) * Kb) break;
        const uint32_t n0 = (uint32_t)(c * REC_CHUNK);
        if (nq) rec_pool_words(K, S.seed, n0, REC_CHUNK, nq, w.quads.data(), B.E, B.E2, B.EB.data(), w.pairs.data());
        scr.score_cols1(B.EB.data(), REC_CHUNK, 4 * nq, w.qpos.data(), w.words.data(), (int64_t)w.k.size(),
                        B.SI.data(), B.SM.data());
        auto exact = [&](const int32_t* grps, int64_t n, float* out) {
            regen_groups(S, K, n0, grps, n, c4, nullptr, B.RE, B.RE2, [&](int64_t i0, int64_t nb, int64_t ld) {
                scr.exact_rows(B.RE.data(), B.RE2.data(), ld, P, wa, wc, Gp, gi, nullptr, kIota, nb, out + 8 * i0);
            });
        };
        auto refine = [&](const int32_t* grps, int64_t n, double* ub) { refined_regen(S, K, w, n0, grps, n, ub, B); };
        ChunkStat st{-kInf, n0, 0.0};
        rescore_rows_refined(scr, B.SI.data(), REC_CHUNK, B.SM.data(), Kb, up, sink.best(b), n0, exact, refine, B, st);
        sink.put(b, c, st);
    }
}

// Temperature-0 statistics of chunk c for the kSliced groups [ga, gz): row slices of one tile as
// wide as the widest of them (cols4 columns), each generated once, screened by every group and
// rescored while it is at hand. A row's exact score is needed only where it can reach the best
// exact maximum found so far (`found`, read again for each slice) or this chunk's best so far: a
// chunk whose rows all fall short reports m = -inf, and one that holds the block's maximum reports
// it with its first row, as its rows that can reach `found` are all rescored, in ascending order.
void screen_slices(const RecSetup& S, const RecScreen& scr, const RecKernels& K, int64_t c, int64_t ga,
                   int64_t gz, int64_t cols4, const std::vector<float>& WA, const std::vector<float>& WC,
                   const ScreenPlan& SP, const std::vector<ScreenBlock>& sb,
                   const std::vector<int64_t>& gw_off, const std::vector<int64_t>& gp,
                   const std::vector<WeighedColumns>& wcols, Buffers& B, ChunkSink& sink) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const uint32_t n0 = (uint32_t)(c * REC_CHUNK);
    const int64_t RT = std::max<int64_t>(128, tile_rows(cols4, REC_CHUNK));
    B.need(RT * cols4, 0);
    B.need_screen(RT * cols4);
    const int64_t q0 = S.group_begin[ga], nq = S.group_begin[gz] - q0;
    B.st.assign(nq, ChunkStat{-kInf, n0, 0.0});
    for (int64_t r0 = 0; r0 < REC_CHUNK; r0 += RT) {
        K.gen_pool(S.seed, n0 + (uint32_t)r0, RT, cols4, RT, B.E.data(), B.E2.data(), nullptr, nullptr);
        scr.pack_tile(B.E.data(), B.E2.data(), RT, RT, cols4, B.EB.data());
        for (int64_t g = ga; g < gz; ++g) {
            score_triples(scr, SP, g, B.EB.data(), RT, cols4, B.SI.data(), RT, B.SM.data());
            for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) {
                const int64_t b = S.pool_blocks[q], gi = q - S.group_begin[g];
                auto exact = [&](const int32_t* grps, int64_t n, float* out) {
                    scr.exact_rows(B.E.data(), B.E2.data(), RT, S.group_P[g], WA.data() + gw_off[g],
                                   WC.data() + gw_off[g], gp[g], gi, nullptr, grps, n, out);
                };
                auto refine = [&](const int32_t* grps, int64_t n, double* ub) {
                    refined_tile(scr, wcols[q], B.E.data(), B.E2.data(), RT, grps, n, ub, B);
                };
                rescore_rows_refined(scr, B.SI.data() + gi * RT, RT, B.SM.data() + 16 * gi, sb[q].K,
                                     sb[q].up * sb[q].K, sink.best(b), n0 + (uint32_t)r0, exact, refine, B,
                                     B.st[q - q0]);
            }
        }
    }
    for (int64_t q = q0; q < q0 + nq; ++q) sink.put(S.pool_blocks[q], c, B.st[q - q0]);
}

}  // namespace

namespace {

void search_cpu(const RecSetup& S, int threads, ChunkSink& sink) {
    const RecKernels& K = rec_kernels();
    const bool sample = S.tau > 0.0;
    const int64_t G = (int64_t)S.group_P.size();
    // Group weight matrices WA/WC[k * Gp + g] (zero padding to a multiple of 3 blocks).
    std::vector<int64_t> gw_off(G + 1, 0), gp(G);
    for (int64_t g = 0; g < G; ++g) {
        const int64_t cnt = S.group_begin[g + 1] - S.group_begin[g];
        gp[g] = (cnt + 2) / 3 * 3;
        gw_off[g + 1] = gw_off[g] + (int64_t)S.group_P[g] * gp[g];
    }
    // The setup below runs on every thread, by batches of groups (a 12 MP photo's y has 15,000).
    const int T = std::max(1, threads);
    constexpr int64_t kGroupBatch = 256;
    const int64_t nbatch = (G + kGroupBatch - 1) / kGroupBatch;
    std::vector<float> WA(gw_off[G], 0.0f), WC(gw_off[G], 0.0f);
    parallel_for(nbatch, T, [&](int64_t it, int) {
        for (int64_t g = it * kGroupBatch; g < std::min(G, (it + 1) * kGroupBatch); ++g)
            for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) {
                const int64_t b = S.pool_blocks[q], gi = q - S.group_begin[g];
                for (int32_t k = 0; k < S.len[b]; ++k) {
                    WA[gw_off[g] + k * gp[g] + gi] = S.A[S.start[b] + k];
                    WC[gw_off[g] + k * gp[g] + gi] = S.C[S.start[b] + k];
                }
            }
    });
    // The screen (temperature 0 only: tempered sampling needs every weight): integer weight
    // pairs at each block's scale. The sink's running winner of each block, the best exact
    // maximum found so far, lets a chunk whose bound cannot reach it skip its exact rescoring.
    const RecScreen* screen = sample ? nullptr : K.screen;
    auto wide = [&](int64_t g) { return tile_rows(round4(S.group_P[g]), REC_CHUNK) != REC_CHUNK; };
    ScreenPlan SP;
    std::vector<ScreenBlock> sb;
    // Wide blocks (kCompact, kSliced): their weighed columns, for refined bounds.
    std::vector<WeighedColumns> wcols(screen ? S.pool_blocks.size() : 0);
    if (screen) {
        sb.resize(S.pool_blocks.size());
        SP.quad_off.push_back(0);
        SP.tri_first.push_back(0);
        // Each batch plans its groups into a plan of its own, appended in order below.
        std::vector<ScreenPlan> part(nbatch);
        parallel_for(nbatch, T, [&](int64_t it, int) {
            ScreenPlan& L = part[it];
            L.quad_off.push_back(0);
            L.tri_first.push_back(0);
            std::vector<int16_t> qa, qc;
            std::vector<uint32_t> WBg;
            for (int64_t g = it * kGroupBatch; g < std::min(G, (it + 1) * kGroupBatch); ++g) {
                const int64_t P = S.group_P[g];
                qa.resize(P);
                qc.resize(P);
                WBg.assign(P * gp[g], 0u);
                for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) {
                    const int64_t gi = q - S.group_begin[g], o = gw_off[g] + gi;
                    sb[q] = screen_weights(WA.data() + o, WC.data() + o, gp[g], P, qa.data(), qc.data());
                    for (int64_t k = 0; k < P; ++k)
                        WBg[k * gp[g] + gi] = (uint32_t)(uint16_t)qa[k] | ((uint32_t)(uint16_t)qc[k] << 16);
                }
                plan_screen_group(L, P, gp[g], wide(g), WBg);
                if (L.mode.back() == ScreenPlan::kCompact || L.mode.back() == ScreenPlan::kSliced)
                    for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q)
                        wcols[q] = weighed_columns(WA.data() + gw_off[g], WC.data() + gw_off[g], WBg.data(), gp[g],
                                                   q - S.group_begin[g], P, sb[q]);
            }
        });
        for (const ScreenPlan& L : part) {
            const int64_t nq = (int64_t)SP.quads.size(), nt = (int64_t)SP.tri.size();
            const int64_t nc = (int64_t)SP.cols.size(), nw = (int64_t)SP.words.size();
            SP.mode.insert(SP.mode.end(), L.mode.begin(), L.mode.end());
            SP.quads.insert(SP.quads.end(), L.quads.begin(), L.quads.end());
            SP.quad_pairs.insert(SP.quad_pairs.end(), L.quad_pairs.begin(), L.quad_pairs.end());
            for (size_t i = 1; i < L.quad_off.size(); ++i) SP.quad_off.push_back(nq + L.quad_off[i]);
            for (ScreenPlan::Triple t : L.tri) {
                t.c += nc;
                t.w += nw;
                SP.tri.push_back(t);
            }
            for (size_t i = 1; i < L.tri_first.size(); ++i) SP.tri_first.push_back(nt + L.tri_first[i]);
            SP.cols.insert(SP.cols.end(), L.cols.begin(), L.cols.end());
            SP.words.insert(SP.words.end(), L.words.begin(), L.words.end());
        }
    }
    // How a group's chunks are scored: through the screen (over a tile of all its columns or of
    // its own), or exactly in fp32 (full-chunk tiles, or row slices for groups too wide for one).
    auto mode = [&](int64_t g) -> int8_t {
        if (screen) return SP.mode[g];
        return wide(g) ? ScreenPlan::kNone : ScreenPlan::kTile;
    };
    // Work items: (chunk, slice of active groups) for the pool; batches of private blocks.
    struct Item {
        int kind;
        int64_t c, a, z;  // pool: chunk c, groups [a, z); private: private_blocks[a, z); 2: the compact pool
    };
    std::vector<Item> items;
    std::vector<int64_t> gnch(G);
    int64_t total = 0;
    for (int64_t g = 0; g < G; ++g) {
        gnch[g] = (int64_t)1 << (S.group_k[g] - REC_POOL_MIN_BITS);
        total += gnch[g] * (int64_t)S.group_P[g] * gp[g];
    }
    const int64_t target = std::max<int64_t>(1, total / (8 * std::max(1, threads)));
    // Groups scored another way than their neighbours get items of their own: sharing one would
    // send every narrow group of the item down the row-slice path too (slices as narrow as the
    // widest group's, and no screen). The kCompact groups are screened together, one item per
    // chunk (CompactPool), below.
    const int64_t maxch = G ? gnch[0] : 0;
    for (int64_t c = 0; c < maxch; ++c) {
        int64_t a = 0, acc = 0;
        int64_t g = 0;
        for (; g < G && gnch[g] > c; ++g) {
            if (mode(g) == ScreenPlan::kCompact) {
                if (a < g) items.push_back({0, c, a, g});
                a = g + 1;
                acc = 0;
                continue;
            }
            if (g > a && mode(g) != mode(g - 1)) {
                items.push_back({0, c, a, g});
                a = g;
                acc = 0;
            }
            acc += (int64_t)S.group_P[g] * gp[g];
            if (acc >= target) {
                items.push_back({0, c, a, g + 1});
                a = g + 1;
                acc = 0;
            }
        }
        if (a < g) items.push_back({0, c, a, g});
    }
    CompactPool CP;
    if (screen) CP = compact_pool(SP);
    int64_t pool_chunks = 0;
    for (int64_t g : CP.groups) pool_chunks = std::max(pool_chunks, gnch[g]);
    for (int64_t c = 0; c < pool_chunks; ++c) items.push_back({2, c, 0, 0});
    {
        const int64_t npb = (int64_t)S.private_blocks.size();
        int64_t a = 0, acc = 0;
        for (int64_t q = 0; q < npb; ++q) {
            const int64_t b = S.private_blocks[q];
            acc += std::max<int64_t>(32, (int64_t)1 << S.k[b]) * S.len[b] + 64;
            if (acc >= (1 << 18)) {
                items.push_back({1, 0, a, q + 1});
                a = q + 1;
                acc = 0;
            }
        }
        if (a < npb) items.push_back({1, 0, a, npb});
    }
    std::vector<Buffers> bufs(T);
    // kCompact blocks: screened maxima per chunk (compact_chunks takes them in that order).
    std::vector<int64_t> compact;
    std::vector<std::vector<int32_t>> maxima(screen ? S.pool_blocks.size() : 0);
    for (int64_t g : CP.groups)
        for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) {
            compact.push_back(q);
            maxima[q].assign(gnch[g], INT32_MIN);
        }
    auto run_item = [&](const Item& I, int tid) {
        Buffers& B = bufs[tid];
        if (I.kind == 2) {
            screen_compact_pool(*screen, K, S, SP, CP, I.c, gnch, B, maxima);
            return;
        }
        if (I.kind == 0) {
            int64_t Pmax = 0, Gpmax = 0;
            for (int64_t g = I.a; g < I.z; ++g) {
                Pmax = std::max<int64_t>(Pmax, S.group_P[g]);
                Gpmax = std::max(Gpmax, gp[g]);
            }
            const int8_t md = mode(I.a);  // the same for every group of the item
            const int64_t cols4 = round4(Pmax);
            const int64_t RT = tile_rows(cols4, REC_CHUNK);
            const uint32_t n0 = (uint32_t)(I.c * REC_CHUNK);
            // Chunk statistics of group g's blocks from its scores x (a column of REC_CHUNK per block).
            auto group_stats = [&](int64_t g, const float* x) {
                for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) {
                    const int64_t b = S.pool_blocks[q], gi = q - S.group_begin[g];
                    ChunkStat st;
                    chunk_stat(K, x + gi * REC_CHUNK, REC_CHUNK, sample, S.seed, (uint64_t)b,
                               (uint32_t)I.c, n0, B.w.data(), B.v.data(), st);
                    sink.put(b, I.c, st);
                }
            };
            if (md == ScreenPlan::kSliced) {
                screen_slices(S, *screen, K, I.c, I.a, I.z, cols4, WA, WC, SP, sb, gw_off, gp, wcols, B, sink);
                return;
            }
            if (md == ScreenPlan::kNone) {
                // Groups too wide for a full-chunk tile (an item of their own): row slices of one
                // tile as wide as the widest group, each generated once and scored by every group.
                int64_t nscores = 0;
                for (int64_t g = I.a; g < I.z; ++g) nscores += gp[g] * REC_CHUNK;
                B.need(RT * cols4, nscores);
                for (int64_t r0 = 0; r0 < REC_CHUNK; r0 += RT) {
                    K.gen_pool(S.seed, n0 + (uint32_t)r0, RT, cols4, RT, B.E.data(), B.E2.data(), nullptr, nullptr);
                    float* out = B.S.data() + r0;
                    for (int64_t g = I.a; g < I.z; ++g) {
                        K.score_group(B.E.data(), B.E2.data(), RT, RT, S.group_P[g],
                                      WA.data() + gw_off[g], WC.data() + gw_off[g], gp[g], out,
                                      REC_CHUNK);
                        out += gp[g] * REC_CHUNK;
                    }
                }
                const float* x = B.S.data();
                for (int64_t g = I.a; g < I.z; ++g) {
                    group_stats(g, x);
                    x += gp[g] * REC_CHUNK;
                }
                return;
            }
            B.need(RT * cols4, Gpmax * REC_CHUNK);
            K.gen_pool(S.seed, n0, REC_CHUNK, cols4, REC_CHUNK, B.E.data(), B.E2.data(), nullptr, nullptr);
            if (screen) {
                screen_chunk(S, *screen, I.c, I.a, I.z, cols4, WA, WC, SP, sb, gw_off, gp, B, sink);
                return;
            }
            for (int64_t g = I.a; g < I.z; ++g) {
                K.score_group(B.E.data(), B.E2.data(), REC_CHUNK, REC_CHUNK, S.group_P[g],
                              WA.data() + gw_off[g], WC.data() + gw_off[g], gp[g], B.S.data(), REC_CHUNK);
                group_stats(g, B.S.data());
            }
        } else {
            for (int64_t q = I.a; q < I.z; ++q) {
                const int64_t b = S.private_blocks[q];
                const int64_t N = (int64_t)1 << S.k[b];
                const int64_t Np = std::max<int64_t>(32, N);
                const int64_t c4 = round4(S.len[b]);
                const int64_t rt = tile_rows(c4, Np);
                B.need(rt * c4, Np);
                for (int64_t r0 = 0; r0 < Np; r0 += rt) {
                    K.gen_private(S.seed, (uint64_t)b, (uint32_t)r0, rt, c4, rt, B.E.data(),
                                  B.E2.data());
                    K.score_single(B.E.data(), B.E2.data(), rt, rt, S.len[b], S.A.data() + S.start[b],
                                   S.C.data() + S.start[b], B.S.data() + r0);
                }
                for (int64_t r = N; r < Np; ++r) B.S[r] = -std::numeric_limits<float>::infinity();
                ChunkStat st;
                chunk_stat(K, B.S.data(), Np, sample, S.seed, (uint64_t)b, 0u, 0u, B.w.data(),
                           B.v.data(), st);
                sink.put(b, 0, st);
            }
        }
    };
    // The kCompact groups' items first (their chunks' screened maxima), then the compact blocks'
    // rescoring, longest first, alongside every other item: a thread no longer ends on a long
    // compact block alone while the other waits.
    std::vector<int64_t> first, rest;
    for (int64_t it = 0; it < (int64_t)items.size(); ++it)
        (items[it].kind == 2 ? first : rest).push_back(it);
    parallel_for((int64_t)first.size(), T, [&](int64_t i, int tid) { run_item(items[first[i]], tid); });
    std::vector<int64_t> group_of(S.pool_blocks.size());
    for (int64_t g = 0; g < G; ++g)
        for (int64_t q = S.group_begin[g]; q < S.group_begin[g + 1]; ++q) group_of[q] = g;
    std::stable_sort(compact.begin(), compact.end(),
                     [&](int64_t x, int64_t y) { return S.len[S.pool_blocks[x]] > S.len[S.pool_blocks[y]]; });
    const int64_t nc = (int64_t)compact.size();
    parallel_for(nc + (int64_t)rest.size(), T, [&](int64_t i, int tid) {
        if (i >= nc) return run_item(items[rest[i - nc]], tid);
        const int64_t q = compact[i], g = group_of[q];
        compact_chunks(S, K, q, g, q - S.group_begin[g], gp[g], WA.data() + gw_off[g], WC.data() + gw_off[g], sb[q],
                       wcols[q], maxima[q], bufs[tid], sink);
    });
}

}  // namespace

void rec_search_cpu(const RecSetup& S, int threads, uint32_t* idx) {
    if (S.tau > 0.0) {
        std::vector<ChunkStat> stats;
        ChunkSink sink(S, &stats);
        search_cpu(S, threads, sink);
        rec_combine(S, stats, idx);
        return;
    }
    ChunkSink sink(S, nullptr);
    search_cpu(S, threads, sink);
    for (int64_t b = 0; b < S.B; ++b) idx[b] = S.k[b] == 0 ? 0u : sink.index(b);
}

void rec_combine(const RecSetup& S, const std::vector<ChunkStat>& stats, uint32_t* idx) {
    for (int64_t b = 0; b < S.B; ++b) {
        const int k = S.k[b];
        if (k == 0) {
            idx[b] = 0;
            continue;
        }
        const int64_t nch = k >= REC_POOL_MIN_BITS ? ((int64_t)1 << (k - REC_POOL_MIN_BITS)) : 1;
        const ChunkStat* st = stats.data() + S.stat_off[b];
        if (S.tau <= 0.0) {
            int64_t best = 0;
            for (int64_t c = 1; c < nch; ++c)
                if (st[c].m > st[best].m) best = c;
            idx[b] = st[best].n;
            continue;
        }
        float M = st[0].m;
        for (int64_t c = 1; c < nch; ++c) M = std::max(M, st[c].m);
        double T = 0.0;
        thread_local std::vector<double> W;
        W.resize(nch);
        for (int64_t c = 0; c < nch; ++c) {
            W[c] = BB_DMUL(st[c].s, (double)det_exp_weight(BB_FSUB(st[c].m, M)));
            T = BB_DADD(T, W[c]);
        }
        const double t = BB_DMUL(block_pick_u(S.seed, (uint64_t)b), T);
        int64_t pick = -1;
        double cum = 0.0;
        for (int64_t c = 0; c < nch; ++c) {
            const double nc = BB_DADD(cum, W[c]);
            if (nc > t) {
                pick = c;
                break;
            }
            cum = nc;
        }
        if (pick < 0)
            for (int64_t c = nch - 1; c >= 0; --c)
                if (W[c] > 0.0) {
                    pick = c;
                    break;
                }
        idx[b] = st[pick < 0 ? 0 : pick].n;
    }
}

void rec_decode(const float* mu_p, const float* sg_p, const PlanView& plan, uint64_t seed,
                const uint32_t* idx, int threads, float* out) {
    std::vector<int64_t> start(plan.B);
    int64_t off = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        start[b] = off;
        off += plan.len[b];
    }
    const int64_t per = 256;
    parallel_for((plan.B + per - 1) / per, threads, [&](int64_t it, int) {
        std::vector<int32_t> perm;
        std::vector<float> sign, e;
        const int64_t b1 = std::min(plan.B, (it + 1) * per);
        for (int64_t b = it * per; b < b1; ++b) {
            const int32_t L = plan.len[b];
            const int k = plan.k[b];
            const uint32_t n = idx[b];
            perm.resize(L);
            sign.resize(L);
            e.resize(round4(L));
            block_perm_signs(seed, (uint64_t)b, L, perm.data(), sign.data());
            for (int64_t g = 0; g < round4(L) / 4; ++g) {
                const U32x4 w =
                    k >= REC_POOL_MIN_BITS
                        ? philox_seed(seed, (uint32_t)g, n, 0u, TAG_POOL)
                        : philox_seed(seed, (uint32_t)g | (n << 16), (uint32_t)b,
                                      (uint32_t)((uint64_t)b >> 32), TAG_PRIVATE);
                det_normal4(w, e.data() + 4 * g);
            }
            const int64_t s0 = start[b];
            for (int32_t j = 0; j < L; ++j)
                out[s0 + j] =
                    BB_FADD(mu_p[s0 + j], BB_FMUL(sg_p[s0 + j], BB_FMUL(sign[j], e[perm[j]])));
        }
    });
}

std::vector<float> rec_debug_scores(const RecSetup& S, int64_t b) {
    const RecKernels& K = rec_kernels();
    const int k = S.k[b];
    const int64_t N = (int64_t)1 << k;
    const int32_t L = S.len[b];
    const int64_t c4 = round4(L);
    std::vector<float> out(N);
    if (k >= REC_POOL_MIN_BITS) {
        // A one-block group padded to three blocks, exactly as in rec_stats_cpu.
        std::vector<float> wa(L * 3, 0.0f), wc(L * 3, 0.0f);
        for (int32_t j = 0; j < L; ++j) {
            wa[j * 3] = S.A[S.start[b] + j];
            wc[j * 3] = S.C[S.start[b] + j];
        }
        const int64_t rt = tile_rows(c4, REC_CHUNK);
        std::vector<float> E(rt * c4), E2(rt * c4), Sb(3 * rt);
        for (int64_t r0 = 0; r0 < N; r0 += rt) {
            K.gen_pool(S.seed, (uint32_t)r0, rt, c4, rt, E.data(), E2.data(), nullptr, nullptr);
            K.score_group(E.data(), E2.data(), rt, rt, L, wa.data(), wc.data(), 3, Sb.data(), rt);
            std::copy(Sb.begin(), Sb.begin() + rt, out.begin() + r0);
        }
    } else {
        const int64_t Np = std::max<int64_t>(32, N);
        const int64_t rt = tile_rows(c4, Np);
        std::vector<float> E(rt * c4), E2(rt * c4), Sb(Np);
        for (int64_t r0 = 0; r0 < Np; r0 += rt) {
            K.gen_private(S.seed, (uint64_t)b, (uint32_t)r0, rt, c4, rt, E.data(), E2.data());
            K.score_single(E.data(), E2.data(), rt, rt, L, S.A.data() + S.start[b],
                           S.C.data() + S.start[b], Sb.data() + r0);
        }
        std::copy(Sb.begin(), Sb.begin() + N, out.begin());
    }
    return out;
}

std::vector<float> rec_debug_candidate(const RecSetup& S, const float* mu_p, const float* sg_p,
                                       int64_t b, uint32_t n) {
    const RecKernels& K = rec_kernels();
    const int32_t L = S.len[b];
    const int64_t c4 = round4(L);
    std::vector<float> E(8 * c4), E2(8 * c4);
    const uint32_t n0 = n & ~7u;
    if (S.k[b] >= REC_POOL_MIN_BITS)
        K.gen_pool(S.seed, n0, 8, c4, 8, E.data(), E2.data(), nullptr, nullptr);
    else
        K.gen_private(S.seed, (uint64_t)b, n0, 8, c4, 8, E.data(), E2.data());
    std::vector<int32_t> perm(L);
    std::vector<float> sign(L), z(L);
    block_perm_signs(S.seed, (uint64_t)b, L, perm.data(), sign.data());
    const int64_t s0 = S.start[b];
    for (int32_t j = 0; j < L; ++j) {
        const float e = E[perm[j] * 8 + (n - n0)];
        z[j] = BB_FADD(mu_p[s0 + j], BB_FMUL(sg_p[s0 + j], BB_FMUL(sign[j], e)));
    }
    return z;
}

#if !defined(BBIMG_WITH_CUDA)
bool rec_cuda_compiled() { return false; }
bool rec_cuda_available() { return false; }
std::string rec_cuda_info() { return "built without CUDA (nvcc not found or BBIMG_NO_CUDA=1)"; }
void rec_stats_cuda(const RecSetup&, std::vector<ChunkStat>&) {
    throw ArgError("this build of bbimg._core has no CUDA support");
}
#endif

}  // namespace bbimg
