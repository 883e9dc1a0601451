"""``bbimg decode`` on corrupt files: every truncation and sampled bit flips of real files are
refused with exit status 1, one error line and no output file (the ``cli_rejects`` fixture); the
intact file decodes.

The same corruptions through the library (``BbiError``) are in tests/test_codec.py and, for the
container alone, tests/test_format.py.
"""
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg import codec
from bbimg.cli.main import main

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slow_selected(config) -> bool:
    return "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("BBIMG_SLOW") == "1"


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_cli_rejects_every_truncation(tiny_coded, cli_rejects):
    data, _ = tiny_coded
    for n in range(len(data)):
        cli_rejects(data[:n], f"truncated to {n} bytes")


def test_cli_rejects_sampled_bit_flips(tiny_coded, cli_rejects):
    data, _ = tiny_coded
    bits = 8 * len(data)
    # every bit of the first 32 bytes (magic, version, sizes, dimensions), then a sample of the rest
    positions = list(range(256)) + random.Random(0).sample(range(256, bits), min(300, bits - 256))
    for bit in positions:
        cli_rejects(_flip(data, bit), f"bit {bit} flipped")


def test_cli_decodes_the_intact_file(tmp_path, tiny_coded):
    data, image = tiny_coded
    (tmp_path / "in.bbi").write_bytes(data)
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "in.bbi"), str(tmp_path / "out.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (image.shape[1], image.shape[0])


@pytest.mark.skipif(not KODAK.is_dir(), reason="Kodak images not available")
def test_cli_rejects_corrupt_kodak_file(tmp_path, tiny_model, cli_rejects):
    """A full Kodak image (768x512) coded for real (tiny model, so it is fast): sampled truncations
    and single-bit flips are rejected through the CLI with exit 1 and no output; the intact file decodes.
    The same with the shipped model: test_cli_rejects_corrupt_kodak_files_default_model (slow)."""
    data = codec.encode(Image.open(KODAK / "kodim23.png"), 50, model=tiny_model)
    (tmp_path / "ok.bbi").write_bytes(data)
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "ok.bbi"), str(tmp_path / "ok.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "ok.png").size == (768, 512), r.output
    rng = random.Random(1)
    for n in [0, 1, 12, len(data) - 1] + rng.sample(range(len(data)), 40):
        cli_rejects(data[:n], f"kodim23 truncated to {n}")
    for bit in rng.sample(range(8 * len(data)), 150):
        cli_rejects(_flip(data, bit), f"kodim23 bit {bit}")


@pytest.mark.slow
@pytest.mark.skipif(not KODAK.is_dir(), reason="Kodak images not available")
def test_cli_rejects_corrupt_kodak_files_default_model(request, cli_rejects):
    """Run with ``pytest -m slow`` (or BBIMG_SLOW=1): two Kodak images coded with the shipped model."""
    if not _slow_selected(request.config):
        pytest.skip("slow: select with -m slow or BBIMG_SLOW=1")
    rng = random.Random(0)
    for name in ("kodim05", "kodim23"):
        data = codec.encode(Image.open(KODAK / f"{name}.png"), 50)
        for n in sorted(rng.sample(range(len(data)), 100)):
            cli_rejects(data[:n], f"{name} truncated to {n}")
        for bit in rng.sample(range(8 * len(data)), 300):
            cli_rejects(_flip(data, bit), f"{name} bit {bit}")
