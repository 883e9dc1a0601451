"""Where shipped models live, and their identity: torch-free, so the command line can name and
check a model without importing torch (3-4 s on the reference machine)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "weights_dir", "search_path", "find_weights", "weights_sha256", "check_name"]

DEFAULT_MODEL = "bbimg-hvae-v5"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_sha_cache: dict[tuple[str, int, int], bytes] = {}


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def search_path() -> list[Path]:
    """Folders searched for ``<name>.pt``: $BBIMG_MODEL_PATH (os.pathsep-separated) first, then the package's."""
    extra = [Path(p) for p in os.environ.get("BBIMG_MODEL_PATH", "").split(os.pathsep) if p]
    return extra + [weights_dir()]


def check_name(name: str) -> None:
    """A name comes from .bbi files too: never let it pick a path outside the model folders."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid model name {name!r}")


def find_weights(name: str) -> Path | None:
    check_name(name)
    found = [folder / f"{name}.pt" for folder in search_path() if (folder / f"{name}.pt").is_file()]
    return found[0] if found else None


def weights_sha256(path: Path) -> bytes:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = hashlib.sha256(path.read_bytes()).digest()
    return _sha_cache[key]
