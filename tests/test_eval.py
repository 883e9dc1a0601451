"""`bbimg eval` and the benchmark helpers (BD-rate)."""
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg.cli.main import main

from conftest import smooth_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import bd_rate, local_points  # noqa: E402


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


@pytest.fixture
def two_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(smooth_image(rng, 48, 64)).save(folder / "a.png")
    Image.fromarray(smooth_image(rng, 64, 40)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_eval_csv_matches_real_sizes(tiny_model, two_images, tmp_path):
    out = tmp_path / "eval.csv"
    r = run("eval", two_images, "-q", "20", "-q", "80", "--csv", out, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert "(mean)" in r.stdout and "a " in r.stdout
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["codec", "param", "image", "bpp", "psnr", "ms_ssim"]
    assert {(r["image"], r["param"]) for r in rows} == {(i, q) for i in "ab" for q in ("20", "80")}
    for row in rows:
        assert row["codec"] == "bbimg"
        src = two_images / f"{row['image']}.png"
        bbi = tmp_path / f"{row['image']}-{row['param']}.bbi"
        assert run("encode", src, bbi, "-q", row["param"], "--model", tiny_model, "--quiet").exit_code == 0
        w, h = Image.open(src).size
        assert float(row["bpp"]) == pytest.approx(bbi.stat().st_size * 8 / (w * h), rel=1e-9)
        assert 0 < float(row["psnr"]) < 100
        assert math.isnan(float(row["ms_ssim"]))  # below pytorch-msssim's 161-pixel minimum


def test_eval_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    r = run("eval", tmp_path)
    assert r.exit_code == 1
    assert r.stderr.strip().count("\n") == 0 and "no images" in r.stderr


def curve():
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    return rate, 30 + 4 * np.log2(rate) - 0.3 * np.log2(rate) ** 2


def test_bd_rate_identical_curves():
    rate, dist = curve()
    assert bd_rate(rate, dist, rate, dist) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_half_rate():
    rate, dist = curve()
    assert bd_rate(rate, dist, rate / 2, dist) == pytest.approx(-50.0, abs=0.5)
    assert bd_rate(rate / 2, dist, rate, dist) == pytest.approx(100.0, abs=1.0)


def test_bd_rate_no_overlap_is_nan():
    rate, dist = curve()
    assert math.isnan(bd_rate(rate, dist, rate, dist + 100))


def test_local_points_cover_interval():
    rate = np.linspace(0.05, 5, 12)
    dist = 20 + 5 * np.log(rate)
    r, d = local_points(rate, dist, dist[5] + 0.1, dist[7] - 0.1)
    assert d.min() <= dist[5] and d.max() >= dist[7] and len(r) >= 4
    assert len(r) < len(rate)
