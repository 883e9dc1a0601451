"""Where shipped models live, and their identity: torch-free, so the command line can name and
check a model without importing torch (3-4 s on the reference machine)."""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "weights_dir", "search_path", "find_weights", "weights_sha256", "check_name",
           "installed_models", "find_by_hash", "training_facts"]

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
    """SHA-256 of a weights file, which files and exports name their model by. Hashing the shipped
    weights takes ~16 ms, a twentieth of a command-line decode, so digests are kept per process
    and on disk (:func:`_digest_cache`), keyed like git's index by the file's size, times and inode:
    a file rewritten in any way is hashed again."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        cache_file = _digest_cache()
        known = _read_digests(cache_file)
        entry = known.get(str(path.resolve()))
        if entry is not None and entry[:4] == stamp and re.fullmatch(r"[0-9a-f]{64}", str(entry[4])):
            _sha_cache[key] = bytes.fromhex(entry[4])
        else:
            import hashlib

            _sha_cache[key] = hashlib.sha256(path.read_bytes()).digest()
            known[str(path.resolve())] = stamp + [_sha_cache[key].hex()]
            _write_digests(cache_file, known)
    return _sha_cache[key]


def _digest_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bbimg" / "weights-sha256.json"


def _read_digests(cache_file: Path) -> dict:
    import json

    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in known.items() if isinstance(v, list) and len(v) == 5} if isinstance(known, dict) else {}


def _write_digests(cache_file: Path, known: dict) -> None:
    """Best effort (a read-only home just hashes every time), written whole or not at all."""
    import json
    import tempfile

    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".weights-sha256.", suffix=".part")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(known, f)
            os.replace(tmp, cache_file)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def installed_models() -> list[str]:
    """Names of the installed models (first folder on the search path wins), sorted."""
    return sorted({p.stem for folder in search_path() for p in folder.glob("*.pt") if _NAME_RE.fullmatch(p.stem)})


def find_by_hash(prefix: bytes) -> str | None:
    """Name of the installed model whose weights' SHA-256 begins with ``prefix`` (how a 2.0 file
    names its model), or None. The default model is tried first; digests are cached per file."""
    prefix = bytes(prefix)
    if not prefix:
        return None
    names = installed_models()
    for name in sorted(names, key=lambda n: n != DEFAULT_MODEL):
        path = find_weights(name)
        if path is not None and weights_sha256(path).startswith(prefix):
            return name
    return None


class _FactsUnpickler(pickle.Unpickler):
    """Reads a weights file's top-level facts without torch: tensors and torch types become None,
    and nothing else can be constructed (no code from a file runs)."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "torch":
            return lambda *args, **kwargs: None
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a weights file")

    def persistent_load(self, pid):
        return None


def training_facts(path: Path) -> dict:
    """``step`` and ``train_hours`` recorded in a weights file (torch's zip format), read without
    importing torch; empty when the file does not say."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            state = _FactsUnpickler(io.BytesIO(archive.read(pkl))).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {k: state[k] for k in ("step", "train_hours") if isinstance(state.get(k), (int, float))}
