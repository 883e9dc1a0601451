"""What a file's header can make the decoder do: absurd dimensions are refused from the header
alone, before any allocation, by every reader and the CLI; the model name in a 1.x file never
reaches the file system as a path, and a 2.0 file's weights hash only selects among the installed
models.

The large-image memory bounds are measured by bench/large_image.py and tested in tests/test_tiling.py.
"""
import dataclasses
import hashlib
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from bbimg import codec
from bbimg import format as bbi
from bbimg.model_files import DEFAULT_MODEL
from bbi_files import v2_file

ROOT = Path(__file__).resolve().parents[1]


def _hand_made_header(width: int, height: int, name: bytes = DEFAULT_MODEL.encode()) -> bytes:
    """A 1.x file whose header fields are packed by hand (bypassing Header's checks), valid CRCs."""
    body = struct.pack("<IIIBBfBQBfHB", 0, width, height, 0, 8, 0.5, 50, 0, 16, 1.0, 0, 0)
    body += bytes([len(name)]) + name + bytes([32]) + bytes(32)
    size = 12 + len(body) + 4 + 4
    body = struct.pack("<I", size) + body[4:]
    head = bbi.MAGIC + bytes([1, 0]) + struct.pack("<H", len(body)) + body
    head += struct.pack("<I", zlib.crc32(head))
    return head + struct.pack("<I", zlib.crc32(head))


def _hand_made_v2(width: int, height: int, digest: bytes = bytes(8)) -> bytes:
    """A 2.0 file packed by hand (docs/format.md section 3), no sections, valid CRC."""
    return v2_file(width=width, height=height, seed=0, kappa=16, digest=digest, sections=())


@pytest.mark.parametrize("make", [_hand_made_header, _hand_made_v2], ids=["v1", "v2"])
def test_absurd_dimensions_are_rejected_before_any_allocation(cli_rejects, make):
    data = make(65535, 65535)
    assert bbi.read(make(64, 48)).header.width == 64  # the hand-made layout is right
    tracemalloc.start()
    t0 = time.perf_counter()
    for fn in (bbi.read_header, bbi.read_info, bbi.read, codec.decode, codec.info):
        with pytest.raises(bbi.BbiError, match="65535x65535 exceeds"):
            fn(data)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20, (elapsed, peak)
    cli_rejects(data, "65535x65535 header")


def test_model_name_from_a_file_cannot_pick_a_path():
    """The name in a 1.x file must not reach the file system as a path (absolute or with '..')."""
    weights = ROOT / "bbimg" / "weights" / f"{DEFAULT_MODEL}.pt"
    digest = hashlib.sha256(weights.read_bytes()).digest()
    header = dataclasses.replace(bbi.read(_hand_made_header(64, 48)).header, weights_hash=digest)
    sections = tuple(bbi.Section(t, b"") for t in ("ZPLN", "ZIDX", "YPLN", "YIDX"))
    with pytest.raises(bbi.BbiError) as plain:  # the installed name gets past the model lookup
        codec.decode(bbi.write(bbi.Container(header, sections), version=1))
    assert "not installed" not in str(plain.value)
    for name in (str(weights)[:-3], f"../weights/{DEFAULT_MODEL}", f"{DEFAULT_MODEL}/../{DEFAULT_MODEL}"):
        data = bbi.write(bbi.Container(dataclasses.replace(header, model_name=name), sections), version=1)
        with pytest.raises(bbi.BbiError, match="not installed"):
            codec.decode(data)


def test_weights_hash_selects_only_installed_models(cli_rejects):
    """A 2.0 file names its model by a prefix of the weights' SHA-256: the installed model that
    matches is used; any other prefix is refused with an error naming it, before any decoding."""
    weights = ROOT / "bbimg" / "weights" / f"{DEFAULT_MODEL}.pt"
    digest = hashlib.sha256(weights.read_bytes()).digest()
    sections = tuple(bbi.Section(t, b"") for t in ("ZPLN", "ZIDX", "YPLN", "YIDX"))
    header = bbi.read(_hand_made_v2(64, 48)).header
    with pytest.raises(bbi.BbiError) as plain:  # the installed weights get past the model lookup
        codec.decode(bbi.write(bbi.Container(dataclasses.replace(header, weights_hash=digest[:8]), sections)))
    assert "not installed" not in str(plain.value)
    assert codec.info(_hand_made_v2(64, 48, digest[:8]))["model"] == DEFAULT_MODEL
    other = bytes(b ^ 0xFF for b in digest[:8])
    data = bbi.write(bbi.Container(dataclasses.replace(header, weights_hash=other), sections))
    with pytest.raises(bbi.BbiError, match=f"file needs model weights {other.hex()}, which are not installed"):
        codec.decode(data)
    facts = codec.info(data)
    assert facts["model"] == other.hex() and not facts["model_installed"]
    cli_rejects(data, "unknown weights")
