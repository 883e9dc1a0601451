// AVX2+FMA versions of the REC kernels. Each performs exactly the operation sequence of its
// generic counterpart in rec.cpp (same roundings, explicit FMA only where the generic code
// calls fma), so results are bit-identical; tests compare the two sets.
//
// Only these functions carry target("avx2,fma") (no file-wide pragma or -mavx2), so no
// AVX2 code can leak into inline library functions shared with baseline translation units.
// The set is used only when the running CPU reports AVX2 and FMA.
#include "rec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "detmath.h"
#include "philox.h"
#include "rec_select.h"

#define AVX2_FN static inline __attribute__((target("avx2,fma"), always_inline))
#define AVX2_KERNEL static __attribute__((target("avx2,fma")))

namespace bbimg {
namespace {

AVX2_FN __m256i c32(uint32_t x) { return _mm256_set1_epi32((int)x); }
AVX2_FN __m256 cf(float x) { return _mm256_set1_ps(x); }

AVX2_FN void mulhilo8(__m256i a, __m256i M, __m256i& hi, __m256i& lo) {
    const __m256i pe = _mm256_mul_epu32(a, M);
    const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), M);
    lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

AVX2_FN void philox8(__m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3, uint32_t k0,
                     uint32_t k1) {
    const __m256i M0 = c32(PHILOX_M0), M1 = c32(PHILOX_M1);
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        __m256i hi0, lo0, hi1, lo1;
        mulhilo8(c0, M0, hi0, lo0);
        mulhilo8(c2, M1, hi1, lo1);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), c32(k0));
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), c32(k1));
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
}

AVX2_FN __m256 neg2log8(__m256i w) {
    const __m256i k = _mm256_srli_epi32(w, 9);
    const __m256i t = _mm256_or_si256(_mm256_slli_epi32(k, 1), c32(1));
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(t), cf(DM_TWO_M24));
    const __m256i bits = _mm256_castps_si256(u);
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), c32(127));
    __m256 m = _mm256_castsi256_ps(
        _mm256_or_si256(_mm256_and_si256(bits, c32(0x007FFFFFu)), c32(0x3F800000u)));
    const __m256 big = _mm256_cmp_ps(m, cf(DM_SQRT2), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, cf(0.5f)), big);
    e = _mm256_sub_epi32(e, _mm256_castps_si256(big));
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(m, cf(1.0f)), _mm256_add_ps(m, cf(1.0f)));
    const __m256 s2 = _mm256_mul_ps(s, s);
    __m256 p = cf(DM_L9);
    p = _mm256_add_ps(_mm256_mul_ps(p, s2), cf(DM_L7));
    p = _mm256_add_ps(_mm256_mul_ps(p, s2), cf(DM_L5));
    p = _mm256_add_ps(_mm256_mul_ps(p, s2), cf(DM_L3));
    p = _mm256_add_ps(_mm256_mul_ps(p, s2), cf(1.0f));
    const __m256 lnm = _mm256_mul_ps(_mm256_mul_ps(cf(2.0f), s), p);
    const __m256 lnu = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(e), cf(DM_LN2)), lnm);
    const __m256 r2 = _mm256_mul_ps(cf(-2.0f), lnu);
    return _mm256_max_ps(r2, _mm256_setzero_ps());
}

