"""Shared pieces of the bbimg fuzz targets: invariants, a structure-aware mutator, seeds, limits.

The invariants (``docs/security.md``): for any input bytes, the container reader and the decoder
either succeed or raise :class:`bbimg.BbiError` (subclasses included); nothing else escapes, nothing
crashes, no input takes over :data:`TIME_LIMIT_S` seconds, and no input allocates more than
:data:`MEMORY_LIMIT_BYTES` beyond what the process had before fuzzing (``RLIMIT_AS``). Inputs
whose header claims a large image (:func:`check_decoder_any_size`) are refused quickly above the
decode pixel limit, or decoded in a fresh process capped at the documented memory bound for
that size (:func:`decode_memory_bound`) and a time bound in proportion to the pixels.

Used by ``fuzz_format.py`` / ``fuzz_decoder.py`` (atheris, coverage-guided) and, without atheris, by
:func:`fuzz_loop` (random mutation), which ``tests/test_fuzz.py`` runs for a few seconds.
"""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from bbimg import format as bbi

__all__ = ["TIME_LIMIT_S", "MEMORY_LIMIT_BYTES", "FUZZ_MAX_PIXELS", "LARGE_MAX_PIXELS", "REFUSE_LIMIT_S", "TINY_MODEL",
           "check_format", "check_decoder", "check_decoder_any_size", "decode_memory_bound", "decode_time_bound",
           "fix_crcs", "mutate", "mutate_sizes", "resize", "limit_memory", "make_tiny_model", "make_seeds", "fuzz_loop", "FuzzStats"]

TIME_LIMIT_S = 5.0
MEMORY_LIMIT_BYTES = 1 << 30
#: The decoder target skips files whose (CRC-valid) header claims more pixels than this: decoding a
#: legitimately huge image legitimately needs memory and time (see docs/security.md, memory bounds).
FUZZ_MAX_PIXELS = 256 * 256
#: Headers claiming more than FUZZ_MAX_PIXELS and at most this are decoded in a subprocess under
#: the documented memory bound; above it the decoder (with its pixel limit set here) must refuse
#: within REFUSE_LIMIT_S. Larger decodes only take longer (minutes at 2^27 pixels).
LARGE_MAX_PIXELS = 2048 * 2048
REFUSE_LIMIT_S = 1.0
#: The decoder's documented memory bound (docs/security.md): peak resident memory above the
#: process's baseline is at most DECODE_BYTES_PER_PIXEL x pixels + DECODE_BASE_BYTES. The
#: subprocess caps its address space at that plus ADDRESS_SPACE_SLACK_BYTES (thread stacks and
#: allocator reservations count against RLIMIT_AS but are not resident).
DECODE_BYTES_PER_PIXEL = 24
DECODE_BASE_BYTES = 1 << 30
ADDRESS_SPACE_SLACK_BYTES = 1 << 30
TINY_MODEL = "fuzz-tiny"
TINY_CONFIG = dict(widths=(8, 8, 8), latent_channels=8, hyper_width=8, hyper_channels=4)

_PREFIX_SIZE = 12      # 1.x: magic, major, minor, header body size (u16 at offset 10)
_FILE_SIZE_AT = 12     # 1.x: first field of the header body: u32 file size
_V2_BODY_AT = 10       # 2.0: varint body size, then the varint file size (docs/format.md section 3)


# -- invariants -----------------------------------------------------------------------------------
def check_format(data: bytes) -> str:
    """Container reader: every entry point either succeeds or raises BbiError.

    Returns "accepted" when :func:`bbimg.format.read` accepts the input, else "rejected"."""
    bbi.check(data)
    outcome = "rejected"
    for fn in (bbi.read_header, bbi.read_info, bbi.read):
        try:
            result = fn(data)
        except bbi.BbiError:
            continue
        if fn is bbi.read_info:
            assert result.total_size == len(data)
            assert all(s.offset + s.length <= len(data) for s in result.sections)
        if fn is bbi.read:
            outcome = "accepted"
    return outcome


