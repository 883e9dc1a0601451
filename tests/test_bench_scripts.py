"""The benchmark helpers that can be checked quickly: bench/cli_check.py (row choice, and one
end-to-end check through the real CLI with the tiny model) and bench/compressai_shim.py (when
CompressAI is installed)."""
import csv
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cli_check  # noqa: E402


def rows(images=("kodim01", "kodim02"), qualities=(1, 25, 55, 100)):
    return [dict(codec="bbimg", param=str(q), image=i, bpp="0.5", psnr="30", ms_ssim="0.9")
            for i in images for q in qualities]


def test_cli_check_default_row_is_first_image_mid_quality():
    (r,) = cli_check.pick(rows(qualities=(1, 40, 70, 100)), None, None, False)
    assert (r["image"], r["param"]) == ("kodim01", "40")  # 40 and 70 tie around 55: the lower one


def test_cli_check_choices():
    (r,) = cli_check.pick(rows(), "kodim02", 100, False)
    assert (r["image"], r["param"]) == ("kodim02", "100")
    assert len(cli_check.pick(rows(), None, None, True)) == 8
    assert len(cli_check.pick(rows(), "kodim02", None, True)) == 4
    with pytest.raises(SystemExit):
        cli_check.pick(rows(), "kodim03", None, False)
    with pytest.raises(SystemExit):
        cli_check.pick(rows(), "kodim01", 30, False)


def test_cli_check_end_to_end(tiny_model, tmp_path):
    """A row from bbimg.evaluate (what rd.py writes) agrees with `bbimg encode` / `bbimg decode`
    run as separate processes: same bytes, so the same bpp and PSNR."""
    from bbimg.evaluate import CSV_COLUMNS, evaluate

    folder = tmp_path / "kodak"
    folder.mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(3), 176, 192)).save(folder / "img.png")
    (row,) = evaluate([folder / "img.png"], [40], model=tiny_model)
    table = tmp_path / "rd.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(row)
    out = tmp_path / "check.csv"
    cli = f"{shlex.quote(sys.executable)} -m bbimg.cli.main"
    with pytest.raises(SystemExit) as exc:
        cli_check.main(["--csv", str(table), "--kodak", str(folder), "--model", tiny_model, "--bbimg", cli,
                        "--out", str(out)])
    assert exc.value.code == 0
    with open(out, newline="") as f:
        (checked,) = list(csv.DictReader(f))
    assert checked["pass"] == "True"
    assert int(checked["bytes"]) == row["bytes"]
    assert float(checked["psnr_diff_db"]) == pytest.approx(0, abs=1e-9)


def test_compressai_shim_round_trip():
    pytest.importorskip("scipy")
    import importlib.util
    if importlib.util.find_spec("compressai") is None:
        pytest.skip("CompressAI not installed (pip install --no-deps -r bench/requirements-compressai.txt)")
    import torch

    import compressai_shim

    net = compressai_shim.scale_hyperprior(3)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = net.compress(x)
        y = net.decompress(out["strings"], out["shape"])["x_hat"]
    assert y.shape == x.shape
    assert all(len(s[0]) > 0 for s in out["strings"])
    assert "torchvision" not in sys.modules and "torch_geometric" not in sys.modules


def test_bd_rate_over_a_rate_window():
    import common

    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    dist = 30 + 6 * np.log2(rate / 0.1)          # +6 dB per doubling
    # A curve that needs 10% more bits everywhere: -10%/+10% whatever the window.
    assert common.bd_rate(rate * 1.1, dist, rate, dist) == pytest.approx(-100 / 11, abs=1e-6)
    assert common.bd_rate(rate * 1.1, dist, rate, dist, (33.0, 40.0)) == pytest.approx(-100 / 11, abs=1e-6)
    # The window is the quality the tested curve spans between two rates (clamped to its ends).
    assert common.quality_at_rates(rate, dist, 0.2, 0.8) == pytest.approx((36.0, 48.0))
    assert common.quality_at_rates(rate, dist, 0.05, 3.0) == pytest.approx((30.0, 54.0))
    # A test curve better only at low rates: the low window sees the gain, the high one does not.
    better_low = rate * np.where(rate < 0.5, 0.8, 1.0)
    low = common.bd_rate(rate, dist, better_low, dist, (30.0, 36.0))
    high = common.bd_rate(rate, dist, better_low, dist, (48.0, 54.0))
    assert low < -10 and abs(high) < abs(low)
    assert np.isnan(common.bd_rate(rate, dist, rate, dist, (60.0, 70.0)))   # outside both curves


def test_coder_loss_is_read_off_the_ideal_curve_at_the_file_rate():
    import coder_high_rate

    bpp, psnr_db = np.array([0.5, 1.0, 2.0]), np.array([30.0, 33.0, 36.0])
    assert coder_high_rate.psnr_at_rate(1.0, bpp, psnr_db) == pytest.approx(33.0)
    assert coder_high_rate.psnr_at_rate(np.sqrt(2), bpp, psnr_db) == pytest.approx(34.5)
    # Past the top of the ideal curve (files cost more bits than the KL), along its last segment.
    assert coder_high_rate.psnr_at_rate(4.0, bpp, psnr_db) == pytest.approx(39.0)


def test_encode_profile_child_accounts_for_every_stage(tmp_path):
    """The encode profile's child process (the shipped model, a small image): every stage is
    timed, none negative, and the file it writes is the one it reports."""
    import json
    import subprocess
    import sys

    from encode_profile import ENCODE_CHILD

    src, out = tmp_path / "in.png", tmp_path / "out.bbi"
    Image.fromarray(smooth_image(np.random.default_rng(3), 96, 128)).save(src)
    proc = subprocess.run([sys.executable, "-c", ENCODE_CHILD, str(src), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = {stage: (wall, cpu) for stage, wall, cpu in result["stages"]}
    assert list(stages) == ["import cli", "import codec", "import onnxruntime", "read image", "model load",
                            "image preparation", "analysis transform", "hyper transform", "analysis stage, other",
                            "y prior", "coding z (prior + REC)", "coding y (plan + REC)", "file write"]
    assert all(wall >= 0 for wall, _ in stages.values()), stages
    assert stages["analysis transform"][0] > 0 and stages["coding y (plan + REC)"][0] > 0
    assert result["bytes"] == out.stat().st_size and out.read_bytes()[:4] == b"\x89BBI"
