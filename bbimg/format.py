"""The ``.bbi`` container: header, tagged sections and CRCs (spec: ``docs/format.md``).

Standard library only, so ``bbimg info`` and other tools can inspect files without
importing torch. Reading never trusts a size before checking it against the caps and
the data actually present; every problem with the data raises :class:`BbiError`, while
invalid values handed to the writer raise :class:`ValueError`.
"""
from __future__ import annotations

import enum
import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "MAGIC",
    "VERSION",
    "LATEST_VERSION",
    "LATEST_V1_VERSION",
    "MAX_DIMENSION",
    "MAX_PIXELS",
    "MAX_MODEL_NAME_BYTES",
    "MIN_HASH_BYTES",
    "MIN_V1_HASH_BYTES",
    "MAX_HASH_BYTES",
    "MAX_SECTIONS",
    "MAX_SECTION_BYTES",
    "KNOWN_TAGS",
    "BbiError",
    "ColourMode",
    "Header",
    "Section",
    "Container",
    "SectionInfo",
    "Info",
    "write",
    "read",
    "read_header",
    "read_info",
    "check",
    "encode_varint",
    "version_for",
    "decoded_description",
]

MAGIC = b"\x89BBI\r\n\x1a\n"
VERSION = (2, 0)  # (major, minor) that write() produces by default
LATEST_VERSION = (2, 0)  # the newest version this module writes and fully understands
LATEST_V1_VERSION = (1, 3)  # the newest version of the older layout (major 1), still read and writable
_V1_BASE = (1, 1)  # the 1.x version written for files without a section of a later minor version
#: Sections that need a newer 1.x minor version than _V1_BASE: the 1.x writer records the lowest that
#: describes the sections present, so files without them stay readable by older readers.
_MINOR_OF_TAG = {"ALPH": 2, "ZPL2": 3, "YPL2": 3}
MAX_DIMENSION = 65535
MAX_PIXELS = 1 << 28
MAX_MODEL_NAME_BYTES = 64
MIN_HASH_BYTES = 8  # 2.0; the 1.x layout needs MIN_V1_HASH_BYTES
MIN_V1_HASH_BYTES = 16
MAX_HASH_BYTES = 32
MAX_SECTIONS = 64
MAX_SECTION_BYTES = 1 << 28  # 256 MiB
MAX_FILE_BYTES = (1 << 32) - 1  # file_size is a u32 (1.x), a varint in this range (2.0)
MAX_V2_BODY_BYTES = 0xFFFF  # 2.0 header body size (a varint in the u16 range)

#: Tags defined by this version and whether each is required (flag bit 0).
KNOWN_TAGS: dict[str, bool] = {
    "ZPLN": True,
    "ZIDX": True,
    "YPLN": True,
    "YIDX": True,
    "YSKP": True,
    "ALPH": True,
    "ZPL2": True,
    "YPL2": True,
    "ICCP": False,
    "EXIF": False,
}

_PREFIX = struct.Struct("<8sBBH")  # magic, major, minor, header_size
# file_size, width, height, colour_mode, bit_depth, quality_t, quality_q, seed,
# kappa, temperature, rec_flags, section_count
_FIXED = struct.Struct("<IIIBBfBQBfHB")
_CRC = struct.Struct("<I")
_SECTION = struct.Struct("<4sBI")  # tag, flags, length
_FLAG_REQUIRED = 0x01
_MUST_UNDERSTAND_REC_FLAGS = 0x00FF  # low byte: reject unknown bits; high byte: ignore
_KNOWN_REC_FLAGS = 0x0000
_MIN_BODY = _FIXED.size + 1 + 1 + 1 + MIN_V1_HASH_BYTES
_F32 = struct.Struct("<f")

Buffer = bytes | bytearray | memoryview


class BbiError(Exception):
    """The data is not a valid ``.bbi`` file this reader supports (one-line message)."""


class ColourMode(enum.IntEnum):
    """Mode of the original image; says how the decoded RGB is handed back."""

    RGB = 0
    L = 1
    RGBA = 2  # alpha in the ALPH section (1.2); flattened onto white in files without one
    LA = 3  # alpha in the ALPH section (1.2); flattened onto white in files without one
    P = 4  # palette, coded as RGB
    CMYK = 5  # converted to RGB at encode