def check_decoder(data: bytes, max_pixels: int = FUZZ_MAX_PIXELS) -> str:
    """Whole decoder: ``bbimg.codec.decode`` succeeds with the header's size or raises BbiError.

    Returns what happened: "ok", "rejected" or "skipped" (header claims more than ``max_pixels``)."""
    from bbimg import codec

    try:
        header = bbi.read_header(data)
    except bbi.BbiError:
        header = None
    if header is not None and header.width * header.height > max_pixels:
        return "skipped"
    try:
        image = codec.decode(data)
    except bbi.BbiError:
        return "rejected"
    assert header is not None and image.size == (header.width, header.height), "decoded size differs from header"
    return "ok"


# -- mutation -------------------------------------------------------------------------------------
def _varint_at(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, end) of the LEB128 varint at ``pos`` (10 bytes at most), or None."""
    value = 0
    for i in range(10):
        if pos + i >= len(data):
            return None
        value |= (data[pos + i] & 0x7F) << (7 * i)
        if not data[pos + i] & 0x80:
            return value, pos + i + 1
    return None


def _fix_v2(out: bytearray, fix_size: bool) -> bytes:
    """2.0: rewrite the varint file size (and the body size around it, as its length changes) to
    agree with the data, then the file CRC; there is no header CRC."""
    body = _varint_at(out, _V2_BODY_AT)
    size = None if body is None else _varint_at(out, body[1])
    if fix_size and size is not None:
        body_size, size_at = body
        rest_of_body = body_size - (size[1] - size_at)
        tail = out[size[1]:]
        n = 0
        for _ in range(6):  # file_size is inside what it measures: settle its length
            new_size = bbi.encode_varint(n)
            new_body = bbi.encode_varint(max(0, len(new_size) + rest_of_body))
            m = _V2_BODY_AT + len(new_body) + len(new_size) + len(tail)
            if m == n:
                break
            n = m
        out = bytearray(out[:_V2_BODY_AT]) + new_body + new_size + tail
    if len(out) >= _V2_BODY_AT + 5:
        struct.pack_into("<I", out, len(out) - 4, zlib.crc32(out[:-4]))
    return bytes(out)


def fix_crcs(data: bytes, fix_size: bool = True) -> bytes:
    """Make the file-size field and the CRCs (both in 1.x, the file CRC in 2.0) agree with ``data``,
    so mutations reach past them."""
    out = bytearray(data)
    if len(out) > 8 and out[8] == 2:
        return _fix_v2(out, fix_size)
    if len(out) < _PREFIX_SIZE:
        return bytes(out)
    crc_at = _PREFIX_SIZE + struct.unpack_from("<H", out, 10)[0]
    if fix_size and len(out) >= _FILE_SIZE_AT + 4:
        struct.pack_into("<I", out, _FILE_SIZE_AT, len(out))
    if crc_at + 4 <= len(out):
        struct.pack_into("<I", out, crc_at, zlib.crc32(out[:crc_at]))
    if len(out) >= crc_at + 8:
        struct.pack_into("<I", out, len(out) - 4, zlib.crc32(out[:-4]))
    return bytes(out)


_INTERESTING = [0, 1, 2, 7, 8, 15, 16, 24, 25, 31, 32, 63, 64, 127, 128, 255, 256, 4096, 65535, 65536,
                (1 << 28), (1 << 31) - 1, (1 << 31), (1 << 32) - 1]


def _byte_mutation(buf: bytearray, rng: random.Random, corpus) -> bytearray:
    op = rng.randrange(9)
    n = len(buf)
    if op == 0 and n:                                   # flip a bit
        i = rng.randrange(n)
        buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and n:                                 # random byte
        buf[rng.randrange(n)] = rng.randrange(256)
    elif op == 2:                                       # insert bytes
        i = rng.randrange(n + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == 3 and n:                                 # delete a range
        i = rng.randrange(n)
        del buf[i:i + rng.randint(1, 32)]
    elif op == 4 and n:                                 # truncate
        del buf[rng.randrange(n):]
    elif op == 5 and n >= 4:                            # interesting little-endian integer
        width = rng.choice((1, 2, 4, 8))
        i = rng.randrange(max(1, n - width + 1))
        v = rng.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
        buf[i:i + width] = v.to_bytes(width, "little")[: n - i]
    elif op == 6 and corpus:                            # splice with another input
        other = rng.choice(corpus)
        i, j = rng.randrange(n + 1), rng.randrange(len(other) + 1)
        buf = buf[:i] + bytearray(other[j:])
    elif op == 7 and n:                                 # duplicate a chunk
        i = rng.randrange(n)
        buf[i:i] = buf[i:i + rng.randint(1, 64)]
    elif n:                                             # arithmetic on a byte
        i = rng.randrange(n)
        buf[i] = (buf[i] + rng.randint(-8, 8)) % 256
    return buf


def _structural_mutation(data: bytes, rng: random.Random) -> bytes | None:
    """Parse a valid file, change one field or payload, write it back (valid CRCs and lengths)."""
    try:
        c = bbi.read(data)
    except bbi.BbiError:
        return None
    h = c.header
    sections = list(c.sections)
    op = rng.randrange(6)
    if op == 0 and sections:                            # mutate a payload
        i = rng.randrange(len(sections))
        payload = bytes(_byte_mutation(bytearray(sections[i].payload), rng, None))
        sections[i] = dataclasses.replace(sections[i], payload=payload)
    elif op == 1 and sections:                          # drop a section
        del sections[rng.randrange(len(sections))]
    elif op == 2 and sections:                          # random payload
        i = rng.randrange(len(sections))
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 5, 17, 64, 300))))
        sections[i] = dataclasses.replace(sections[i], payload=payload)
    elif op == 3:                                       # integer header fields
        field = rng.choice(("width", "height", "kappa", "seed", "quality_q", "bit_depth", "colour_mode"))
        old = getattr(h, field)
        value = rng.choice((old + rng.randint(-70, 70), rng.choice(_INTERESTING), old ^ (1 << rng.randrange(16))))
        try:
            h = dataclasses.replace(h, **{field: value})
        except (ValueError, TypeError):
            return None
    elif op == 4:                                       # float header fields
        field = rng.choice(("quality_t", "temperature"))
        value = rng.choice((0.0, 1.0, 1e-30, 0.5, rng.random(), 1e30))
        try:
            h = dataclasses.replace(h, **{field: value})
        except ValueError:
            return None
    else:                                               # model name / hash
        from bbimg.model_files import DEFAULT_MODEL, find_weights, weights_sha256
        try:
            if h.model_name is not None and rng.random() < 0.5:  # 1.x: the name
                h = dataclasses.replace(h, model_name=rng.choice((DEFAULT_MODEL, TINY_MODEL, "x", "../x", "a" * 64)))
            elif rng.random() < 0.5:                    # an installed model's hash (2.0: which model decodes)
                path = find_weights(rng.choice((DEFAULT_MODEL, TINY_MODEL)))
                if path is None:
                    return None
                h = dataclasses.replace(h, weights_hash=weights_sha256(path)[:len(h.weights_hash)])
            else:
                h = dataclasses.replace(h, weights_hash=bytes(rng.randrange(256) for _ in range(len(h.weights_hash))))
        except ValueError:
            return None
    try:
        return bbi.write(bbi.Container(h, tuple(sections)), version=_layout(data))
    except ValueError:
        return None


def _layout(data: bytes) -> int:
    """Major version of a file that parsed: mutants keep their layout."""
    return 1 if data[8] == 1 else 2


def mutate(data: bytes, rng: random.Random, corpus=None, max_size: int = 1 << 16) -> bytes:
    """One mutant of ``data``: byte-level edits (then CRCs fixed half the time) or a structural edit."""
    if rng.random() < 0.35:
        out = _structural_mutation(data, rng)
        if out is not None:
            return out[:max_size]
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        buf = _byte_mutation(buf, rng, corpus)
    out = bytes(buf[:max_size])
    r = rng.random()
    if r < 0.4:
        out = fix_crcs(out)
    elif r < 0.5:
        out = fix_crcs(out, fix_size=False)
    return out


def resize(data: bytes, rng: random.Random) -> bytes | None:
    """A valid file claiming another, usually large, size: width x height log-uniform up to the
    format's 2^28 pixels (sides <= 65535); half the time with empty block plans, so the file is
    a small decodable "bomb" rather than one whose index stream no longer fits."""
    try:
        c = bbi.read(data)
    except bbi.BbiError:
        return None
    pixels = int(2 ** rng.uniform(16, 28))
    aspect = 2 ** rng.uniform(-3, 3)
    width = max(1, min(65535, int(round((pixels * aspect) ** 0.5))))
    height = max(1, min(65535, pixels // width))
    sections = list(c.sections)
    channels = _channels(c.header)
    if rng.random() < 0.5 and channels is not None:
        zeros = {tag: np.zeros(n, np.int32) for tag, n in zip(("ZPLN", "YPLN"), channels)}
        from bbimg.rec.channel_plan import encode_channel_plan

        sections = [dataclasses.replace(s, payload=encode_channel_plan(zeros[s.tag], zeros[s.tag], c.header.kappa))
                    if s.tag in zeros else dataclasses.replace(s, payload=b"") if s.tag in ("ZIDX", "YIDX") else s
                    for s in sections if s.tag != "YSKP"]
    try:
        return bbi.write(bbi.Container(dataclasses.replace(c.header, width=width, height=height), tuple(sections)),
                         version=_layout(data))
    except ValueError:
        return None


def _channels(header: "bbi.Header") -> tuple[int, int] | None:
    """(z channels, y channels) of the fuzz models."""
    from bbimg.model_files import find_by_hash

    model_name = header.model_name if header.model_name is not None else find_by_hash(header.weights_hash)
    if model_name is None:
        return None
    if model_name == TINY_MODEL:
        return TINY_CONFIG["hyper_channels"], TINY_CONFIG["latent_channels"]
    from bbimg import codec

    counts = codec._latent_channels(model_name)
    return None if counts is None else counts[:2]


def decode_memory_bound(pixels: int) -> int:
    """The documented bound on the decoder's memory for an image of ``pixels`` (bytes above the
    process's baseline)."""
    return DECODE_BYTES_PER_PIXEL * pixels + DECODE_BASE_BYTES


