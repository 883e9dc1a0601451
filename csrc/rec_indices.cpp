// Index bit packing: block b's index is written MSB first in exactly k_b bits, zero padding
// to a byte (docs/rec.md section 1).
#include <string>
#include <vector>

#include "range_coder.h"
#include "rec.h"

namespace bbimg {

std::vector<uint8_t> encode_indices(const PlanView& plan, const uint32_t* idx) {
    uint64_t bits = 0;
    for (int64_t b = 0; b < plan.B; ++b) bits += plan.k[b];
    std::vector<uint8_t> out;
    out.reserve((size_t)((bits + 7) / 8));
    uint64_t acc = 0;
    int nacc = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        const int k = plan.k[b];
        if (k == 0) continue;
        acc = (acc << k) | (uint64_t)idx[b];
        nacc += k;
        while (nacc >= 8) {
            out.push_back((uint8_t)(acc >> (nacc - 8)));
            nacc -= 8;
        }
        acc &= (nacc ? ((1ull << nacc) - 1) : 0ull);
    }
    if (nacc) out.push_back((uint8_t)(acc << (8 - nacc)));
    return out;
}

void decode_indices(const PlanView& plan, const uint8_t* data, size_t size, uint32_t* idx) {
    uint64_t bits = 0;
    for (int64_t b = 0; b < plan.B; ++b) bits += plan.k[b];
    const uint64_t need = (bits + 7) / 8;
    if (size != need)
        throw CorruptError("indices: expected " + std::to_string(need) + " bytes for " +
                           std::to_string(bits) + " bits, got " + std::to_string(size));
    uint64_t acc = 0;
    int nacc = 0;
    size_t pos = 0;
    for (int64_t b = 0; b < plan.B; ++b) {
        const int k = plan.k[b];
        while (nacc < k) {
            acc = (acc << 8) | data[pos++];
            nacc += 8;
        }
        idx[b] = k ? (uint32_t)((acc >> (nacc - k)) & ((1ull << k) - 1)) : 0u;
        nacc -= k;
        acc &= (nacc ? ((1ull << nacc) - 1) : 0ull);
    }
    if (nacc && acc != 0) throw CorruptError("indices: non-zero padding bits (corrupt data)");
}

}  // namespace bbimg
