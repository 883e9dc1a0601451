// Philox4x32-10 counter-based generator (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11). Header-only, usable from host C++ and CUDA. Integer-only, so every build
// gives the same words for the same (key, counter).
//
// Counter layout used by bbimg's REC (all fields 32-bit; see docs/rec.md):
//   pool normals      ctr = (col_group, n, 0, TAG_POOL)            key = seed
//   private normals   ctr = (col_group | n << 16, b_lo, b_hi, TAG_PRIVATE)
//   block perm/signs  ctr = (i, b_lo, b_hi, TAG_PERM)
//   chunk pick u      ctr = (chunk, b_lo, b_hi, TAG_CHUNK_PICK)
//   block pick u      ctr = (0, b_lo, b_hi, TAG_BLOCK_PICK)
#pragma once
#include <cstdint>

#include "bb_hd.h"

namespace bbimg {
namespace {

constexpr uint32_t PHILOX_M0 = 0xD2511F53u;
constexpr uint32_t PHILOX_M1 = 0xCD9E8D57u;
constexpr uint32_t PHILOX_W0 = 0x9E3779B9u;
constexpr uint32_t PHILOX_W1 = 0xBB67AE85u;

constexpr uint32_t TAG_POOL = 0u;
constexpr uint32_t TAG_PRIVATE = 1u;
constexpr uint32_t TAG_PERM = 2u;
constexpr uint32_t TAG_CHUNK_PICK = 3u;
constexpr uint32_t TAG_BLOCK_PICK = 4u;

struct U32x4 {
    uint32_t v[4];
};

BB_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                        uint32_t k1) {
    const uint64_t p0 = (uint64_t)PHILOX_M0 * (uint64_t)c0;
    const uint64_t p1 = (uint64_t)PHILOX_M1 * (uint64_t)c2;
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
}

// REQUIRES: nothing (total function).
BB_HD U32x4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                          uint32_t k1) {
BB_UNROLL
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        philox_round(c0, c1, c2, c3, k0, k1);
    }
    U32x4 out;
    out.v[0] = c0;
    out.v[1] = c1;
    out.v[2] = c2;
    out.v[3] = c3;
    return out;
}

BB_HD U32x4 philox_seed(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
    return philox4x32_10(c0, c1, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32));
}

// Uniform double in [0, 1) from 53 bits of two words (exact integer construction).
BB_HD double u01_double(uint32_t w0, uint32_t w1) {
    const uint64_t m = ((uint64_t)(w0 >> 6) << 27) | (uint64_t)(w1 >> 5);  // 26 + 27 bits
    return (double)m * (1.0 / 9007199254740992.0);                         // 2^-53, exact
}

// Uniform integer in [0, n) by multiply-high (bias < n / 2^32; deterministic, documented).
BB_HD uint32_t u32_below(uint32_t w, uint32_t n) {
    return (uint32_t)(((uint64_t)w * (uint64_t)n) >> 32);
}

}  // namespace
}  // namespace bbimg