AVX2_FN void sincos8(__m256i w, __m256& s_out, __m256& c_out) {
    const __m256i oct = _mm256_srli_epi32(w, 29);
    __m256i t = _mm256_and_si256(_mm256_srli_epi32(w, 8), c32(0x001FFFFFu));
    const __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(oct, c32(1)), c32(1));
    t = _mm256_blendv_epi8(t, _mm256_sub_epi32(c32(0x00200000u), t), odd);
    const __m256 phi = _mm256_mul_ps(_mm256_cvtepi32_ps(t), cf(DM_PI4_2M21));
    const __m256 p2 = _mm256_mul_ps(phi, phi);
    __m256 sp = cf(DM_S9);
    sp = _mm256_add_ps(_mm256_mul_ps(sp, p2), cf(DM_S7));
    sp = _mm256_add_ps(_mm256_mul_ps(sp, p2), cf(DM_S5));
    sp = _mm256_add_ps(_mm256_mul_ps(sp, p2), cf(DM_S3));
    sp = _mm256_add_ps(_mm256_mul_ps(sp, p2), cf(1.0f));
    const __m256 sphi = _mm256_mul_ps(phi, sp);
    __m256 cp = cf(DM_C10);
    cp = _mm256_add_ps(_mm256_mul_ps(cp, p2), cf(DM_C8));
    cp = _mm256_add_ps(_mm256_mul_ps(cp, p2), cf(DM_C6));
    cp = _mm256_add_ps(_mm256_mul_ps(cp, p2), cf(DM_C4));
    cp = _mm256_add_ps(_mm256_mul_ps(cp, p2), cf(DM_C2));
    const __m256 cphi = _mm256_add_ps(_mm256_mul_ps(cp, p2), cf(1.0f));
    const __m256 oddf = _mm256_castsi256_ps(odd);
    const __m256 sa = _mm256_blendv_ps(sphi, cphi, oddf);
    const __m256 ca = _mm256_blendv_ps(cphi, sphi, oddf);
    const __m256i q = _mm256_srli_epi32(oct, 1);
    const __m256 swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, c32(1)), c32(1)));
    const __m256 c0 = _mm256_blendv_ps(ca, sa, swap);
    const __m256 s0 = _mm256_blendv_ps(sa, ca, swap);
    const __m256i cneg =
        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(_mm256_add_epi32(q, c32(1)), 1), c32(1)), 31);
    const __m256i sneg = _mm256_slli_epi32(_mm256_srli_epi32(q, 1), 31);
    c_out = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(c0), cneg));
    s_out = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(s0), sneg));
}

// Four normals per lane from a Philox output, stored to columns 4g..4g+3, rows [r, r+8).
AVX2_FN void normals_store(__m256i w0, __m256i w1, __m256i w2, __m256i w3, float* E, float* E2,
                           int64_t g, int64_t ld, int64_t r) {
    __m256 s, c;
    const __m256 r0 = _mm256_sqrt_ps(neg2log8(w0));
    sincos8(w1, s, c);
    const __m256 z0 = _mm256_mul_ps(r0, c), z1 = _mm256_mul_ps(r0, s);
    const __m256 r1 = _mm256_sqrt_ps(neg2log8(w2));
    sincos8(w3, s, c);
    const __m256 z2 = _mm256_mul_ps(r1, c), z3 = _mm256_mul_ps(r1, s);
    float* e = E + 4 * g * ld + r;
    float* e2 = E2 + 4 * g * ld + r;
    _mm256_storeu_ps(e, z0);
    _mm256_storeu_ps(e + ld, z1);
    _mm256_storeu_ps(e + 2 * ld, z2);
    _mm256_storeu_ps(e + 3 * ld, z3);
    _mm256_storeu_ps(e2, _mm256_mul_ps(z0, z0));
    _mm256_storeu_ps(e2 + ld, _mm256_mul_ps(z1, z1));
    _mm256_storeu_ps(e2 + 2 * ld, _mm256_mul_ps(z2, z2));
    _mm256_storeu_ps(e2 + 3 * ld, _mm256_mul_ps(z3, z3));
}

AVX2_KERNEL void gen_pool_avx2(uint64_t seed, uint32_t n0, int64_t rows, int64_t cols4, int64_t ld,
                               float* E, float* E2, const int32_t* quads, const uint32_t* starts) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; r += 8) {
            __m256i c0 = c32(quads ? (uint32_t)quads[g] : (uint32_t)g);
            __m256i c1 = _mm256_add_epi32(c32(starts ? starts[r >> 3] : n0 + (uint32_t)r), lane);
            __m256i c2 = _mm256_setzero_si256();
            __m256i c3 = c32(TAG_POOL);
            philox8(c0, c1, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32));
            normals_store(c0, c1, c2, c3, E, E2, g, ld, r);
        }
}

