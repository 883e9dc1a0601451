"""Tests of the .bbi container (docs/format.md): round trips, corruption, limits, versioning."""
from __future__ import annotations

import hashlib
import math
import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from bbimg import format as bbi
from bbimg.format import BbiError, ColourMode, Container, Header, Section

# Layout constants written from the spec, not taken from the module, so the tests check the spec.
MAGIC = b"\x89BBI\r\n\x1a\n"
BODY = 12  # offset of the header body
OFF_FILE_SIZE, OFF_WIDTH, OFF_HEIGHT, OFF_MODE = BODY, BODY + 4, BODY + 8, BODY + 12
OFF_REC_FLAGS, OFF_COUNT = BODY + 32, BODY + 34


def make_header(**kw) -> Header:
    base = dict(width=64, height=48, model_name="tiny", weights_hash=hashlib.sha256(b"w").digest()[:16],
                quality_t=0.5, quality_q=50, seed=7, kappa=3, temperature=1.0)
    base.update(kw)
    return Header(**base)


def small_file(**kw) -> bytes:
    sections = [Section("ZPLN", b"\x01\x02"), Section("ZIDX", b"abc"), Section("YPLN", b""),
                Section("YIDX", b"\xff" * 5), Section("EXIF", b"MM\x00*", required=False)]
    return bbi.write(Container(make_header(**kw), sections))


def header_end(blob: bytes) -> int:
    """Offset of the header CRC."""
    return BODY + struct.unpack_from("<H", blob, 10)[0]


def reseal(blob: bytes | bytearray, fix_size: bool = True) -> bytes:
    """Recompute file_size and both CRCs, so a crafted field is what a reader sees, not a CRC error."""
    b = bytearray(blob)
    if fix_size:
        struct.pack_into("<I", b, OFF_FILE_SIZE, len(b))
    h = header_end(b)
    struct.pack_into("<I", b, h, zlib.crc32(b[:h]))
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(b[:-4]))
    return bytes(b)


def append_section(blob: bytes, tag: bytes, flags: int, payload: bytes) -> bytes:
    """Add a raw section at the end (bumping section_count) and reseal."""
    b = bytearray(blob[:-4]) + struct.pack("<4sBI", tag, flags, len(payload)) + payload + b"\0\0\0\0"
    b[OFF_COUNT] += 1
    return reseal(b)


