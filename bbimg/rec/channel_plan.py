"""Block plans that cost a few bits per channel instead of several bits per block.

Latents come as (channels, positions). Positions are visited in a seeded pseudo-random order
shared by encoder and decoder, and each channel is cut into ``nb`` equal runs of that order. A run
gathers positions from all over the image, so its KL concentrates near the channel's average and
``nb = KL_c / kappa`` blocks of 2^kappa candidates fit the channel's KL without per-block side
information. The file carries, per channel, ``nb`` on a quarter-octave log scale and the index bits
per block. Both fold into one ordinal *unit* per channel (:func:`plan_units`), range-coded either
adaptively or as corrections to a per-model table of typical units (``bbimg.rec.plan_prior``):
about 40-100 bytes per Kodak image (format 1.3; 1.0-1.2 files code symbols and exponents with one
adaptive model over 96 symbols, ~250 bytes).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import MAX_BLOCK_LEN, BlockPlan, CorruptDataError
from . import range_coder as rc
from .range_coder import AdaptiveModel, Decoder, Encoder

__all__ = ["DEFAULT_BLOCK_RATIO", "position_order", "blocks_per_channel", "channel_plan", "plan_from_channels",
           "encode_channel_plan", "decode_channel_plan", "unit_alphabet", "plan_units", "units_plan",
           "UnitPrediction", "write_units", "read_units", "GENERIC_INCREMENT", "RESIDUAL_WIDTH", "RESIDUAL_SYMBOLS",
           "SHAPE_STEP", "units_from_log", "log_of_units"]

_OCTAVE_STEPS = 4          # block counts are coded on a log scale: nb = round(2 ** (s / 4))
_NB_ALPHABET = 96          # up to 2**23.75 blocks per channel
DEFAULT_BLOCK_RATIO = 1.1  # blocks per channel = ratio * KL_c / kappa (docs/rec.md section 5)


def position_order(positions: int, seed: int) -> np.ndarray:
    """A seeded permutation of the latent positions, shared by encoder and decoder (integer-only).

    Blocks are runs of this order, so each block gathers positions from all over the image and
    their KL sums concentrate near the per-channel average: uniform blocks then fit kappa well,
    and the plan costs a few bits per channel instead of several bits per block."""
    x = np.arange(positions, dtype=np.uint64) + np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return np.argsort(x, kind="stable")


def blocks_per_channel(symbol: np.ndarray, positions: int) -> np.ndarray:
    """Blocks per channel from the coded symbols; at least enough that no block is longer than the
    engine allows (channels of more than 2^16 positions: images above 4096 x 4096)."""
    nb = np.round(2.0 ** (symbol.astype(np.float64) / _OCTAVE_STEPS)).astype(np.int64)
    return np.clip(nb, -(-positions // MAX_BLOCK_LEN), positions)


def channel_plan(kl: np.ndarray, kappa: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the block-count symbol and the index bits per block, from the channel's KL."""
    kl_c = kl.sum(axis=1)
    target = ratio * kl_c / kappa
    symbols = np.clip(np.round(_OCTAVE_STEPS * np.log2(np.maximum(target, 1.0))), 0, _NB_ALPHABET - 1)
    symbols = symbols.astype(np.int32)
    # Channels too poor for one full block get one block with just enough candidates (0 bits:
    # the decoder takes a fixed prior sample).
    exps = np.where(target < 1.0, np.clip(np.ceil(kl_c + 0.5), 0, kappa), kappa).astype(np.int32)
    exps = np.where(kl_c < 0.5, 0, exps).astype(np.int32)
    return symbols, exps


def plan_from_channels(symbols: np.ndarray, exps: np.ndarray, positions: int, kappa: int) -> BlockPlan:
    lengths, exponents = [], []
    for nb, k in zip(blocks_per_channel(symbols, positions), exps):
        base, extra = divmod(positions, int(nb))
        lengths.append(np.full(int(nb), base, np.int64) + (np.arange(int(nb)) < extra))
        exponents.append(np.full(int(nb), k, np.int64))
    return BlockPlan(np.concatenate(lengths), np.concatenate(exponents), kappa)


