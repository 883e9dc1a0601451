// AVX512-VNNI screen for the temperature-0 pool search (docs/rec.md section 4).
//
// The screen scores a chunk in 16-bit integers (VPDPWSSD: twice the multiply-adds per
// instruction of the fp32 FMA kernel, half the tile bytes, and exact int32 sums), bounds how far
// those scores can be from the exact ones, and rescores exactly only the rows that can still
// hold the block's maximum. Exact scores come from the same fp32 FMA chain as the other kernel
// sets (rec_exact_rows_avx2, shared with the AVX2 screen), so the chunk statistics that decide an
// index, and therefore the files, are the same bit for bit.
//
// As in rec_avx2.cpp, only these functions carry a target attribute; the set is used only when
// the running CPU reports AVX512F, AVX512VL, AVX512BW and AVX512_VNNI.
#include "rec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#include <cstdint>

// GCC 12 reports the self-initialised _mm512_undefined_* inside its own AVX-512 intrinsics as
// uninitialised when they are inlined into target-attribute functions (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define VNNI_KERNEL static __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni,avx2,fma")))

namespace bbimg {
namespace {

// acc += the int16 pair products of x and w (VPDPWSSD), in place. GCC 12 keeps a copy of every
// accumulator of _mm512_dpwssd_epi32 in a loop and moves it back each iteration (24 register
// moves per 12 VPDPWSSD in score_cols3); an accumulator the asm reads and writes needs none.
static inline __attribute__((always_inline, target("avx512f,avx512vnni"))) void dpwssd(__m512i& acc, __m512i x,
                                                                                       __m512i w) {
#if defined(__GNUC__) && !defined(__clang__)
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
#else
    acc = _mm512_dpwssd_epi32(acc, x, w);
#endif
}

// Tile words: (round(512 e^2), round(4096 e)) as int16 pairs. |e| <= 5.7703 (the generator cuts
// the tail there), so |4096 e| <= 23,636 and 512 e^2 <= 17,049: both fit. Rounding to nearest is
// exact arithmetic up to the final rounding (the scalings are powers of two).
VNNI_KERNEL void pack_tile_vnni(const float* E, const float* E2, int64_t ld, int64_t rows,
                                int64_t cols, uint32_t* EB) {
    const __m512 s1 = _mm512_set1_ps(REC_SCREEN_E_SCALE), s2 = _mm512_set1_ps(REC_SCREEN_E2_SCALE);
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    for (int64_t k = 0; k < cols; ++k) {
        const float* e = E + k * ld;
        const float* e2 = E2 + k * ld;
        for (int64_t r = 0; r < rows; r += 16) {
            const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(e + r), s1));
            const __m512i q2 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(e2 + r), s2));
            uint32_t* out = EB + (r >> 6) * 64 * cols + 64 * k + (r & 63);
            _mm512_storeu_si512(out, _mm512_or_si512(_mm512_and_si512(q2, lo16), _mm512_slli_epi32(q1, 16)));
        }
    }
}

// 64 rows x 3 blocks register tile: 12 zmm accumulators. Word i of a row pairs (e^2, e) of tile
// column cols[i]; word i of a block pairs (A', C') at the block's scale, so one VPDPWSSD adds both
// terms of a column. The block scales keep every partial sum inside int32, so the sums are exact
// and do not depend on which zero-weight columns are left out.
VNNI_KERNEL void score_cols3_vnni(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                                  const uint32_t* W3, int64_t n, int32_t* S, int64_t ld_s, int32_t* M) {
    __m512i m0 = _mm512_set1_epi32(INT32_MIN), m1 = m0, m2 = m0;
    for (int64_t r = 0; r < rows; r += 64) {
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a10 = a00, a11 = a00,
                a12 = a00, a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
        const uint32_t* w = W3;
        const uint32_t* strip = EB + r * width;
        for (int64_t i = 0; i < n; ++i, w += 3) {
            const uint32_t* ep = strip + 64 * (int64_t)cols[i];
            const __m512i w0 = _mm512_set1_epi32((int)w[0]);
            const __m512i w1 = _mm512_set1_epi32((int)w[1]);
            const __m512i w2 = _mm512_set1_epi32((int)w[2]);
            __m512i x = _mm512_loadu_si512(ep);
            dpwssd(a00, x, w0);
            dpwssd(a01, x, w1);
            dpwssd(a02, x, w2);
            x = _mm512_loadu_si512(ep + 16);
            dpwssd(a10, x, w0);
            dpwssd(a11, x, w1);
            dpwssd(a12, x, w2);
            x = _mm512_loadu_si512(ep + 32);
            dpwssd(a20, x, w0);
            dpwssd(a21, x, w1);
            dpwssd(a22, x, w2);
            x = _mm512_loadu_si512(ep + 48);
            dpwssd(a30, x, w0);
            dpwssd(a31, x, w1);
            dpwssd(a32, x, w2);
        }
        int32_t* s0 = S + r;
        int32_t* s1 = s0 + ld_s;
        int32_t* s2 = s1 + ld_s;
        _mm512_storeu_si512(s0, a00);
        _mm512_storeu_si512(s0 + 16, a10);
        _mm512_storeu_si512(s0 + 32, a20);
        _mm512_storeu_si512(s0 + 48, a30);
        _mm512_storeu_si512(s1, a01);
        _mm512_storeu_si512(s1 + 16, a11);
        _mm512_storeu_si512(s1 + 32, a21);
        _mm512_storeu_si512(s1 + 48, a31);
        _mm512_storeu_si512(s2, a02);
        _mm512_storeu_si512(s2 + 16, a12);
        _mm512_storeu_si512(s2 + 32, a22);
        _mm512_storeu_si512(s2 + 48, a32);
        m0 = _mm512_max_epi32(m0, _mm512_max_epi32(_mm512_max_epi32(a00, a10), _mm512_max_epi32(a20, a30)));
        m1 = _mm512_max_epi32(m1, _mm512_max_epi32(_mm512_max_epi32(a01, a11), _mm512_max_epi32(a21, a31)));
        m2 = _mm512_max_epi32(m2, _mm512_max_epi32(_mm512_max_epi32(a02, a12), _mm512_max_epi32(a22, a32)));
    }
    _mm512_storeu_si512(M, m0);
    _mm512_storeu_si512(M + 16, m1);
    _mm512_storeu_si512(M + 32, m2);
}