AVX2_KERNEL void gen_private_avx2(uint64_t seed, uint64_t b, uint32_t n0, int64_t rows,
                                  int64_t cols4, int64_t ld, float* E, float* E2) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; r += 8) {
            const __m256i n = _mm256_add_epi32(c32(n0 + (uint32_t)r), lane);
            __m256i c0 = _mm256_or_si256(c32((uint32_t)g), _mm256_slli_epi32(n, 16));
            __m256i c1 = c32((uint32_t)b);
            __m256i c2 = c32((uint32_t)(b >> 32));
            __m256i c3 = c32(TAG_PRIVATE);
            philox8(c0, c1, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32));
            normals_store(c0, c1, c2, c3, E, E2, g, ld, r);
        }
}

// 32 rows x 3 blocks register tile: 12 accumulators, each a fixed-order chain over k.
AVX2_KERNEL void score_group_avx2(const float* E, const float* E2, int64_t ld, int64_t rows,
                                  int64_t P, const float* WA, const float* WC, int64_t Gp, float* S,
                                  int64_t ld_s) {
    for (int64_t r = 0; r < rows; r += 32)
        for (int64_t g = 0; g < Gp; g += 3) {
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00,
                   a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
            const float* e2p = E2 + r;
            const float* ep = E + r;
            const float* wa = WA + g;
            const float* wc = WC + g;
            // Per k, the E^2 x WA half and then the E x WC half: written out twice on purpose
            // (the SIMD twin of score_group_generic's two fmas per k), so that the 12 named
            // accumulators stay in registers.
            for (int64_t k = 0; k < P; ++k) {
                {
                    const __m256 w0 = _mm256_broadcast_ss(wa), w1 = _mm256_broadcast_ss(wa + 1),
                                 w2 = _mm256_broadcast_ss(wa + 2);
                    __m256 x = _mm256_loadu_ps(e2p);
                    a00 = _mm256_fmadd_ps(w0, x, a00);
                    a01 = _mm256_fmadd_ps(w1, x, a01);
                    a02 = _mm256_fmadd_ps(w2, x, a02);
                    x = _mm256_loadu_ps(e2p + 8);
                    a10 = _mm256_fmadd_ps(w0, x, a10);
                    a11 = _mm256_fmadd_ps(w1, x, a11);
                    a12 = _mm256_fmadd_ps(w2, x, a12);
                    x = _mm256_loadu_ps(e2p + 16);
                    a20 = _mm256_fmadd_ps(w0, x, a20);
                    a21 = _mm256_fmadd_ps(w1, x, a21);
                    a22 = _mm256_fmadd_ps(w2, x, a22);
                    x = _mm256_loadu_ps(e2p + 24);
                    a30 = _mm256_fmadd_ps(w0, x, a30);
                    a31 = _mm256_fmadd_ps(w1, x, a31);
                    a32 = _mm256_fmadd_ps(w2, x, a32);
                }
                {
                    const __m256 w0 = _mm256_broadcast_ss(wc), w1 = _mm256_broadcast_ss(wc + 1),
                                 w2 = _mm256_broadcast_ss(wc + 2);
                    __m256 x = _mm256_loadu_ps(ep);
                    a00 = _mm256_fmadd_ps(w0, x, a00);
                    a01 = _mm256_fmadd_ps(w1, x, a01);
                    a02 = _mm256_fmadd_ps(w2, x, a02);
                    x = _mm256_loadu_ps(ep + 8);
                    a10 = _mm256_fmadd_ps(w0, x, a10);
                    a11 = _mm256_fmadd_ps(w1, x, a11);
                    a12 = _mm256_fmadd_ps(w2, x, a12);
                    x = _mm256_loadu_ps(ep + 16);
                    a20 = _mm256_fmadd_ps(w0, x, a20);
                    a21 = _mm256_fmadd_ps(w1, x, a21);
                    a22 = _mm256_fmadd_ps(w2, x, a22);
                    x = _mm256_loadu_ps(ep + 24);
                    a30 = _mm256_fmadd_ps(w0, x, a30);
                    a31 = _mm256_fmadd_ps(w1, x, a31);
                    a32 = _mm256_fmadd_ps(w2, x, a32);
                }
                e2p += ld;
                ep += ld;
                wa += Gp;
                wc += Gp;
            }
            float* s0 = S + g * ld_s + r;
            float* s1 = s0 + ld_s;
            float* s2 = s1 + ld_s;
            _mm256_storeu_ps(s0, a00);
            _mm256_storeu_ps(s0 + 8, a10);
            _mm256_storeu_ps(s0 + 16, a20);
            _mm256_storeu_ps(s0 + 24, a30);
            _mm256_storeu_ps(s1, a01);
            _mm256_storeu_ps(s1 + 8, a11);
            _mm256_storeu_ps(s1 + 16, a21);
            _mm256_storeu_ps(s1 + 24, a31);
            _mm256_storeu_ps(s2, a02);
            _mm256_storeu_ps(s2 + 8, a12);
            _mm256_storeu_ps(s2 + 16, a22);
            _mm256_storeu_ps(s2 + 24, a32);
        }
}

