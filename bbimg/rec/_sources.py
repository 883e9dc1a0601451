"""The hash of the native sources (csrc/), computed one way for the build and for the import check.

setup.py bakes it into ``bbimg._core`` (it loads this file by path, without importing bbimg);
``bbimg.rec`` recomputes it on import and refuses a build made from other sources. Stdlib only.
"""
from __future__ import annotations

from pathlib import Path

#: File suffixes that make up the native sources.
SOURCE_SUFFIXES = (".h", ".cpp", ".cu", ".cuh")


def source_hash(csrc: Path) -> str:
    """16 hex digits over the names and contents (LF line ends) of csrc's source files, sorted."""
    import hashlib  # only where csrc/ is at hand (a source tree): an installed package never hashes

    h = hashlib.sha256()
    for p in sorted(Path(csrc).iterdir()):
        if p.suffix in SOURCE_SUFFIXES:
            h.update(p.name.encode())
            h.update(b"\0")
            h.update(p.read_bytes().replace(b"\r\n", b"\n"))
            h.update(b"\0")
    return h.hexdigest()[:16]
