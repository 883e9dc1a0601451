// Block plans, their side information (adaptive range coding) and index bit packing.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "range_coder.h"
#include "rec.h"

namespace bbimg {

namespace {

int kcost(double kl, double slack, int kappa) {
    double v = std::ceil(kl + slack - 1e-9);
    if (v < 0) v = 0;
    if (v > kappa) v = kappa;
    return (int)v;
}

// Rate-aware partition: minimises sum_b k_b + cost_d(kappa - k_b) + cost_L(L_b), where the
// symbol costs (bits) come from the statistics of the previous pass (a greedy plan first),
// smoothed. k_b may be chosen above ceil(KL_b + slack) (up to kappa) when that makes the
// exponent symbol cheaper. Each block is one dim or has KL <= kappa - slack. O(n * window).
void plan_blocks_rate(const double* kl, int64_t n, int kappa, int max_len, double slack,
                      double compute_cost, std::vector<int32_t>& lens, std::vector<uint8_t>& ks);

}  // namespace

namespace {

void symbol_costs(const std::vector<int32_t>& lens, const std::vector<uint8_t>& ks, int kappa,
                  int max_len, std::vector<double>& cd, std::vector<double>& cl) {
    std::vector<double> hd(kappa + 1, 0.5), hl(max_len + 1, 0.0);
    for (size_t b = 0; b < lens.size(); ++b) {
        hd[kappa - ks[b]] += 1.0;
        hl[lens[b]] += 1.0;
    }
    // Smooth the length histogram (neighbouring lengths are almost as likely) and floor it.
    std::vector<double> sl(max_len + 1, 0.0);
    double tot_l = 0.0;
    for (int L = 1; L <= max_len; ++L) {
        double a = 0.0, w = 0.0;
        for (int d = -2; d <= 2; ++d) {
            const int q = L + d;
            if (q < 1 || q > max_len) continue;
            const double wt = d == 0 ? 2.0 : (d == 1 || d == -1 ? 1.0 : 0.5);
            a += wt * hl[q];
            w += wt;
        }
        sl[L] = a / w + 0.02;
        tot_l += sl[L];
    }
    double tot_d = 0.0;
    for (double v : hd) tot_d += v;
    cd.assign(kappa + 1, 0.0);
    cl.assign(max_len + 1, 0.0);
    for (int d = 0; d <= kappa; ++d) cd[d] = -std::log2(hd[d] / tot_d);
    for (int L = 1; L <= max_len; ++L) cl[L] = -std::log2(sl[L] / tot_l);
}

}  // namespace

namespace {

void plan_blocks_rate(const double* kl, int64_t n, int kappa, int max_len, double slack,
                      double compute_cost, std::vector<int32_t>& lens, std::vector<uint8_t>& ks) {
    plan_blocks(kl, n, kappa, max_len, slack, 0, 0.0, 0.0, lens, ks);  // greedy start
    if (n == 0) return;
    std::vector<double> P(n + 1, 0.0);
    for (int64_t i = 0; i < n; ++i) P[i + 1] = P[i] + kl[i];
    const double budget = (double)kappa - slack;
    constexpr int64_t WMAX = 384;  // starts examined per end (plus the farthest one)
    std::vector<double> f(n + 1), cd, cl;
    std::vector<int64_t> arg(n + 1);
    std::vector<uint8_t> kk(n + 1);
    for (int pass = 0; pass < 3; ++pass) {
        symbol_costs(lens, ks, kappa, max_len, cd, cl);
        // best exponent for a block of given minimum k: min over k' >= kmin of k' + cd[kappa-k']
        std::vector<double> bestk_cost(kappa + 1);
        std::vector<uint8_t> bestk(kappa + 1);
        for (int kmin = kappa; kmin >= 0; --kmin) {
            const double c = kmin + cd[kappa - kmin];
            if (kmin == kappa || c < bestk_cost[kmin + 1]) {
                bestk_cost[kmin] = c;
                bestk[kmin] = (uint8_t)kmin;
            } else {
                bestk_cost[kmin] = bestk_cost[kmin + 1];
                bestk[kmin] = bestk[kmin + 1];
            }
        }
        int64_t jfit = 0;
        f[0] = 0.0;
        for (int64_t i = 1; i <= n; ++i) {
            while (jfit < i - 1 && P[i] - P[jfit] > budget + 1e-9) ++jfit;
            const int64_t lo = std::max<int64_t>(jfit, i - max_len);
            double best = std::numeric_limits<double>::infinity();
            int64_t bj = i - 1;
            uint8_t bk = 0;
            auto consider = [&](int64_t j) {
                const int kmin = kcost(P[i] - P[j], slack, kappa);
                const double c = f[j] + bestk_cost[kmin] + cl[i - j] +
                                 compute_cost * (double)(i - j) * std::ldexp(1.0, bestk[kmin] - kappa);
                if (c < best) {
                    best = c;
                    bj = j;
                    bk = bestk[kmin];
                }
            };
            consider(i - 1);  // a single dim is always allowed
            const int64_t jlo = std::max(lo, i - 1 - WMAX);
            for (int64_t j = i - 2; j >= jlo; --j) consider(j);
            if (lo < jlo) consider(lo);
            f[i] = best;
            arg[i] = bj;
            kk[i] = bk;
        }
        std::vector<int64_t> cuts;
        for (int64_t i = n; i > 0; i = arg[i]) cuts.push_back(i);
        lens.clear();
        ks.clear();
        int64_t prev = 0;
        for (auto it = cuts.rbegin(); it != cuts.rend(); ++it) {
            lens.push_back((int32_t)(*it - prev));
            ks.push_back(kk[*it]);
            prev = *it;
        }
    }
}

}  // namespace

void plan_blocks(const double* kl, int64_t n, int kappa, int max_len, double slack, int method,
                 double block_cost, double compute_cost, std::vector<int32_t>& lens,
                 std::vector<uint8_t>& ks) {
    lens.clear();
    ks.clear();
    const double budget = (double)kappa - slack;
    if (method == 0) {  // greedy
        int64_t i = 0;
        while (i < n) {
            int64_t j = i;
            double sum = 0.0;
            while (j < n && j - i < max_len) {
                if (j > i && sum + kl[j] > budget + 1e-9) break;
                sum += kl[j];
                ++j;
            }
            lens.push_back((int32_t)(j - i));
            ks.push_back((uint8_t)kcost(sum, slack, kappa));
            i = j;
        }
        return;
    }
    if (method == 2) {
        plan_blocks_rate(kl, n, kappa, max_len, slack, compute_cost, lens, ks);
        return;
    }
    // Optimal partition: f[i] = min over blocks [j, i) of f[j] + k([j, i)) + block_cost, where a
    // block is one dim or has KL <= kappa - slack, and is at most max_len long. f is
    // non-decreasing in i, so for each candidate cost v the best start is the smallest j whose
    // block fits in v - slack bits; those starts only move forward (two pointers per v).
    std::vector<double> P(n + 1, 0.0);
    for (int64_t i = 0; i < n; ++i) P[i + 1] = P[i] + kl[i];
    std::vector<double> f(n + 1, 0.0);
    std::vector<int64_t> arg(n + 1, 0);
    std::vector<int64_t> jv(kappa + 1, 0);
    for (int64_t i = 1; i <= n; ++i) {
        const int64_t lo = std::max<int64_t>(0, i - max_len);
        double best = f[i - 1] + kcost(kl[i - 1], slack, kappa) + block_cost;
        int64_t bestj = i - 1;
        for (int v = 0; v <= kappa; ++v) {
            const double thr = (double)v - slack;
            if (thr < 0) continue;
            int64_t& j = jv[v];
            while (j < i && P[i] - P[j] > thr + 1e-9) ++j;
            const int64_t jj = std::max(j, lo);
            if (jj >= i) continue;
            const double cand = f[jj] + v + block_cost;
            if (cand < best || (cand == best && jj < bestj)) {
                best = cand;
                bestj = jj;
            }
        }
        f[i] = best;
        arg[i] = bestj;
    }
    std::vector<int64_t> cuts;
    for (int64_t i = n; i > 0; i = arg[i]) cuts.push_back(i);
    int64_t prev = 0;
    for (auto it = cuts.rbegin(); it != cuts.rend(); ++it) {
        const int64_t e = *it;
        lens.push_back((int32_t)(e - prev));
        ks.push_back((uint8_t)kcost(P[e] - P[prev], slack, kappa));
        prev = e;
    }
}

// ---------------------------------------------------------------------------------------------
// Plan side information. Per block: d = kappa - k (adaptive, context min(prev d, 2)), then the
// length: L <= 32 as symbol L-1; longer lengths as an Elias-gamma-like bucket symbol (exponent
// and first mantissa bit) plus raw mantissa bits. Length context: bucket of the previous length
// x (d != 0). The decoder knows n and kappa and stops when the lengths cover n dims.
namespace {

constexpr int LEN_ALPHABET = 56;
constexpr int LEN_CONTEXTS = 10;
constexpr uint32_t PLAN_INC = 24;
constexpr uint32_t PLAN_LIMIT = 1u << 16;

int len_bucket(int32_t L) {
    if (L <= 8) return 0;
    if (L <= 16) return 1;
    if (L <= 32) return 2;
    if (L <= 128) return 3;
    return 4;
}

int floor_log2(uint32_t x) {
    int e = 0;
    while ((x >> (e + 1)) != 0) ++e;
    return e;
}

struct PlanModels {
    std::vector<AdaptiveModel> d, len;
    explicit PlanModels(int kappa) {
        for (int i = 0; i < 3; ++i) d.emplace_back(kappa + 1, PLAN_INC, PLAN_LIMIT);
        for (int i = 0; i < LEN_CONTEXTS; ++i) len.emplace_back(LEN_ALPHABET, PLAN_INC, PLAN_LIMIT);
    }
};

}  // namespace

std::vector<uint8_t> encode_plan(const PlanView& plan) {
    RangeEncoder enc;
    PlanModels M(plan.kappa);
    int prev_d = 0;
    int32_t prev_len = 1;
    for (int64_t b = 0; b < plan.B; ++b) {
        const int d = plan.kappa - (int)plan.k[b];
        assert(d >= 0 && d <= plan.kappa);
        M.d[std::min(prev_d, 2)].encode(enc, d);
        const int ctx = len_bucket(prev_len) * 2 + (d != 0);
        const int32_t L = plan.len[b];
        assert(L >= 1 && L <= REC_MAX_BLOCK_LEN);
        if (L <= 32) {
            M.len[ctx].encode(enc, L - 1);
        } else {
            const int e = floor_log2((uint32_t)L);
            const int half = (L >> (e - 1)) & 1;
            M.len[ctx].encode(enc, 32 + 2 * (e - 5) + half);
            enc.encode_bits((uint32_t)L & ((1u << (e - 1)) - 1u), e - 1);
        }
        prev_d = d;
        prev_len = L;
    }
    return enc.finish();
}

void decode_plan(const uint8_t* data, size_t size, int64_t n, int kappa, std::vector<int32_t>& lens,
                 std::vector<uint8_t>& ks) {
    lens.clear();
    ks.clear();
    RangeDecoder dec(data, size);
    PlanModels M(kappa);
    int prev_d = 0;
    int32_t prev_len = 1;
    int64_t covered = 0;
    while (covered < n) {
        const int d = M.d[std::min(prev_d, 2)].decode(dec);
        const int ctx = len_bucket(prev_len) * 2 + (d != 0);
        const int s = M.len[ctx].decode(dec);
        int64_t L;
        if (s < 32) {
            L = s + 1;
        } else {
            const int e = 5 + (s - 32) / 2;
            const int half = (s - 32) & 1;
            const uint32_t extra = dec.decode_bits(e - 1);
            L = ((int64_t)1 << e) | ((int64_t)half << (e - 1)) | (int64_t)extra;
        }
        if (L > REC_MAX_BLOCK_LEN || L > n - covered)
            throw CorruptError("plan: block length " + std::to_string(L) + " overruns the " +
                               std::to_string(n) + " dims (corrupt data)");
        if (dec.missing() > 4) throw CorruptError("plan: truncated data");
        lens.push_back((int32_t)L);
        ks.push_back((uint8_t)(kappa - d));
        covered += L;
        prev_d = d;
        prev_len = (int32_t)L;
    }
    dec.check_finished("plan");
}

// ---------------------------------------------------------------------------------------------
std::vector<uint8_t> encode_indices(const PlanView& plan, const uint32_t* idx) {
    uint64_t bits = 0;
    for (int64_t b = 0; b < plan.B; ++b) bits += plan.k[b];
    std::vector<uint8_t> out;
    out.reserve((size_t)((bits + 7) / 8));
    uint64_t acc = 0;
    int nacc = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        const int k = plan.k[b];
        if (k == 0) continue;
        acc = (acc << k) | (uint64_t)idx[b];
        nacc += k;
        while (nacc >= 8) {
            out.push_back((uint8_t)(acc >> (nacc - 8)));
            nacc -= 8;
        }
        acc &= (nacc ? ((1ull << nacc) - 1) : 0ull);
    }
    if (nacc) out.push_back((uint8_t)(acc << (8 - nacc)));
    return out;
}

void decode_indices(const PlanView& plan, const uint8_t* data, size_t size, uint32_t* idx) {
    uint64_t bits = 0;
    for (int64_t b = 0; b < plan.B; ++b) bits += plan.k[b];
    const uint64_t need = (bits + 7) / 8;
    if (size != need)
        throw CorruptError("indices: expected " + std::to_string(need) + " bytes for " +
                           std::to_string(bits) + " bits, got " + std::to_string(size));
    uint64_t acc = 0;
    int nacc = 0;
    size_t pos = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        const int k = plan.k[b];
        while (nacc < k) {
            acc = (acc << 8) | data[pos++];
            nacc += 8;
        }
        idx[b] = k ? (uint32_t)((acc >> (nacc - k)) & ((1ull << k) - 1)) : 0u;
        nacc -= k;
        acc &= (nacc ? ((1ull << nacc) - 1) : 0ull);
    }
    if (nacc && acc != 0) throw CorruptError("indices: non-zero padding bits (corrupt data)");
}

}  // namespace bbimg