def _f32(value: float) -> float:
    """Round to binary32 so a Header holds exactly what the file will hold."""
    try:
        out = struct.unpack("<f", struct.pack("<f", value))[0]
    except (OverflowError, struct.error) as exc:
        raise ValueError(f"{value!r} does not fit a float32") from exc
    return 0.0 if out == 0.0 else out  # canonical +0.0


def _require_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _require_float(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return _f32(value)


@dataclass(frozen=True, kw_only=True)
class Header:
    """Everything the decoder needs besides the section payloads.

    Validated on construction (``ValueError``), and float fields are rounded to
    float32 so that ``read(write(c)) == c`` holds exactly.
    """

    width: int
    height: int
    weights_hash: bytes  # first 8..32 bytes of SHA-256 of the weights (16..32 in the 1.x layout)
    quality_t: float  # model rate parameter in [0, 1]; what decoding uses
    quality_q: int  # the user's -q, 1..100; informational
    seed: int  # u64 seed of REC's shared randomness
    kappa: int  # u8 REC parameter
    temperature: float  # REC selection temperature, finite and >= 0 (0 = most likely candidate)
    rec_flags: int = 0  # u16; low byte must-understand, none defined in 1.0
    colour_mode: ColourMode = ColourMode.RGB
    bit_depth: int = 8  # bits per channel of the original, 1..16 (decoded images have 8)
    model_name: str | None = None  # the model's name: stored by the 1.x layout only (None in 2.0 files)

    def __post_init__(self) -> None:
        _require_int("width", self.width, 1, MAX_DIMENSION)
        _require_int("height", self.height, 1, MAX_DIMENSION)
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"width*height = {self.width * self.height} exceeds {MAX_PIXELS} pixels")
        if self.model_name is not None:
            if not isinstance(self.model_name, str):
                raise ValueError("model_name must be a str or None")
            try:
                name = self.model_name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"model_name is not encodable as UTF-8: {exc.reason}") from None
            if not 1 <= len(name) <= MAX_MODEL_NAME_BYTES:
                raise ValueError(f"model_name must be 1..{MAX_MODEL_NAME_BYTES} UTF-8 bytes, got {len(name)}")
        if not isinstance(self.weights_hash, (bytes, bytearray, memoryview)):
            raise ValueError("weights_hash must be bytes")
        digest = bytes(self.weights_hash)
        if not MIN_HASH_BYTES <= len(digest) <= MAX_HASH_BYTES:
            raise ValueError(f"weights_hash must be {MIN_HASH_BYTES}..{MAX_HASH_BYTES} bytes, got {len(digest)}")
        object.__setattr__(self, "weights_hash", digest)
        t = _require_float("quality_t", self.quality_t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"quality_t must be in [0, 1], got {self.quality_t}")
        object.__setattr__(self, "quality_t", t)
        _require_int("quality_q", self.quality_q, 1, 100)
        _require_int("seed", self.seed, 0, (1 << 64) - 1)
        _require_int("kappa", self.kappa, 0, 255)
        temp = _require_float("temperature", self.temperature)
        if not temp >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        object.__setattr__(self, "temperature", temp)
        _require_int("rec_flags", self.rec_flags, 0, 0xFFFF)
        unknown = self.rec_flags & _MUST_UNDERSTAND_REC_FLAGS & ~_KNOWN_REC_FLAGS
        if unknown:
            raise ValueError(f"rec_flags sets undefined must-understand bits 0x{unknown:02x}")
        if isinstance(self.colour_mode, bool):
            raise ValueError("colour_mode must be a ColourMode")
        try:
            object.__setattr__(self, "colour_mode", ColourMode(self.colour_mode))
        except ValueError:
            raise ValueError(f"unknown colour_mode {self.colour_mode!r}") from None
        _require_int("bit_depth", self.bit_depth, 1, 16)

    def matches_weights(self, sha256_digest: bytes) -> bool:
        """True when the weights with this full SHA-256 digest are the ones the file was coded with."""
        return bytes(sha256_digest[: len(self.weights_hash)]) == self.weights_hash


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or len(tag) != 4 or not all(0x21 <= ord(c) <= 0x7E for c in tag):
        raise ValueError(f"section tag must be 4 printable ASCII characters (no space), got {tag!r}")
    return tag