AVX2_KERNEL void score_single_avx2(const float* E, const float* E2, int64_t ld, int64_t rows,
                                   int64_t P, const float* A, const float* C, float* S) {
    for (int64_t r = 0; r < rows; r += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < P; ++k) {
            const float* e2p = E2 + k * ld + r;
            const float* ep = E + k * ld + r;
            const __m256 wa = _mm256_broadcast_ss(A + k);
            a0 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2p), a0);
            a1 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2p + 8), a1);
            a2 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2p + 16), a2);
            a3 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(e2p + 24), a3);
            const __m256 wc = _mm256_broadcast_ss(C + k);
            a0 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(ep), a0);
            a1 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(ep + 8), a1);
            a2 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(ep + 16), a2);
            a3 = _mm256_fmadd_ps(wc, _mm256_loadu_ps(ep + 24), a3);
        }
        _mm256_storeu_ps(S + r, a0);
        _mm256_storeu_ps(S + r + 8, a1);
        _mm256_storeu_ps(S + r + 16, a2);
        _mm256_storeu_ps(S + r + 24, a3);
    }
}

AVX2_KERNEL void weights_avx2(const float* x, int64_t rows, float m, float* w, float* v) {
    const __m256 mv = cf(m);
    for (int64_t r = 0; r < rows; r += 8) {
        const __m256 y = _mm256_sub_ps(_mm256_loadu_ps(x + r), mv);
        const __m256 keep = _mm256_cmp_ps(y, cf(DM_EXP_CUTOFF), _CMP_GE_OQ);
        if (_mm256_movemask_ps(keep) == 0) {  // all eight below the cutoff: weights are 0
            _mm256_storeu_ps(w + r, _mm256_setzero_ps());
            v[r / 8] = 0.0f;
            continue;
        }
        // Lanes below the cutoff are zeroed below; clamping them first keeps every
        // intermediate a normal number (denormal/NaN garbage would trigger slow FP assists).
        const __m256 yc = _mm256_max_ps(y, cf(DM_EXP_CUTOFF));
        const __m256 kf = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(yc, cf(DM_LOG2E)), cf(0.5f)));
        const __m256 rr = _mm256_sub_ps(_mm256_sub_ps(yc, _mm256_mul_ps(kf, cf(DM_LN2_HI))),
                                        _mm256_mul_ps(kf, cf(DM_LN2_LO)));
        __m256 p = cf(DM_E6);
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(DM_E5));
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(DM_E4));
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(DM_E3));
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(DM_E2));
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(1.0f));
        p = _mm256_add_ps(_mm256_mul_ps(p, rr), cf(1.0f));
        const __m256i ki = _mm256_cvttps_epi32(kf);
        const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ki, c32(127)), 23));
        const __m256 wv = _mm256_and_ps(_mm256_mul_ps(p, scale), keep);
        _mm256_storeu_ps(w + r, wv);
        // tree8 in registers: ((w0+w1)+(w2+w3)) + ((w4+w5)+(w6+w7))
        const __m256 h1 = _mm256_hadd_ps(wv, wv);  // [w0+w1, w2+w3, ., . | w4+w5, w6+w7, ., .]
        const __m256 h2 = _mm256_hadd_ps(h1, h1);  // [L, ., ., . | H, ., ., .]
        const __m128 lo = _mm256_castps256_ps128(h2);
        const __m128 hi = _mm256_extractf128_ps(h2, 1);
        v[r / 8] = _mm_cvtss_f32(_mm_add_ss(lo, hi));
    }
}

