"""The analysis in ONNX Runtime's blocked layout (bbimg.ort_blocked): the same bits as the plain
session, kernels equal to NumPy's operators, and the wire-level graph reader."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

from bbimg import _core, codec, ort_blocked, runtime  # noqa: E402
from bbimg.ort_blocked import _wire  # noqa: E402

SPECIAL = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3e38, -3e38, np.inf, -np.inf, 1.0, -2.5], np.float32)


def _floats(rng, n):
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))).astype(np.float32)
    x[rng.integers(0, n, n // 8)] = rng.choice(SPECIAL, n // 8)
    return x


@given(st.sampled_from([4, 8, 16]), st.integers(1, 6), st.integers(1, 40), st.integers(1, 3),
       st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_blocked_kernels_equal_numpy_bit_for_bit(block, channel_blocks, plane, threads, seed):
    rng = np.random.default_rng(seed)
    channels = channel_blocks * block
    x, d = (_floats(rng, channels * plane).reshape(1, channels, 1, plane) for _ in range(2))
    g, b = _floats(rng, channels), _floats(rng, channels)
    out = np.empty_like(x)
    _core.blocked_abs(x, out, threads)
    assert np.array_equal(out.view(np.uint32), np.abs(x).view(np.uint32))
    _core.blocked_divide_scale_shift(x, d, g, b, out, block, threads)
    # The blocked layout [channel block][position][lane]: lane l of block c is channel c*block + l.
    shape = (channel_blocks, plane, block)
    lanes = lambda v: v.reshape(channel_blocks, 1, block)  # noqa: E731
    with np.errstate(all="ignore"):
        want = (x.reshape(shape) / d.reshape(shape)) * lanes(g) + lanes(b)
    assert np.array_equal(out.reshape(shape).view(np.uint32), want.view(np.uint32))


def test_blocked_kernels_refuse_bad_arguments():
    x = np.zeros((1, 16, 2, 2), np.float32)
    with pytest.raises(ValueError, match="block"):
        _core.blocked_divide_scale_shift(x, x, np.ones(16, np.float32), np.ones(16, np.float32), x, 12, 1)
    with pytest.raises(ValueError, match="channels"):
        _core.blocked_divide_scale_shift(x, x, np.ones(8, np.float32), np.ones(16, np.float32), x, 16, 1)
    with pytest.raises(ValueError, match="writable"):
        _core.blocked_abs(x, np.zeros(3, np.float32), 1)


@given(st.lists(st.tuples(st.integers(1, 2000), st.one_of(st.integers(0, 2**63), st.binary(max_size=300))),
                max_size=12))
@settings(max_examples=60, deadline=None)
def test_wire_fields_round_trip(fields):
    data = b"".join(_wire.encode_varint(n << 3) + _wire.encode_varint(v) if isinstance(v, int) else _wire.field(n, v)
                    for n, v in fields)
    parsed = _wire.fields(data)
    assert [(n, v) for n, v, _ in parsed] == fields
    assert b"".join(raw for _, _, raw in parsed) == data


@pytest.fixture(scope="module")
def shipped():
    ort = runtime.load(codec.DEFAULT_MODEL)
    if ort is None:
        pytest.skip("the shipped model's ONNX export is not installed")
    return ort


def test_channel_block_is_one_of_the_layouts():
    assert ort_blocked.channel_block(runtime._options) in (4, 8, 16)


def test_shipped_analysis_blocked_gives_the_plain_sessions_bits(shipped):
    graph = ort_blocked.build(shipped._files["analysis"], runtime._options)
    assert graph is not None
    kinds = [step[0] for step in graph._steps]
    assert kinds.count("abs") == 3 and kinds.count("dss") == 3
    plain = shipped.session("analysis", 0.5)
    rng = np.random.default_rng(3)
    for height, width, t in ((192, 256, 0.1), (320, 128, 0.9), (192, 256, 0.9)):
        feeds = {"x": rng.random((1, 3, height, width), dtype=np.float32), "t": np.array([t], np.float32)}
        want, got = plain.run(None, feeds), graph.run(feeds)
        assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(want, got))


@given(st.lists(st.tuples(st.sampled_from(["ort", "abs", "dss"]), st.lists(st.integers(0, 30), max_size=4)),
                min_size=1, max_size=30))
@settings(max_examples=100, deadline=None)
def test_kernel_buffers_shared_only_by_values_whose_lives_do_not_overlap(raw):
    """Random step lists: a kernel step's output never goes to a buffer whose value a later step (or
    the graph's outputs) still reads, nor to one the step itself reads."""
    steps, made = [], []
    for i, (kind, picks) in enumerate(raw):
        reads = [made[p % len(made)] for p in picks] if made else []
        reads = reads or ["x"]  # the graph's input
        out = f"v{i}"
        if kind == "ort":
            steps.append(("ort", None, reads, [out]))
        elif kind == "abs":
            steps.append(("abs", reads[0], out))
        else:
            steps.append(("dss", *(reads * 4)[:4], out))
        made.append(out)
    outputs = [made[-1]]
    slots = ort_blocked._buffer_slots(steps, outputs)
    assert set(slots) == {s[-1] for s in steps if s[0] != "ort"}
    reads_at = [ort_blocked._step_reads(s) for s in steps] + [outputs]
    for i, step in enumerate(steps):
        if step[0] == "ort":
            continue
        # Every value in the same buffer made before this step is read by no step from here on.
        for j in range(i):
            other = steps[j]
            if other[0] != "ort" and slots[other[-1]] == slots[step[-1]]:
                assert not any(other[-1] in r for r in reads_at[i:]), (j, i)


