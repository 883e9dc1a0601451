// Relative entropy coding (REC) engine of bbimg. See docs/rec.md for the algorithm.
//
// Preconditions are written as REQUIRES: comments; they are checked once, at the Python
// boundary (bindings.cpp), which raises RecError (a ValueError). Inside the engine they are
// only asserted in debug builds (BBIMG_DEBUG_BUILD=1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "range_coder.h"

namespace bbimg {

constexpr int REC_KAPPA_MIN = 8;
constexpr int REC_KAPPA_MAX = 24;
constexpr int REC_POOL_MIN_BITS = 10;                // blocks with k >= this use the shared pool
constexpr int64_t REC_CHUNK = 1 << REC_POOL_MIN_BITS;  // candidates per chunk (pool blocks)
constexpr int REC_MAX_BLOCK_LEN = 1 << 16;           // hard cap on a block's length
constexpr int REC_GROUP = 24;                         // blocks per GEMM group (multiple of 3)

// A block plan: contiguous blocks of dims, in the caller's order.
struct PlanView {
    const int32_t* len;  // [B], each in [1, REC_MAX_BLOCK_LEN]
    const uint8_t* k;    // [B], each in [0, kappa]
    int64_t B;
    int kappa;
};

// Index bit packing (rec_indices.cpp): block b's index is written MSB first with exactly k_b bits.
// REQUIRES (encode): idx[b] < 2^k_b. decode throws CorruptError on wrong size / padding.
std::vector<uint8_t> encode_indices(const PlanView& plan, const uint32_t* idx);
void decode_indices(const PlanView& plan, const uint8_t* data, size_t size, uint32_t* idx);

struct RecInputs {
    const float* mu_q;   // [n] REQUIRES: finite
    const float* sg_q;   // [n] REQUIRES: finite, > 0
    const float* mu_p;   // [n] REQUIRES: finite
    const float* sg_p;   // [n] REQUIRES: finite, > 0
    int64_t n;           // REQUIRES: == sum of plan lengths
};

// Per (block, chunk) selection statistics.
struct ChunkStat {
    float m;      // maximum score in the chunk
    uint32_t n;   // candidate picked inside the chunk (absolute index)
    double s;     // sum of weights exp(x - m) (temperature > 0 only)
};

// Everything both the CPU and CUDA stats producers need; built on the host.
struct RecSetup {
    int64_t n = 0;
    int64_t B = 0;
    int kappa = 0;
    uint64_t seed = 0;
    double tau = 0.0;
    std::vector<int64_t> start;     // [B]
    std::vector<int32_t> len;       // [B]
    std::vector<uint8_t> k;         // [B]
    std::vector<float> A, C;        // [n] weights in pool-column order (sign, perm, 1/tau applied)
    std::vector<int64_t> stat_off;  // [B] offset of the block's chunk stats (-1 for k = 0)
    int64_t n_stats = 0;
    // Pool blocks sorted by (k desc, len asc) and cut into groups of <= REC_GROUP.
    std::vector<int64_t> pool_blocks;  // block ids in group order
    std::vector<int64_t> group_begin;  // [G+1] offsets into pool_blocks
    std::vector<int32_t> group_P;      // [G] max length in the group
    std::vector<int32_t> group_k;      // [G] k of the group's blocks
    std::vector<int64_t> private_blocks;  // blocks with 1 <= k < REC_POOL_MIN_BITS
};

// Selection rules (encoder-only; the decoder never needs to know which one was used):
//   tempered (nearest == false): weights q(z)^(1/tau) / p(z): importance sampling of the
//       tempered posterior N(mu_q, tau sigma_q^2); tau = 1 is exact REC, tau = 0 the candidate
//       most likely under q.
//   nearest (tau == 0 only): the candidate nearest the target
//       t = mu_q + REC_NEAREST_SHIFT (mu_q - mu_p) / max(r^2, 1) in the metric sum w (z - t)^2,
//       w = (1/sigma_q^2 - 1/sigma_p^2)^P (the posterior's precision gain, i.e. the decoder's
//       local distortion weight, flattened by P = REC_NEAREST_WEIGHT_POWER). The shift cancels
//       the pull towards mu_p of a candidate set drawn from p (docs/rec.md section 5).
constexpr double REC_NEAREST_WEIGHT_POWER = 0.8;  // measured on Kodak, docs/rec.md section 5
constexpr double REC_NEAREST_SHIFT = 2.0;         // measured on Kodak, docs/rec.md section 5

// REQUIRES: inputs valid, plan valid for inputs.n, tau >= 0 finite, tau == 0 when nearest.
void rec_setup(const RecInputs& in, const PlanView& plan, uint64_t seed, double tau, bool nearest,
               int threads, RecSetup& S);
// The indices of the search on the CPU (B of them). At temperature 0 each block's winner is kept
// as its chunks are scored, with no table of chunk statistics; tempered sampling collects them
// and picks through rec_combine.
void rec_search_cpu(const RecSetup& S, int threads, uint32_t* idx);
// The indices from per-chunk statistics (the CUDA path, and tempered sampling on the CPU).
void rec_combine(const RecSetup& S, const std::vector<ChunkStat>& stats, uint32_t* idx);
bool rec_cuda_compiled();
bool rec_cuda_available();
std::string rec_cuda_info();
// Fills stats on the GPU; throws ArgError when CUDA is unavailable.
void rec_stats_cuda(const RecSetup& S, std::vector<ChunkStat>& stats);

// Decoder. REQUIRES: idx[b] < 2^k_b (checked by bindings -> ValueError).
void rec_decode(const float* mu_p, const float* sg_p, const PlanView& plan, uint64_t seed,
                const uint32_t* idx, int threads, float* out);

// Per-block permutation of pool columns and signs (shared by encoder, decoder, CUDA host code).
void block_perm_signs(uint64_t seed, uint64_t b, int32_t len, int32_t* perm, float* sign);

// ---------------------------------------------------------------------------------------------
// Screen of the temperature-0 pool search (rec_vnni.cpp): integer scores, a bound on their
// error, and exact scores of the rows that can still win (docs/rec.md section 4).
constexpr float REC_SCREEN_E_SCALE = 4096.0f;  // tile word high half: round(4096 e)
constexpr float REC_SCREEN_E2_SCALE = 512.0f;  // low half: round(512 e^2)
// Bounds on |e| and e^2 for every normal the generator can produce (its radius is cut at
// sqrt(33.2711); tests enumerate every radius and angle class). The screen's error bound and
// int32 headroom rest on them.
constexpr double REC_SCREEN_E_MAX = 5.7703;
constexpr double REC_SCREEN_E2_MAX = 33.297;
// A wide block's weighed columns, as refined bounds read them (rec.cpp, WeighedColumns): column
// t's weights a[t], c[t], and the other columns' chain steps up to the next weighed one (seg_n[t]
// of them, their terms summing to seg_t[t]); ug is u (1 + g) of the chain bound.
struct RefinedCols {
    const double* a;
    const double* c;
    const double* seg_n;
    const double* seg_t;
    int64_t cols;
    double ug;
};
// Refined sums W and chain bounds ch of n 8-row groups: row j of group i reads column t's normals
// at E/E2[col_off[t] + row_off[i] + j] and goes to W/ch[8 i + j]. Starting from 0, each column in
// turn: w1 = W + a e2, w2 = w1 + c e, ch += ug (|w1| + |w2|) + min(seg_n ug |w2|, seg_t), W = w2
// (in double, in that order). The scalar reference; RecScreen::refined_rows gives the same bits.
void rec_refined_rows(const RefinedCols& w, const float* E, const float* E2, const int64_t* col_off,
                      const int64_t* row_off, int64_t n, double* W, double* ch);

struct RecScreen {
    // Strips of 64 rows, each column after column: EB[(r / 64) * 64 cols + 64 k + r % 64] =
    // (round(512 E2) & 0xFFFF) | round(4096 E) << 16 for k < cols, r < rows (rows % 64 == 0), from
    // E/E2[k * ld + r]. The scoring kernels then read a strip's columns in one sequential stream.
    void (*pack_tile)(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t cols,
                      uint32_t* EB);
    // Integer scores of three blocks over the tile columns they weigh: S[j * ld_s + r] = sum over
    // i < n of the int16 pair products of tile word (r, cols[i]) of EB (pack_tile's layout, `width`
    // columns) and W3[3 i + j] (qA | qC << 16),
    // for r < rows (rows % 64 == 0), j < 3. M[16 j + l] is the maximum of block j's rows r with
    // r % 16 == l. A column a block does not weigh carries a zero word; the sums are exact, so
    // leaving such columns out gives the same scores.
    void (*score_cols3)(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                        const uint32_t* W3, int64_t n, int32_t* S, int64_t ld_s, int32_t* M);
    // The same for one block (rows % 128 == 0): S[r], M[l], words W[i]. Cheaper than
    // score_cols3 only where the three blocks weigh mostly different columns (it loads the
    // tile once per block instead of once per three).
    void (*score_cols1)(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                        const uint32_t* W, int64_t n, int32_t* S, int32_t* M);
    int32_t (*max16)(const int32_t* m);  // the largest of m[0..16)
    // The rows r < rows (rows % 16 == 0) with x[r] >= t, ascending, into out; returns the count.
    int64_t (*rows_at_least)(const int32_t* x, int64_t rows, int32_t t, int32_t* out);
    // Exact scores (score_group's fp32 chain for block column g, or gs[i] for group i where gs is
    // not null) of the 8-row groups listed in groups (row 8 groups[i] + j goes to out[8 i + j]).
    void (*exact_rows)(const float* E, const float* E2, int64_t ld, int64_t P, const float* WA,
                       const float* WC, int64_t Gp, int64_t g, const int32_t* gs, const int32_t* groups,
                       int64_t n, float* out);
    // Refined sums and chain bounds of rows (rec_refined_rows' values, bit for bit).
    void (*refined_rows)(const RefinedCols& w, const float* E, const float* E2, const int64_t* col_off,
                         const int64_t* row_off, int64_t n, double* W, double* ch);
};
const RecScreen* rec_screen_vnni();  // nullptr when not compiled in or the CPU lacks AVX512-VNNI
const RecScreen* rec_screen_avx2();  // the same scores with AVX2 (VPMADDWD); nullptr without AVX2/FMA
// The screens' exact rescoring (RecScreen::exact_rows) with AVX2+FMA; call only where the CPU has
// both (rec_screen_avx2() is not null).
void rec_exact_rows_avx2(const float* E, const float* E2, int64_t ld, int64_t P, const float* WA,
                         const float* WC, int64_t Gp, int64_t g, const int32_t* gs, const int32_t* groups, int64_t n,
                         float* out);
// RecScreen::refined_rows with AVX2; call only where the CPU has it.
void rec_refined_rows_avx2(const RefinedCols& w, const float* E, const float* E2, const int64_t* col_off,
                           const int64_t* row_off, int64_t n, double* W, double* ch);

// ---------------------------------------------------------------------------------------------
// Kernels with two implementations (generic scalar, AVX2+FMA) that give identical bits.
// Pool tile: rows [n0, n0 + rows) (rows % 8 == 0), columns [0, cols4) (cols4 % 4 == 0);
// column-major, E[col * ld + r]; E2 = E * E. With quads, tile columns 4i..4i+3 hold pool
// columns 4 quads[i]..4 quads[i] + 3 instead (a tile of only the columns a search needs). With
// starts, tile rows 8i..8i+7 are pool rows starts[i]..starts[i] + 7 instead of n0 + 8i.. (rows
// generated again for their exact scores, several 8-row groups in one call).
using GenPoolFn = void (*)(uint64_t seed, uint32_t n0, int64_t rows, int64_t cols4, int64_t ld, float* E,
                           float* E2, const int32_t* quads, const uint32_t* starts);
// Private tile of block b: rows [n0, n0 + rows) (rows % 8 == 0, n0 + rows <= 2^16).
using GenPrivateFn = void (*)(uint64_t seed, uint64_t b, uint32_t n0, int64_t rows, int64_t cols4,
                              int64_t ld, float* E, float* E2);

// A pool tile of rows [n0, n0 + rows) (rows % 64 == 0) and the pool quads `quads` straight into
// the integer screen's words (RecScreen::pack_tile's layout, 4 * nquads columns): the same words
// as gen_pool then pack_tile, without the fp32 tile (for tiles whose exact scores come from rows
// generated again). With pairs, only the Box-Muller pairs of quad i set in pairs[i] (bit 0:
// columns 0-1, bit 1: columns 2-3) are computed, the others' words left 0: a compact tile's blocks
// mostly weigh one column of a quad.
using GenPoolWordsFn = void (*)(uint64_t seed, uint32_t n0, int64_t rows, int64_t nquads,
                                const int32_t* quads, const uint8_t* pairs, uint32_t* EB);

// Tile generators of an instruction set that has no scoring kernels of its own.
struct RecGenerators {
    GenPoolFn pool;
    GenPrivateFn priv;
    GenPoolWordsFn pool_words;
};
// AVX-512F twins of the AVX2 generators (rec_gen_avx512.cpp); nullptr without AVX512F.
const RecGenerators* rec_generators_avx512();

struct RecKernels {
    const char* name;
    GenPoolFn gen_pool;
    GenPrivateFn gen_private;
    GenPoolWordsFn gen_pool_words;  // nullptr: gen_pool, then the screen's pack_tile
    // Scores of a group: S[g * ld_s + r] for r < rows (rows % 32 == 0), g < Gp (Gp % 3 == 0);
    // WA/WC[k * Gp + g] for k < P.
    void (*score_group)(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t P,
                        const float* WA, const float* WC, int64_t Gp, float* S, int64_t ld_s);
    // Scores of one block: S[r] for r < rows (rows % 32 == 0); A/C[k] for k < P.
    void (*score_single)(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t P,
                         const float* A, const float* C, float* S);
    // w[r] = det_exp_weight(x[r] - m) for r < rows (rows % 8 == 0); v[i] = tree8(w + 8 i).
    void (*weights)(const float* x, int64_t rows, float m, float* w, float* v);
    // max and first argmax of x[0..rows) (rows % 8 == 0).
    void (*argmax)(const float* x, int64_t rows, float* m, int64_t* idx);
    // The temperature-0 pool screen, or nullptr: every chunk then scored exactly.
    const RecScreen* screen;
};

const RecKernels& rec_kernels_generic();
const RecKernels* rec_kernels_avx2();  // nullptr when not compiled in or CPU lacks AVX2/FMA
const RecKernels* rec_kernels_vnni();  // avx2 plus the VNNI screen; nullptr when either is missing
const RecKernels* rec_kernels_avx2screen();  // avx2 plus the AVX2 screen; nullptr without AVX2/FMA
const RecKernels& rec_kernels();       // the active set
// "auto", "generic", "avx2" (fp32 only), "avx2screen" (avx2 with the screen on VPMADDWD) or
// "avx512vnni" (avx2 with the VNNI screen); returns false if the requested set is unavailable.
bool rec_set_kernels(const std::string& name);

// The screen words (RecScreen::pack_tile's layout) of pool rows [n0, n0 + rows) (rows % 64 == 0)
// and the pool quads quads[0..nquads) in kernel set K (which has a screen): its gen_pool_words,
// else gen_pool into E/E2 (grown to 4 nquads * rows floats where smaller) and pack_tile.
// pairs (or nullptr): the Box-Muller pairs needed (GenPoolWordsFn); words of the others are
// unspecified.
void rec_pool_words(const RecKernels& K, uint64_t seed, uint32_t n0, int64_t rows, int64_t nquads,
                    const int32_t* quads, std::vector<float>& E, std::vector<float>& E2, uint32_t* EB,
                    const uint8_t* pairs = nullptr);

// Debug helpers (tests): scores of all candidates of block b through the encoder's kernels;
// candidate n of block b regenerated through the encoder's tile generator.
std::vector<float> rec_debug_scores(const RecSetup& S, int64_t b);
std::vector<float> rec_debug_candidate(const RecSetup& S, const float* mu_p, const float* sg_p,
                                       int64_t b, uint32_t n);

}  // namespace bbimg
