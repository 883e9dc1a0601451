"""Format 1.3 side information: block-plan units (ZPL2 / YPL2), per-model unit tables, and the
skip mask derived from the plan and the prior scales."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbimg import codec
from bbimg import format as bbi
from bbimg.latent_coder import Y_LEVEL, Z_LEVEL, Gaussian, LatentCoder, read_level_plan
from bbimg.rec import CorruptDataError, plan_prior, prior_skip
from bbimg.rec import range_coder as rc
from bbimg.rec.channel_plan import (RESIDUAL_SYMBOLS, RESIDUAL_WIDTH, UnitPrediction, channel_plan, log_of_units,
                                    plan_units, read_units, unit_alphabet, units_from_log, units_plan, write_units)
from rec_problems import level_with_prior_skip

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def unit_case(draw):
    kappa = draw(st.integers(8, 24))
    channels = draw(st.integers(1, 300))
    alphabet = unit_alphabet(kappa)
    seed = draw(st.integers(0, 2**32))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "clustered", "edges"]))
    if kind == "uniform":
        units = rng.integers(0, alphabet, channels)
    elif kind == "clustered":
        units = np.clip(rng.integers(0, alphabet) + np.round(rng.normal(0, 3, channels)), 0, alphabet - 1)
    else:
        units = rng.choice([0, alphabet - 1, kappa, kappa + 1], channels)
    prediction = None
    if draw(st.booleans()):  # a table whose predictions are near, far or unrelated
        spread = draw(st.sampled_from([0, 2, 40]))
        log_kl = 16 * units + rng.integers(-16 * spread - 8, 16 * spread + 9, channels)
        counts = rng.integers(1, 60, 2 * RESIDUAL_SYMBOLS)
        shapes = rng.integers(-256, 257, (draw(st.integers(0, 3)), channels))
        prediction = UnitPrediction(draw(st.integers(1, 15)), log_kl, counts, shapes, draw(st.integers(0, 400)))
    head = tuple((int(rng.integers(0, n)), n) for n in draw(st.lists(st.integers(1, 300), max_size=3)))
    return units.astype(np.int64), kappa, prediction, head


@SETTINGS
@given(unit_case())
def test_units_round_trip(case):
    units, kappa, prediction, head = case
    data = write_units(units, kappa, prediction, head)
    values, out = read_units(data, units.size, kappa, prediction, tuple(n for _, n in head))
    assert values == [v for v, _ in head] and np.array_equal(out, units)


@SETTINGS
@given(unit_case())
def test_streams_end_early_and_refuse_unread_bytes(case):
    """A stream stops once its value is determined (the decoder reads zeros past the end), so
    trailing zero bytes are never written; bytes the decoder cannot consume are an error."""
    units, kappa, prediction, head = case
    data = write_units(units, kappa, prediction, head)
    assert not data.endswith(b"\0")
    sizes = tuple(n for _, n in head)
    symbols = units.size + len(head) + 2
    with pytest.raises(CorruptDataError):  # a symbol consumes at most 3 bytes, the start 4
        read_units(data + b"\x5a" * (4 + 3 * symbols + 1), units.size, kappa, prediction, sizes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60), st.integers(1, 200), st.integers(8, 24), st.booleans())
def test_garbage_gives_an_error_or_units_in_range(data, channels, kappa, with_table):
    prediction = UnitPrediction(3, np.arange(channels) * 16, [5] * (2 * RESIDUAL_SYMBOLS)) if with_table else None
    try:
        _, units = read_units(data, channels, kappa, prediction, (prior_skip.SKIP_CODES, prior_skip.RATIO_CODES))
    except CorruptDataError:
        return
    assert units.shape == (channels,) and units.min() >= 0 and units.max() < unit_alphabet(kappa)
    symbols, exps = units_plan(units, kappa)
    assert (exps <= kappa).all() and ((symbols == 0) | (exps == kappa)).all()


def test_a_plan_coded_with_a_table_needs_that_table():
    rng = np.random.default_rng(0)
    units = rng.integers(20, 40, 50)
    exact = np.round(log_of_units(units, 16, 100)).astype(np.int64)
    table = UnitPrediction(5, exact, 2 * ([1] * RESIDUAL_WIDTH + [200] + [1] * (RESIDUAL_WIDTH + 1)), full_at=100)
    assert np.array_equal(table.predicted(0, 16), units)
    data = write_units(units, 16, table)
    assert len(data) < len(write_units(units, 16)) / 3  # exact predictions: a few bytes
    other = UnitPrediction(6, exact, table.residual_counts, full_at=100)
    for decoder_table in (None, other, UnitPrediction(5, exact[:-1], table.residual_counts, full_at=100)):
        with pytest.raises(CorruptDataError, match="plan prior 5"):
            read_units(data, units.size, 16, decoder_table)


@given(st.integers(8, 24), st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0.1, 10))
@settings(max_examples=60, deadline=None)
def test_units_hold_exactly_the_plan(kappa, kls, ratio):
    symbols, exps = channel_plan(np.array(kls)[:, None], kappa, ratio)
    units = plan_units(symbols, exps, kappa)
    assert units.max() < unit_alphabet(kappa)
    s2, e2 = units_plan(units, kappa)
    assert np.array_equal(s2, symbols) and np.array_equal(e2, exps)
    assert np.all(np.diff(units[np.argsort(kls, kind="stable")]) >= 0)  # units grow with the KL


@given(st.integers(8, 24), st.integers(0, 600), st.lists(st.integers(-2000, 3000), min_size=1, max_size=100))
@settings(max_examples=60, deadline=None)
def test_log_scale_units(kappa, full_at, log_kl):
    """Predicted units grow with the predicted KL, a quarter octave per unit from ``full_at`` on;
    below it the single short block of channel_plan's rule; and units map back to the log KL
    they stand for (exactly for full blocks)."""
    log_kl = np.sort(np.array(log_kl))
    units = units_from_log(log_kl, kappa, full_at)
    assert units.min() >= 0 and units.max() < unit_alphabet(kappa) and np.all(np.diff(units) >= 0)
    short = log_kl < full_at - 8
    kl = 2.0 ** (log_kl[short] / 64)
    expected = np.where(kl < 0.5, 0, np.clip(np.ceil(kl + 0.5), 0, kappa))
    near = np.abs(kl - np.round(kl + 0.5) + 0.5) < 0.02  # within rounding of a threshold
    assert np.array_equal(units[short][~near], expected[~near])
    full = units > kappa
    back = log_of_units(units[full], kappa, full_at)
    assert np.array_equal(units_from_log(np.round(back).astype(np.int64), kappa, full_at), units[full])


def test_the_python_coder_writes_the_cores_streams():
    """Finished in full, the Python coder's stream is the C++ coder's; finished shortest, it is that
    stream cut after its last needed byte (3 bytes shorter on average) and decodes the same."""
    rng = np.random.default_rng(1)
    for alphabet, inc in ((113, 12), (22, 16), (2, 1)):
        for n in (0, 1, 7, 300):
            symbols = rng.integers(0, alphabet, n)
            streams = []
            for shortest in (False, True):
                enc, model = rc.Encoder(), rc.AdaptiveModel(alphabet, inc)
                for s in symbols:
                    model.encode(enc, int(s))
                streams.append(enc.finish(shortest=shortest))
            assert streams[0] == rc.encode_adaptive(symbols.astype(np.int32), alphabet, increment=inc)
            assert len(streams[1]) <= len(streams[0]) - 3
            dec, model = rc.Decoder(streams[1], zeros_after_end=True), rc.AdaptiveModel(alphabet, inc)
            assert [model.decode(dec) for _ in symbols] == list(symbols)
            dec.finish()


# --- derived skip mask -----------------------------------------------------------------------

def test_thresholds_solve_their_equation():
    rng = np.random.default_rng(2)
    sd_p = np.exp(rng.normal(0, 1, (5, 700))).astype(np.float32)
    kl = np.array([0.0, 0.3, 40.0, 900.0, 1e5])
    thr = prior_skip.log_thresholds(sd_p, kl)
    assert thr[0] == np.inf
    for c in range(1, 5):
        held = np.maximum(0, np.log(sd_p[c].astype(np.float64)) - thr[c]).sum() / np.log(2)
        assert held == pytest.approx(kl[c], rel=1e-9)
    assert np.all(np.diff(thr[1:]) < 0)  # more KL: a smaller posterior scale


@given(st.integers(8, 24), st.integers(0, 95), st.integers(1, 24), st.floats(0.1, 10))
@settings(max_examples=80, deadline=None)
def test_kl_estimates_recover_the_planned_kl(kappa, symbol, exp, ratio):
    """The estimate inverts channel_plan: within a quarter octave for full blocks, within a bit for
    a single short block."""
    code = prior_skip.ratio_code(ratio)
    coded_ratio = 2 ** ((code - prior_skip.RATIO_CODES // 2) / 16)
    kl_full = kappa * 2 ** (symbol / 4) / coded_ratio
    s, e = channel_plan(np.array([[kl_full]]), kappa, coded_ratio)
    est = prior_skip.kl_estimates(s, e, kappa, code)[0]
    if e[0] < kappa:  # a large ratio leaves less than one block: a single short block
        assert abs(est - kl_full) <= 1.0
    else:
        assert abs(np.log2(est / kl_full)) <= 0.13
    exp = min(exp, kappa - 1)
    small = np.array([exp - 1.0]) if exp > 1 else np.array([0.2])
    s, e = channel_plan(small[:, None], kappa, 0.5)  # below one block: a single short one
    if e[0] > 0:
        assert abs(prior_skip.kl_estimates(s, e, kappa, code)[0] - small[0]) <= 1.0
    else:
        assert prior_skip.kl_estimates(s, e, kappa, code)[0] == 0


def _container(sections):
    header = bbi.Header(width=1, height=1, model_name="m", weights_hash=bytes(16), quality_t=0.5, quality_q=50,
                        seed=0, kappa=16, temperature=0.0)
    return bbi.Container(header, tuple(sections))


@pytest.mark.parametrize("skip_ratio", [1.25, 0.0, None])
def test_level_round_trip_and_skipped_dims_are_the_prior_mean(skip_ratio):
    rng = np.random.default_rng(3)
    q, p = level_with_prior_skip(rng, channels=8, h=16, w=12)
    coded = LatentCoder(Y_LEVEL, 77, 16, skip_ratio=skip_ratio).compress(Gaussian(*q), Gaussian(*p))
    assert [s.tag for s in coded.sections] == ["YPL2", "YIDX"]
    decoded = LatentCoder(Y_LEVEL, 77, 16).decompress(Gaussian(*p), _container(coded.sections))
    assert np.array_equal(decoded, coded.sample)
    skipped = decoded == p[0]
    if skip_ratio:
        assert 0 < skipped.sum() < skipped.size
        # The skipped dims are those of the smallest prior scales of their channel (a threshold).
        sd = p[1].reshape(8, -1)
        for c, m in enumerate(skipped.reshape(8, -1)):
            if 0 < m.sum() < m.size:
                assert sd[c][m].max() <= sd[c][~m].min()
    else:
        assert not skipped.any()


@pytest.mark.parametrize("seed", range(6))
def test_float_noise_on_the_prior_never_desynchronises_the_stream(seed):
    """The decoder's sigma_p may differ from the encoder's (another machine, another ONNX Runtime
    build). Relative noise of 1e-6 (and 1e-4) leaves the plan and index stream parsed exactly as
    written, and moves at most the dims that sit at the skip threshold."""
    rng = np.random.default_rng(seed)
    channels, h, w = 12, 24, 20
    q, p = level_with_prior_skip(rng, channels, h, w)
    coded = LatentCoder(Y_LEVEL, 5, 16, skip_ratio=1.25).compress(Gaussian(*q), Gaussian(p[0].copy(), p[1].copy()))
    container = _container(coded.sections)
    plan = read_level_plan({s.tag: s.payload for s in coded.sections}, Y_LEVEL, channels, h * w, 16)
    for rel in (1e-6, 1e-4):
        noisy = (p[1] * (1 + rel * rng.standard_normal(p[1].shape))).astype(np.float32)
        mu_noisy = (p[0] + rel * rng.standard_normal(p[0].shape)).astype(np.float32)
        decoded = LatentCoder(Y_LEVEL, 5, 16).decompress(Gaussian(mu_noisy, noisy), container)
        # The plan does not involve the prior at all: the same blocks and index bits.
        assert read_level_plan({s.tag: s.payload for s in coded.sections}, Y_LEVEL, channels, h * w, 16) == plan
        skipped_enc = coded.sample == p[0]
        skipped_dec = decoded == mu_noisy
        moved = skipped_enc != skipped_dec
        assert moved.sum() <= max(2, 0.01 * moved.size)
        # Coded dims decode to the encoder's values up to the noise (same candidates).
        both = ~skipped_enc & ~skipped_dec
        assert np.allclose(decoded[both], coded.sample[both], rtol=0, atol=50 * rel * (1 + np.abs(p[0][both]).max()))


def test_mask_changes_under_noise_are_at_the_threshold():
    rng = np.random.default_rng(9)
    sd_p = np.exp(rng.normal(0, 1, (30, 2000))).astype(np.float32)
    kl = rng.uniform(0, 3000, 30)
    thr = prior_skip.log_thresholds(sd_p, kl)
    noisy = (sd_p * (1 + 1e-6 * rng.standard_normal(sd_p.shape))).astype(np.float32)
    thr_noisy = prior_skip.log_thresholds(noisy, kl)
    assert np.allclose(thr, thr_noisy, rtol=0, atol=1e-5)
    a, b = prior_skip.threshold_mask(sd_p, thr, 140), prior_skip.threshold_mask(noisy, thr_noisy, 140)
    diff = a != b
    assert diff.sum() <= 0.001 * diff.size
    limit = thr + (140 - prior_skip.SKIP_CODES // 2) / 32
    assert np.all(np.abs(np.log(sd_p.astype(np.float64)) - limit[:, None])[diff] < 1e-5)


def test_the_skip_code_follows_the_posterior_scale():
    """A narrower posterior (larger sigma_p / sigma_q everywhere) skips fewer dims."""
    rng = np.random.default_rng(4)
    sd_p = np.exp(rng.normal(0, 0.5, (10, 500))).astype(np.float32)
    kl = np.full(10, 200.0)
    thr = prior_skip.log_thresholds(sd_p, kl)
    wide = prior_skip.choose_skip_code(np.full((10, 500), 0.8, np.float32), thr)
    narrow = prior_skip.choose_skip_code(np.full((10, 500), 0.4, np.float32), thr)
    assert narrow < wide
    assert prior_skip.threshold_mask(sd_p, thr, narrow).sum() < prior_skip.threshold_mask(sd_p, thr, wide).sum()
    assert prior_skip.choose_skip_code(np.ones((10, 500), np.float32), thr, 0.0) == 0


# --- per-model tables ------------------------------------------------------------------------

def _samples(rng, offsets=(0, 3, -2, 5)):
    base = {"Z": rng.integers(0, 40, 7), "Y": rng.integers(17, 60, 11)}
    out = []
    for i, g in enumerate(offsets):
        for q in plan_prior.ANCHOR_QUALITIES:
            units = {k: [int(max(0, v + g + q // 20 + rng.integers(-1, 2))) for v in b] for k, b in base.items()}
            out.append(dict(image=f"im{i}", quality=q, units=units))
    return out


def test_fitted_table_predicts_training_units():
    rng = np.random.default_rng(5)
    samples = _samples(rng)
    prior = plan_prior.fit(samples, "m", "ab" * 32, 16)
    assert 1 <= prior.prior_id <= 15 and prior.images == 4
    for s in samples[:14]:
        t = codec.quality_to_t(s["quality"])
        for tag in ("Z", "Y"):
            units = np.array(s["units"][tag])
            data = write_units(units, 16, prior.prediction(tag, t))
            assert len(data) < len(write_units(units, 16))
            assert np.array_equal(read_units(data, units.size, 16, prior.prediction(tag, t))[1], units)


def test_shape_components_capture_how_images_differ():
    """Images that differ from the typical plan along a fixed pattern (beyond an offset) cost less
    once the table holds that pattern as a shape component."""
    rng = np.random.default_rng(8)
    base, pattern = rng.integers(20, 50, 120), rng.normal(0, 1, 120)
    samples = [dict(image=f"im{i}", quality=q,
                    units={"Y": [int(v) for v in np.clip(np.round(base + a * pattern + rng.normal(0, 0.4, 120)), 0, 112)]})
               for i, a in enumerate(rng.normal(0, 6, 30)) for q in plan_prior.ANCHOR_QUALITIES]
    plain = plan_prior.fit(samples, "m", "ab" * 32, 16, shapes={})
    shaped = plan_prior.fit(samples, "m", "ab" * 32, 16, shapes={"Y": 1})
    assert len(shaped.levels["Y"].shapes) == 1 and not plain.levels["Y"].shapes
    t = codec.quality_to_t(40)
    sizes = {name: [] for name in ("plain", "shaped")}
    for s in samples[3::7]:
        units = np.array(s["units"]["Y"])
        for name, prior in (("plain", plain), ("shaped", shaped)):
            data = write_units(units, 16, prior.prediction("Y", t))
            assert np.array_equal(read_units(data, units.size, 16, prior.prediction("Y", t))[1], units)
            sizes[name].append(len(data))
    assert np.mean(sizes["shaped"]) < 0.8 * np.mean(sizes["plain"])


def test_predictions_are_integer_and_depend_on_the_stored_quality_only():
    prior = plan_prior.fit(_samples(np.random.default_rng(6)), "m", "cd" * 32, 16)
    for q in (1, 3, 20, 33, 100):
        t = codec.quality_to_t(q)
        t32 = np.float32(t).item()
        a, b = prior.prediction("Y", t), prior.prediction("Y", t32)
        assert a.log_kl.dtype == np.int64 and np.array_equal(a.log_kl, b.log_kl)
        assert a.residual_counts == b.residual_counts
    anchor = plan_prior.ANCHOR_QUALITIES.index(40)
    assert tuple(prior.prediction("Z", codec.quality_to_t(40)).log_kl) == prior.levels["Z"].log_kl[anchor]


def test_tables_are_found_by_the_files_hash_prefix():
    for p in plan_prior._load():
        digest = bytes.fromhex(p.weights_sha256)
        assert plan_prior.find(digest[:16]) == p and plan_prior.find(digest) == p
        assert plan_prior.predictions(digest[:16], 0.3, p.kappa + 1) == {}
    assert plan_prior.find(bytes(16)) is None and plan_prior.predictions(bytes(16), 0.3, 16) == {}


def test_source_round_trip():
    prior = plan_prior.fit(_samples(np.random.default_rng(7)), "m", "ef" * 32, 16)
    namespace = {}
    exec(plan_prior.to_source([prior]), namespace)
    (entry,) = namespace["PRIORS"]
    assert entry["levels"]["Y"]["log_kl"] == [list(r) for r in prior.levels["Y"].log_kl]
    assert entry["weights_sha256"] == prior.weights_sha256


# --- files -----------------------------------------------------------------------------------

def test_files_carry_the_13_plans_and_decode(tiny_coded):
    data, _ = tiny_coded
    info = codec.info(data)
    assert info["version"] == "2.0"
    assert set(info["section_bytes"]) == {"ZPL2", "ZIDX", "YPL2", "YIDX"}


def test_legacy_files_still_decode_the_same(tiny_model, photo, monkeypatch):
    """1.1 files (xPLN, YSKP) decode as before: the coder still writes them on request, byte for byte
    readable, and decoding them gives the encoder's reconstruction."""
    with monkeypatch.context() as m:
        m.setattr(codec, "LatentCoder", functools.partial(LatentCoder, legacy=True))
        m.setattr(codec, "WRITE_VERSION", (1, 1))
        old = codec.encode(photo, 40, model=tiny_model)
    assert codec.info(old)["version"] == "1.1" and "YSKP" in codec.info(old)["section_bytes"]
    new = codec.encode(photo, 40, model=tiny_model)
    a, b = np.asarray(codec.decode(old), np.float64), np.asarray(codec.decode(new), np.float64)
    assert abs(10 * np.log10(255**2 / np.mean((a - b) ** 2) if np.any(a != b) else np.inf)) > 25


