"""One real end-to-end smoke test of the shipped default model, through the installed CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bbimg.model_files import DEFAULT_MODEL, find_weights

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_model_round_trip(tmp_path):
    assert find_weights(DEFAULT_MODEL) is not None
    src = ROOT / "examples" / "parrots.png"
    exe = [sys.executable, "-m", "bbimg.cli"]
    enc = subprocess.run(exe + ["encode", str(src), str(tmp_path / "p.bbi"), "-q", "60"], capture_output=True,
                         text=True, timeout=600)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run(exe + ["decode", str(tmp_path / "p.bbi"), str(tmp_path / "p.png")], capture_output=True,
                         text=True, timeout=600)
    assert dec.returncode == 0, dec.stderr
    a = np.asarray(Image.open(src).convert("RGB"), float)
    b = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"), float)
    assert a.shape == b.shape
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    bpp = (tmp_path / "p.bbi").stat().st_size * 8 / (a.shape[0] * a.shape[1])
    # A trained model, not noise: well above the ~12 dB of a mid-grey guess, at a sane rate.
    assert psnr > 20 and 0.01 < bpp < 4, (psnr, bpp)
    # `bbimg info` reads the block plans: their block count, and the size they fix before any
    # candidate search, which the file meets up to the index streams' byte padding.
    info = subprocess.run(exe + ["info", str(tmp_path / "p.bbi"), "--json"], capture_output=True, text=True,
                          timeout=600)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["blocks"] > 0 and facts["actual_bits"] == (tmp_path / "p.bbi").stat().st_size * 8
    assert 0 <= facts["actual_bits"] - facts["predicted_bits"] < 16
