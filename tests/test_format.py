"""Tests of the .bbi container (docs/format.md): round trips, corruption, limits, versioning.

The structural tests run on both layouts: 2.0 (what ``write`` produces by default) and 1.x
(``write(c, version=1)``, which older files use and readers keep accepting).
"""
from __future__ import annotations

import hashlib
import math
import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from bbimg import format as bbi
from bbimg.format import BbiError, ColourMode, Container, Header, Section
from bbi_files import DEFAULT_SECTIONS, MAGIC, v2_file, varint

# Layout constants written from the spec, not taken from the module, so the tests check the spec.
BODY = 12  # 1.x: offset of the header body
OFF_FILE_SIZE, OFF_WIDTH, OFF_HEIGHT, OFF_MODE = BODY, BODY + 4, BODY + 8, BODY + 12
OFF_REC_FLAGS, OFF_COUNT = BODY + 32, BODY + 34
LAYOUTS = (1, 2)
layouts = pytest.mark.parametrize("layout", LAYOUTS, ids=["v1", "v2"])


def make_header(layout: int = 1, **kw) -> Header:
    base = dict(width=64, height=48, weights_hash=hashlib.sha256(b"w").digest()[:16 if layout == 1 else 8],
                quality_t=0.5, quality_q=50, seed=7, kappa=3, temperature=1.0,
                model_name="tiny" if layout == 1 else None)
    base.update(kw)
    return Header(**base)


def write(c: Container, layout: int) -> bytes:
    return bbi.write(c, version=layout)


def small_file(layout: int = 1, **kw) -> bytes:
    sections = [Section(t.decode(), p, bool(r)) for t, r, p in DEFAULT_SECTIONS]
    return write(Container(make_header(layout, **kw), sections), layout)


def overlong(v: int) -> bytes:
    """A non-minimal encoding of v: one more byte than needed."""
    b = bytearray(varint(v))
    b[-1] |= 0x80
    return bytes(b) + b"\x00"


def header_end(blob: bytes) -> int:
    """End of the header: the 1.x header CRC's end, or the 2.0 header body's end."""
    if blob[8] == 1:
        return BODY + struct.unpack_from("<H", blob, 10)[0] + 4
    size, pos, shift = 0, 10, 0
    while True:
        size |= (blob[pos] & 0x7F) << shift
        shift += 7
        pos += 1
        if not blob[pos - 1] & 0x80:
            return pos + size


def reseal(blob: bytes | bytearray, fix_size: bool = True) -> bytes:
    """1.x: recompute file_size and both CRCs, so a crafted field is what a reader sees, not a CRC error."""
    b = bytearray(blob)
    if fix_size:
        struct.pack_into("<I", b, OFF_FILE_SIZE, len(b))
    h = header_end(b) - 4
    struct.pack_into("<I", b, h, zlib.crc32(b[:h]))
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(b[:-4]))
    return bytes(b)


def append_section(blob: bytes, tag: bytes, flags: int, payload: bytes) -> bytes:
    """1.x: add a raw section at the end (bumping section_count) and reseal."""
    b = bytearray(blob[:-4]) + struct.pack("<4sBI", tag, flags, len(payload)) + payload + b"\0\0\0\0"
    b[OFF_COUNT] += 1
    return reseal(b)


def with_section(layout: int, tag: bytes, flags: int, payload: bytes, base=DEFAULT_SECTIONS, **kw) -> bytes:
    """The small file with one more raw section at the end, CRCs valid."""
    if layout == 1:
        blob = bbi.write(Container(make_header(1, **kw), [Section(t.decode(), p, bool(r)) for t, r, p in base]),
                         version=1)
        return append_section(blob, tag, flags, payload)
    return v2_file(sections=tuple(base) + ((tag, flags & 1, payload),))


# ---------------------------------------------------------------- round trip

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def headers(layout: int):
    return st.builds(
        Header,
        width=st.integers(1, 65535),
        height=st.integers(1, 4096),
        model_name=st.text(min_size=1, max_size=64).filter(lambda s: 1 <= len(s.encode("utf-8")) <= 64)
        if layout == 1 else st.none(),
        weights_hash=st.binary(min_size=16 if layout == 1 else 8, max_size=32),
        quality_t=st.floats(0.0, 1.0, width=32),
        quality_q=st.integers(1, 100),
        seed=st.integers(0, 2**64 - 1),
        kappa=st.integers(0, 255),
        temperature=f32.filter(lambda x: x >= 0),
        rec_flags=st.integers(0, 255).map(lambda x: x << 8),
        colour_mode=st.sampled_from(ColourMode),
        bit_depth=st.integers(1, 16),
    )


