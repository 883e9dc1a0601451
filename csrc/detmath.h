// Deterministic float32 math for REC's shared randomness and candidate selection.
//
// Everything here is built from integer operations, int->float conversion of values below
// 2^24 (exact), and the IEEE correctly-rounded float operations +, -, *, / and sqrt, evaluated
// in a fixed order with no fused multiply-add (BB_F* macros; host TUs use -ffp-contract=off).
// No libm call is made, so the CPU build (scalar or AVX2), and the CUDA build produce
// bit-identical results. rec_avx2.cpp holds 8-lane copies of these functions that perform the
// very same sequence of operations; tests check that they agree bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

#include "bb_hd.h"
#include "philox.h"

namespace bbimg {
namespace {

// Bit casts, float <-> uint32: a deliberate host/device twin (memcpy on the host, the CUDA
// intrinsics on the device).
BB_HD uint32_t f2u(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}

BB_HD float u2f(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

// Constants (decimal literals are correctly rounded to float by every conforming compiler).
constexpr float DM_TWO_M24 = 5.9604644775390625e-08f;  // 2^-24 (exact)
constexpr float DM_SQRT2 = 1.41421353816986083984375f;  // float nearest sqrt(2), below it
constexpr float DM_LN2 = 0.693147182464599609375f;       // float nearest ln 2
constexpr float DM_L9 = 0.111111111f;                    // 1/9
constexpr float DM_L7 = 0.142857143f;                    // 1/7
constexpr float DM_L5 = 0.2f;                            // 1/5
constexpr float DM_L3 = 0.333333333f;                    // 1/3
constexpr float DM_PI4_2M21 = 3.74507028e-07f;           // (pi/4) / 2^21
constexpr float DM_S3 = -0.166666667f;                   // sin: -1/3!
constexpr float DM_S5 = 0.00833333333f;                  // 1/5!
constexpr float DM_S7 = -0.000198412698f;                // -1/7!
constexpr float DM_S9 = 2.75573192e-06f;                 // 1/9!
constexpr float DM_C2 = -0.5f;                           // cos: -1/2!
constexpr float DM_C4 = 0.0416666667f;                   // 1/4!
constexpr float DM_C6 = -0.00138888889f;                 // -1/6!
constexpr float DM_C8 = 2.48015873e-05f;                 // 1/8!
constexpr float DM_C10 = -2.75573192e-07f;               // -1/10!
constexpr float DM_LOG2E = 1.44269502162933349609375f;   // float nearest log2(e)
constexpr float DM_LN2_HI = 0.693145751953125f;          // 16 significant bits: k*HI exact
constexpr float DM_LN2_LO = 1.42860676e-06f;             // ln2 - HI
constexpr float DM_E2 = 0.5f, DM_E3 = 0.166666667f, DM_E4 = 0.0416666667f,
                DM_E5 = 0.00833333333f, DM_E6 = 0.00138888889f;
constexpr float DM_EXP_CUTOFF = -30.0f;  // weights below e^-30 of the chunk max count as 0

// -2 ln(u) for u = (2*(w >> 9) + 1) * 2^-24, i.e. u in [2^-24, 1 - 2^-24] (normal tail ~5.77).
BB_HD float det_neg2log(uint32_t w) {
    const uint32_t k = w >> 9;  // 23 bits
    const float u = BB_FMUL((float)(2u * k + 1u), DM_TWO_M24);  // exact
    const uint32_t bits = f2u(u);
    int e = (int)(bits >> 23) - 127;
    float m = u2f((bits & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
    if (m > DM_SQRT2) {
        m = BB_FMUL(m, 0.5f);  // exact
        e += 1;
    }
    const float s = BB_FDIV(BB_FSUB(m, 1.0f), BB_FADD(m, 1.0f));
    const float s2 = BB_FMUL(s, s);
    float p = DM_L9;
    p = BB_FADD(BB_FMUL(p, s2), DM_L7);
    p = BB_FADD(BB_FMUL(p, s2), DM_L5);
    p = BB_FADD(BB_FMUL(p, s2), DM_L3);
    p = BB_FADD(BB_FMUL(p, s2), 1.0f);
    const float lnm = BB_FMUL(BB_FMUL(2.0f, s), p);
    const float lnu = BB_FADD(BB_FMUL((float)e, DM_LN2), lnm);
    const float r2 = BB_FMUL(-2.0f, lnu);
    return r2 > 0.0f ? r2 : 0.0f;
}

// (sin, cos) of 2*pi*v for v given by the top 24 bits of w: 3 octant bits, 21 position bits.
BB_HD void det_sincos2pi(uint32_t w, float* s_out, float* c_out) {
    const uint32_t oct = w >> 29;
    uint32_t t = (w >> 8) & 0x001FFFFFu;
    if (oct & 1u) t = 0x00200000u - t;  // mirror: angle measured from the octant's far edge
    const float phi = BB_FMUL((float)t, DM_PI4_2M21);
    const float p2 = BB_FMUL(phi, phi);
    float sp = DM_S9;
    sp = BB_FADD(BB_FMUL(sp, p2), DM_S7);
    sp = BB_FADD(BB_FMUL(sp, p2), DM_S5);
    sp = BB_FADD(BB_FMUL(sp, p2), DM_S3);
    sp = BB_FADD(BB_FMUL(sp, p2), 1.0f);
    const float sphi = BB_FMUL(phi, sp);
    float cp = DM_C10;
    cp = BB_FADD(BB_FMUL(cp, p2), DM_C8);
    cp = BB_FADD(BB_FMUL(cp, p2), DM_C6);
    cp = BB_FADD(BB_FMUL(cp, p2), DM_C4);
    cp = BB_FADD(BB_FMUL(cp, p2), DM_C2);
    const float cphi = BB_FADD(BB_FMUL(cp, p2), 1.0f);
    const bool odd = (oct & 1u) != 0;
    const float sa = odd ? cphi : sphi;  // sin of the angle within the quadrant
    const float ca = odd ? sphi : cphi;
    const uint32_t q = oct >> 1;
    float s, c;
    if (q == 0) {
        c = ca;
        s = sa;
    } else if (q == 1) {
        c = -sa;
        s = ca;
    } else if (q == 2) {
        c = -ca;
        s = -sa;
    } else {
        c = sa;
        s = -ca;
    }
    *s_out = s;
    *c_out = c;
}

// Box-Muller on one Philox output: (w0 radius, w1 angle) -> z0, z1; (w2, w3) -> z2, z3.
BB_HD void det_normal4(const U32x4& w, float* z) {
    float s, c;
    const float r0 = BB_FSQRT(det_neg2log(w.v[0]));
    det_sincos2pi(w.v[1], &s, &c);
    z[0] = BB_FMUL(r0, c);
    z[1] = BB_FMUL(r0, s);
    const float r1 = BB_FSQRT(det_neg2log(w.v[2]));
    det_sincos2pi(w.v[3], &s, &c);
    z[2] = BB_FMUL(r1, c);
    z[3] = BB_FMUL(r1, s);
}

// exp(y) for y in [DM_EXP_CUTOFF, 0]; returns 0 for y < DM_EXP_CUTOFF. exp(0) == 1 exactly.
BB_HD float det_exp_weight(float y) {
    if (!(y >= DM_EXP_CUTOFF)) return 0.0f;
    const float kf = floorf(BB_FADD(BB_FMUL(y, DM_LOG2E), 0.5f));
    const float r = BB_FSUB(BB_FSUB(y, BB_FMUL(kf, DM_LN2_HI)), BB_FMUL(kf, DM_LN2_LO));
    float p = DM_E6;
    p = BB_FADD(BB_FMUL(p, r), DM_E5);
    p = BB_FADD(BB_FMUL(p, r), DM_E4);
    p = BB_FADD(BB_FMUL(p, r), DM_E3);
    p = BB_FADD(BB_FMUL(p, r), DM_E2);
    p = BB_FADD(BB_FMUL(p, r), 1.0f);
    p = BB_FADD(BB_FMUL(p, r), 1.0f);
    const int ki = (int)kf;  // in [-44, 0]
    const float scale = u2f((uint32_t)(ki + 127) << 23);
    return BB_FMUL(p, scale);
}

// Pool normal E(seed, n, col): four columns per Philox call.
BB_HD float pool_normal(uint64_t seed, uint32_t n, uint32_t col) {
    float z[4];
    det_normal4(philox_seed(seed, col >> 2, n, 0u, TAG_POOL), z);
    return z[col & 3u];
}

// Private normal of block b (used by blocks with fewer than 2^POOL_MIN_BITS candidates).
BB_HD float private_normal(uint64_t seed, uint64_t b, uint32_t n, uint32_t col) {
    float z[4];
    det_normal4(philox_seed(seed, (col >> 2) | (n << 16), (uint32_t)b, (uint32_t)(b >> 32),
                            TAG_PRIVATE),
                z);
    return z[col & 3u];
}

// Score of one candidate: fixed order over pool columns k, two fused multiply-adds per column.
// A/C are the block's weights in pool-column order; e the candidate's pool values.
BB_HD float score_step(float acc, float a, float c, float e) {
    const float e2 = BB_FMUL(e, e);
    acc = BB_FMAF(a, e2, acc);
    return BB_FMAF(c, e, acc);
}

// Sum of 8 consecutive weights in the tree order used by every implementation.
BB_HD float tree8(const float* w) {
    const float a = BB_FADD(BB_FADD(w[0], w[1]), BB_FADD(w[2], w[3]));
    const float b = BB_FADD(BB_FADD(w[4], w[5]), BB_FADD(w[6], w[7]));
    return BB_FADD(a, b);
}

}  // namespace
}  // namespace bbimg