def test_shipped_analysis_shares_one_kernel_buffer(shipped):
    # Each Abs output dies in the normalisation's convolution and each division's in the next
    # layer's convolution: every kernel step of the analysis can write the same memory.
    graph = ort_blocked.build(shipped._files["analysis"], runtime._options)
    assert set(graph._slots.values()) == {0}


def test_graph_without_the_steps_stays_plain(shipped):
    # The hyper transform has no divisive normalisation: nothing to keep blocked.
    assert ort_blocked.build(shipped._files["hyper"], runtime._options, image_inputs=("y_mean",)) is None


def test_encode_with_the_blocked_analysis_gives_the_same_file(shipped, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(9)
    base = rng.integers(0, 256, (12, 16, 3)).astype(np.float32)
    image = Image.fromarray(np.kron(base, np.ones((16, 16, 1))).astype(np.uint8))  # 192 x 256, smooth blocks
    monkeypatch.setattr(runtime, "BLOCKED_MIN_PIXELS", 1)
    monkeypatch.setenv("BBIMG_ORT_BLOCKED", "0")
    runtime._cache.clear()
    plain = codec.encode(image, 70)
    assert runtime.BLOCKED not in runtime.load(codec.DEFAULT_MODEL)._sessions
    monkeypatch.delenv("BBIMG_ORT_BLOCKED", raising=False)  # on by default
    runtime._cache.clear()
    blocked = codec.encode(image, 70)
    assert runtime.BLOCKED in runtime.load(codec.DEFAULT_MODEL)._sessions
    assert runtime.load(codec.DEFAULT_MODEL)._sessions[runtime.BLOCKED] is not None
    assert blocked == plain
    runtime._cache.clear()


def test_analysis_prepared_in_the_background(shipped, monkeypatch):
    """prepare_analysis makes the blocked graph on a thread; the analysis then uses that one (no
    second build) and gives the plain session's bits. A build that fails there is made again where
    the analysis needs it, so its error reaches the caller."""
    monkeypatch.setattr(runtime, "BLOCKED_MIN_PIXELS", 1)
    monkeypatch.delenv("BBIMG_ORT_BLOCKED", raising=False)
    x = np.random.default_rng(4).random((1, 3, 128, 192)).astype(np.float32)
    runtime._cache.clear()
    plain = runtime.load(codec.DEFAULT_MODEL)._run("analysis", {"x": x}, 0.6)
    builds = []
    real_build = ort_blocked.build
    monkeypatch.setattr(ort_blocked, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    runtime._cache.clear()
    r = runtime.load(codec.DEFAULT_MODEL)
    r.prepare_analysis(128 * 192)
    mean, scale = r.analysis(x, 0.6)
    assert builds == [1] and r._sessions[runtime.BLOCKED] is not None and runtime.BLOCKED not in r._pending
    assert np.array_equal(mean, plain[0]) and np.array_equal(scale, np.exp(plain[1]))

    def broken(*a, **k):
        raise RuntimeError("cannot cut the graph")

    monkeypatch.setattr(ort_blocked, "build", broken)
    runtime._cache.clear()
    r = runtime.load(codec.DEFAULT_MODEL)
    r.prepare_analysis(128 * 192)
    with pytest.raises(RuntimeError, match="cannot cut"):
        r.analysis(x, 0.6)
    runtime._cache.clear()