# ---------------------------------------------------------------- round trip

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
headers = st.builds(
    Header,
    width=st.integers(1, 65535),
    height=st.integers(1, 4096),
    model_name=st.text(min_size=1, max_size=64).filter(lambda s: 1 <= len(s.encode("utf-8")) <= 64),
    weights_hash=st.binary(min_size=16, max_size=32),
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
        out.append(Section(tag, draw(st.binary(max_size=64)), required))
    return out


@settings(max_examples=150, deadline=None)
@given(headers, section_lists())
def test_round_trip(header: Header, sections: list[Section]) -> None:
    c = Container(header, sections)
    blob = bbi.write(c)
    assert bbi.check(blob) is True
    assert bbi.read(blob, known_tags=[s.tag for s in sections]) == c
    assert bbi.read_header(blob) == header
    assert bbi.read_header(blob[: header_end(blob) + 4]) == header  # header-only prefix is enough
    info = bbi.read_info(blob)
    tags = {s.tag for s in sections}
    expected_version = (1, 3) if tags & {"ZPL2", "YPL2"} else (1, 2) if "ALPH" in tags else (1, 1)
    assert info.header == header and info.total_size == len(blob) and info.version == expected_version
    assert blob[8:10] == bytes(expected_version)
    assert [(s.tag, s.length, s.required) for s in info.sections] == \
        [(s.tag, len(s.payload), s.required) for s in sections]
    for s, si in zip(sections, info.sections):
        assert blob[si.offset : si.offset + si.length] == s.payload
    assert info.bpp == len(blob) * 8 / (header.width * header.height)


def test_section_lookup_and_float32_rounding() -> None:
    c = bbi.read(small_file(quality_t=0.3, temperature=0.1))
    assert c.section("ZIDX") == b"abc" and c.section("YPLN") == b"" and c.section("ICCP") is None
    assert c.header.quality_t == struct.unpack("<f", struct.pack("<f", 0.3))[0]
    assert c.header.temperature == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert make_header(quality_t=0.3, temperature=0.1) == c.header  # Header holds what the file holds


def test_max_sections_and_layout_size() -> None:
    h = make_header()
    sections = [Section(f"x{i:03d}", b"", False) for i in range(64)]
    blob = bbi.write(Container(h, sections))
    name = len(h.model_name.encode())
    assert len(blob) == 57 + name + 16 + 64 * 9  # spec: fixed overhead 57+N+K, 9 bytes per section
    assert len(bbi.read_info(blob).sections) == 64
    assert bbi.read(blob).sections == ()  # all unknown and optional: skipped


def test_matches_weights() -> None:
    digest = hashlib.sha256(b"w").digest()
    assert make_header().matches_weights(digest)
    assert not make_header().matches_weights(hashlib.sha256(b"v").digest())


# ---------------------------------------------------------------- corruption

def test_truncation_at_every_offset() -> None:
    blob = small_file()
    for n in range(len(blob)):
        with pytest.raises(BbiError):
            bbi.read(blob[:n])
        with pytest.raises(BbiError):
            bbi.read_info(blob[:n])


def test_header_prefix_truncation() -> None:
    blob = small_file()
    for n in range(header_end(blob) + 4):
        with pytest.raises(BbiError):
            bbi.read_header(blob[:n])


def test_trailing_garbage() -> None:
    blob = small_file()
    for extra in (b"\0", b"garbage", blob):
        with pytest.raises(BbiError, match="trailing"):
            bbi.read(blob + extra)


def test_every_single_bit_flip() -> None:
    blob = small_file()
    assert len(blob) < 300
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(BbiError):
                bbi.read(bytes(bad))
            with pytest.raises(BbiError):
                bbi.read_info(bytes(bad))
            if i < header_end(blob) + 4:
                with pytest.raises(BbiError):
                    bbi.read_header(bytes(bad))


def test_errors_are_one_line() -> None:
    blob = small_file()
    for bad in (b"", b"PNG", blob[:20], blob[:-1], blob + b"x", b"\x89BBI\r\n\x1a\n\x02\x00" + blob[10:]):
        with pytest.raises(BbiError) as e:
            bbi.read(bad)
        assert "\n" not in str(e.value) and str(e.value)


def test_bad_magic() -> None:
    with pytest.raises(BbiError, match="magic"):
        bbi.read(b"\x89PNG\r\n\x1a\n" + bytes(200))
    blob = small_file()
    with pytest.raises(BbiError, match="magic"):
        bbi.read(blob.replace(b"\r\n", b"\n", 1))  # text-mode damage


# ---------------------------------------------------------------- sections

def test_unknown_optional_section_skipped() -> None:
    blob = append_section(small_file(), b"NEWX", 0, b"future data")
    c = bbi.read(blob)
    assert [s.tag for s in c.sections] == ["ZPLN", "ZIDX", "YPLN", "YIDX", "EXIF"]
    assert c.section("NEWX") is None
    assert bbi.read(blob, known_tags=["NEWX"]).section("NEWX") == b"future data"
    assert bbi.read_info(blob).sections[-1][:3] == ("NEWX", 11, False)


def test_unknown_required_section_rejected() -> None:
    blob = append_section(small_file(), b"NEWX", 1, b"must understand")
    with pytest.raises(BbiError, match="NEWX"):
        bbi.read(blob)
    assert bbi.read(blob, known_tags={"NEWX"}).section("NEWX") == b"must understand"
    assert bbi.read_info(blob).sections[-1].required  # info describes, does not reject


def test_reserved_section_flag_bits_ignored() -> None:
    blob = append_section(small_file(), b"NEWX", 0xFE, b"")
    assert bbi.read(blob).section("NEWX") is None


def test_known_tag_with_wrong_flag_rejected() -> None:
    blob = append_section(small_file(), b"ICCP", 1, b"icc")
    with pytest.raises(BbiError, match="ICCP"):
        bbi.read(blob)


def test_duplicate_tag_rejected() -> None:
    blob = append_section(small_file(), b"ZIDX", 1, b"again")
    with pytest.raises(BbiError, match="duplicate"):
        bbi.read(blob)


def test_too_many_sections_rejected() -> None:
    blob = bbi.write(Container(make_header(), [Section(f"x{i:03d}", b"", False) for i in range(64)]))
    with pytest.raises(BbiError, match="sections"):
        bbi.read(append_section(blob, b"y000", 0, b""))


def test_oversize_and_overrunning_section_lengths() -> None:
    blob = bytearray(small_file())
    first = header_end(blob) + 4  # first section header
    for length in (2**28 + 1, 2**32 - 1, 1000):
        b = bytearray(blob)
        struct.pack_into("<I", b, first + 5, length)
        with pytest.raises(BbiError, match="ZPLN"):
            bbi.read(reseal(b))


def test_invalid_tag_bytes_rejected() -> None:
    for tag in (b"AB C", b"ZPL\x00", b"\xffBCD"):
        with pytest.raises(BbiError, match="tag"):
            bbi.read(append_section(small_file(), tag, 0, b""))


def test_section_count_mismatch_rejected() -> None:
    b = bytearray(small_file())
    b[OFF_COUNT] -= 1
    with pytest.raises(BbiError, match="unaccounted"):
        bbi.read(reseal(b))
    b[OFF_COUNT] += 2
    with pytest.raises(BbiError, match="past the end"):
        bbi.read(reseal(b))


# ---------------------------------------------------------------- header caps and versions

@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (65536, 1), (1, 2**32 - 1), (65535, 65535),
                                          (16385, 16384)])
