"""Prior skip as format 1.1 codes it (rank cut, YSKP symbols): still written on request and read
in old files. The 1.3 derived thresholds are tested in test_side_info.py."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbimg import codec
from bbimg import format as bbi
from bbimg.latent_coder import Y_LEVEL, Gaussian, LatentCoder
from bbimg.rec.channel_plan import position_order
from bbimg.rec import prior_skip
from bbimg.rec.prior_skip import SKIP_STEPS, decode_skip, encode_skip, skip_mask, skip_symbols
from rec_problems import level_with_prior_skip


@given(st.lists(st.integers(0, SKIP_STEPS), min_size=1, max_size=400))
@settings(max_examples=80, deadline=None)
def test_skip_symbols_round_trip(symbols):
    symbols = np.array(symbols, np.int32)
    assert np.array_equal(decode_skip(encode_skip(symbols), symbols.size), symbols)


@given(st.integers(1, 12), st.integers(1, 2000), st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_mask_skips_the_announced_share_of_smallest_prior_scales(channels, positions, seed):
    rng = np.random.default_rng(seed)
    sd_p = np.exp(rng.normal(0, 1, (channels, positions))).astype(np.float32)
    symbols = rng.integers(0, SKIP_STEPS + 1, channels).astype(np.int32)
    mask = skip_mask(sd_p, symbols)
    expected = np.floor(symbols * positions / SKIP_STEPS + 0.5).astype(int)
    assert np.array_equal(mask.sum(1), expected)
    for c in range(channels):
        if 0 < expected[c] < positions:
            assert sd_p[c][mask[c]].max() <= sd_p[c][~mask[c]].min()


def test_mask_is_robust_to_float_noise():
    """Relative noise of 1e-5 on sigma_p never changes how many dims a channel skips, and swaps
    only dims whose sigma_p were within the noise of each other."""
    rng = np.random.default_rng(1)
    sd_p = np.exp(rng.normal(0, 1, (40, 3000))).astype(np.float32)
    symbols = rng.integers(0, SKIP_STEPS + 1, 40).astype(np.int32)
    noisy = (sd_p * (1 + 1e-5 * rng.standard_normal(sd_p.shape))).astype(np.float32)
    a, b = skip_mask(sd_p, symbols), skip_mask(noisy, symbols)
    assert np.array_equal(a.sum(1), b.sum(1))
    assert (a != b).sum() <= 0.001 * a.size


def test_symbols_follow_the_scale_ratio():
    sd_q = np.ones((3, 1000), np.float32)
    sd_p = np.ones((3, 1000), np.float32)
    sd_p[0] = 5.0                     # the posterior is far narrower everywhere: skip nothing
    sd_p[1, :250] = 1.01              # a quarter of the dims barely sharpened: skip those
    sd_p[1, 250:] = 3.0
    sd_p[2] = 1.0                     # the prior explains the whole channel: skip all of it
    assert list(skip_symbols(sd_q, sd_p, 1.25)) == [0, SKIP_STEPS // 4, SKIP_STEPS]
    assert list(skip_symbols(sd_q, sd_p, 0.0)) == [0, 0, 0]


def _y_coder(skip_ratio):
    return LatentCoder(Y_LEVEL, 77, 16, block_ratio=1.1, skip_ratio=skip_ratio, legacy=True)


@pytest.fixture
def legacy_codec(monkeypatch):
    """codec.encode writes format 1.1 files (xPLN, YSKP) while this fixture is active."""
    monkeypatch.setattr(codec, "LatentCoder", functools.partial(LatentCoder, legacy=True))


def test_a_coder_asked_for_no_sample_writes_the_same_sections():
    """The encoder does not need y's decoded sample: without it the sections are the same bytes."""
    rng = np.random.default_rng(4)
    q, p = level_with_prior_skip(rng)
    with_sample = _y_coder(1.25).compress(Gaussian(*(a.copy() for a in q)), Gaussian(*(a.copy() for a in p)))
    without = _y_coder(1.25).compress(Gaussian(*q), Gaussian(*p), want_sample=False)
    assert without.sample is None and with_sample.sample is not None
    assert [(s.tag, bytes(s.payload)) for s in without.sections] == [(s.tag, bytes(s.payload)) for s in with_sample.sections]


