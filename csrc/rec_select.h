// Candidate selection arithmetic shared by the CPU engine and the CUDA kernels.
// Pure functions of their inputs in a fixed order; doubles use BB_D* (never contracted).
#pragma once
#include <cstdint>

#include "bb_hd.h"
#include "detmath.h"
#include "philox.h"

namespace bbimg {
namespace {

// Largest value of x[0..rows) and the first index holding it (rows >= 1): the argmax of a
// chunk's scores, on the CPU (generic kernel set) and in the CUDA statistics kernel alike.
BB_HD void first_argmax(const float* x, int64_t rows, float* m, int64_t* idx) {
    float best = x[0];
    int64_t bi = 0;
    for (int64_t r = 1; r < rows; ++r)
        if (x[r] > best) {
            best = x[r];
            bi = r;
        }
    *m = best;
    *idx = bi;
}

// Index in [0, nv*8) picked by target t in the cumulative weights: first the group of 8 whose
// running sum (over tree8 group sums v, in double, ascending) exceeds t, then the element
// inside it (running sum of w in double). Float rounding can leave t at or beyond the total;
// then the last group / element with positive weight is taken. REQUIRES: some v[i] > 0.
BB_HD int64_t pick_in_weights(const float* w, const float* v, int64_t nv, double t) {
    double cum = 0.0;
    int64_t gi = -1;
    for (int64_t i = 0; i < nv; ++i) {
        if (v[i] == 0.0f) continue;  // adding +0 changes nothing; skipping keeps chains short
        const double nc = BB_DADD(cum, (double)v[i]);
        if (nc > t) {
            gi = i;
            break;
        }
        cum = nc;
    }
    if (gi < 0) {
        for (int64_t i = nv - 1; i >= 0; --i)
            if (v[i] > 0.0f) {
                gi = i;
                break;
            }
        if (gi < 0) gi = 0;
        cum = 0.0;
        for (int64_t i = 0; i < gi; ++i) cum = BB_DADD(cum, (double)v[i]);
    }
    const double r = BB_DADD(t, -cum);
    const float* wg = w + 8 * gi;
    double acc = 0.0;
    for (int l = 0; l < 8; ++l) {
        acc = BB_DADD(acc, (double)wg[l]);
        if (acc > r) return 8 * gi + l;
    }
    for (int l = 7; l >= 0; --l)
        if (wg[l] > 0.0f) return 8 * gi + l;
    return 8 * gi;
}

BB_HD double chunk_pick_u(uint64_t seed, uint64_t b, uint32_t chunk) {
    const U32x4 w = philox_seed(seed, chunk, (uint32_t)b, (uint32_t)(b >> 32), TAG_CHUNK_PICK);
    return u01_double(w.v[0], w.v[1]);
}

BB_HD double block_pick_u(uint64_t seed, uint64_t b) {
    const U32x4 w = philox_seed(seed, 0u, (uint32_t)b, (uint32_t)(b >> 32), TAG_BLOCK_PICK);
    return u01_double(w.v[0], w.v[1]);
}

}  // namespace
}  // namespace bbimg
