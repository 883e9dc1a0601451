// AVX2 twin of the integer screen (rec_vnni.cpp; docs/rec.md section 4) for CPUs without
// AVX512-VNNI. VPMADDWD adds the two int16 products of a word pair into an int32 lane exactly, as
// VPDPWSSD does, and VPADDD accumulates: the same integer scores, bit for bit, so the same rows
// are rescored and the same indices come out. It wins by what it leaves out (zero words, whole
// chunks), not per instruction: two per eight lanes and block column, as the fp32 kernel's FMAs.
// Exact rescoring (rec_exact_rows_avx2, shared with the VNNI set) runs the fp32 chain of the
// other kernel sets. As in rec_avx2.cpp, only these functions carry a target attribute; the set
// is used only when the running CPU reports AVX2 and FMA.
#include "rec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>

#define SCREEN_KERNEL static __attribute__((target("avx2,fma")))

namespace bbimg {
namespace {

// The layout of pack_tile_vnni: strips of 64 rows, column after column.
SCREEN_KERNEL void pack_tile_avx2(const float* E, const float* E2, int64_t ld, int64_t rows, int64_t cols,
                                  uint32_t* EB) {
    const __m256 s1 = _mm256_set1_ps(REC_SCREEN_E_SCALE), s2 = _mm256_set1_ps(REC_SCREEN_E2_SCALE);
    const __m256i lo16 = _mm256_set1_epi32(0xFFFF);
    for (int64_t k = 0; k < cols; ++k) {
        const float* e = E + k * ld;
        const float* e2 = E2 + k * ld;
        for (int64_t r = 0; r < rows; r += 8) {
            const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(e + r), s1));
            const __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(e2 + r), s2));
            uint32_t* out = EB + (r >> 6) * 64 * cols + 64 * k + (r & 63);
            _mm256_storeu_si256((__m256i*)out,
                                _mm256_or_si256(_mm256_and_si256(q2, lo16), _mm256_slli_epi32(q1, 16)));
        }
    }
}

#define SCREEN_MADD(acc, p, w) \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(p)), w))

// 16 rows x 3 blocks in 6 accumulators: with a temporary for each VPMADDWD, a wider tile spills.
SCREEN_KERNEL void score_cols3_avx2(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                                    const uint32_t* W3, int64_t n, int32_t* S, int64_t ld_s, int32_t* M) {
    __m256i mlo[3], mhi[3];
    for (int j = 0; j < 3; ++j) mlo[j] = mhi[j] = _mm256_set1_epi32(INT32_MIN);
    for (int64_t r = 0; r < rows; r += 16) {
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
        const uint32_t* strip = EB + (r >> 6) * 64 * width + (r & 63);
        const uint32_t* w = W3;
        for (int64_t i = 0; i < n; ++i, w += 3) {
            const uint32_t* ep = strip + 64 * (int64_t)cols[i];
            const __m256i w0 = _mm256_set1_epi32((int)w[0]);
            const __m256i w1 = _mm256_set1_epi32((int)w[1]);
            const __m256i w2 = _mm256_set1_epi32((int)w[2]);
            SCREEN_MADD(a00, ep, w0); SCREEN_MADD(a01, ep, w1); SCREEN_MADD(a02, ep, w2);
            SCREEN_MADD(a10, ep + 8, w0); SCREEN_MADD(a11, ep + 8, w1); SCREEN_MADD(a12, ep + 8, w2);
        }
        const __m256i acc[3][2] = {{a00, a10}, {a01, a11}, {a02, a12}};
        for (int j = 0; j < 3; ++j) {
            int32_t* s = S + j * ld_s + r;
            _mm256_storeu_si256((__m256i*)s, acc[j][0]);
            _mm256_storeu_si256((__m256i*)(s + 8), acc[j][1]);
            mlo[j] = _mm256_max_epi32(mlo[j], acc[j][0]);
            mhi[j] = _mm256_max_epi32(mhi[j], acc[j][1]);
        }
    }
    for (int j = 0; j < 3; ++j) { _mm256_storeu_si256((__m256i*)(M + 16 * j), mlo[j]); _mm256_storeu_si256((__m256i*)(M + 16 * j + 8), mhi[j]); }
}

