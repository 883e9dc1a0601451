// Classic 32-bit range coder with byte-wise carry propagation (the "cache + run of 0xFF"
// scheme of Subbotin/LZMA), for multi-symbol alphabets under static or adaptive frequencies.
//
// Stream format: the bytes of the code value, most significant first, without the leading
// byte that is always 0 for this scheme. An encoder that issued S normalisation shifts writes
// exactly S + 4 bytes; the decoder reads 4 bytes at start and one per shift, so a valid stream
// is consumed exactly. Decoders never read past the end (missing bytes read as 0 and are
// counted), and finish() reports whether the input was consumed exactly, which callers turn
// into a CorruptError.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace bbimg {

// Thrown for malformed compressed data. Bindings map it to bbimg._core.CorruptDataError.
struct CorruptError : std::runtime_error {
    explicit CorruptError(const std::string& what) : std::runtime_error(what) {}
};

// Thrown for invalid arguments. Bindings map it to bbimg._core.RecError (a ValueError).
struct ArgError : std::invalid_argument {
    explicit ArgError(const std::string& what) : std::invalid_argument(what) {}
};

constexpr uint32_t RC_TOP = 1u << 24;
constexpr uint32_t RC_MAX_TOTAL = 1u << 16;  // frequency totals must not exceed this

class RangeEncoder {
   public:
    // REQUIRES: 0 < size, start + size <= total <= RC_MAX_TOTAL (checked by callers).
    void encode(uint32_t start, uint32_t size, uint32_t total) {
        const uint32_t r = range_ / total;
        low_ += (uint64_t)r * start;
        range_ = r * size;
        while (range_ < RC_TOP) {
            range_ <<= 8;
            shift_low();
        }
    }
    // REQUIRES: nbits <= 16, value < 2^nbits.
    void encode_bits(uint32_t value, int nbits) {
        if (nbits == 0) return;
        encode(value, 1, 1u << nbits);
    }
    std::vector<uint8_t> finish() {
        for (int i = 0; i < 5; ++i) shift_low();
        return std::move(out_);
    }

   private:
    void emit(uint8_t b) {
        if (skip_first_) {
            skip_first_ = false;  // always 0 for this scheme (the code value is < 1)
            return;
        }
        out_.push_back(b);
    }
    void shift_low() {
        if ((uint32_t)low_ < 0xFF000000u || (low_ >> 32) != 0) {
            const uint8_t carry = (uint8_t)(low_ >> 32);
            uint8_t temp = cache_;
            do {
                emit((uint8_t)(temp + carry));
                temp = 0xFF;
            } while (--cache_size_ != 0);
            cache_ = (uint8_t)(low_ >> 24);
        }
        ++cache_size_;
        low_ = (low_ & 0x00FFFFFFu) << 8;
    }
    uint64_t low_ = 0;
    uint32_t range_ = 0xFFFFFFFFu;
    uint8_t cache_ = 0;
    uint64_t cache_size_ = 1;
    bool skip_first_ = true;
    std::vector<uint8_t> out_;
};

class RangeDecoder {
   public:
    RangeDecoder(const uint8_t* data, size_t size) : data_(data), size_(size) {
        for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | next_byte();
    }
    // Returns the target frequency in [0, total); throws CorruptError when the code value lies
    // outside every symbol's interval (impossible for a valid stream).
    uint32_t get_freq(uint32_t total) {
        r_ = range_ / total;
        const uint32_t v = code_ / r_;
        if (v >= total) throw CorruptError("range decoder: code value out of range (corrupt data)");
        return v;
    }
    // REQUIRES: get_freq(total) was just called and start <= target < start + size.
    void update(uint32_t start, uint32_t size) {
        code_ -= r_ * start;
        range_ = r_ * size;
        while (range_ < RC_TOP) {
            code_ = (code_ << 8) | next_byte();
            range_ <<= 8;
        }
    }
    uint32_t decode_bits(int nbits) {
        if (nbits == 0) return 0;
        const uint32_t v = get_freq(1u << nbits);
        update(v, 1);
        return v;
    }
    // True when exactly all input bytes were consumed and none was missing.
    bool finished_exactly() const { return missing_ == 0 && pos_ == size_; }
    void check_finished(const char* what) const {
        if (missing_ != 0)
            throw CorruptError(std::string(what) + ": truncated data (" + std::to_string(missing_) +
                               " byte(s) missing)");
        if (pos_ != size_)
            throw CorruptError(std::string(what) + ": " + std::to_string(size_ - pos_) +
                               " trailing byte(s) not consumed");
    }
    size_t missing() const { return missing_; }

   private:
    uint32_t next_byte() {
        if (pos_ < size_) return data_[pos_++];
        ++missing_;
        return 0;
    }
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    size_t missing_ = 0;
    uint32_t code_ = 0;
    uint32_t range_ = 0xFFFFFFFFu;
    uint32_t r_ = 1;
};

// Adaptive frequency model: counts start at 1, grow by `increment` per coded symbol and are
// halved (rounding up, so never 0) when the total would exceed `limit`.
class AdaptiveModel {
   public:
    // REQUIRES: 1 <= n <= 4096, 1 <= increment, n + increment <= limit <= RC_MAX_TOTAL.
    AdaptiveModel(int n, uint32_t increment, uint32_t limit)
        : freq_(n, 1), total_(n), inc_(increment), limit_(limit) {}
    int size() const { return (int)freq_.size(); }
    void encode(RangeEncoder& enc, int s) {
        uint32_t start = 0;
        for (int i = 0; i < s; ++i) start += freq_[i];
        enc.encode(start, freq_[s], total_);
        update(s);
    }
    int decode(RangeDecoder& dec) {
        const uint32_t target = dec.get_freq(total_);
        uint32_t start = 0;
        int s = 0;
        const int n = (int)freq_.size();
        while (s < n - 1 && start + freq_[s] <= target) start += freq_[s++];
        dec.update(start, freq_[s]);
        update(s);
        return s;
    }

   private:
    void update(int s) {
        freq_[s] += inc_;
        total_ += inc_;
        if (total_ > limit_) {
            total_ = 0;
            for (auto& f : freq_) {
                f = (f + 1) >> 1;
                total_ += f;
            }
        }
    }
    std::vector<uint32_t> freq_;
    uint32_t total_;
    uint32_t inc_;
    uint32_t limit_;
};

}  // namespace bbimg