def encode_channel_plan(symbols: np.ndarray, exps: np.ndarray, kappa: int) -> bytes:
    return rc.encode_adaptive(np.concatenate([symbols, exps]), max(_NB_ALPHABET, kappa + 1))


def decode_channel_plan(data: bytes, channels: int, kappa: int) -> tuple[np.ndarray, np.ndarray]:
    both = rc.decode_adaptive(data, 2 * channels, max(_NB_ALPHABET, kappa + 1))
    symbols, exps = both[:channels], both[channels:]
    if (symbols >= _NB_ALPHABET).any() or (exps > kappa).any():
        raise CorruptDataError("block plan out of range")
    return symbols, exps


# ----------------------------------------------------------------------------------------------
# Format 1.3: one unit per channel. Units 0..kappa are channels of one block with that many index
# bits (symbol 0: the channel's KL is below one block); unit kappa + 1 + s is symbol s with full
# blocks of kappa bits. The unit grows with the channel's KL, so one ordinal model serves both.

#: Increment of the adaptive model over all units when no per-model table applies.
GENERIC_INCREMENT = 12
#: Corrections to a table's prediction in [-RESIDUAL_WIDTH, RESIDUAL_WIDTH]; others escape.
RESIDUAL_WIDTH = 10
#: Symbols of a correction model: the corrections and the escape.
RESIDUAL_SYMBOLS = 2 * RESIDUAL_WIDTH + 2
_PRIOR_IDS = 16     # stream's first symbol: 0 = generic, 1..15 = the id of the table used
_OFFSET_RANGE = 64  # the per-image offset of a table's predictions, in [-64, 64) units
#: Weights of a table's shape components: multiples of SHAPE_STEP in [-32, 32) steps.
SHAPE_STEP = 4
_SHAPE_CODES = 64


def unit_alphabet(kappa: int) -> int:
    return kappa + 1 + _NB_ALPHABET


def plan_units(symbols: np.ndarray, exps: np.ndarray, kappa: int) -> np.ndarray:
    """Per channel, the (symbol, exponent) pair as one unit (exponents below kappa only occur with
    symbol 0, as :func:`channel_plan` makes them)."""
    symbols, exps = np.asarray(symbols, np.int64), np.asarray(exps, np.int64)
    if ((exps < kappa) & (symbols != 0)).any():
        raise ValueError("a channel with several blocks must have kappa index bits per block")
    return np.where(exps < kappa, exps, kappa + 1 + symbols)