// Two passes: the maximum over four independent max chains (rows 32i + 8j), then the first row
// equal to it, stopping there (half the rows on average). The same result as the generic first
// argmax: the value returned is that row's own (so -0 and +0 come out as the first one was).
// Scores are never NaN (finite coefficients times normals, or -inf padding).
AVX2_KERNEL void argmax_avx2(const float* x, int64_t rows, float* m, int64_t* idx) {
    if (rows < 32) {
        first_argmax(x, rows, m, idx);
        return;
    }
    __m256 b0 = _mm256_loadu_ps(x), b1 = _mm256_loadu_ps(x + 8), b2 = _mm256_loadu_ps(x + 16),
           b3 = _mm256_loadu_ps(x + 24);
    int64_t r = 32;
    for (; r + 32 <= rows; r += 32) {
        b0 = _mm256_max_ps(b0, _mm256_loadu_ps(x + r));
        b1 = _mm256_max_ps(b1, _mm256_loadu_ps(x + r + 8));
        b2 = _mm256_max_ps(b2, _mm256_loadu_ps(x + r + 16));
        b3 = _mm256_max_ps(b3, _mm256_loadu_ps(x + r + 24));
    }
    for (; r < rows; r += 8) b0 = _mm256_max_ps(b0, _mm256_loadu_ps(x + r));  // rows % 8 == 0
    __m256 b = _mm256_max_ps(_mm256_max_ps(b0, b1), _mm256_max_ps(b2, b3));
    b = _mm256_max_ps(b, _mm256_permute2f128_ps(b, b, 1));
    b = _mm256_max_ps(b, _mm256_shuffle_ps(b, b, _MM_SHUFFLE(1, 0, 3, 2)));
    b = _mm256_max_ps(b, _mm256_shuffle_ps(b, b, _MM_SHUFFLE(2, 3, 0, 1)));  // the max in every lane
    for (r = 0; r < rows; r += 8) {
        const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + r), b, _CMP_EQ_OQ));
        if (hit) {
            *idx = r + __builtin_ctz((unsigned)hit);
            *m = x[*idx];
            return;
        }
    }
    first_argmax(x, rows, m, idx);  // not reached: some row equals the maximum
}

const RecKernels kAvx2 = {"avx2",           gen_pool_avx2, gen_private_avx2, nullptr, score_group_avx2,
                          score_single_avx2, weights_avx2,  argmax_avx2,      nullptr};

}  // namespace

const RecKernels* rec_kernels_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok ? &kAvx2 : nullptr;
}

}  // namespace bbimg

#else  // not x86-64 GCC/Clang

namespace bbimg {
const RecKernels* rec_kernels_avx2() { return nullptr; }
}  // namespace bbimg

#endif