printable_tag = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=4)


@st.composite
def section_lists(draw) -> list[Section]:
    tags = draw(st.lists(st.one_of(st.sampled_from(sorted(bbi.KNOWN_TAGS)), printable_tag),
                         unique=True, max_size=8))
    out = []
    for tag in tags:
        required = bbi.KNOWN_TAGS.get(tag)
        if required is None:
            required = draw(st.booleans())
        out.append(Section(tag, draw(st.binary(max_size=200)), required))
    return out


def _round_trip(layout: int, header: Header, sections: list[Section]) -> None:
    c = Container(header, sections)
    blob = write(c, layout)
    assert bbi.check(blob) is True
    assert bbi.read(blob, known_tags=[s.tag for s in sections]) == c
    assert bbi.read_header(blob) == header
    assert bbi.read_header(blob[: header_end(blob)]) == header  # header-only prefix is enough
    info = bbi.read_info(blob)
    tags = {s.tag for s in sections}
    if layout == 1:
        expected_version = (1, 3) if tags & {"ZPL2", "YPL2"} else (1, 2) if "ALPH" in tags else (1, 1)
    else:
        expected_version = (2, 0)
    assert info.header == header and info.total_size == len(blob) and info.version == expected_version
    assert blob[8:10] == bytes(expected_version)
    assert [(s.tag, s.length, s.required) for s in info.sections] == \
        [(s.tag, len(s.payload), s.required) for s in sections]
    for s, si in zip(sections, info.sections):
        assert blob[si.offset : si.offset + si.length] == s.payload
    assert info.bpp == len(blob) * 8 / (header.width * header.height)


@settings(max_examples=150, deadline=None)
@given(headers(1), section_lists())
def test_round_trip_v1(header: Header, sections: list[Section]) -> None:
    _round_trip(1, header, sections)


@settings(max_examples=150, deadline=None)
@given(headers(2), section_lists())
def test_round_trip_v2(header: Header, sections: list[Section]) -> None:
    _round_trip(2, header, sections)


def test_default_layout_is_2_0_and_drops_the_model_name() -> None:
    c = Container(make_header(1), [Section("ZIDX", b"abc")])
    blob = bbi.write(c)
    assert blob[8:10] == b"\x02\x00" and bbi.VERSION == bbi.LATEST_VERSION == (2, 0)
    assert bbi.read(blob).header == make_header(1, model_name=None)  # 2.0 names the model by its hash alone
    assert bbi.write(c, version=(2, 0)) == bbi.write(c, version=2) == blob
    assert bbi.write(c, version=1)[8:10] == b"\x01\x01"
    assert bbi.write(c, version=(1, 3))[8:10] == b"\x01\x03"


@pytest.mark.parametrize("version", [(1, 0), (1, 4), (3, 0), 3, (2, 1), "2.0"])
def test_write_refuses_other_versions(version) -> None:
    c = Container(make_header(1), [Section("YSKP", b"")])  # YSKP needs 1.1
    with pytest.raises(ValueError, match="version"):
        bbi.write(c, version=version)


def test_v1_layout_needs_a_name_and_a_long_hash() -> None:
    for h in (make_header(2), make_header(1, model_name=None), make_header(1, weights_hash=bytes(15))):
        with pytest.raises(ValueError, match="1.x layout"):
            bbi.write(Container(h), version=1)


def test_v2_bytes_are_the_spec_layout() -> None:
    """The writer's bytes equal a file packed by hand from docs/format.md."""
    assert small_file(2) == v2_file()
    h = make_header(2, width=300, height=200, seed=2**64 - 1, rec_flags=0x8000, colour_mode=ColourMode.LA,
                    bit_depth=16, weights_hash=bytes(range(32)))
    blob = bbi.write(Container(h, [Section("YIDX", bytes(200))]))
    assert blob == v2_file(width=300, height=200, seed=2**64 - 1, rec_flags=0x8000, mode=3, depth=16,
                           digest=bytes(range(32)), sections=((b"YIDX", 1, bytes(200)),))


