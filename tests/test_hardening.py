"""Hardening: fuzzing (short), corruption through the CLI, resource limits, determinism (tiling:
tests/test_tiling.py).

The long fuzz runs, their commands and results are in docs/security.md; the large-image
measurements in bench/large_image.py.
"""
import dataclasses
import hashlib
import os
import random
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg import codec
from bbimg import format as bbi
from bbimg.cli.main import main
from bbimg.model_files import DEFAULT_MODEL
from conftest import smooth_image

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fuzz import harness  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "kodak"


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: on a busy machine more intra-op threads only add synchronisation waits."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _slow_selected(config) -> bool:
    return "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("BBIMG_SLOW") == "1"


@pytest.fixture(scope="module")
def seeds(tiny_model):
    return harness.make_seeds(tiny_model, default_model=False)


@pytest.fixture(scope="module")
def coded(tiny_model):
    """A real coded small image (tiny model) and the image."""
    image = smooth_image(np.random.default_rng(5), 72, 100)
    return codec.encode(image, 60, model=tiny_model), image


# -- fuzzing (short versions of fuzz/run.py) ----------------------------------------------------
def test_fuzz_container_reader_raises_only_bbierror(seeds):
    stats = harness.fuzz_loop(harness.check_format, seeds, iterations=2500, seed=1)
    assert stats.inputs >= 2500
    assert stats.outcomes.get("accepted", 0) > 0 and stats.outcomes.get("rejected", 0) > 0


def test_fuzz_decoder_raises_only_bbierror(seeds):
    stats = harness.fuzz_loop(harness.check_decoder, seeds, iterations=60, seed=2)
    assert stats.inputs >= 60
    # The structure-aware mutator gets past the CRCs: some mutants decode, others fail deep inside.
    assert stats.outcomes.get("ok", 0) > 0 and stats.outcomes.get("rejected", 0) > 0
    assert stats.slowest_s < harness.TIME_LIMIT_S


def test_fuzz_mutants_with_fixed_crcs_reach_the_sections(coded):
    data, _ = coded
    flipped = bytearray(data)
    flipped[-5] ^= 0x10  # the last payload byte, just before the final CRC
    with pytest.raises(bbi.BbiError, match="CRC"):
        bbi.read(bytes(flipped))
    bbi.read(harness.fix_crcs(bytes(flipped)))  # container valid again: the payload is what is corrupt


def test_fuzz_loop_reports_the_failing_input(tmp_path):
    def target(data):
        if len(data) > 3:
            raise RuntimeError("boom")
        return "ok"

    crash = tmp_path / "crash.bin"
    with pytest.raises(RuntimeError):
        harness.fuzz_loop(target, [b"ab"], iterations=1000, crash_file=crash)
    assert len(crash.read_bytes()) > 3


def test_fuzz_loop_fails_on_a_slow_input(tmp_path):
    """The time invariant: an input slower than the limit is a failure, and is kept."""
    def target(data):
        if data == b"slow":
            time.sleep(0.2)
        return "ok"

    crash = tmp_path / "slow.bin"
    with pytest.raises(AssertionError, match="took"):
        harness.fuzz_loop(target, [b"fast", b"slow"], iterations=10, time_limit=0.1, crash_file=crash)
    assert crash.read_bytes() == b"slow"


_MEMORY_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from fuzz import harness
torch.zeros(4)
over = harness.MEMORY_LIMIT_BYTES + (64 << 20)
cap = harness.limit_memory()
for alloc in (lambda: np.empty(over, np.uint8), lambda: torch.empty(over, dtype=torch.uint8)):
    try:
        alloc()
    except (MemoryError, RuntimeError) as exc:
        print(type(exc).__name__)
    else:
        print("ALLOCATED")
held = np.empty(600 << 20, np.uint8)   # what earlier inputs left behind (address space only)
print("recap" if harness.limit_memory() >= cap + (600 << 20) else "no recap")
print(np.empty(700 << 20, np.uint8).nbytes >> 20)   # over the first cap, within the new one
"""


def test_fuzz_memory_cap_makes_allocations_over_1_gib_fail():
    """The memory invariant of the fuzz targets: after ``limit_memory`` an allocation of more than
    1 GiB fails (MemoryError / RuntimeError, which is not a BbiError, so the fuzzer reports it), and
    re-capping before each input bounds that input's allocations, not the growth of the whole run.
    Run in a child: the cap is per process."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MemoryError", "RuntimeError", "recap", "700"], out.stdout