@pytest.mark.parametrize("tag", ["ZPL2", "YPL2"])
def test_corrupt_plans_are_a_bbi_error(tiny_coded, tag):
    data, _ = tiny_coded
    c = bbi.read(data)
    for payload in (b"", b"\xff" * 7, c.section(tag)[:-1]):
        bad = tuple(bbi.Section(tag, payload) if s.tag == tag else s for s in c.sections)
        with pytest.raises(bbi.BbiError, match="corrupt"):
            codec.decode(bbi.write(bbi.Container(c.header, bad)))


def test_a_file_without_its_plan_is_a_bbi_error(tiny_coded):
    data, _ = tiny_coded
    c = bbi.read(data)
    for tag in ("ZPL2", "YPL2"):
        with pytest.raises(bbi.BbiError, match="missing required section"):
            codec.decode(bbi.write(bbi.Container(c.header, tuple(s for s in c.sections if s.tag != tag))))


def test_version_rule():
    assert bbi.version_for(["ZPL2", "ZIDX", "YPL2", "YIDX"]) == (1, 3)
    assert bbi.version_for(["ZPL2", "YPL2", "ALPH"]) == (1, 3) == bbi.LATEST_V1_VERSION
    assert bbi.version_for(["ZPLN", "YSKP", "ALPH"]) == (1, 2)
    assert bbi.version_for(["ZPLN", "YSKP"]) == (1, 1)


