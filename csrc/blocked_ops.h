// Elementwise steps of the model's transforms on ONNX Runtime's channel-blocked tensors.
//
// ONNX Runtime computes convolutions in its NCHWc layout ([C/B][H*W][B] floats, B = 8 or 16)
// and reorders every tensor an elementwise operator reads back to NCHW and then forward again:
// about a sixth of the analysis transform's time. These kernels do the model's elementwise steps
// (the divisive normalisation and the quality FiLM) on the blocked tensors themselves, in one
// pass, with the same IEEE operations in the same order as ONNX Runtime's Abs, Div, Mul and Add
// (built with -ffp-contract=off: no fused multiply-add), so the outputs are the same bits.
#pragma once

#include <cstddef>

namespace bbimg {

// out[i] = |x[i]| for n floats, on `threads` threads.
void blocked_abs(const float* x, float* out, size_t n, int threads);

// out = (x / d) * g[c] + b[c] over a blocked tensor of `channels` channels (a multiple of
// `block`, which is 4, 8 or 16) and `plane` positions; g and b hold one value per channel.
void blocked_divide_scale_shift(const float* x, const float* d, const float* g, const float* b, float* out,
                                size_t channels, size_t plane, size_t block, int threads);

}  // namespace bbimg