@pytest.mark.parametrize("payload", [0, 50, 63, 64, 8000, 20000])
def test_v2_file_size_varint_settles(payload: int) -> None:
    """file_size is inside the header it measures: sizes near the varint steps come out right."""
    for extra in range(0, 140, 7):
        blob = bbi.write(Container(make_header(2), [Section("YIDX", bytes(payload + extra))]))
        assert bbi.read_info(blob).total_size == len(blob)


def test_section_lookup_and_float32_rounding() -> None:
    for layout in LAYOUTS:
        c = bbi.read(small_file(layout, quality_t=0.3, temperature=0.1))
        assert c.section("ZIDX") == b"abc" and c.section("YPLN") == b"" and c.section("ICCP") is None
        assert c.header.quality_t == struct.unpack("<f", struct.pack("<f", 0.3))[0]
        assert c.header.temperature == struct.unpack("<f", struct.pack("<f", 0.1))[0]
        assert make_header(layout, quality_t=0.3, temperature=0.1) == c.header  # Header holds what the file holds


def test_max_sections_and_layout_size() -> None:
    h = make_header(1)
    sections = [Section(f"x{i:03d}", b"", False) for i in range(64)]
    blob = bbi.write(Container(h, sections), version=1)
    name = len(h.model_name.encode())
    assert len(blob) == 57 + name + 16 + 64 * 9  # spec: fixed overhead 57+N+K, 9 bytes per section
    assert len(bbi.read_info(blob).sections) == 64
    assert bbi.read(blob).sections == ()  # all unknown and optional: skipped
    blob = bbi.write(Container(make_header(2), sections))
    # 2.0: 10 + body size 1 + body (file_size 2, width 1, height 1, 2, 4, 1, seed 1, 1, 4, rec_flags 1,
    # count 1, hash 1 + 8) + 5 per empty section + 4
    assert len(blob) == 10 + 1 + 28 + 64 * 5 + 4
    assert len(bbi.read_info(blob).sections) == 64 and bbi.read(blob).sections == ()


def test_kodak_sized_container() -> None:
    """The container of a typical Kodak file (768x512, four latent sections, 8-byte hash)."""
    sizes = {"ZPL2": 24, "ZIDX": 1075, "YPL2": 44, "YIDX": 8306}
    h = make_header(2, width=768, height=512, seed=0, kappa=16, temperature=0.0)
    blob = bbi.write(Container(h, [Section(t, bytes(n)) for t, n in sizes.items()]))
    assert len(blob) - sum(sizes.values()) == 68


def test_matches_weights() -> None:
    digest = hashlib.sha256(b"w").digest()
    for layout in LAYOUTS:
        assert make_header(layout).matches_weights(digest)
        assert not make_header(layout).matches_weights(hashlib.sha256(b"v").digest())


# ---------------------------------------------------------------- corruption

@layouts
def test_truncation_at_every_offset(layout: int) -> None:
    blob = small_file(layout)
    for n in range(len(blob)):
        with pytest.raises(BbiError):
            bbi.read(blob[:n])
        with pytest.raises(BbiError):
            bbi.read_info(blob[:n])


@layouts
def test_header_prefix_truncation(layout: int) -> None:
    blob = small_file(layout)
    for n in range(header_end(blob)):
        with pytest.raises(BbiError, match="truncated|bad magic"):
            bbi.read_header(blob[:n])
    assert bbi.read_header(blob[: header_end(blob)]) == bbi.read(blob).header


@layouts
def test_trailing_garbage(layout: int) -> None:
    blob = small_file(layout)
    for extra in (b"\0", b"garbage", blob):
        with pytest.raises(BbiError, match="trailing"):
            bbi.read(blob + extra)


@layouts
def test_every_single_bit_flip(layout: int) -> None:
    blob = small_file(layout)
    assert len(blob) < 300
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(BbiError):
                bbi.read(bytes(bad))
            with pytest.raises(BbiError):
                bbi.read_info(bytes(bad))
            # 1.x: the header CRC guards the header. 2.0 has none: given the whole file, read_header
            # checks the file CRC (a flip in the header may make it read the data as a prefix).
            if (layout == 1 and i < header_end(blob)) or (layout == 2 and i >= header_end(blob)):
                with pytest.raises(BbiError):
                    bbi.read_header(bytes(bad))