@dataclass(frozen=True)
class Section:
    """One tagged payload. ``required``: a reader that does not know the tag must reject the file."""

    tag: str
    payload: bytes
    required: bool = True

    def __post_init__(self) -> None:
        _check_tag(self.tag)
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise ValueError(f"section {self.tag} payload must be bytes")
        object.__setattr__(self, "payload", bytes(self.payload))
        if len(self.payload) > MAX_SECTION_BYTES:
            raise ValueError(f"section {self.tag} payload of {len(self.payload)} bytes exceeds {MAX_SECTION_BYTES}")
        if not isinstance(self.required, bool):
            raise ValueError("required must be a bool")
        expected = KNOWN_TAGS.get(self.tag)
        if expected is not None and expected != self.required:
            kind = "required" if expected else "optional"
            raise ValueError(f"section {self.tag} is defined as {kind}")


@dataclass(frozen=True)
class Container:
    """A whole ``.bbi`` file: the header and the sections in file order."""

    header: Header
    sections: tuple[Section, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise ValueError("header must be a Header")
        sections = tuple(self.sections)
        if not all(isinstance(s, Section) for s in sections):
            raise ValueError("sections must be Section objects")
        if len(sections) > MAX_SECTIONS:
            raise ValueError(f"{len(sections)} sections exceed the limit of {MAX_SECTIONS}")
        tags = [s.tag for s in sections]
        dup = sorted({t for t in tags if tags.count(t) > 1})
        if dup:
            raise ValueError(f"duplicate section tag(s): {', '.join(dup)}")
        object.__setattr__(self, "sections", sections)

    def section(self, tag: str) -> bytes | None:
        """Payload of the section with this tag, or None if absent."""
        for s in self.sections:
            if s.tag == tag:
                return s.payload
        return None


class SectionInfo(NamedTuple):
    """Where a section sits in the file, without its payload."""

    tag: str
    length: int
    required: bool
    offset: int  # file offset of the payload


class Info(NamedTuple):
    """What ``bbimg info`` shows: header, section table and size."""

    header: Header
    sections: tuple[SectionInfo, ...]
    total_size: int
    version: tuple[int, int]

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file (docs/format.md, section 7)."""
        return self.total_size * 8 / (self.header.width * self.header.height)


def version_for(tags: Iterable[str]) -> tuple[int, int]:
    """The lowest version of the 1.x layout that describes a file with these section tags (1.1 for
    most files, 1.2 with an ALPH section, 1.3 with the block plans ZPL2 and YPL2). What
    ``write(container, version=1)`` records."""
    return _V1_BASE[0], max([_V1_BASE[1], *(_MINOR_OF_TAG.get(t, 0) for t in tags)])


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first, bit 7 set on every byte
    but the last; the shortest encoding (the only one a 2.0 reader accepts)."""
    if value < 0:
        raise ValueError(f"varint of a negative value {value}")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _resolve_version(container: Container, version) -> tuple[int, int]:
    if version is None or version == 2 or version == (2, 0):
        return VERSION
    lowest = version_for(s.tag for s in container.sections)
    if version == 1:
        return lowest
    if (isinstance(version, tuple) and len(version) == 2 and version[0] == 1 and isinstance(version[1], int)
            and lowest[1] <= version[1] <= LATEST_V1_VERSION[1]):
        return version
    raise ValueError(f"cannot write version {version!r} for these sections (2, (2, 0), 1 or (1, minor) with "
                     f"{lowest[1]} <= minor <= {LATEST_V1_VERSION[1]})")


def write(container: Container, version: int | tuple[int, int] | None = None) -> bytes:
    """Serialise ``container``. Raises ValueError on invalid input.

    ``version``: None, 2 or (2, 0): the 2.0 layout (the model is named by ``weights_hash`` alone:
    ``model_name`` is not stored and reads back as None). 1: the 1.x layout at the lowest minor
    version that describes the sections (:func:`version_for`); (1, minor): that minor version,
    which must describe the sections. The 1.x layout needs ``model_name`` and a hash of at least
    16 bytes."""
    if not isinstance(container, Container):
        raise ValueError("write() takes a Container")
    major, minor = _resolve_version(container, version)
    return _write_v2(container, minor) if major == 2 else _write_v1(container, minor)


def _write_v1(container: Container, minor: int) -> bytes:
    h = container.header
    if h.model_name is None:
        raise ValueError("the 1.x layout needs a model_name")
    if len(h.weights_hash) < MIN_V1_HASH_BYTES:
        raise ValueError(f"the 1.x layout needs a weights_hash of at least {MIN_V1_HASH_BYTES} bytes")
    name = h.model_name.encode("utf-8")
    body_size = _FIXED.size + 1 + len(name) + 1 + len(h.weights_hash)
    size = _PREFIX.size + body_size + _CRC.size
    size += sum(_SECTION.size + len(s.payload) for s in container.sections) + _CRC.size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"file of {size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
    out = bytearray(_PREFIX.pack(MAGIC, 1, minor, body_size))
    out += _FIXED.pack(size, h.width, h.height, h.colour_mode, h.bit_depth, h.quality_t, h.quality_q,
                       h.seed, h.kappa, h.temperature, h.rec_flags, len(container.sections))
    out += bytes([len(name)]) + name + bytes([len(h.weights_hash)]) + h.weights_hash
    out += _CRC.pack(zlib.crc32(out))
    for s in container.sections:
        out += _SECTION.pack(s.tag.encode("ascii"), _FLAG_REQUIRED if s.required else 0, len(s.payload))
        out += s.payload
    out += _CRC.pack(zlib.crc32(out))
    assert len(out) == size
    return bytes(out)


def _write_v2(container: Container, minor: int) -> bytes:
    h = container.header
    # Header body after file_size (docs/format.md, section 3).
    rest = (encode_varint(h.width) + encode_varint(h.height) + bytes([h.colour_mode, h.bit_depth])
            + _F32.pack(h.quality_t) + bytes([h.quality_q]) + encode_varint(h.seed) + bytes([h.kappa])
            + _F32.pack(h.temperature) + encode_varint(h.rec_flags) + bytes([len(container.sections)])
            + bytes([len(h.weights_hash)]) + h.weights_hash)
    framing = [s.tag.encode("ascii") + encode_varint(len(s.payload) << 1 | s.required) for s in container.sections]
    tail = sum(len(f) + len(s.payload) for f, s in zip(framing, container.sections)) + _CRC.size
    size = 0
    while True:  # file_size is in the header it measures: settle its own length (at most 3 rounds)
        body = encode_varint(size) + rest
        new = len(MAGIC) + 2 + len(encode_varint(len(body))) + len(body) + tail
        if new == size:
            break
        size = new
    if size > MAX_FILE_BYTES:
        raise ValueError(f"file of {size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
    out = bytearray(MAGIC) + bytes([2, minor]) + encode_varint(len(body)) + body
    for f, s in zip(framing, container.sections):
        out += f
        out += s.payload
    out += _CRC.pack(zlib.crc32(out))
    assert len(out) == size
    return bytes(out)


def check(prefix: Buffer) -> bool | None:
    """Signature check on the first bytes of a file.

    None: too few bytes to tell (they match the magic so far); False: not a .bbi
    file; True: the magic matches (the rest is not validated).
    """
    head = bytes(prefix[: len(MAGIC)])
    if not MAGIC.startswith(head):
        return False
    return True if len(head) == len(MAGIC) else None


class _Parsed(NamedTuple):
    header: Header
    version: tuple[int, int]
    file_size: int
    count: int
    end: int  # offset of the first section


def _parse_header(data: memoryview) -> _Parsed:
    """Validate and decode the header of either layout."""
    n = len(data)
    if not MAGIC.startswith(bytes(data[: len(MAGIC)])):
        raise BbiError("not a .bbi file (bad magic)")
    if n < len(MAGIC) + 2:
        raise BbiError(f"truncated: {n} bytes, too short for the file prefix")
    major, minor = data[len(MAGIC)], data[len(MAGIC) + 1]
    if major == 1:
        return _parse_header_v1(data, minor)
    if major == 2:
        return _parse_header_v2(data, minor)
    raise BbiError(f"unsupported format major version {major} (this reader supports 1 and 2)")


def _make_header(**fields) -> Header:
    try:
        return Header(**fields)
    except ValueError as exc:
        raise BbiError(f"invalid header field: {exc}") from None


def _parse_header_v1(data: memoryview, minor: int) -> _Parsed:
    n = len(data)
    if n < _PREFIX.size:
        raise BbiError(f"truncated: {n} bytes, too short for the file prefix")
    _, major, minor, body_size = _PREFIX.unpack_from(data)
    if body_size < _MIN_BODY:
        raise BbiError(f"header body of {body_size} bytes is shorter than the minimum {_MIN_BODY}")
    crc_at = _PREFIX.size + body_size
    end = crc_at + _CRC.size
    if n < end:
        raise BbiError(f"truncated: header needs {end} bytes, got {n}")
    if zlib.crc32(data[:crc_at]) != _CRC.unpack_from(data, crc_at)[0]:
        raise BbiError("header CRC mismatch (corrupt header)")

    (file_size, width, height, mode, depth, t, q, seed, kappa, temp, rec_flags,
     count) = _FIXED.unpack_from(data, _PREFIX.size)
    _check_size(width, height, count)
    if file_size < end + _CRC.size:
        raise BbiError(f"file_size {file_size} is smaller than the header")
    pos = _PREFIX.size + _FIXED.size
    name_len = data[pos]
    if not 1 <= name_len <= MAX_MODEL_NAME_BYTES:
        raise BbiError(f"model name length {name_len} outside 1..{MAX_MODEL_NAME_BYTES}")
    if pos + 1 + name_len + 1 > crc_at:
        raise BbiError("model name runs past the end of the header")
    try:
        name = bytes(data[pos + 1 : pos + 1 + name_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise BbiError("model name is not valid UTF-8") from None
    pos += 1 + name_len
    hash_len = data[pos]
    if not MIN_V1_HASH_BYTES <= hash_len <= MAX_HASH_BYTES:
        raise BbiError(f"weights hash length {hash_len} outside {MIN_V1_HASH_BYTES}..{MAX_HASH_BYTES}")
    if pos + 1 + hash_len > crc_at:
        raise BbiError("weights hash runs past the end of the header")
    digest = bytes(data[pos + 1 : pos + 1 + hash_len])
    pos += 1 + hash_len
    # A newer minor version may append fields; the CRC above already covers them.
    if minor <= LATEST_V1_VERSION[1] and pos != crc_at:
        raise BbiError(f"header body has {crc_at - pos} unexpected trailing bytes for version {major}.{minor}")
    header = _make_header(width=width, height=height, model_name=name, weights_hash=digest, quality_t=t,
                          quality_q=q, seed=seed, kappa=kappa, temperature=temp, rec_flags=rec_flags,
                          colour_mode=mode, bit_depth=depth)
    return _Parsed(header, (major, minor), file_size, count, end)


def _check_size(width: int, height: int, count: int) -> None:
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise BbiError(f"image dimensions {width}x{height} outside 1..{MAX_DIMENSION}")
    if width * height > MAX_PIXELS:
        raise BbiError(f"image of {width}x{height} exceeds the {MAX_PIXELS}-pixel limit")
    if count > MAX_SECTIONS:
        raise BbiError(f"{count} sections exceed the limit of {MAX_SECTIONS}")


def _read_varint(data: memoryview, pos: int, limit: int, what: str, hi: int, past: str) -> tuple[int, int]:
    """(value, next offset) of the LEB128 varint at ``pos``, which must end before ``limit`` (else
    ``past`` is the error), be the shortest encoding of its value and not exceed ``hi``."""
    max_len = max(1, (hi.bit_length() + 6) // 7)
    value = shift = 0
    start = pos
    while True:
        if pos >= limit:
            raise BbiError(past)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if pos - start >= max_len:
            raise BbiError(f"{what}: varint longer than {max_len} bytes")
    if byte == 0 and pos - start > 1:
        raise BbiError(f"{what}: overlong varint encoding")
    if value > hi:
        raise BbiError(f"{what} {value} exceeds {hi}")
    return value, pos


def _parse_header_v2(data: memoryview, minor: int) -> _Parsed:
    n = len(data)
    pos = len(MAGIC) + 2
    body_size, pos = _read_varint(data, pos, n, "header body size", MAX_V2_BODY_BYTES,
                                  f"truncated: {n} bytes, too short for the file prefix")
    end = pos + body_size
    if n < end:
        raise BbiError(f"truncated: header needs {end} bytes, got {n}")
    past = "header fields run past the end of the header body"

    def varint(what: str, hi: int) -> int:
        nonlocal pos
        value, pos = _read_varint(data, pos, end, what, hi, past)
        return value

    def raw(size: int) -> memoryview:
        nonlocal pos
        if pos + size > end:
            raise BbiError(past)
        pos += size
        return data[pos - size : pos]

    file_size = varint("file_size", MAX_FILE_BYTES)
    width = varint("width", MAX_DIMENSION)
    height = varint("height", MAX_DIMENSION)
    mode, depth = raw(2)
    (t,) = _F32.unpack(raw(4))
    (q,) = raw(1)
    seed = varint("seed", (1 << 64) - 1)
    (kappa,) = raw(1)
    (temp,) = _F32.unpack(raw(4))
    rec_flags = varint("rec_flags", 0xFFFF)
    (count,) = raw(1)
    _check_size(width, height, count)
    (hash_len,) = raw(1)
    if not MIN_HASH_BYTES <= hash_len <= MAX_HASH_BYTES:
        raise BbiError(f"weights hash length {hash_len} outside {MIN_HASH_BYTES}..{MAX_HASH_BYTES}")
    digest = bytes(raw(hash_len))
    # A newer minor version may append fields, which this reader skips.
    if minor <= LATEST_VERSION[1] and pos != end:
        raise BbiError(f"header body has {end - pos} unexpected trailing bytes for version 2.{minor}")
    if file_size < end + _CRC.size:
        raise BbiError(f"file_size {file_size} is smaller than the header")
    header = _make_header(width=width, height=height, weights_hash=digest, quality_t=t, quality_q=q, seed=seed,
                          kappa=kappa, temperature=temp, rec_flags=rec_flags, colour_mode=mode, bit_depth=depth)
    return _Parsed(header, (2, minor), file_size, count, end)


def _parse(data: Buffer) -> tuple[Info, memoryview]:
    view = memoryview(data).cast("B")
    header, version, file_size, count, pos = _parse_header(view)
    n = len(view)
    if n < file_size:
        raise BbiError(f"truncated: header says {file_size} bytes, got {n}")
    if n > file_size:
        raise BbiError(f"{n - file_size} bytes of trailing garbage after the {file_size}-byte file")
    crc_at = file_size - _CRC.size
    if zlib.crc32(view[:crc_at]) != _CRC.unpack_from(view, crc_at)[0]:
        raise BbiError("file CRC mismatch (corrupt data)")
    table: list[SectionInfo] = []
    seen: set[str] = set()
    v2 = version[0] == 2
    for i in range(count):
        past = f"section {i} header runs past the end of the data"
        if pos + (4 if v2 else _SECTION.size) > crc_at:
            raise BbiError(past)
        if v2:
            raw_tag = bytes(view[pos : pos + 4])
            word, start = _read_varint(view, pos + 4, crc_at, f"section {i} length", (MAX_FILE_BYTES << 1) | 1, past)
            length, required = word >> 1, bool(word & 1)
        else:
            raw_tag, flags, length = _SECTION.unpack_from(view, pos)
            required = bool(flags & _FLAG_REQUIRED)
            start = pos + _SECTION.size
        if not all(0x21 <= b <= 0x7E for b in raw_tag):
            raise BbiError(f"section {i} has an invalid tag {raw_tag!r}")
        tag = raw_tag.decode("ascii")
        if length > MAX_SECTION_BYTES:
            raise BbiError(f"section {tag} of {length} bytes exceeds the {MAX_SECTION_BYTES}-byte limit")
        if length > crc_at - start:
            raise BbiError(f"section {tag} of {length} bytes runs past the end of the data")
        if tag in seen:
            raise BbiError(f"duplicate section {tag}")
        seen.add(tag)
        table.append(SectionInfo(tag, length, required, start))
        pos = start + length
    if pos != crc_at:
        raise BbiError(f"{crc_at - pos} unaccounted bytes after the last section")
    return Info(header, tuple(table), file_size, version), view


def read_header(data: Buffer) -> Header:
    """Decode the header from a prefix of a file; sections are not looked at.

    1.x: the header CRC is checked. 2.0 has no header CRC: a prefix shorter than the file is
    checked for structure and value ranges only; given the whole file (at least ``file_size``
    bytes), the file CRC is checked too."""
    view = memoryview(data).cast("B")
    parsed = _parse_header(view)
    if parsed.version[0] == 2 and len(view) >= parsed.file_size:
        crc_at = parsed.file_size - _CRC.size
        if zlib.crc32(view[:crc_at]) != _CRC.unpack_from(view, crc_at)[0]:
            raise BbiError("file CRC mismatch (corrupt data)")
    return parsed.header


def read_info(data: Buffer) -> Info:
    """Validate the whole file's structure and CRCs; return header and section table, no payload copies.

    Unlike :func:`read`, unknown required sections are listed, not rejected: this is
    for describing a file, not decoding it.
    """
    return _parse(data)[0]


def read(data: Buffer, *, known_tags: Iterable[str] = ()) -> Container:
    """Parse a whole file. ``known_tags``: tags the caller understands besides :data:`KNOWN_TAGS`.

    Unknown optional sections are skipped (left out of the result); an unknown
    required section is an error.
    """
    info, view = _parse(data)
    extra = frozenset(known_tags)
    sections: list[Section] = []
    for s in info.sections:
        expected = KNOWN_TAGS.get(s.tag)
        if expected is not None and expected != s.required:
            raise BbiError(f"section {s.tag} has the wrong required flag")
        if expected is None and s.tag not in extra:
            if s.required:
                raise BbiError(f"unknown required section {s.tag} (file needs a newer reader)")
            continue
        sections.append(Section(s.tag, bytes(view[s.offset : s.offset + s.length]), s.required))
    return Container(info.header, tuple(sections))


#: What the decoder hands back for each colour mode of a file without an ALPH section.
_DECODED_MODE = {ColourMode.RGB: "RGB", ColourMode.L: "L", ColourMode.RGBA: "RGB", ColourMode.LA: "L",
                 ColourMode.P: "RGB", ColourMode.CMYK: "RGB"}


def decoded_description(header: Header, sections: Iterable[str | Section | SectionInfo]) -> dict:
    """What decoding the file gives back, from its header and section table alone.

    ``sections``: tags, or the :class:`Section` / :class:`SectionInfo` objects of :func:`read` /
    :func:`read_info`. Returns ``mode`` (RGB, L, RGBA or LA), ``bit_depth`` (always 8), ``width``,
    ``height``, ``icc_profile`` (whether one is attached), ``orientation`` (always 1: EXIF
    orientation is applied before coding), and the original's ``source_mode`` (the header's
    colour mode) and ``source_bit_depth``. The decoder and ``bbimg info`` both follow it, so they
    agree. Raises BbiError for an ALPH section in a file whose colour mode has no alpha.
    """
    tags: set[str] = set()
    icc = False
    for s in sections:
        tag = s if isinstance(s, str) else s.tag
        tags.add(tag)
        if tag == "ICCP":
            icc = isinstance(s, str) or (s.length if isinstance(s, SectionInfo) else len(s.payload)) > 0
    mode = _DECODED_MODE[header.colour_mode]
    if "ALPH" in tags:
        if header.colour_mode not in (ColourMode.RGBA, ColourMode.LA):
            raise BbiError(f"corrupt file: ALPH section in a file of colour mode {header.colour_mode.name}")
        mode += "A"
    return dict(mode=mode, bit_depth=8, width=header.width, height=header.height, icc_profile=icc,
                orientation=1, source_mode=header.colour_mode.name, source_bit_depth=header.bit_depth)
