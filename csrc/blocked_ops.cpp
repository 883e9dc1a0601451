// Elementwise kernels on channel-blocked tensors (blocked_ops.h). Memory-bound: plain loops the
// compiler vectorises, split over threads by contiguous ranges.
#include "blocked_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "parallel.h"

namespace bbimg {
namespace {

// Calls fn(begin, end) over [0, n) in up to `threads` contiguous ranges (none under 4096 items:
// a thread costs more than they do).
template <class Fn>
void parallel_ranges(size_t n, int threads, Fn fn) {
    const size_t parts = std::max<size_t>(1, std::min<size_t>((size_t)std::max(threads, 1), n / 4096));
    parallel_for((int64_t)parts, (int)parts, [&](int64_t p, int) { fn(n * p / parts, n * (p + 1) / parts); });
}

// The rows [r0, r1) of (channel block, position) of `Block` floats each.
template <size_t Block>
void divide_scale_shift_rows(const float* x, const float* d, const float* g, const float* b, float* out,
                             size_t plane, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1;) {
        const size_t cb = r / plane, end = std::min(r1, (cb + 1) * plane);
        const float* gc = g + cb * Block;
        const float* bc = b + cb * Block;
        for (; r < end; ++r) {
            const size_t o = r * Block;
            for (size_t l = 0; l < Block; ++l) {
                const float q = x[o + l] / d[o + l];
                const float s = q * gc[l];
                out[o + l] = s + bc[l];
            }
        }
    }
}

}  // namespace

void blocked_abs(const float* x, float* out, size_t n, int threads) {
    parallel_ranges(n, threads, [=](size_t i0, size_t i1) {
        for (size_t i = i0; i < i1; ++i) out[i] = std::fabs(x[i]);
    });
}

void blocked_divide_scale_shift(const float* x, const float* d, const float* g, const float* b, float* out,
                                size_t channels, size_t plane, size_t block, int threads) {
    parallel_ranges(channels / block * plane, threads, [=](size_t r0, size_t r1) {
        switch (block) {
            case 16: divide_scale_shift_rows<16>(x, d, g, b, out, plane, r0, r1); break;
            case 8: divide_scale_shift_rows<8>(x, d, g, b, out, plane, r0, r1); break;
            default: divide_scale_shift_rows<4>(x, d, g, b, out, plane, r0, r1); break;  // block 4
        }
    });
}

}  // namespace bbimg