def test_absurd_dimensions_rejected_with_valid_crc(width: int, height: int) -> None:
    b = bytearray(small_file())
    struct.pack_into("<II", b, OFF_WIDTH, width, height)
    with pytest.raises(BbiError, match="dimensions|pixel"):
        bbi.read(reseal(b))
    with pytest.raises(BbiError, match="dimensions|pixel"):
        bbi.read_header(reseal(b))


def test_largest_allowed_dimensions() -> None:
    blob = small_file(width=16384, height=16384)
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
        b = bytearray(small_file())
        struct.pack_into(fmt, b, offset, value)
        with pytest.raises(BbiError, match=pattern):
            bbi.read(reseal(b))


def test_optional_rec_flags_accepted() -> None:
    b = bytearray(small_file())
    struct.pack_into("<H", b, OFF_REC_FLAGS, 0x8000)
    assert bbi.read(reseal(b)).header.rec_flags == 0x8000


def test_bad_utf8_name_rejected() -> None:
    b = bytearray(small_file(model_name="abcd"))
    b[BODY + 36] = 0xFF
    with pytest.raises(BbiError, match="UTF-8"):
        bbi.read(reseal(b))


def test_file_size_field_checked() -> None:
    b = bytearray(small_file())
    struct.pack_into("<I", b, OFF_FILE_SIZE, len(b) + 1)
    with pytest.raises(BbiError, match="truncated"):
        bbi.read(reseal(b, fix_size=False))


def _bump_version(blob: bytes, major: int, minor: int, extra_header: bytes = b"") -> bytes:
    h = header_end(blob)
    b = bytearray(blob[:h]) + extra_header + blob[h:]
    b[8], b[9] = major, minor
    struct.pack_into("<H", b, 10, h - BODY + len(extra_header))
    return reseal(b)


def test_newer_minor_version_accepted() -> None:
    blob = small_file()
    newer = _bump_version(append_section(blob, b"NEWX", 0, b"x"), 1, 7, extra_header=b"new fields")
    c = bbi.read(newer)
    assert c == bbi.read(blob)
    assert bbi.read_info(newer).version == (1, 7)
    assert bbi.read_header(newer) == c.header