def test_z_level_has_no_skip_head():
    rng = np.random.default_rng(8)
    q, p = level_with_prior_skip(rng, channels=5)
    coded = LatentCoder(Z_LEVEL, 1, 16).compress(Gaussian(*q), Gaussian(*p))
    (plan,) = [s.payload for s in coded.sections if s.tag == "ZPL2"]
    read_units(plan, 5, 16)  # parses with no head values


def test_a_level_in_both_formats_is_malformed(tiny_coded):
    data, _ = tiny_coded
    c = bbi.read(data)
    for extra in ("YPLN", "YSKP", "ZPLN"):
        with pytest.raises(bbi.BbiError, match="both"):
            codec.decode(bbi.write(bbi.Container(c.header, c.sections + (bbi.Section(extra, b""),))))


@given(st.integers(1, 9), st.integers(1, 300), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_thresholds_on_threads_equal_the_serial_ones(channels, positions, seed):
    """Large latents solve their channels on several threads: the same floats as one thread."""
    rng = np.random.default_rng(seed)
    sd_p = np.exp(rng.normal(0, 1, (channels, positions))).astype(np.float32)
    kl = np.where(rng.random(channels) < 0.2, 0.0, rng.uniform(0, 3 * positions, channels))
    serial = prior_skip.log_thresholds(sd_p, kl)
    old = prior_skip.PARALLEL_DIMS
    prior_skip.PARALLEL_DIMS = 1
    try:
        threaded = prior_skip.log_thresholds(sd_p, kl)
    finally:
        prior_skip.PARALLEL_DIMS = old
    assert np.array_equal(serial, threaded)
    assert np.all(np.isinf(serial[~(kl > 0)]))


@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_position_order_round_trip(channels, rows, cols, seed):
    """A latent put in the coders' position order and back is itself, and each channel's values
    are where ``order`` says."""
    from bbimg.latent_coder import _ordered, _unordered

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(1, channels, rows, cols)).astype(np.float32)
    order = rng.permutation(rows * cols)
    flat = _ordered(latent, order)
    assert np.array_equal(flat.reshape(channels, -1), latent.reshape(channels, -1)[:, order])
    assert np.array_equal(_unordered(flat, order, latent.shape), latent)
