"""atheris target: the .bbi container reader (``bbimg.format`` check, read_header, read_info, read).

    python fuzz/fuzz_format.py CORPUS_DIR -runs=1000000 -timeout=5      # libFuzzer flags

Normally started by ``fuzz/run.py format``, which builds the seed corpus first. Only BbiError may
escape; any other exception, a crash, an input over 5 s or an allocation past the address-space
cap (current size + 1 GiB) is reported by libFuzzer with the input saved as ``crash-*``.
"""
import random
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy  # noqa: E402,F401  (imported uninstrumented)

with atheris.instrument_imports(include=["bbimg"]):
    import bbimg.format  # noqa: E402,F401

from fuzz import harness  # noqa: E402


def test_one_input(data: bytes) -> None:
    harness.check_format(data)


_seeds: list[bytes] = []


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's byte mutations (CRCs then fixed most of the time) or the structure-aware
    mutator of fuzz/harness.py, applied to the input or, to keep reaching deep, to a seed file."""
    rng = random.Random(seed)
    r = rng.random()
    if r < 0.3 and _seeds:
        return harness.mutate(rng.choice(_seeds), rng, None, max_size)
    if r < 0.6:
        return harness.mutate(data, rng, None, max_size)
    out = atheris.Mutate(data, max_size)
    if rng.random() < 0.5:
        out = harness.fix_crcs(out)
    return out[:max_size]


def main() -> None:
    harness.limit_memory()
    _seeds.extend(p.read_bytes() for a in sys.argv[1:] if not a.startswith("-")
                  for p in sorted(Path(a).glob("seed-*.bbi")))
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