@layouts
def test_errors_are_one_line(layout: int) -> None:
    blob = small_file(layout)
    for bad in (b"", b"PNG", blob[:11], blob[:20], blob[:-1], blob + b"x", blob[:8] + b"\x03\x00" + blob[10:],
                blob[:10] + b"\xff" * 12):
        with pytest.raises(BbiError) as e:
            bbi.read(bad)
        assert "\n" not in str(e.value) and str(e.value)


@layouts
def test_bad_magic(layout: int) -> None:
    with pytest.raises(BbiError, match="magic"):
        bbi.read(b"\x89PNG\r\n\x1a\n" + bytes(200))
    blob = small_file(layout)
    with pytest.raises(BbiError, match="magic"):
        bbi.read(blob.replace(b"\r\n", b"\n", 1))  # text-mode damage


# ---------------------------------------------------------------- sections

@layouts
def test_unknown_optional_section_skipped(layout: int) -> None:
    blob = with_section(layout, b"NEWX", 0, b"future data")
    c = bbi.read(blob)
    assert [s.tag for s in c.sections] == ["ZPLN", "ZIDX", "YPLN", "YIDX", "EXIF"]
    assert c.section("NEWX") is None
    assert bbi.read(blob, known_tags=["NEWX"]).section("NEWX") == b"future data"
    assert bbi.read_info(blob).sections[-1][:3] == ("NEWX", 11, False)


@layouts
def test_unknown_required_section_rejected(layout: int) -> None:
    blob = with_section(layout, b"NEWX", 1, b"must understand")
    with pytest.raises(BbiError, match="NEWX"):
        bbi.read(blob)
    assert bbi.read(blob, known_tags={"NEWX"}).section("NEWX") == b"must understand"
    assert bbi.read_info(blob).sections[-1].required  # info describes, does not reject


def test_reserved_section_flag_bits_ignored() -> None:
    blob = append_section(small_file(1), b"NEWX", 0xFE, b"")  # 1.x only: 2.0 has no flag byte
    assert bbi.read(blob).section("NEWX") is None


@layouts
def test_known_tag_with_wrong_flag_rejected(layout: int) -> None:
    blob = with_section(layout, b"ICCP", 1, b"icc")
    with pytest.raises(BbiError, match="ICCP"):
        bbi.read(blob)


@layouts
def test_duplicate_tag_rejected(layout: int) -> None:
    blob = with_section(layout, b"ZIDX", 1, b"again")
    with pytest.raises(BbiError, match="duplicate"):
        bbi.read(blob)


@layouts
def test_too_many_sections_rejected(layout: int) -> None:
    many = tuple((f"x{i:03d}".encode(), 0, b"") for i in range(64))
    assert len(bbi.read_info(with_section(layout, b"y000", 0, b"", base=many[:63])).sections) == 64
    with pytest.raises(BbiError, match="sections"):
        bbi.read(with_section(layout, b"y000", 0, b"", base=many))


@layouts
def test_oversize_and_overrunning_section_lengths(layout: int) -> None:
    for length in (2**28 + 1, 2**32 - 1, 1000):
        if layout == 1:
            b = bytearray(small_file(1))
            struct.pack_into("<I", b, header_end(b) + 5, length)  # the first section's length
            blob = reseal(b)
        else:
            blob = v2_file(sections=((b"ZPLN", varint(length << 1 | 1), b"\x01\x02"),) + DEFAULT_SECTIONS[1:])
        with pytest.raises(BbiError, match="ZPLN"):
            bbi.read(blob)


def test_v2_section_length_varint_checked() -> None:
    for raw, pattern in [(overlong(5), "overlong"), (b"\xff" * 6, "longer"), (b"\x85", "past the end")]:
        sections = DEFAULT_SECTIONS[:4] + ((b"EXIF", raw, b""),) if raw != b"\x85" else ((b"EXIF", raw, b""),)
        with pytest.raises(BbiError, match=pattern):
            bbi.read(v2_file(sections=sections))
    with pytest.raises(BbiError, match="past the end"):
        bbi.read(v2_file(sections=((b"EX", b"", b""),)))


