"""atheris target: the .bbi container reader (``bbimg.format`` check, read_header, read_info, read).

    python fuzz/fuzz_format.py CORPUS_DIR -runs=1000000 -timeout=5      # libFuzzer flags

Normally started by ``fuzz/run.py format``, which builds the seed corpus first. Only BbiError may
escape; any other exception, a crash, an input over 5 s or an allocation past the address-space
cap (current size + 1 GiB) is reported by libFuzzer with the input saved as ``crash-*``.
"""
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


def main() -> None:
    harness.limit_memory()
    _seeds.extend(p.read_bytes() for a in sys.argv[1:] if not a.startswith("-")
                  for p in sorted(Path(a).glob("seed-*.bbi")))
    atheris.Setup(sys.argv, test_one_input, custom_mutator=harness.seeded_mutator(harness.mutate, _seeds, atheris.Mutate, 0.5))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