def test_fuzz_runner_passes_the_limits_to_libfuzzer(tmp_path, monkeypatch):
    from fuzz import run

    seen = []
    monkeypatch.setattr(run.subprocess, "call", lambda cmd, env=None: seen.append(cmd) or 0)
    for target in ("format", "decoder"):
        assert run.run_atheris(target, tmp_path, tmp_path, 1000, None) == 0
    for cmd in seen:
        assert "-timeout=5" in cmd and "-runs=1000" in cmd
        rss = [int(a.split("=")[1]) for a in cmd if a.startswith("-rss_limit_mb=")]
        assert len(rss) == 1 and rss[0] <= 2048


# -- corruption through the CLI ------------------------------------------------------------------
def _assert_cli_rejects(tmp_path: Path, data: bytes, what: str) -> None:
    src, out = tmp_path / "in.bbi", tmp_path / "out.png"
    src.write_bytes(data)
    r = CliRunner().invoke(main, ["decode", str(src), str(out)], catch_exceptions=False)
    assert r.exit_code == 1, (what, r.exit_code, r.output)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbimg: error: "), (what, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bbi"], what  # no output, no temp file


def test_cli_rejects_every_truncation(tmp_path, coded):
    data, _ = coded
    work = tmp_path / "t"
    work.mkdir()
    for n in range(len(data)):
        _assert_cli_rejects(work, data[:n], f"truncated to {n} bytes")


def test_cli_rejects_sampled_bit_flips(tmp_path, coded):
    data, _ = coded
    work = tmp_path / "f"
    work.mkdir()
    bits = 8 * len(data)
    # every bit of the first 32 bytes (magic, version, sizes, dimensions), then a sample of the rest
    positions = list(range(256)) + random.Random(0).sample(range(256, bits), min(300, bits - 256))
    for bit in positions:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _assert_cli_rejects(work, bytes(flipped), f"bit {bit} flipped")