@layouts
def test_invalid_tag_bytes_rejected(layout: int) -> None:
    for tag in (b"AB C", b"ZPL\x00", b"\xffBCD"):
        with pytest.raises(BbiError, match="tag"):
            bbi.read(with_section(layout, tag, 0, b""))


@layouts
def test_section_count_mismatch_rejected(layout: int) -> None:
    if layout == 1:
        b = bytearray(small_file(1))
        b[OFF_COUNT] -= 1
        fewer = reseal(b)
        b[OFF_COUNT] += 2
        more = reseal(b)
    else:
        fewer, more = v2_file(count=len(DEFAULT_SECTIONS) - 1), v2_file(count=len(DEFAULT_SECTIONS) + 1)
    with pytest.raises(BbiError, match="unaccounted"):
        bbi.read(fewer)
    with pytest.raises(BbiError, match="past the end"):
        bbi.read(more)


# ---------------------------------------------------------------- header caps and versions

@layouts
@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (65536, 1), (1, 2**32 - 1), (65535, 65535),
                                          (16385, 16384)])
def test_absurd_dimensions_rejected_with_valid_crc(layout: int, width: int, height: int) -> None:
    if layout == 1:
        b = bytearray(small_file(1))
        struct.pack_into("<II", b, OFF_WIDTH, width, height)
        blob = reseal(b)
    else:
        blob = v2_file(width=width, height=height)
    for fn in (bbi.read, bbi.read_header):
        with pytest.raises(BbiError, match="dimensions|pixel|width|height"):
            fn(blob)


@layouts
def test_largest_allowed_dimensions(layout: int) -> None:
    blob = small_file(layout, width=16384, height=16384)
    assert bbi.read(blob).header.width == 16384


def test_header_field_checks_with_valid_crc() -> None:
    for offset, fmt, value, pattern in [
        (OFF_MODE, "<B", 200, "colour_mode"),
        (OFF_MODE + 1, "<B", 0, "bit_depth"),
        (BODY + 14, "<f", math.nan, "quality_t"),
        (BODY + 14, "<f", 1.5, "quality_t"),
        (BODY + 18, "<B", 0, "quality_q"),
        (BODY + 28, "<f", -1.0, "temperature"),
        (BODY + 28, "<f", math.inf, "temperature"),
        (OFF_REC_FLAGS, "<H", 0x0001, "rec_flags"),
        (BODY + 35, "<B", 0, "name"),
        (BODY + 35, "<B", 65, "name"),
    ]:
        b = bytearray(small_file(1))
        struct.pack_into(fmt, b, offset, value)
        with pytest.raises(BbiError, match=pattern):
            bbi.read(reseal(b))


@pytest.mark.parametrize("kw,pattern", [
    (dict(mode=200), "colour_mode"), (dict(depth=0), "bit_depth"), (dict(t=math.nan), "quality_t"),
    (dict(t=1.5), "quality_t"), (dict(q=0), "quality_q"), (dict(temp=-1.0), "temperature"),
    (dict(temp=math.inf), "temperature"), (dict(rec_flags=1), "rec_flags"), (dict(rec_flags=0x10000), "rec_flags"),
    (dict(seed=2**64), "seed"), (dict(hash_len=7, digest=bytes(7)), "hash length"),
    (dict(hash_len=33, digest=bytes(33)), "hash length"), (dict(hash_len=20, digest=bytes(8)), "past the end"),
    (dict(count=65), "sections"), (dict(file_size=2**32), "file_size"), (dict(file_size=20), "file_size"),
    (dict(body_size=2**16), "body size"), (dict(body_size=10), "past the end|unexpected"),
    (dict(body_size=1000), "truncated"),
])
def test_v2_header_field_checks(kw: dict, pattern: str) -> None:
    blob = v2_file(**kw)
    for fn in (bbi.read, bbi.read_info, bbi.read_header):
        with pytest.raises(BbiError, match=pattern) as e:
            fn(blob)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", ["body_size", "file_size", "width", "height", "seed", "rec_flags"])
def test_v2_overlong_varints_rejected(field: str) -> None:
    values = dict(body_size=None, file_size=None, width=64, height=48, seed=7, rec_flags=0)
    if field in ("body_size", "file_size"):  # settle the true value first, then re-encode it overlong
        blob = v2_file()
        size = len(blob) + 1
        body = header_end(blob) - 11 + (field == "file_size")
        kw = dict(file_size=overlong(size) if field == "file_size" else size,
                  body_size=overlong(body) if field == "body_size" else body)
    else:
        kw = {field: overlong(values[field])}
    with pytest.raises(BbiError, match="overlong"):
        bbi.read(v2_file(**kw))
    with pytest.raises(BbiError, match="overlong"):
        bbi.read_header(v2_file(**kw))