def test_skipped_dims_decode_as_the_prior_mean_on_both_sides():
    """The encoder's reconstruction equals the decoder's, and every skipped dim is mu_p exactly."""
    rng = np.random.default_rng(3)
    q, p = level_with_prior_skip(rng)
    coded = _y_coder(1.25).compress(Gaussian(*q), Gaussian(*p))
    container = bbi.Container(bbi.Header(width=1, height=1, model_name="m", weights_hash=bytes(16), quality_t=0.5,
                                         quality_q=50, seed=0, kappa=16, temperature=0.0), tuple(coded.sections))
    decoded = _y_coder(None).decompress(Gaussian(*p), container)
    assert np.array_equal(decoded, coded.sample)
    # Recompute the mask independently of the coder: skip symbols decoded, in the level's position order.
    symbols = decode_skip(container.section("YSKP"), 6)
    order = position_order(12 * 10, Y_LEVEL.seed(77))
    mu_p, sd_p = p
    sd_ordered = sd_p.reshape(6, -1)[:, order]
    mask = np.empty((6, order.size), bool)
    mask[:, order] = skip_mask(sd_ordered, symbols).reshape(6, -1)
    mask = mask.reshape(mu_p.shape)
    assert 0 < mask.sum() < mask.size
    assert np.array_equal(decoded[mask], mu_p[mask])
    assert not np.isclose(decoded[~mask], mu_p[~mask]).all()
    # Skipping costs nothing: the same level coded without it spends more index bits.
    plain = _y_coder(0.0).compress(Gaussian(*q), Gaussian(*p))
    assert coded.kl_bits < plain.kl_bits and coded.index_bits <= plain.index_bits


def test_a_released_gaussian_holds_nothing():
    """The coder frees the caller's arrays: hand-off is explicit, and a second use is an error."""
    rng = np.random.default_rng(4)
    q, p = level_with_prior_skip(rng)
    posterior, prior = Gaussian(*q), Gaussian(*p)
    _y_coder(1.25).compress(posterior, prior)
    assert posterior.mean is None and prior.scale is None
    with pytest.raises(RuntimeError):
        posterior.release()


def test_files_without_skip_symbols_decode_as_format_1_0(tiny_model, photo, legacy_codec):
    """A 1.0 file has no YSKP: it skips nothing, which is what skip_ratio=0 writes as all-zero symbols."""
    data = codec.encode(photo, 60, model=tiny_model, skip_ratio=0.0)
    assert "YSKP" in bbi.read(data).sections[-1].tag
    c = bbi.read(data)
    old = bbi.write(bbi.Container(c.header, tuple(s for s in c.sections if s.tag != "YSKP")))
    assert np.array_equal(np.asarray(codec.decode(old)), np.asarray(codec.decode(data)))


def test_corrupt_skip_symbols_are_a_bbi_error(tiny_model, photo, legacy_codec):
    data = codec.encode(photo, 60, model=tiny_model)
    c = bbi.read(data)
    bad = tuple(bbi.Section("YSKP", b"\xff" * 3) if s.tag == "YSKP" else s for s in c.sections)
    with pytest.raises(bbi.BbiError, match="corrupt"):
        codec.decode(bbi.write(bbi.Container(c.header, bad)))


@given(st.integers(0, 2**32), st.integers(1, 6), st.integers(2, 300))
@settings(max_examples=30, deadline=None)
def test_thresholds_reuse_and_medians_give_the_same_bits(seed, channels, positions):
    """The encoder's shortcuts change no bit: log_thresholds keeps an earlier call's threshold
    only where a channel's KL is the same (and sorts float32 scales before the log, which must
    equal sorting the logs), and precomputed channel medians give the skip symbols and code the
    rule's own medians give."""
    rng = np.random.default_rng(seed)
    sd_p = np.exp(rng.normal(0, 1.5, (channels, positions))).astype(np.float32)
    sd_p[0, : positions // 3] = sd_p[0, 0]  # ties
    sd_q = np.exp(rng.normal(0, 0.3, (channels, positions))).astype(np.float32)
    kl = rng.uniform(0, 3 * positions, channels)
    kl2 = np.where(rng.random(channels) < 0.5, kl, rng.uniform(0, 3 * positions, channels))
    fresh = prior_skip.log_thresholds(sd_p, kl2)
    reused = prior_skip.log_thresholds(sd_p, kl2, (kl, prior_skip.log_thresholds(sd_p, kl)))
    assert np.array_equal(fresh.view(np.int64), reused.view(np.int64))
    for c in range(channels):  # the sort-then-log path against the rule written out
        if not kl2[c] > 0:
            continue
        a = np.sort(np.log(sd_p[c].astype(np.float64)))[::-1]
        k = np.arange(1, positions + 1)
        roots = (np.cumsum(a) - kl2[c] * np.log(2.0)) / k
        assert fresh[c] == roots[np.argmax(roots >= np.append(a[1:], -np.inf))]
    medians = prior_skip.channel_medians(sd_q)
    assert np.array_equal(prior_skip.skip_symbols(sd_q, sd_p, 1.25, medians), prior_skip.skip_symbols(sd_q, sd_p, 1.25))
    assert prior_skip.choose_skip_code(sd_q, fresh, 1.25, medians) == prior_skip.choose_skip_code(sd_q, fresh, 1.25)
