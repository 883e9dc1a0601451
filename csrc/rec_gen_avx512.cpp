// AVX-512F twins of the AVX2 tile generators (rec_avx2.cpp): the same operation sequence on 16
// lanes, so the same normals bit for bit (tests compare every kernel set with the scalar ones).
// Zen 4 executes a 512-bit operation as two 256-bit halves, yet these run ~1.5x faster than the
// AVX2 ones there (1.0 against 1.5 ns a normal and core): half the instructions to issue, mask
// registers in place of VBLENDVPS, and VPTERNLOGD for Philox's three-way XOR.
//
// As in rec_avx2.cpp, only these functions carry a target attribute; the kernel sets that use
// them (avx512vnni) are chosen only where the CPU reports AVX512F.
#include "rec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#include "detmath.h"
#include "philox.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define Z_FN static inline __attribute__((target("avx512f"), always_inline))
#define Z_KERNEL static __attribute__((target("avx512f")))

namespace bbimg {
namespace {

Z_FN __m512i c32(uint32_t x) { return _mm512_set1_epi32((int)x); }
Z_FN __m512 cf(float x) { return _mm512_set1_ps(x); }

Z_FN void mulhilo16(__m512i a, __m512i M, __m512i& hi, __m512i& lo) {
    const __m512i pe = _mm512_mul_epu32(a, M);
    const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), M);
    lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
}

Z_FN void philox16(__m512i& c0, __m512i& c1, __m512i& c2, __m512i& c3, uint32_t k0, uint32_t k1) {
    const __m512i M0 = c32(PHILOX_M0), M1 = c32(PHILOX_M1);
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        __m512i hi0, lo0, hi1, lo1;
        mulhilo16(c0, M0, hi0, lo0);
        mulhilo16(c2, M1, hi1, lo1);
        const __m512i n0 = _mm512_ternarylogic_epi32(hi1, c1, c32(k0), 0x96);  // a ^ b ^ c
        const __m512i n2 = _mm512_ternarylogic_epi32(hi0, c3, c32(k1), 0x96);
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
}

Z_FN __m512 neg2log16(__m512i w) {
    const __m512i k = _mm512_srli_epi32(w, 9);
    const __m512i t = _mm512_or_si512(_mm512_slli_epi32(k, 1), c32(1));
    const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(t), cf(DM_TWO_M24));
    const __m512i bits = _mm512_castps_si512(u);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), c32(127));
    // (bits & 0x007FFFFF) | 0x3F800000: VPTERNLOGD 0xEA is (a & b) | c.
    __m512 m = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(bits, c32(0x007FFFFFu), c32(0x3F800000u), 0xEA));
    const __mmask16 big = _mm512_cmp_ps_mask(m, cf(DM_SQRT2), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, cf(0.5f));
    e = _mm512_mask_add_epi32(e, big, e, c32(1));
    const __m512 s = _mm512_div_ps(_mm512_sub_ps(m, cf(1.0f)), _mm512_add_ps(m, cf(1.0f)));
    const __m512 s2 = _mm512_mul_ps(s, s);
    __m512 p = cf(DM_L9);
    p = _mm512_add_ps(_mm512_mul_ps(p, s2), cf(DM_L7));
    p = _mm512_add_ps(_mm512_mul_ps(p, s2), cf(DM_L5));
    p = _mm512_add_ps(_mm512_mul_ps(p, s2), cf(DM_L3));
    p = _mm512_add_ps(_mm512_mul_ps(p, s2), cf(1.0f));
    const __m512 lnm = _mm512_mul_ps(_mm512_mul_ps(cf(2.0f), s), p);
    const __m512 lnu = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(e), cf(DM_LN2)), lnm);
    const __m512 r2 = _mm512_mul_ps(cf(-2.0f), lnu);
    return _mm512_max_ps(r2, _mm512_setzero_ps());
}