def test_v2_varints_too_long_rejected() -> None:
    for field, raw in [("width", b"\x80\x80\x80\x01"), ("seed", b"\xff" * 10 + b"\x01"),
                       ("rec_flags", b"\xff\xff\x04")]:
        with pytest.raises(BbiError, match=field):
            bbi.read(v2_file(**{field: raw}))


def test_optional_rec_flags_accepted() -> None:
    b = bytearray(small_file(1))
    struct.pack_into("<H", b, OFF_REC_FLAGS, 0x8000)
    assert bbi.read(reseal(b)).header.rec_flags == 0x8000
    assert bbi.read(v2_file(rec_flags=0x8000)).header.rec_flags == 0x8000


def test_bad_utf8_name_rejected() -> None:
    b = bytearray(small_file(1, model_name="abcd"))
    b[BODY + 36] = 0xFF
    with pytest.raises(BbiError, match="UTF-8"):
        bbi.read(reseal(b))


def test_file_size_field_checked() -> None:
    b = bytearray(small_file(1))
    struct.pack_into("<I", b, OFF_FILE_SIZE, len(b) + 1)
    with pytest.raises(BbiError, match="truncated"):
        bbi.read(reseal(b, fix_size=False))
    blob = v2_file()
    with pytest.raises(BbiError, match="truncated"):
        bbi.read(v2_file(file_size=len(blob) + 1))
    with pytest.raises(BbiError, match="trailing"):
        bbi.read(v2_file(file_size=len(blob) - 1))


def _bump_version(blob: bytes, major: int, minor: int, extra_header: bytes = b"") -> bytes:
    """1.x: another version number and extra header bytes, CRCs valid."""
    h = header_end(blob) - 4
    b = bytearray(blob[:h]) + extra_header + blob[h:]
    b[8], b[9] = major, minor
    struct.pack_into("<H", b, 10, h - BODY + len(extra_header))
    return reseal(b)


def bump(layout: int, major: int, minor: int, extra_header: bytes = b"", blob_sections=DEFAULT_SECTIONS) -> bytes:
    if layout == 1:
        blob = bbi.write(Container(make_header(1), [Section(t.decode(), p, bool(r)) for t, r, p in blob_sections]),
                         version=1)
        return _bump_version(blob, major, minor, extra_header)
    return v2_file(major=major, minor=minor, extra_header=extra_header, sections=blob_sections)


@layouts
def test_newer_minor_version_accepted(layout: int) -> None:
    blob = small_file(layout)
    newer = bump(layout, layout, 7, b"new fields", DEFAULT_SECTIONS + ((b"NEWX", 0, b"x"),))
    c = bbi.read(newer)
    assert c == bbi.read(blob)
    assert bbi.read_info(newer).version == (layout, 7)
    assert bbi.read_header(newer) == c.header


@layouts
def test_current_minor_with_extra_header_bytes_rejected(layout: int) -> None:
    with pytest.raises(BbiError, match="unexpected"):
        bbi.read(bump(layout, layout, 0, extra_header=b"xx"))


@layouts
@pytest.mark.parametrize("major", [0, 3, 255])
def test_other_major_version_rejected(layout: int, major: int) -> None:
    with pytest.raises(BbiError, match="major version"):
        bbi.read(bump(layout, major, 0))
    with pytest.raises(BbiError, match="major version"):
        bbi.read_header(bump(layout, major, 0)[:12])


def test_v2_prefix_header_is_structure_only() -> None:
    """No header CRC in 2.0: a damaged field in a header-only prefix is caught only when the
    structure or a range check catches it; the whole file is always checked by its CRC."""
    blob = small_file(2)
    bad = bytearray(blob)
    bad[header_end(blob) - 1] ^= 1  # last byte of the weights hash
    assert bbi.read_header(bytes(bad[: header_end(blob)])).weights_hash != make_header(2).weights_hash
    with pytest.raises(BbiError, match="CRC"):
        bbi.read_header(bytes(bad))