def units_plan(units: np.ndarray, kappa: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, exps) from units (inverse of :func:`plan_units`)."""
    units = np.asarray(units, np.int64)
    if units.size and (units.min() < 0 or units.max() >= unit_alphabet(kappa)):
        raise CorruptDataError("block plan out of range")
    small = units <= kappa
    return (np.where(small, 0, units - kappa - 1).astype(np.int32),
            np.where(small, units, kappa).astype(np.int32))


@functools.lru_cache(maxsize=None)
def _short_thresholds(kappa: int) -> np.ndarray:
    """theta_n (n = 1..kappa): a predicted log KL V (1/64 octave) of at least theta_n means a
    unit of at least n. A single short block has ceil(KL + 1/2) index bits: unit >= n for
    KL >= n - 3/2 (n >= 2), unit >= 1 for KL >= 1/2. theta_n = ceil(64 log2 x), settled with exact
    integers (2^V den^64 >= num^64 for x = num / den), so it is the same on every machine."""
    out = []
    for n in range(1, kappa + 1):
        num, den = (1, 2) if n == 1 else (2 * n - 3, 2)

        def at_least(v: int) -> bool:  # 2^(v / 64) >= num / den
            return 2**v * den**64 >= num**64 if v >= 0 else den**64 >= num**64 * 2**-v

        v = math.ceil(64 * math.log2(num / den))  # a first guess, corrected exactly
        while not at_least(v):
            v += 1
        while at_least(v - 1):
            v -= 1
        out.append(v)
    return np.array(out, np.int64)


def units_from_log(log_kl: np.ndarray, kappa: int, full_at: int) -> np.ndarray:
    """Units of channels whose KL is predicted as ``log_kl`` = 64 log2 KL (integers): full blocks
    from ``full_at`` (the log KL of one full block at the level's nominal block ratio) on, a
    quarter octave (16) per symbol; below, a single short block of ceil(KL + 1/2) bits."""
    log_kl = np.asarray(log_kl, np.int64)
    full = kappa + 1 + np.clip((log_kl - full_at + 8) // 16, 0, _NB_ALPHABET - 1)
    short = np.searchsorted(_short_thresholds(kappa), log_kl, side="right")
    return np.where(log_kl >= full_at - 8, full, short)


def log_of_units(units: np.ndarray, kappa: int, full_at: int) -> np.ndarray:
    """The log KL (1/64 octave, float) a unit stands for (the encoder's fits; never decoded)."""
    u = np.asarray(units, np.float64)
    short = 64 * np.log2(np.where(u == 0, 0.25, np.maximum(u - 1, 0.5)))
    return np.where(u > kappa, full_at + 16 * (u - kappa - 1), short)


class UnitPrediction:
    """A per-model table evaluated for one level and quality. ``log_kl``: the typical 64 log2 KL
    of every channel (the units follow from it by :func:`units_from_log`, so a per-image offset
    scales every channel's KL alike, short blocks included); ``full_at``: where full blocks start
    on that scale; ``residual_counts``: the initial counts of the two correction models
    (RESIDUAL_SYMBOLS counts for predicted units <= kappa, a single short block, then as many for
    full blocks); ``shapes``: optional (k, channels) components in 1/256 quarter octave (unit-norm
    vectors of how images differ beyond an offset), which each file weighs. ``prior_id`` (1..15)
    is written to the stream, so a decoder holding another table refuses the file."""

    def __init__(self, prior_id: int, log_kl, residual_counts, shapes=(), full_at: int = 0):
        if not 1 <= prior_id < _PRIOR_IDS:
            raise ValueError(f"prior id must be in 1..{_PRIOR_IDS - 1}")
        self.prior_id, self.full_at = int(prior_id), int(full_at)
        self.log_kl = np.asarray(log_kl, np.int64)
        self.residual_counts = [int(c) for c in residual_counts]
        if len(self.residual_counts) != 2 * RESIDUAL_SYMBOLS or min(self.residual_counts) < 1:
            raise ValueError("residual counts must be 2 * RESIDUAL_SYMBOLS positive integers")
        self.shapes = np.asarray(shapes, np.int64).reshape(-1, self.log_kl.size)

    def predicted(self, offset: int, kappa: int, weights=()) -> np.ndarray:
        """Predicted units for a per-image ``offset`` (quarter octaves) and shape ``weights``
        (integer arithmetic only: weights * shapes in 1/256, floored to 1/16 quarter octave)."""
        log_kl = self.log_kl + 16 * offset
        if len(weights):
            log_kl = log_kl + (np.asarray(weights, np.int64) @ self.shapes) // 16
        return units_from_log(log_kl, kappa, self.full_at)

    def centre(self, units: np.ndarray, kappa: int) -> int:
        """The encoder's first guess of the offset: the median log KL difference."""
        return int(np.round(np.median(log_of_units(units, kappa, self.full_at) - self.log_kl) / 16))

    def shape_weights(self, units: np.ndarray, offset: int, kappa: int) -> list[int]:
        """The encoder's weights: least squares of the log KL residual on the shapes, rounded to
        multiples of SHAPE_STEP in range."""
        if not len(self.shapes):
            return []
        residual = (log_of_units(units, kappa, self.full_at) - self.log_kl) / 16 - offset
        w = (self.shapes / 256.0) @ residual / np.maximum((self.shapes / 256.0) ** 2, 1e-12).sum(axis=1)
        codes = np.clip(np.rint(w / SHAPE_STEP), -_SHAPE_CODES // 2, _SHAPE_CODES // 2 - 1)
        return [int(c) * SHAPE_STEP for c in codes]

    def models(self) -> tuple[AdaptiveModel, AdaptiveModel]:
        """Fresh correction models: (short-block predictions, full-block predictions)."""
        n = RESIDUAL_SYMBOLS
        return (AdaptiveModel(n, 16, initial=self.residual_counts[:n]),
                AdaptiveModel(n, 16, initial=self.residual_counts[n:]))


def _write_generic(enc: Encoder, units: np.ndarray, kappa: int) -> None:
    model = AdaptiveModel(unit_alphabet(kappa), GENERIC_INCREMENT)
    for u in units:
        model.encode(enc, int(u))


def _write_predicted(enc: Encoder, units: np.ndarray, kappa: int, pred: UnitPrediction, offset: int,
                     weights: list[int]) -> None:
    enc.uniform(offset + _OFFSET_RANGE, 2 * _OFFSET_RANGE)
    for w in weights:
        enc.uniform(w // SHAPE_STEP + _SHAPE_CODES // 2, _SHAPE_CODES)
    models = pred.models()
    escape = RESIDUAL_SYMBOLS - 1
    for u, p in zip(units, pred.predicted(offset, kappa, weights)):
        model, d = models[int(p > kappa)], int(u) - int(p)
        if -RESIDUAL_WIDTH <= d <= RESIDUAL_WIDTH:
            model.encode(enc, d + RESIDUAL_WIDTH)
        else:
            model.encode(enc, escape)
            enc.uniform(int(u), unit_alphabet(kappa))


def write_units(units: np.ndarray, kappa: int, prediction: UnitPrediction | None = None,
                head: tuple[tuple[int, int], ...] = ()) -> bytes:
    """One range-coded stream: the ``head`` values (value, n) uniformly, then the units, as
    corrections to ``prediction`` when that is shorter than the generic adaptive code. The stream
    ends as soon as its value is determined (bytes past its end read as zeros)."""
    units = np.asarray(units, np.int64)
    if units.size and (units.min() < 0 or units.max() >= unit_alphabet(kappa)):
        raise ValueError("units out of range")

    def stream(offset: int | None) -> bytes:
        enc = Encoder()
        for value, n in head:
            enc.uniform(int(value), int(n))
        if offset is None:
            enc.uniform(0, _PRIOR_IDS)
            _write_generic(enc, units, kappa)
        else:
            enc.uniform(prediction.prior_id, _PRIOR_IDS)
            _write_predicted(enc, units, kappa, prediction, offset, prediction.shape_weights(units, offset, kappa))
        return enc.finish(shortest=True)

    best = stream(None)
    if prediction is not None and prediction.log_kl.shape == units.shape and units.size:
        centre = prediction.centre(units, kappa)
        for offset in range(centre - 2, centre + 3):
            if -_OFFSET_RANGE <= offset < _OFFSET_RANGE:
                data = stream(offset)
                if len(data) < len(best):
                    best = data
    return best


def read_units(data: bytes, channels: int, kappa: int, prediction: UnitPrediction | None = None,
               head: tuple[int, ...] = ()) -> tuple[list[int], np.ndarray]:
    """Inverse of :func:`write_units`: (head values, units). ``head`` gives each value's n.
    Raises CorruptDataError for malformed data or a table the decoder does not hold."""
    dec = Decoder(data, zeros_after_end=True)
    values = [dec.uniform(int(n)) for n in head]
    prior_id = dec.uniform(_PRIOR_IDS)
    alphabet = unit_alphabet(kappa)
    units = np.empty(channels, np.int64)
    if prior_id == 0:
        model = AdaptiveModel(alphabet, GENERIC_INCREMENT)
        for c in range(channels):
            units[c] = model.decode(dec)
    else:
        if prediction is None or prediction.prior_id != prior_id or prediction.log_kl.shape != (channels,):
            raise CorruptDataError(f"block plan coded with plan prior {prior_id}, which this decoder does not hold "
                                   "for the file's model")
        offset = dec.uniform(2 * _OFFSET_RANGE) - _OFFSET_RANGE
        weights = [(dec.uniform(_SHAPE_CODES) - _SHAPE_CODES // 2) * SHAPE_STEP for _ in range(len(prediction.shapes))]
        models = prediction.models()
        escape = RESIDUAL_SYMBOLS - 1
        for c, p in enumerate(prediction.predicted(offset, kappa, weights)):
            s = models[int(p > kappa)].decode(dec)
            if s == escape:
                units[c] = dec.uniform(alphabet)
            else:
                units[c] = int(p) + s - RESIDUAL_WIDTH
                if not 0 <= units[c] < alphabet:
                    raise CorruptDataError("block plan out of range")
    dec.finish("block plan")
    return values, units