// One block, one 64-row strip at a time in 8 accumulators.
SCREEN_KERNEL void score_cols1_avx2(const uint32_t* EB, int64_t rows, int64_t width, const int32_t* cols,
                                    const uint32_t* W, int64_t n, int32_t* S, int32_t* M) {
    __m256i mlo = _mm256_set1_epi32(INT32_MIN), mhi = mlo;
    for (int64_t r = 0; r < rows; r += 64) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        const uint32_t* strip = EB + r * width;
        for (int64_t i = 0; i < n; ++i) {
            const uint32_t* ep = strip + 64 * (int64_t)cols[i];
            const __m256i w = _mm256_set1_epi32((int)W[i]);
            SCREEN_MADD(a0, ep, w);
            SCREEN_MADD(a1, ep + 8, w);
            SCREEN_MADD(a2, ep + 16, w);
            SCREEN_MADD(a3, ep + 24, w);
            SCREEN_MADD(a4, ep + 32, w);
            SCREEN_MADD(a5, ep + 40, w);
            SCREEN_MADD(a6, ep + 48, w);
            SCREEN_MADD(a7, ep + 56, w);
        }
        const __m256i acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int q = 0; q < 8; ++q) _mm256_storeu_si256((__m256i*)(S + r + 8 * q), acc[q]);
        mlo = _mm256_max_epi32(mlo, _mm256_max_epi32(_mm256_max_epi32(a0, a2), _mm256_max_epi32(a4, a6)));
        mhi = _mm256_max_epi32(mhi, _mm256_max_epi32(_mm256_max_epi32(a1, a3), _mm256_max_epi32(a5, a7)));
    }
    _mm256_storeu_si256((__m256i*)M, mlo);
    _mm256_storeu_si256((__m256i*)(M + 8), mhi);
}

#undef SCREEN_MADD

SCREEN_KERNEL int32_t max16_avx2(const int32_t* m) {
    __m256i v = _mm256_max_epi32(_mm256_loadu_si256((const __m256i*)m), _mm256_loadu_si256((const __m256i*)(m + 8)));
    v = _mm256_max_epi32(v, _mm256_permute2x128_si256(v, v, 1));
    v = _mm256_max_epi32(v, _mm256_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm256_max_epi32(v, _mm256_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm256_cvtsi256_si32(v);
}

SCREEN_KERNEL int64_t rows_at_least_avx2(const int32_t* x, int64_t rows, int32_t t, int32_t* out) {
    const __m256i tv = _mm256_set1_epi32(t);
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r += 8) {
        // x >= t: not (t > x)
        const __m256i below = _mm256_cmpgt_epi32(tv, _mm256_loadu_si256((const __m256i*)(x + r)));
        uint32_t hit = ~(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(below)) & 0xFFu;
        while (hit) {
            out[n++] = (int32_t)(r + __builtin_ctz(hit));
            hit &= hit - 1;
        }
    }
    return n;
}

}  // namespace

