import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbimg import rec
from bbimg.rec import MAX_BLOCK_LEN, CorruptDataError
from bbimg.rec import reference as R
from bbimg.rec.channel_plan import (blocks_per_channel, channel_plan, decode_channel_plan, encode_channel_plan,
                                    plan_from_channels, position_order)


@given(st.integers(1, 5000), st.integers(0, 2**64 - 1))
@settings(max_examples=60, deadline=None)
def test_position_order_is_a_seeded_permutation(n, seed):
    order = position_order(n, seed)
    assert np.array_equal(np.sort(order), np.arange(n))
    assert np.array_equal(order, position_order(n, seed))


@given(st.integers(1, 40), st.integers(1, 3000), st.integers(8, 24), st.floats(0.1, 10), st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_channel_plan_round_trips_and_covers_every_dim(channels, positions, kappa, ratio, seed):
    rng = np.random.default_rng(seed)
    kl = rng.exponential(rng.uniform(0, 3), size=(channels, positions)) * (rng.random((channels, 1)) < 0.8)
    symbols, exps = channel_plan(kl, kappa, ratio)
    plan = plan_from_channels(symbols, exps, positions, kappa)
    assert plan.n_dims == channels * positions
    assert (plan.lengths > 0).all() and (plan.exponents <= kappa).all()
    data = encode_channel_plan(symbols, exps, kappa)
    s2, e2 = decode_channel_plan(data, channels, kappa)
    assert np.array_equal(s2, symbols) and np.array_equal(e2, exps)
    assert plan_from_channels(s2, e2, positions, kappa) == plan


def test_blocks_follow_channel_kl():
    kl = np.zeros((3, 1000))
    kl[0] = 0.16       # 160 bits -> ~10 blocks of 16
    kl[1] = 1.6        # 1600 bits -> ~100 blocks
    kl[2] = 0.0001     # nothing to send: one block, zero index bits
    symbols, exps = channel_plan(kl, 16, 1.0)
    nb = blocks_per_channel(symbols, 1000)
    assert 8 <= nb[0] <= 12 and 85 <= nb[1] <= 115 and nb[2] == 1
    assert exps[2] == 0 and exps[0] == exps[1] == 16


def test_index_bits_track_kl_and_samples_decode_exactly():
    rng = np.random.default_rng(0)
    channels, positions = 12, 400
    mu_p, sd_p = rng.normal(size=channels * positions).astype(np.float32), np.ones(channels * positions, np.float32)
    sd_q = np.exp(rng.uniform(-2.0, 0.0, size=sd_p.size)).astype(np.float32)
    mu_q = (mu_p + rng.normal(size=sd_p.size) * 0.5).astype(np.float32)
    kl = rec.kl_bits(mu_q, sd_q, mu_p, sd_p)
    symbols, exps = channel_plan(kl.reshape(channels, positions), 12, 1.0)
    plan = plan_from_channels(symbols, exps, positions, 12)
    assert 0.85 < plan.index_bits / kl.sum() < 1.15
    idx = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, 3)
    # the engine's sample is the candidate the NumPy reference regenerates from the indices, bit for bit
    z = rec.decode(mu_p, sd_p, plan, 3, rec.decode_indices(rec.encode_indices(idx, plan), plan))
    assert np.array_equal(z.view(np.uint32), R.decode(mu_p, sd_p, plan, 3, idx).view(np.uint32))


def test_corrupt_plan_is_rejected():
    symbols, exps = channel_plan(np.ones((4, 100)), 16, 1.0)
    data = encode_channel_plan(symbols, exps, 16)
    with pytest.raises(ValueError):
        decode_channel_plan(data[:-1] + bytes([data[-1] ^ 0xFF]) + b"\x00" * 3, 4, 16)


@given(st.binary(max_size=80), st.integers(1, 300), st.integers(1, 5000), st.integers(8, 24))
@settings(max_examples=150, deadline=None)
def test_garbage_plan_bytes_raise_or_give_a_valid_plan(data, channels, positions, kappa):
    try:
        symbols, exps = decode_channel_plan(data, channels, kappa)
    except CorruptDataError:
        return
    plan = plan_from_channels(symbols, exps, positions, kappa)
    assert plan.n_dims == channels * positions
    assert (plan.lengths >= 1).all() and (plan.lengths <= MAX_BLOCK_LEN).all() and (plan.exponents <= kappa).all()


def test_channels_longer_than_a_block_split_into_enough_blocks():
    # An empty channel of 65,537 positions (an image above 4096 x 4096) must still give blocks the
    # engine accepts: one block would exceed its 2^16 length cap.
    positions = 65537
    plan = plan_from_channels(np.zeros(1, np.int32), np.zeros(1, np.int32), positions, 16)
    assert plan.n_dims == positions and plan.lengths.max() <= 1 << 16
    assert rec.decode_indices(b"", plan).size == plan.n_blocks