def decode_time_bound(pixels: int) -> float:
    """CPU seconds allowed for decoding ``pixels`` in the fuzz run (CPU time, not wall time: a
    loaded machine must not make a fast decoder look slow)."""
    return 4 * TIME_LIMIT_S + 4e-6 * pixels


_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from fuzz import harness
from bbimg import codec, transforms
from bbimg import format as bbi
data = sys.stdin.buffer.read()
header = bbi.read_header(data)
try:
    transforms.load_transforms(codec.model_of(header), "cpu")    # warm-up: the model counts in the baseline
except Exception:
    pass
harness.limit_memory(int(sys.argv[2]))
import resource
cpu = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))  # SIGXCPU past the CPU-time bound
try:
    image = codec.decode(data, max_pixels=header.width * header.height)
except bbi.BbiError:
    print("rejected-large")
else:
    assert image.size == (header.width, header.height), "decoded size differs from header"
    print("ok-large")
"""


def seeded_mutator(mutate_fn, seeds: list[bytes], byte_mutate, fix_probability: float):
    """A libFuzzer ``custom_mutator``: ``byte_mutate`` (atheris.Mutate; its result's CRCs fixed
    with ``fix_probability``) or the structure-aware ``mutate_fn`` of this module, applied to the
    input or, to keep reaching deep, to one of ``seeds``."""

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        r = rng.random()
        if r < 0.3 and seeds:
            return mutate_fn(rng.choice(seeds), rng, None, max_size)
        if r < 0.6:
            return mutate_fn(data, rng, None, max_size)
        out = byte_mutate(data, max_size)
        if rng.random() < fix_probability:
            out = fix_crcs(out)
        return out[:max_size]

    return custom_mutator


def check_decoder_any_size(data: bytes, max_pixels: int = FUZZ_MAX_PIXELS, large_max: int = LARGE_MAX_PIXELS) -> str:
    """:func:`check_decoder` for any claimed size: small images in this process; up to
    ``large_max`` pixels in a fresh subprocess whose address space is capped at the documented
    bound (:func:`decode_memory_bound`) and whose time is bounded (:func:`decode_time_bound`);
    above, ``codec.decode`` with its pixel limit at ``large_max`` must raise BbiError within
    :data:`REFUSE_LIMIT_S` ("refused"; "skipped" where the library has no such limit)."""
    import os
    import subprocess
    import sys

    from bbimg import codec

    try:
        header = bbi.read_header(data)
    except bbi.BbiError:
        header = None
    pixels = 0 if header is None else header.width * header.height
    if pixels <= max_pixels:
        return check_decoder(data, max_pixels)
    if pixels > large_max:
        t0 = time.perf_counter()
        try:
            codec.decode(data, max_pixels=large_max)
        except bbi.BbiError:
            elapsed = time.perf_counter() - t0
            assert elapsed < REFUSE_LIMIT_S, f"refusing {header.width}x{header.height} took {elapsed:.2f} s"
            return "refused"
        raise AssertionError(f"{header.width}x{header.height} decoded above the pixel limit {large_max}")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "BBIMG_THREADS": "1"}
    limit = math.ceil(decode_time_bound(pixels))
    try:
        cap = decode_memory_bound(pixels) + ADDRESS_SPACE_SLACK_BYTES
        out = subprocess.run([sys.executable, "-c", _CHILD, root, str(cap), str(limit)], input=data,
                             capture_output=True, timeout=20 * limit, env=env)  # wall: a last resort only
    except subprocess.TimeoutExpired:
        raise AssertionError(f"decoding {header.width}x{header.height} took over {20 * limit} s of wall time") from None
    if out.returncode == -signal.SIGXCPU:
        raise AssertionError(f"decoding {header.width}x{header.height} took over {limit} s of CPU time")
    lines = out.stdout.decode(errors="replace").split()
    if out.returncode != 0 or not lines:
        tail = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise AssertionError(f"decoding {header.width}x{header.height} in a capped process failed "
                             f"(exit {out.returncode}): {tail[0]}")
    return lines[-1]


def mutate_sizes(data: bytes, rng: random.Random, corpus=None, max_size: int = 1 << 16,
                 resize_share: float = 0.03) -> bytes:
    """:func:`mutate`, or :func:`resize` for ``resize_share`` of the inputs (headers claiming
    large images, up to the format's limit)."""
    if rng.random() < resize_share:
        out = resize(data, rng)
        if out is not None:
            return out
    return mutate(data, rng, corpus, max_size)


# -- resources ------------------------------------------------------------------------------------
_PAGE = resource.getpagesize()


def _vm_size() -> int:
    """Address-space size of this process in bytes (VmSize; /proc/self/statm is the cheapest read)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * _PAGE


def limit_memory(extra: int = MEMORY_LIMIT_BYTES) -> int:
    """Cap the address space at its current size plus ``extra``; returns the cap.

    Call it after warming up and again before each input (as the decoder target does): the cap then
    bounds what one input can allocate. A cap set once would also count the slow growth of a long
    run that no single input causes (glibc malloc arenas for the worker threads, up to 64 MiB of
    address space each, and fragmentation), and a 250,000-input run reached it. Slow growth of
    resident memory over a run is bounded by libFuzzer's ``-rss_limit_mb`` instead."""
    cap = _vm_size() + extra
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


# -- seeds ----------------------------------------------------------------------------------------
def make_tiny_model(folder: Path, name: str = TINY_MODEL) -> str:
    """A tiny model with fixed random weights in ``folder`` (put it on $BBIMG_MODEL_PATH)."""
    import torch

    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = HierarchicalVAE(VAEConfig(**TINY_CONFIG))
        export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 0}, path)
    return name