def test_cli_decodes_the_intact_file(tmp_path, coded):
    data, image = coded
    (tmp_path / "in.bbi").write_bytes(data)
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "in.bbi"), str(tmp_path / "out.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (image.shape[1], image.shape[0])


@pytest.mark.skipif(not KODAK.is_dir(), reason="Kodak images not available")
def test_cli_rejects_corrupt_kodak_file(tmp_path, tiny_model):
    """A full Kodak image (768x512) coded for real (tiny model, so it is fast): sampled truncations
    and single-bit flips are rejected through the CLI with exit 1 and no output; the intact file decodes.
    The same with the shipped model: test_cli_rejects_corrupt_kodak_files_default_model (slow)."""
    data = codec.encode(Image.open(KODAK / "kodim23.png"), 50, model=tiny_model)
    (tmp_path / "ok.bbi").write_bytes(data)
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "ok.bbi"), str(tmp_path / "ok.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "ok.png").size == (768, 512), r.output
    rng = random.Random(1)
    work = tmp_path / "w"
    work.mkdir()
    for n in [0, 1, 12, len(data) - 1] + rng.sample(range(len(data)), 40):
        _assert_cli_rejects(work, data[:n], f"kodim23 truncated to {n}")
    for bit in rng.sample(range(8 * len(data)), 150):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _assert_cli_rejects(work, bytes(flipped), f"kodim23 bit {bit}")


@pytest.mark.slow
@pytest.mark.skipif(not KODAK.is_dir(), reason="Kodak images not available")
def test_cli_rejects_corrupt_kodak_files_default_model(tmp_path, request):
    """Run with ``pytest -m slow`` (or BBIMG_SLOW=1): two Kodak images coded with the shipped model."""
    if not _slow_selected(request.config):
        pytest.skip("slow: select with -m slow or BBIMG_SLOW=1")
    rng = random.Random(0)
    for name in ("kodim05", "kodim23"):
        data = codec.encode(Image.open(KODAK / f"{name}.png"), 50)
        work = tmp_path / name
        work.mkdir()
        for n in sorted(rng.sample(range(len(data)), 100)):
            _assert_cli_rejects(work, data[:n], f"{name} truncated to {n}")
        for bit in rng.sample(range(8 * len(data)), 300):
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            _assert_cli_rejects(work, bytes(flipped), f"{name} bit {bit}")


# -- resources -----------------------------------------------------------------------------------
def _hand_made_header(width: int, height: int, name: bytes = DEFAULT_MODEL.encode()) -> bytes:
    """A file whose header fields are packed by hand (bypassing Header's checks), valid CRCs."""
    body = struct.pack("<IIIBBfBQBfHB", 0, width, height, 0, 8, 0.5, 50, 0, 16, 1.0, 0, 0)
    body += bytes([len(name)]) + name + bytes([32]) + bytes(32)
    size = 12 + len(body) + 4 + 4
    body = struct.pack("<I", size) + body[4:]
    head = bbi.MAGIC + bytes([1, 0]) + struct.pack("<H", len(body)) + body
    head += struct.pack("<I", zlib.crc32(head))
    return head + struct.pack("<I", zlib.crc32(head))


def test_absurd_dimensions_are_rejected_before_any_allocation(tmp_path):
    data = _hand_made_header(65535, 65535)
    assert bbi.read(_hand_made_header(64, 48)).header.width == 64  # the hand-made layout is right
    tracemalloc.start()
    t0 = time.perf_counter()
    for fn in (bbi.read_header, bbi.read_info, bbi.read, codec.decode, codec.info):
        with pytest.raises(bbi.BbiError, match="65535x65535 exceeds"):
            fn(data)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20, (elapsed, peak)
    _assert_cli_rejects(tmp_path, data, "65535x65535 header")


def test_model_name_from_a_file_cannot_pick_a_path():
    """The name in a file must not reach the file system as a path (absolute or with '..')."""
    weights = ROOT / "bbimg" / "weights" / f"{DEFAULT_MODEL}.pt"
    digest = hashlib.sha256(weights.read_bytes()).digest()
    header = dataclasses.replace(bbi.read(_hand_made_header(64, 48)).header, weights_hash=digest)
    sections = tuple(bbi.Section(t, b"") for t in ("ZPLN", "ZIDX", "YPLN", "YIDX"))
    for name in (str(weights)[:-3], f"../weights/{DEFAULT_MODEL}", f"{DEFAULT_MODEL}/../{DEFAULT_MODEL}"):
        data = bbi.write(bbi.Container(dataclasses.replace(header, model_name=name), sections))
        with pytest.raises(bbi.BbiError, match="not installed"):
            codec.decode(data)


# -- determinism and concurrency -----------------------------------------------------------------
def test_same_image_and_seed_give_identical_bytes(tiny_model):
    image = smooth_image(np.random.default_rng(9), 96, 128)
    first = codec.encode(image, 50, model=tiny_model, seed=3)
    assert codec.encode(image, 50, model=tiny_model, seed=3) == first
    assert codec.encode(image, 50, model=tiny_model, seed=4) != first


def test_bytes_do_not_depend_on_thread_counts(tiny_model, monkeypatch):
    """torch intra-op threads and the REC engine's threads (the codec uses all cores) change nothing."""
    import functools

    from bbimg import rec

    image = smooth_image(np.random.default_rng(10), 160, 192)
    rec_encode, rec_decode = rec.encode, rec.decode
    old = torch.get_num_threads()
    outputs = []
    try:
        for torch_threads, rec_threads in ((1, 1), (2, 3), (2, None)):
            torch.set_num_threads(torch_threads)
            monkeypatch.setattr(rec, "encode", functools.partial(rec_encode, threads=rec_threads))
            monkeypatch.setattr(rec, "decode", functools.partial(rec_decode, threads=rec_threads))
            data = codec.encode(image, 70, model=tiny_model, seed=5)
            outputs.append((data, np.asarray(codec.decode(data))))
    finally:
        torch.set_num_threads(old)
    assert all(d == outputs[0][0] for d, _ in outputs)
    assert all(np.array_equal(px, outputs[0][1]) for _, px in outputs)


_CHILD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import smooth_image
from bbimg import codec
image = smooth_image(np.random.default_rng(11), 96, 112)
sys.stdout.buffer.write(codec.encode(image, 40, model=sys.argv[2], seed=6))
"""


def test_parallel_processes_give_identical_bytes(tiny_model):
    expected = codec.encode(smooth_image(np.random.default_rng(11), 96, 112), 40, model=tiny_model, seed=6)
    cmd = [sys.executable, "-c", _CHILD, str(ROOT / "tests"), tiny_model]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # thread-count independence has its own test
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()
        assert out == expected


def test_threads_of_one_process_match_sequential_calls(tiny_model):
    images = [smooth_image(np.random.default_rng(20 + i), 64 + 16 * i, 96) for i in range(4)]
    sequential = [codec.encode(im, 55, model=tiny_model, seed=i) for i, im in enumerate(images)]
    decoded = [np.asarray(codec.decode(d)) for d in sequential]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: codec.encode(a[1], 55, model=tiny_model, seed=a[0]), enumerate(images)))
        redecoded = list(pool.map(lambda d: np.asarray(codec.decode(d)), threaded))
    assert threaded == sequential
    assert all(np.array_equal(a, b) for a, b in zip(redecoded, decoded))