def test_current_minor_with_extra_header_bytes_rejected() -> None:
    with pytest.raises(BbiError, match="unexpected"):
        bbi.read(_bump_version(small_file(), 1, 0, extra_header=b"xx"))


@pytest.mark.parametrize("major", [0, 2, 255])
def test_other_major_version_rejected(major: int) -> None:
    with pytest.raises(BbiError, match="major version"):
        bbi.read(_bump_version(small_file(), major, 0))
    with pytest.raises(BbiError, match="major version"):
        bbi.read_header(_bump_version(small_file(), major, 0)[:12])


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
    dict(model_name="\ud800"), dict(model_name=b"tiny"), dict(weights_hash=bytes(15)),
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

def alpha_file(mode: ColourMode = ColourMode.RGBA, alph: bytes | None = b"\x00\xff", **kw) -> bytes:
    sections = [Section("ZPLN", b"\x01\x02"), Section("ZIDX", b"abc"), Section("YPLN", b""),
                Section("YIDX", b"\xff" * 5), Section("YSKP", b"\x07")]
    if alph is not None:
        sections.append(Section("ALPH", alph))
    return bbi.write(Container(make_header(colour_mode=mode, **kw), sections))


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
    assert bbi.version_for([]) == bbi.VERSION == (1, 1)
    assert bbi.version_for(["ZPLN", "YSKP", "ICCP"]) == (1, 1)
    assert bbi.version_for(["ZPLN", "ALPH"]) == (1, 2)


def test_files_without_alpha_are_byte_identical_to_format_1_1() -> None:
    """sha256 of this container as the 1.1 writer wrote it (before ALPH existed)."""
    h = make_header(colour_mode=ColourMode.RGBA, bit_depth=16)
    sections = [Section("ZPLN", b"\x01\x02"), Section("ZIDX", b"abc"), Section("YPLN", b""),
                Section("YIDX", b"\xff" * 5), Section("YSKP", b"\x07"), Section("ICCP", b"icc", required=False)]
    blob = bbi.write(Container(h, sections))
    assert len(blob) == 145
    assert hashlib.sha256(blob).hexdigest() == "54667ce612ea16a87627d504f48f421248420db63482cc73ddfb9dab329f2952"


def test_older_versions_still_read() -> None:
    for minor in (0, 1):
        blob = _bump_version(alpha_file(alph=None), 1, minor)
        info = bbi.read_info(blob)
        assert info.version == (1, minor) and bbi.read(blob).header == info.header


def test_a_reader_without_alph_rejects_1_2_files_naming_the_tag(monkeypatch) -> None:
    """What a 1.1 reader does with a file that carries alpha: a clear refusal, not RGB without it."""
    monkeypatch.setattr(bbi, "KNOWN_TAGS", {t: r for t, r in bbi.KNOWN_TAGS.items() if t != "ALPH"})
    with pytest.raises(BbiError, match="unknown required section ALPH"):
        bbi.read(alpha_file())


def test_version_1_2_header_with_extra_bytes_rejected() -> None:
    with pytest.raises(BbiError, match="unexpected"):
        bbi.read(_bump_version(alpha_file(), 1, 2, extra_header=b"xx"))


@pytest.mark.parametrize("mode,alph,expected", [
    (ColourMode.RGB, False, "RGB"), (ColourMode.L, False, "L"), (ColourMode.P, False, "RGB"),
    (ColourMode.CMYK, False, "RGB"), (ColourMode.RGBA, True, "RGBA"), (ColourMode.LA, True, "LA"),
    (ColourMode.RGBA, False, "RGB"), (ColourMode.LA, False, "L"),  # 1.0 / 1.1 files: alpha was flattened
])
def test_decoded_description(mode: ColourMode, alph: bool, expected: str) -> None:
    blob = alpha_file(mode, b"\x00\x80" if alph else None, bit_depth=16, width=5, height=3)
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