Z_FN void sincos16(__m512i w, __m512& s_out, __m512& c_out) {
    const __m512i oct = _mm512_srli_epi32(w, 29);
    __m512i t = _mm512_and_si512(_mm512_srli_epi32(w, 8), c32(0x001FFFFFu));
    const __mmask16 odd = _mm512_test_epi32_mask(oct, c32(1));
    t = _mm512_mask_sub_epi32(t, odd, c32(0x00200000u), t);
    const __m512 phi = _mm512_mul_ps(_mm512_cvtepi32_ps(t), cf(DM_PI4_2M21));
    const __m512 p2 = _mm512_mul_ps(phi, phi);
    __m512 sp = cf(DM_S9);
    sp = _mm512_add_ps(_mm512_mul_ps(sp, p2), cf(DM_S7));
    sp = _mm512_add_ps(_mm512_mul_ps(sp, p2), cf(DM_S5));
    sp = _mm512_add_ps(_mm512_mul_ps(sp, p2), cf(DM_S3));
    sp = _mm512_add_ps(_mm512_mul_ps(sp, p2), cf(1.0f));
    const __m512 sphi = _mm512_mul_ps(phi, sp);
    __m512 cp = cf(DM_C10);
    cp = _mm512_add_ps(_mm512_mul_ps(cp, p2), cf(DM_C8));
    cp = _mm512_add_ps(_mm512_mul_ps(cp, p2), cf(DM_C6));
    cp = _mm512_add_ps(_mm512_mul_ps(cp, p2), cf(DM_C4));
    cp = _mm512_add_ps(_mm512_mul_ps(cp, p2), cf(DM_C2));
    const __m512 cphi = _mm512_add_ps(_mm512_mul_ps(cp, p2), cf(1.0f));
    const __m512 sa = _mm512_mask_blend_ps(odd, sphi, cphi);  // sin of the angle within the quadrant
    const __m512 ca = _mm512_mask_blend_ps(odd, cphi, sphi);
    const __m512i q = _mm512_srli_epi32(oct, 1);
    const __mmask16 swap = _mm512_test_epi32_mask(q, c32(1));
    const __m512 c0 = _mm512_mask_blend_ps(swap, ca, sa);
    const __m512 s0 = _mm512_mask_blend_ps(swap, sa, ca);
    const __m512i cneg =
        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(_mm512_add_epi32(q, c32(1)), 1), c32(1)), 31);
    const __m512i sneg = _mm512_slli_epi32(_mm512_srli_epi32(q, 1), 31);
    c_out = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(c0), cneg));
    s_out = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(s0), sneg));
}

// Four normals per lane (Box-Muller on the word pairs (w0, w1) and (w2, w3)) of a Philox output.
// One Box-Muller pair: the normals r cos and r sin from radius word wr and angle word wa.
Z_FN void box_muller16(__m512i wr, __m512i wa, __m512& z_cos, __m512& z_sin) {
    __m512 s, c;
    const __m512 r = _mm512_sqrt_ps(neg2log16(wr));
    sincos16(wa, s, c);
    z_cos = _mm512_mul_ps(r, c);
    z_sin = _mm512_mul_ps(r, s);
}

Z_FN void normals16(__m512i w0, __m512i w1, __m512i w2, __m512i w3, __m512 z[4]) {
    box_muller16(w0, w1, z[0], z[1]);
    box_muller16(w2, w3, z[2], z[3]);
}

// Four normals stored to columns 4g..4g+3 of E (and their squares to E2), rows [r, r+16) (the
// lanes of `keep` only: a tile's rows are a multiple of 8, not of 16).
Z_FN void store16(const __m512 z[4], float* E, float* E2, int64_t g, int64_t ld, int64_t r, __mmask16 keep) {
    for (int i = 0; i < 4; ++i) {
        _mm512_mask_storeu_ps(E + (4 * g + i) * ld + r, keep, z[i]);
        _mm512_mask_storeu_ps(E2 + (4 * g + i) * ld + r, keep, _mm512_mul_ps(z[i], z[i]));
    }
}

Z_FN __mmask16 rows_left(int64_t rows, int64_t r) {
    return rows - r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (rows - r)) - 1u);
}

// Lanes 0-7 and 8-15 of a row vector: rows r.. of the tile, or two 8-row groups of `starts`.
Z_FN __m512i row_counters(uint32_t n0, int64_t rows, int64_t r, const uint32_t* starts) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    if (!starts) return _mm512_add_epi32(c32(n0 + (uint32_t)r), lane);
    const __m512i lane8 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    const uint32_t a = starts[r >> 3], b = r + 8 < rows ? starts[(r >> 3) + 1] : a;
    return _mm512_add_epi32(_mm512_mask_blend_epi32(0xFF00, c32(a), c32(b)), lane8);
}

// The four Philox words of pool quad `quad` for the rows of the lanes of `n` (row_counters).
Z_FN void pool_words16(uint64_t seed, uint32_t quad, __m512i n, __m512i w[4]) {
    w[0] = c32(quad);
    w[1] = n;
    w[2] = _mm512_setzero_si512();
    w[3] = c32(TAG_POOL);
    philox16(w[0], w[1], w[2], w[3], (uint32_t)seed, (uint32_t)(seed >> 32));
}