// One block, 128 rows at a time in 8 zmm accumulators (enough independent chains to cover the
// VPDPWSSD latency without the other two blocks of score_cols3).
VNNI_KERNEL void score_cols1_vnni(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                                  const uint32_t* W, int64_t n, int32_t* S, int32_t* M) {
    __m512i m = _mm512_set1_epi32(INT32_MIN);
    for (int64_t r = 0; r < rows; r += 128) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
                a7 = a0;
        const uint32_t* strip0 = EB + r * width;  // rows r..r+63, then r+64..r+127
        const uint32_t* strip1 = strip0 + 64 * width;
        for (int64_t i = 0; i < n; ++i) {
            const uint32_t* ep = strip0 + 64 * (int64_t)cols[i];
            const uint32_t* eq = strip1 + 64 * (int64_t)cols[i];
            const __m512i w = _mm512_set1_epi32((int)W[i]);
            dpwssd(a0, _mm512_loadu_si512(ep), w);
            dpwssd(a1, _mm512_loadu_si512(ep + 16), w);
            dpwssd(a2, _mm512_loadu_si512(ep + 32), w);
            dpwssd(a3, _mm512_loadu_si512(ep + 48), w);
            dpwssd(a4, _mm512_loadu_si512(eq), w);
            dpwssd(a5, _mm512_loadu_si512(eq + 16), w);
            dpwssd(a6, _mm512_loadu_si512(eq + 32), w);
            dpwssd(a7, _mm512_loadu_si512(eq + 48), w);
        }
        int32_t* s = S + r;
        _mm512_storeu_si512(s, a0);
        _mm512_storeu_si512(s + 16, a1);
        _mm512_storeu_si512(s + 32, a2);
        _mm512_storeu_si512(s + 48, a3);
        _mm512_storeu_si512(s + 64, a4);
        _mm512_storeu_si512(s + 80, a5);
        _mm512_storeu_si512(s + 96, a6);
        _mm512_storeu_si512(s + 112, a7);
        m = _mm512_max_epi32(m, _mm512_max_epi32(_mm512_max_epi32(_mm512_max_epi32(a0, a1), _mm512_max_epi32(a2, a3)),
                                                 _mm512_max_epi32(_mm512_max_epi32(a4, a5), _mm512_max_epi32(a6, a7))));
    }
    _mm512_storeu_si512(M, m);
}

VNNI_KERNEL int32_t max16_vnni(const int32_t* m) { return _mm512_reduce_max_epi32(_mm512_loadu_si512(m)); }

VNNI_KERNEL int64_t rows_at_least_vnni(const int32_t* x, int64_t rows, int32_t t, int32_t* out) {
    const __m512i tv = _mm512_set1_epi32(t);
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r += 16) {
        uint32_t hit = (uint32_t)_mm512_cmpge_epi32_mask(_mm512_loadu_si512(x + r), tv);
        while (hit) {
            out[n++] = (int32_t)(r + __builtin_ctz(hit));
            hit &= hit - 1;
        }
    }
    return n;
}

const RecScreen kScreen = {pack_tile_vnni, score_cols3_vnni, score_cols1_vnni, max16_vnni,
                           rows_at_least_vnni, rec_exact_rows_avx2, rec_refined_rows_avx2};

}  // namespace

const RecScreen* rec_screen_vnni() {
    static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
                           __builtin_cpu_supports("fma");
    return ok ? &kScreen : nullptr;
}

}  // namespace bbimg

#else

namespace bbimg {
const RecScreen* rec_screen_vnni() { return nullptr; }
}  // namespace bbimg

#endif