def _natural(rng: np.random.Generator, h: int, w: int, grey: bool = False) -> np.ndarray:
    from PIL import Image

    base = rng.random((h // 8 + 2, w // 8 + 2, 3))
    arr = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float64)
    arr = np.clip(arr * 0.8 + np.linspace(0, 50, w)[None, :, None], 0, 255).astype(np.uint8)
    return arr[:, :, 0] if grey else arr


def make_seeds(tiny_model: str, default_model: bool = True) -> list[bytes]:
    """Real coded files: small images with the tiny model (RGB, grey, RGBA + ICC, odd sizes) and,
    with ``default_model``, one 64x48 crop of a photo-like image with the shipped model."""
    from PIL import Image

    from bbimg import codec

    rng = np.random.default_rng(1)
    seeds = [codec.encode(_natural(rng, 64, 64), 50, model=tiny_model),
             codec.encode(_natural(rng, 40, 72), 90, model=tiny_model, seed=7),
             codec.encode(_natural(rng, 17, 3, grey=True), 10, model=tiny_model)]
    rgba = Image.fromarray(np.dstack([_natural(rng, 33, 65), np.full((33, 65), 200, np.uint8)]), "RGBA")
    rgba.info["icc_profile"] = b"fake icc profile bytes"
    seeds.append(codec.encode(rgba, 70, model=tiny_model))
    # One file in the older 1.x layout (model name, 16-byte hash, header CRC), which readers still accept.
    from bbimg.model_files import find_weights, weights_sha256
    c = bbi.read(seeds[0])
    seeds.append(bbi.write(bbi.Container(dataclasses.replace(c.header, model_name=tiny_model, weights_hash=weights_sha256(
        find_weights(tiny_model))[:16]), c.sections), version=1))
    if default_model:
        seeds.append(codec.encode(_natural(rng, 48, 64), 40))
    return seeds


# -- a fuzz loop without atheris --------------------------------------------------------------------
@dataclasses.dataclass
class FuzzStats:
    inputs: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0
    outcomes: dict = dataclasses.field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def fuzz_loop(target, seeds: list[bytes], *, iterations: int | None = None, seconds: float | None = None,
              seed: int = 0, time_limit: float = TIME_LIMIT_S, crash_file: Path | None = None,
              mutator=None) -> FuzzStats:
    """Random-mutation fuzzing of ``target`` (raises on a broken invariant) from ``seeds``.

    Deterministic for a given ``seed``. The seeds themselves run first. An input slower than
    ``time_limit`` is an error (``target`` bounds its own large inputs: see
    :func:`check_decoder_any_size`); ``crash_file`` receives the failing input. ``mutator(data,
    rng, corpus)`` defaults to :func:`mutate`."""
    mutator = mutate if mutator is None else mutator
    if iterations is None and seconds is None:
        raise ValueError("give iterations or seconds")
    rng = random.Random(seed)
    corpus = [bytes(s) for s in seeds]
    stats = FuzzStats()
    start = time.perf_counter()
    i = 0
    while True:
        if iterations is not None and i >= iterations:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        data = corpus[i] if i < len(corpus) else mutator(rng.choice(corpus), rng, corpus)
        t0 = time.perf_counter()
        try:
            outcome = target(data)
        except BaseException:
            if crash_file is not None:
                Path(crash_file).write_bytes(data)
            raise
        dt = time.perf_counter() - t0
        if dt > time_limit and not str(outcome).endswith("-large"):
            if crash_file is not None:
                Path(crash_file).write_bytes(data)
            raise AssertionError(f"input {i} took {dt:.2f} s (limit {time_limit} s)")
        if not str(outcome).endswith("-large"):
            stats.slowest_s = max(stats.slowest_s, dt)
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        i += 1
    stats.inputs = i
    stats.seconds = time.perf_counter() - start
    return stats