// The four normals of pool quad `quad` for the rows of the lanes of `n`.
Z_FN void pool_normals16(uint64_t seed, uint32_t quad, __m512i n, __m512 z[4]) {
    __m512i w[4];
    pool_words16(seed, quad, n, w);
    normals16(w[0], w[1], w[2], w[3], z);
}

Z_KERNEL void gen_pool_avx512(uint64_t seed, uint32_t n0, int64_t rows, int64_t cols4, int64_t ld,
                              float* E, float* E2, const int32_t* quads, const uint32_t* starts) {
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; r += 16) {
            __m512 z[4];
            pool_normals16(seed, quads ? (uint32_t)quads[g] : (uint32_t)g, row_counters(n0, rows, r, starts), z);
            store16(z, E, E2, g, ld, r, rows_left(rows, r));
        }
}

Z_KERNEL void gen_private_avx512(uint64_t seed, uint64_t b, uint32_t n0, int64_t rows, int64_t cols4,
                                 int64_t ld, float* E, float* E2) {
    for (int64_t g = 0; g < cols4 / 4; ++g)
        for (int64_t r = 0; r < rows; r += 16) {
            const __m512i n = row_counters(n0, rows, r, nullptr);
            __m512i c0 = _mm512_or_si512(c32((uint32_t)g), _mm512_slli_epi32(n, 16));
            __m512i c1 = c32((uint32_t)b);
            __m512i c2 = c32((uint32_t)(b >> 32));
            __m512i c3 = c32(TAG_PRIVATE);
            philox16(c0, c1, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32));
            __m512 z[4];
            normals16(c0, c1, c2, c3, z);
            store16(z, E, E2, g, ld, r, rows_left(rows, r));
        }
}

// RecScreen::pack_tile's word of each normal: (round(512 e^2) & 0xFFFF) | round(4096 e) << 16,
// e^2 the same fp32 product as the E2 tile's, both conversions rounding to nearest (MXCSR's
// default, as pack_tile's).
Z_FN __m512i screen_word(__m512 z) {
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(z, cf(REC_SCREEN_E_SCALE)));
    const __m512i q2 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_mul_ps(z, z), cf(REC_SCREEN_E2_SCALE)));
    return _mm512_or_si512(_mm512_and_si512(q2, c32(0xFFFFu)), _mm512_slli_epi32(q1, 16));
}

Z_KERNEL void gen_pool_words_avx512(uint64_t seed, uint32_t n0, int64_t rows, int64_t nquads,
                                    const int32_t* quads, const uint8_t* pairs, uint32_t* EB) {
    const int64_t cols = 4 * nquads;
    for (int64_t g = 0; g < nquads; ++g) {
        const unsigned need = pairs ? pairs[g] : 3u;
        for (int64_t r = 0; r < rows; r += 16) {
            uint32_t* out = EB + (r >> 6) * 64 * cols + 64 * (4 * g) + (r & 63);
            if (need == 3u) {
                __m512 z[4];
                pool_normals16(seed, (uint32_t)quads[g], row_counters(n0, rows, r, nullptr), z);
                for (int i = 0; i < 4; ++i) _mm512_storeu_si512(out + 64 * i, screen_word(z[i]));
                continue;
            }
            // One Box-Muller pair, as normals16 computes it (the same bits).
            __m512i w[4];
            pool_words16(seed, (uint32_t)quads[g], row_counters(n0, rows, r, nullptr), w);
            const int p = need == 1u ? 0 : 1;
            __m512 z_cos, z_sin;
            box_muller16(w[2 * p], w[2 * p + 1], z_cos, z_sin);
            const __m512i zero = _mm512_setzero_si512();
            _mm512_storeu_si512(out + 64 * (2 * p), screen_word(z_cos));
            _mm512_storeu_si512(out + 64 * (2 * p + 1), screen_word(z_sin));
            _mm512_storeu_si512(out + 64 * (2 - 2 * p), zero);
            _mm512_storeu_si512(out + 64 * (3 - 2 * p), zero);
        }
    }
}

const RecGenerators kGen512 = {gen_pool_avx512, gen_private_avx512, gen_pool_words_avx512};

}  // namespace

const RecGenerators* rec_generators_avx512() {
    static const bool ok = __builtin_cpu_supports("avx512f");
    return ok ? &kGen512 : nullptr;
}

}  // namespace bbimg

#else

namespace bbimg {
const RecGenerators* rec_generators_avx512() { return nullptr; }
}  // namespace bbimg

#endif