// Exact scores of the 8-row groups listed in `groups` (ascending, distinct): out[8 i + j] is row
// 8 groups[i] + j. Each lane runs score_group_generic's chain (fma(WA, e^2), then fma(WC, e), over
// k < P), four groups at a time to hide the FMA latency.
__attribute__((target("avx2,fma"))) void rec_exact_rows_avx2(const float* E, const float* E2, int64_t ld, int64_t P,
                                                             const float* WA, const float* WC, int64_t Gp, int64_t g,
                                                             const int32_t* gs, const int32_t* groups, int64_t n,
                                                             float* out) {
    int64_t i = 0;
    // Four row groups at a time: four independent chains (one alone waits on each FMA's latency).
    for (; i + 4 <= n; i += 4) {
        const int64_t r0 = 8 * (int64_t)groups[i], r1 = 8 * (int64_t)groups[i + 1],
                      r2 = 8 * (int64_t)groups[i + 2], r3 = 8 * (int64_t)groups[i + 3];
        const int64_t g0 = gs ? gs[i] : g, g1 = gs ? gs[i + 1] : g, g2 = gs ? gs[i + 2] : g, g3 = gs ? gs[i + 3] : g;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (!gs) {
            for (int64_t k = 0; k < P; ++k) {
                const __m256 wa = _mm256_broadcast_ss(WA + k * Gp + g);
                const __m256 wc = _mm256_broadcast_ss(WC + k * Gp + g);
                const float* e2 = E2 + k * ld;
                const float* e = E + k * ld;
                a0 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2 + r0), a0);
                a1 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2 + r1), a1);
                a2 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2 + r2), a2);
                a3 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2 + r3), a3);
                a0 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(e + r0), a0);
                a1 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(e + r1), a1);
                a2 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(e + r2), a2);
                a3 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(e + r3), a3);
            }
        } else {
            for (int64_t k = 0; k < P; ++k) {
                const float* wa = WA + k * Gp;
                const float* wc = WC + k * Gp;
                const float* e2 = E2 + k * ld;
                const float* e = E + k * ld;
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wa + g0), _mm256_loadu_ps(e2 + r0), a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wa + g1), _mm256_loadu_ps(e2 + r1), a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(wa + g2), _mm256_loadu_ps(e2 + r2), a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(wa + g3), _mm256_loadu_ps(e2 + r3), a3);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wc + g0), _mm256_loadu_ps(e + r0), a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wc + g1), _mm256_loadu_ps(e + r1), a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(wc + g2), _mm256_loadu_ps(e + r2), a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(wc + g3), _mm256_loadu_ps(e + r3), a3);
            }
        }
        _mm256_storeu_ps(out + 8 * i, a0);
        _mm256_storeu_ps(out + 8 * i + 8, a1);
        _mm256_storeu_ps(out + 8 * i + 16, a2);
        _mm256_storeu_ps(out + 8 * i + 24, a3);
    }
    for (; i < n; ++i) {
        const int64_t r0 = 8 * (int64_t)groups[i], gi = gs ? gs[i] : g;
        __m256 a0 = _mm256_setzero_ps();
        for (int64_t k = 0; k < P; ++k) {
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(WA + k * Gp + gi), _mm256_loadu_ps(E2 + k * ld + r0), a0);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(WC + k * Gp + gi), _mm256_loadu_ps(E + k * ld + r0), a0);
        }
        _mm256_storeu_ps(out + 8 * i, a0);
    }
}

// One column of rec_refined_rows on 4 rows: the same double operations in the same order.
static inline __attribute__((target("avx2,fma"), always_inline)) void refined_step(
    __m256d a, __m256d c, __m256d nug, __m256d seg_t, __m256d ug, __m256d abs_mask, const float* e,
    const float* e2, __m256d& W, __m256d& ch) {
    const __m256d w1 = _mm256_add_pd(W, _mm256_mul_pd(a, _mm256_cvtps_pd(_mm_loadu_ps(e2))));
    const __m256d w2 = _mm256_add_pd(w1, _mm256_mul_pd(c, _mm256_cvtps_pd(_mm_loadu_ps(e))));
    const __m256d m2 = _mm256_and_pd(w2, abs_mask);
    const __m256d chain = _mm256_mul_pd(ug, _mm256_add_pd(_mm256_and_pd(w1, abs_mask), m2));
    // std::min(x, seg_t) is (seg_t < x) ? seg_t : x, which is MINPD's (seg_t, x).
    const __m256d other = _mm256_min_pd(seg_t, _mm256_mul_pd(nug, m2));
    ch = _mm256_add_pd(ch, _mm256_add_pd(chain, other));
    W = w2;
}

