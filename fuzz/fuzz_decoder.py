"""atheris target: the whole decoder, ``bbimg.codec.decode``, with a tiny model and the shipped one.

    BBIMG_MODEL_PATH=WORK/models python fuzz/fuzz_decoder.py CORPUS_DIR -max_total_time=1200 -timeout=5

Normally started by ``fuzz/run.py decoder``, which installs the tiny model and writes the seed
corpus (real coded files). Only BbiError may escape. Files whose CRC-valid header claims more than
``harness.FUZZ_MAX_PIXELS`` pixels are decoded with the decoder's pixel limit at that size, so
they must be refused with BbiError in under ``harness.REFUSE_LIMIT_S`` (decoding a huge image
legitimately takes longer than libFuzzer's 5 s timeout: ``fuzz/run.py decoder --engine loop``
decodes such files in capped subprocesses). A share of the mutants claim large sizes
(``harness.resize``). torch runs on one thread.
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy  # noqa: E402,F401  (heavy dependencies imported uninstrumented)
import torch  # noqa: E402
import PIL.Image  # noqa: E402,F401

with atheris.instrument_imports(include=["bbimg"]):
    import bbimg.codec  # noqa: E402,F401

from fuzz import harness  # noqa: E402

_outcomes: dict[str, int] = {}


def test_one_input(data: bytes) -> None:
    harness.limit_memory()                 # this input may allocate at most 1 GiB more
    outcome = harness.check_decoder_any_size(data, large_max=harness.FUZZ_MAX_PIXELS)
    _outcomes[outcome] = _outcomes.get(outcome, 0) + 1
    total = sum(_outcomes.values())
    if total & (total - 1) == 0 or total % 100000 == 0:
        _report()


_seeds: list[bytes] = []


def _report() -> None:
    print(f"#{sum(_outcomes.values())} decoder outcomes: {dict(sorted(_outcomes.items()))}", file=sys.stderr, flush=True)


def main() -> None:
    torch.set_num_threads(1)
    corpus = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for folder in corpus:                      # warm up: load the models, size the allocator
        for f in sorted(folder.glob("seed-*.bbi")):
            harness.check_decoder(f.read_bytes())
    harness.limit_memory()
    _seeds.extend(p.read_bytes() for a in sys.argv[1:] if not a.startswith("-")
                  for p in sorted(Path(a).glob("seed-*.bbi")))
    atheris.Setup(sys.argv, test_one_input, custom_mutator=harness.seeded_mutator(harness.mutate_sizes, _seeds, atheris.Mutate, 0.7))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
