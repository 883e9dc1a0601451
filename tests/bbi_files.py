"""Hand-packed .bbi files, written from the spec (docs/format.md) and not from bbimg.format, so the
container and decode-limit tests check the spec."""
from __future__ import annotations

import hashlib
import struct
import zlib

MAGIC = b"\x89BBI\r\n\x1a\n"
DEFAULT_SECTIONS = ((b"ZPLN", 1, b"\x01\x02"), (b"ZIDX", 1, b"abc"), (b"YPLN", 1, b""), (b"YIDX", 1, b"\xff" * 5),
                    (b"EXIF", 0, b"MM\x00*"))


def varint(v: int) -> bytes:
    """LEB128 written from the spec."""
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >= 0x80 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def v2_file(*, major: int = 2, minor: int = 0, width=64, height=48, mode=0, depth=8, t=0.5, q=50, seed=7, kappa=3,
            temp=1.0, rec_flags=0, count=None, digest=hashlib.sha256(b"w").digest()[:8], hash_len=None,
            extra_header=b"", sections=DEFAULT_SECTIONS, file_size=None, body_size=None) -> bytes:
    """A 2.0 file packed by hand from the spec (no checks). Varint fields may be given as raw bytes."""
    def vi(x):
        return x if isinstance(x, bytes) else varint(x)

    rest = (vi(width) + vi(height) + bytes([mode, depth]) + struct.pack("<f", t) + bytes([q]) + vi(seed)
            + bytes([kappa]) + struct.pack("<f", temp) + vi(rec_flags)
            + bytes([len(sections) if count is None else count])
            + bytes([len(digest) if hash_len is None else hash_len]) + digest + extra_header)
    tail = b"".join(tag + vi(len(p) << 1 | r if isinstance(r, int) else r) + p for tag, r, p in sections)
    size = 0
    while True:
        body = vi(size if file_size is None else file_size) + rest
        out = MAGIC + bytes([major, minor]) + vi(len(body) if body_size is None else body_size) + body + tail
        if file_size is not None or len(out) + 4 == size:
            break
        size = len(out) + 4
    return out + struct.pack("<I", zlib.crc32(out))