// Two 8-row groups at a time: four independent chains of dependent additions per column.
__attribute__((target("avx2,fma"))) void rec_refined_rows_avx2(const RefinedCols& w, const float* E,
                                                              const float* E2, const int64_t* col_off,
                                                              const int64_t* row_off, int64_t n, double* W,
                                                              double* ch) {
    const __m256d ug = _mm256_set1_pd(w.ug);
    const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
    int64_t i = 0;
    for (; i + 2 <= n; i += 2) {
        __m256d W0 = _mm256_setzero_pd(), W1 = W0, W2 = W0, W3 = W0, c0 = W0, c1 = W0, c2 = W0, c3 = W0;
        for (int64_t t = 0; t < w.cols; ++t) {
            const __m256d a = _mm256_set1_pd(w.a[t]), c = _mm256_set1_pd(w.c[t]);
            const __m256d nug = _mm256_set1_pd(w.seg_n[t] * w.ug), st = _mm256_set1_pd(w.seg_t[t]);
            const int64_t o0 = col_off[t] + row_off[i], o1 = col_off[t] + row_off[i + 1];
            refined_step(a, c, nug, st, ug, abs_mask, E + o0, E2 + o0, W0, c0);
            refined_step(a, c, nug, st, ug, abs_mask, E + o0 + 4, E2 + o0 + 4, W1, c1);
            refined_step(a, c, nug, st, ug, abs_mask, E + o1, E2 + o1, W2, c2);
            refined_step(a, c, nug, st, ug, abs_mask, E + o1 + 4, E2 + o1 + 4, W3, c3);
        }
        _mm256_storeu_pd(W + 8 * i, W0);
        _mm256_storeu_pd(W + 8 * i + 4, W1);
        _mm256_storeu_pd(W + 8 * i + 8, W2);
        _mm256_storeu_pd(W + 8 * i + 12, W3);
        _mm256_storeu_pd(ch + 8 * i, c0);
        _mm256_storeu_pd(ch + 8 * i + 4, c1);
        _mm256_storeu_pd(ch + 8 * i + 8, c2);
        _mm256_storeu_pd(ch + 8 * i + 12, c3);
    }
    for (; i < n; ++i) {
        __m256d W0 = _mm256_setzero_pd(), W1 = W0, c0 = W0, c1 = W0;
        for (int64_t t = 0; t < w.cols; ++t) {
            const __m256d a = _mm256_set1_pd(w.a[t]), c = _mm256_set1_pd(w.c[t]);
            const __m256d nug = _mm256_set1_pd(w.seg_n[t] * w.ug), st = _mm256_set1_pd(w.seg_t[t]);
            const int64_t o0 = col_off[t] + row_off[i];
            refined_step(a, c, nug, st, ug, abs_mask, E + o0, E2 + o0, W0, c0);
            refined_step(a, c, nug, st, ug, abs_mask, E + o0 + 4, E2 + o0 + 4, W1, c1);
        }
        _mm256_storeu_pd(W + 8 * i, W0);
        _mm256_storeu_pd(W + 8 * i + 4, W1);
        _mm256_storeu_pd(ch + 8 * i, c0);
        _mm256_storeu_pd(ch + 8 * i + 4, c1);
    }
}

namespace {
const RecScreen kScreenAvx2 = {pack_tile_avx2,     score_cols3_avx2,   score_cols1_avx2, max16_avx2,
                               rows_at_least_avx2, rec_exact_rows_avx2, rec_refined_rows_avx2};
}  // namespace

const RecScreen* rec_screen_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok ? &kScreenAvx2 : nullptr;
}

}  // namespace bbimg

#else

namespace bbimg {
const RecScreen* rec_screen_avx2() { return nullptr; }
}  // namespace bbimg

#endif
