"""The fuzz harness (fuzz/): short versions of fuzz/run.py on the container reader and the decoder,
and the harness's own invariants (failing and slow inputs are kept, the memory cap bites, the
libFuzzer runner gets the limits).

The long fuzz runs, their commands and results are in docs/security.md; the memory-bounded
decodes of large claims are tested in tests/test_tiling.py.
"""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bbimg import format as bbi

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # the fuzz package
from fuzz import harness  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def seeds(tiny_model):
    return harness.make_seeds(tiny_model, default_model=False)


def test_fuzz_container_reader_raises_only_bbierror(seeds):
    stats = harness.fuzz_loop(harness.check_format, seeds, iterations=2500, seed=1)
    assert stats.outcomes.get("accepted", 0) > 0 and stats.outcomes.get("rejected", 0) > 0


def test_fuzz_decoder_raises_only_bbierror(seeds):
    stats = harness.fuzz_loop(harness.check_decoder, seeds, iterations=60, seed=2)
    # The structure-aware mutator gets past the CRCs: some mutants decode, others fail deep inside.
    assert stats.outcomes.get("ok", 0) > 0 and stats.outcomes.get("rejected", 0) > 0


def test_fuzz_mutants_with_fixed_crcs_reach_the_sections(tiny_coded):
    data, _ = tiny_coded
    flipped = bytearray(data)
    flipped[-5] ^= 0x10  # the last payload byte, just before the final CRC
    with pytest.raises(bbi.BbiError, match="CRC"):
        bbi.read(bytes(flipped))
    bbi.read(harness.fix_crcs(bytes(flipped)))  # container valid again: the payload is what is corrupt


def test_fuzz_loop_reports_the_failing_input(tmp_path):
    def target(data):
        if len(data) > 3:
            raise RuntimeError("boom")
        return "ok"

    crash = tmp_path / "crash.bin"
    with pytest.raises(RuntimeError):
        harness.fuzz_loop(target, [b"ab"], iterations=1000, crash_file=crash)
    assert len(crash.read_bytes()) > 3


def test_fuzz_loop_fails_on_a_slow_input(tmp_path):
    """The time invariant: an input slower than the limit is a failure, and is kept."""
    def target(data):
        if data == b"slow":
            time.sleep(0.2)
        return "ok"

    crash = tmp_path / "slow.bin"
    with pytest.raises(AssertionError, match="took"):
        harness.fuzz_loop(target, [b"fast", b"slow"], iterations=10, time_limit=0.1, crash_file=crash)
    assert crash.read_bytes() == b"slow"


_MEMORY_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from fuzz import harness
torch.zeros(4)
over = harness.MEMORY_LIMIT_BYTES + (64 << 20)
cap = harness.limit_memory()
for alloc in (lambda: np.empty(over, np.uint8), lambda: torch.empty(over, dtype=torch.uint8)):
    try:
        alloc()
    except (MemoryError, RuntimeError) as exc:
        print(type(exc).__name__)
    else:
        print("ALLOCATED")
held = np.empty(600 << 20, np.uint8)   # what earlier inputs left behind (address space only)
print("recap" if harness.limit_memory() >= cap + (600 << 20) else "no recap")
print(np.empty(700 << 20, np.uint8).nbytes >> 20)   # over the first cap, within the new one
"""


def test_fuzz_memory_cap_makes_allocations_over_1_gib_fail():
    """The memory invariant of the fuzz targets: after ``limit_memory`` an allocation of more than
    1 GiB fails (MemoryError / RuntimeError, which is not a BbiError, so the fuzzer reports it), and
    re-capping before each input bounds that input's allocations, not the growth of the whole run.
    Run in a child: the cap is per process."""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MemoryError", "RuntimeError", "recap", "700"], out.stdout


def test_fuzz_runner_passes_the_limits_to_libfuzzer(tmp_path, monkeypatch):
    from fuzz import run

    seen = []
    monkeypatch.setattr(run.subprocess, "call", lambda cmd, env=None: seen.append(cmd) or 0)
    for target in ("format", "decoder"):
        assert run.run_atheris(target, tmp_path, tmp_path, 1000, None) == 0
    assert len(seen) == 2
    for cmd in seen:
        assert "-timeout=5" in cmd and "-runs=1000" in cmd
        rss = [int(a.split("=")[1]) for a in cmd if a.startswith("-rss_limit_mb=")]
        assert len(rss) == 1 and rss[0] <= 2048