# ---------------------------------------------------------------- check()

def test_check() -> None:
    for n in range(len(MAGIC)):
        assert bbi.check(MAGIC[:n]) is None
    assert bbi.check(MAGIC) is True
    assert bbi.check(small_file()) is True
    assert bbi.check(memoryview(MAGIC + b"xyz")) is True
    assert bbi.check(b"\x89PNG\r\n\x1a\n") is False
    assert bbi.check(b"\x89BBI\n") is False
    assert bbi.check(b"B") is False
    assert bbi.check(b"\xff\xd8\xff") is False


# ---------------------------------------------------------------- writer errors

@pytest.mark.parametrize("kw", [
    dict(width=0), dict(height=0), dict(width=65536), dict(width=16385, height=16384), dict(width=1.5),
    dict(width=True), dict(model_name=""), dict(model_name="x" * 65), dict(model_name="é" * 33),
    dict(model_name="\ud800"), dict(model_name=b"tiny"), dict(weights_hash=bytes(7)),
    dict(weights_hash=bytes(33)), dict(weights_hash="0" * 16), dict(quality_t=-0.1),
    dict(quality_t=1.01), dict(quality_t=math.nan), dict(quality_q=0), dict(quality_q=101), dict(seed=-1),
    dict(seed=2**64), dict(kappa=256), dict(kappa=-1), dict(temperature=-0.5), dict(temperature=-1.0),
    dict(temperature=math.inf), dict(temperature=1e39), dict(rec_flags=1), dict(rec_flags=0x10000),
    dict(colour_mode=6), dict(bit_depth=0), dict(bit_depth=17),
])
def test_header_value_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        make_header(**kw)


def test_header_accepts_limits() -> None:
    h = make_header(model_name="é" * 32, weights_hash=bytes(32), quality_t=0.0, seed=2**64 - 1, kappa=255,
                    rec_flags=0xFF00, colour_mode=3, bit_depth=16)
    assert h.colour_mode is ColourMode.LA
    assert bbi.read(bbi.write(Container(h), version=1)).header == h
    h = make_header(2, weights_hash=bytes(8), width=65535, height=4096, seed=2**64 - 1, rec_flags=0xFF00)
    assert bbi.read(bbi.write(Container(h))).header == h


@pytest.mark.parametrize("tag", ["ZPL", "ZPLNX", "AB C", "ZPL\u00e9", "ab\tc", 1234, b"ZPLN"])
def test_bad_tags(tag) -> None:
    with pytest.raises(ValueError):
        Section(tag, b"")


def test_section_and_container_value_errors() -> None:
    with pytest.raises(ValueError):
        Section("ZPLN", "text")
    with pytest.raises(ValueError):
        Section("ICCP", b"", required=True)
    with pytest.raises(ValueError):
        Section("ZPLN", b"", required=False)
    with pytest.raises(ValueError):
        Container(make_header(), [Section("ZPLN", b""), Section("ZPLN", b"1")])
    with pytest.raises(ValueError):
        Container(make_header(), [Section(f"x{i:03d}", b"", False) for i in range(65)])
    with pytest.raises(ValueError):
        bbi.write(make_header())


# ---------------------------------------------------------------- ALPH and version 1.2

def alpha_file(mode: ColourMode = ColourMode.RGBA, alph: bytes | None = b"\x00\xff", layout: int = 1, **kw) -> bytes:
    sections = [Section("ZPLN", b"\x01\x02"), Section("ZIDX", b"abc"), Section("YPLN", b""),
                Section("YIDX", b"\xff" * 5), Section("YSKP", b"\x07")]
    if alph is not None:
        sections.append(Section("ALPH", alph))
    return bbi.write(Container(make_header(layout, colour_mode=mode, **kw), sections), version=layout)


def test_alph_is_a_known_required_section() -> None:
    assert bbi.KNOWN_TAGS["ALPH"] is True
    with pytest.raises(ValueError, match="required"):
        Section("ALPH", b"", required=False)
    blob = alpha_file()
    assert bbi.read(blob).section("ALPH") == b"\x00\xff"
    b = bytearray(blob)
    at = b.index(b"ALPH")
    b[at + 4] = 0  # the optional flag on a tag defined as required
    with pytest.raises(BbiError, match="wrong required flag"):
        bbi.read(reseal(b))


def test_version_is_the_lowest_that_describes_the_sections() -> None:
    assert alpha_file()[8:10] == b"\x01\x02" and bbi.read_info(alpha_file()).version == (1, 2)
    assert alpha_file(alph=None)[8:10] == b"\x01\x01" and bbi.read_info(alpha_file(alph=None)).version == (1, 1)
    assert small_file()[8:10] == b"\x01\x01"
    assert bbi.version_for([]) == (1, 1)
    assert bbi.version_for(["ZPL2", "YPL2", "ALPH"]) == bbi.LATEST_V1_VERSION == (1, 3)
    assert bbi.version_for(["ZPLN", "YSKP", "ICCP"]) == (1, 1)
    assert bbi.version_for(["ZPLN", "ALPH"]) == (1, 2)


def test_files_without_alpha_are_byte_identical_to_format_1_1() -> None:
    """sha256 of this container as the 1.1 writer wrote it (before ALPH existed)."""
    h = make_header(colour_mode=ColourMode.RGBA, bit_depth=16)
    sections = [Section("ZPLN", b"\x01\x02"), Section("ZIDX", b"abc"), Section("YPLN", b""),
                Section("YIDX", b"\xff" * 5), Section("YSKP", b"\x07"), Section("ICCP", b"icc", required=False)]
    blob = bbi.write(Container(h, sections), version=1)
    assert len(blob) == 145
    assert hashlib.sha256(blob).hexdigest() == "54667ce612ea16a87627d504f48f421248420db63482cc73ddfb9dab329f2952"


def test_older_versions_still_read() -> None:
    for minor in (0, 1):
        blob = _bump_version(alpha_file(alph=None), 1, minor)
        info = bbi.read_info(blob)
        assert info.version == (1, minor) and bbi.read(blob).header == info.header


@layouts
def test_a_reader_without_alph_rejects_files_with_it_naming_the_tag(monkeypatch, layout: int) -> None:
    """What a 1.1 reader does with a file that carries alpha: a clear refusal, not RGB without it."""
    monkeypatch.setattr(bbi, "KNOWN_TAGS", {t: r for t, r in bbi.KNOWN_TAGS.items() if t != "ALPH"})
    with pytest.raises(BbiError, match="unknown required section ALPH"):
        bbi.read(alpha_file(layout=layout))


def test_version_1_2_header_with_extra_bytes_rejected() -> None:
    with pytest.raises(BbiError, match="unexpected"):
        bbi.read(_bump_version(alpha_file(), 1, 2, extra_header=b"xx"))


@pytest.mark.parametrize("mode,alph,expected", [
    (ColourMode.RGB, False, "RGB"), (ColourMode.L, False, "L"), (ColourMode.P, False, "RGB"),
    (ColourMode.CMYK, False, "RGB"), (ColourMode.RGBA, True, "RGBA"), (ColourMode.LA, True, "LA"),
    (ColourMode.RGBA, False, "RGB"), (ColourMode.LA, False, "L"),  # 1.0 / 1.1 files: alpha was flattened
])
@layouts
def test_decoded_description(mode: ColourMode, alph: bool, expected: str, layout: int) -> None:
    blob = alpha_file(mode, b"\x00\x80" if alph else None, layout, bit_depth=16, width=5, height=3)
    info = bbi.read_info(blob)
    for sections in (info.sections, bbi.read(blob).sections, [s.tag for s in info.sections]):
        d = bbi.decoded_description(info.header, sections)
        assert d == dict(mode=expected, bit_depth=8, width=5, height=3, icc_profile=False, orientation=1,
                         source_mode=mode.name, source_bit_depth=16)


def test_decoded_description_icc_and_alph_without_alpha_mode() -> None:
    h = make_header()
    assert bbi.decoded_description(h, [Section("ICCP", b"icc", required=False)])["icc_profile"] is True
    assert bbi.decoded_description(h, [Section("ICCP", b"", required=False)])["icc_profile"] is False
    assert bbi.decoded_description(h, ["ZPLN"])["icc_profile"] is False
    for mode in (ColourMode.RGB, ColourMode.L, ColourMode.P, ColourMode.CMYK):
        with pytest.raises(BbiError, match="corrupt file: ALPH section"):
            bbi.decoded_description(make_header(colour_mode=mode), ["ALPH"])
