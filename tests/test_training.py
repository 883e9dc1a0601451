import itertools
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from bbimg.cli.main import main as cli
from bbimg.models import HierarchicalVAE
from bbimg.models.registry import config_from_dict
from bbimg.training import trainer as trainer_module
from bbimg.training.checkpoint import read_parts, write_parts
from bbimg.training.data import load_image_set, pack_image_set
from bbimg.training.trainer import TrainOptions, Trainer, learning_rate, load_checkpoint, rd_loss, train

from conftest import TINY

TINY_FLAGS = ["--widths", "8,8,8", "--latent-channels", "8", "--hyper-width", "8", "--hyper-channels", "4"]


def quiet(_: str) -> None:
    pass


@pytest.fixture
def tiny_opts(image_folder, tmp_path):
    """TrainOptions for a tiny model on the synthetic images; keyword arguments override."""
    def make(**kw) -> TrainOptions:
        base = dict(data=[image_folder], state_dir=tmp_path / "state", batch=4, crop=64, lr=2e-3, threads=1,
                    val_fraction=0.0, downscale=1, model=dict(TINY), progress=False, checkpoint_minutes=1e9)
        return TrainOptions(**{**base, **kw})
    return make


@pytest.fixture
def fake_clock(monkeypatch):
    """The trainer's clock advances one second each time it is read."""
    ticks = itertools.count()
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks))))


def _fixed_loss(model, folder):
    images = load_image_set([folder], downscale=1, val_fraction=0.0)
    x = torch.from_numpy(images.random_crops(np.random.default_rng(5), 8, 64)).float() / 255
    torch.manual_seed(0)
    with torch.no_grad():
        loss, _, _ = rd_loss(model, x, torch.full((8,), 0.5))
    return float(loss)


def test_training_lowers_loss(image_folder, tiny_opts):
    train(tiny_opts(max_steps=1), log=quiet)
    state_path = tiny_opts().state_dir / "state.pt"
    ckpt = load_checkpoint(state_path)
    model = HierarchicalVAE(config_from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    before = _fixed_loss(model, image_folder)
    train(tiny_opts(max_steps=60), log=quiet)
    model.load_state_dict(load_checkpoint(state_path)["model"])
    after = _fixed_loss(model, image_folder)
    assert after < 0.8 * before, (before, after)


def test_resume_continues_at_the_saved_step_with_the_saved_optimizer_state(tiny_opts):
    train(tiny_opts(max_steps=3), log=quiet)
    saved = load_checkpoint(tiny_opts().state_dir / "state.pt")
    assert saved["step"] == 3
    assert saved["optimizer"]["state"], "optimizer moments must be saved"

    resumed = Trainer(tiny_opts(max_steps=5), log=quiet)
    assert resumed.step_count == 3
    restored = resumed.optimizer.state_dict()["state"]
    assert restored.keys() == saved["optimizer"]["state"].keys()
    for index, slots in saved["optimizer"]["state"].items():
        for slot, value in slots.items():
            assert torch.equal(restored[index][slot], value), (index, slot)
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name

    resumed.run()
    second = load_checkpoint(tiny_opts().state_dir / "state.pt")
    assert second["step"] == 5
    # Adam's step counter continued from the restored state instead of restarting at 0.
    assert {float(s["step"]) for s in second["optimizer"]["state"].values()} == {5.0}
    assert any(not torch.equal(saved["model"][k], second["model"][k]) for k in saved["model"])


def test_deadline_stops_the_run_and_the_lr_decays_towards_it(tiny_opts, fake_clock):
    trainer = Trainer(tiny_opts(minutes=0.5, max_steps=1000, lr=1e-3, lr_min=1e-5, decay_from=0.5), log=quiet)
    result = trainer.run()
    # 30 s of the fake clock, a few ticks a step: stopped by the deadline long before step 1000.
    assert 1 <= result["step"] < 30
    assert load_checkpoint(tiny_opts().state_dir / "state.pt")["step"] == result["step"]
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-4


def test_progress_bar_shows_steps_loss_and_time_left(tiny_opts, fake_clock, capsys):
    Trainer(tiny_opts(minutes=0.5, max_steps=1000, progress=True), log=quiet).run()
    err = capsys.readouterr().err
    assert "step" in err and "loss=" in err and "left=" in err, err


def test_learning_rate_schedule():
    opts = TrainOptions(data=[], lr=1e-3, lr_min=1e-5, decay_from=0.6, warmup_steps=10)
    assert learning_rate(opts, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(opts, 9, 0.1) == pytest.approx(1e-3)
    assert learning_rate(opts, 50, 0.59) == pytest.approx(1e-3)
    assert learning_rate(opts, 50, 0.8) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(opts, 50, 1.0) == pytest.approx(1e-5)
    assert learning_rate(TrainOptions(data=[], lr=3e-4), 50, 0.99) == 3e-4


def test_parts_hold_the_state_in_small_files(tiny_opts, tmp_path):
    parts = tmp_path / "parts"
    train(tiny_opts(max_steps=2, parts_dir=parts), log=quiet)
    state = load_checkpoint(tiny_opts().state_dir / "state.pt")
    joined = read_parts(parts)
    assert joined["step"] == 2 and joined["config"] == state["config"]
    for name, value in state["model"].items():
        assert torch.equal(joined["model"][name], value), name
    for index, slots in state["optimizer"]["state"].items():
        for slot, value in slots.items():   # moments travel in bf16
            torch.testing.assert_close(joined["optimizer"]["state"][index][slot], value, rtol=1e-2, atol=1e-12)
    # Small parts: several files, each within the limit, the same state when joined.
    small = tmp_path / "small"
    limit = 2 * max(v.numel() * 4 for v in state["model"].values())
    files = write_parts(state, small, part_bytes=limit)
    assert len(files) > 3
    assert all(f.stat().st_size <= limit for f in files)
    assert all(torch.equal(read_parts(small)["model"][k], v) for k, v in state["model"].items())
    # A part left from another checkpoint is refused, not joined.
    stale = load_checkpoint(small / "part-00.pt")
    torch.save({**stale, "step": 1}, small / "part-00.pt")
    with pytest.raises(ValueError, match="step 1"):
        read_parts(small)


def test_packed_folder_keeps_its_split_and_pixels(image_folder, tmp_path):
    packed = tmp_path / "packed"
    counts = pack_image_set([image_folder], packed, downscale=1, val_fraction=0.4)
    for validation, split in ((False, "train"), (True, "validation")):
        original = load_image_set([image_folder], downscale=1, validation=validation, val_fraction=0.4)
        loaded = load_image_set([packed], downscale=2, validation=validation)  # packed: taken as packed
        assert len(loaded) == len(original) == counts[split]
        for a, b in zip(original.images, loaded.images):
            assert a.shape == b.shape
            assert np.abs(a.astype(int) - b).mean() < 3   # JPEG q92 4:4:4
    assert counts["train"] and counts["validation"]


def _cli(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_cli_train_help_shows_the_library_defaults():
    r = _cli("--help")
    assert r.exit_code == 0
    entries = {m[1]: " ".join(m[2].split()) for m in re.finditer(r"^  (--[\w-]+)(.*?)(?=^  --)", r.output, re.M | re.S)}
    for flag, value in (("--batch", TrainOptions.batch), ("--crop", TrainOptions.crop), ("--lr", TrainOptions.lr),
                        ("--checkpoint-minutes", TrainOptions.checkpoint_minutes)):
        assert f"[default: {value}" in entries[flag], (flag, entries[flag])


def test_cli_train_tiny_run(image_folder, tmp_path):
    state = tmp_path / "state"
    r = _cli("--data", image_folder, "--state-dir", state, "--steps", 2, "--batch", 2, "--crop", 64,
             "--threads", 1, "--downscale", 1, *TINY_FLAGS, "--quiet")
    assert r.exit_code == 0, r.output
    assert "step=2" in r.stdout
    assert r.stderr == ""
    assert load_checkpoint(state / "state.pt")["step"] == 2
    r = _cli("--data", image_folder, "--state-dir", state, "--steps", 3, "--batch", 2, "--crop", 64,
             "--threads", 1, "--downscale", 1)
    assert r.exit_code == 0, r.output
    assert "from step 2" in r.stderr
    assert load_checkpoint(state / "state.pt")["step"] == 3


def test_cli_train_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("--data", empty, "--state-dir", tmp_path / "s", "--steps", 1, *TINY_FLAGS)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [f"bbimg: error: cannot train: no training images found under {empty}"]
    r = _cli("--data", empty, "--state-dir", tmp_path / "s")
    assert r.exit_code == 2 and "--minutes or --steps" in r.stderr
    r = _cli("--data", empty, "--steps", 1, "--crop", 100)
    assert r.exit_code == 2 and "multiple of 64" in r.stderr


def test_cli_train_without_torch_names_the_extra(image_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` fails as if it were not installed
    r = _cli("--data", image_folder, "--state-dir", tmp_path / "s", "--steps", 1)
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("bbimg: error: bbimg train needs PyTorch") and "bbimg[torch]" in line, line
    assert not (tmp_path / "s").exists()


def test_ddp_smoke_with_two_gloo_processes(image_folder, tmp_path):
    state = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bbimg.cli", "train", "--data", str(image_folder), "--state-dir", str(state),
           "--steps", "3", "--batch", "2", "--crop", "64", "--threads", "1", "--downscale", "1", *TINY_FLAGS,
           "--quiet"]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(state / "state.pt")
    assert ckpt["step"] == 3


def test_dim_kl_cap_charges_only_the_bits_above_the_cap():
    torch.manual_seed(0)
    model = HierarchicalVAE(config_from_dict(TINY))
    x = torch.rand(2, 3, 64, 64)
    t = torch.full((2,), 0.5)
    torch.manual_seed(1)
    plain, bpp, _ = rd_loss(model, x, t)
    torch.manual_seed(1)
    huge_cap, bpp_huge, _ = rd_loss(model, x, t, dim_kl_cap=1e9)
    torch.manual_seed(1)
    zero_cap, bpp_zero, _ = rd_loss(model, x, t, dim_kl_cap=0.0)
    # The reported rate is the exact KL whatever the cap; the loss charges the excess once more.
    assert torch.allclose(bpp, bpp_huge) and torch.allclose(bpp, bpp_zero)
    assert torch.isclose(plain, huge_cap)
    # With a zero cap every bit is excess (KL >= 0 elementwise): the rate term is counted twice.
    assert torch.isclose(zero_cap - plain, bpp.mean(), rtol=1e-2, atol=1e-4)


def test_equalize_above_divides_only_the_losses_of_samples_above_that_lambda():
    torch.manual_seed(0)
    model = HierarchicalVAE(config_from_dict(TINY))
    x = torch.rand(3, 3, 64, 64)
    t = torch.tensor([0.0, 0.5, 1.0])          # lambda 0.0008, 0.008, 0.08 (TINY keeps the default range)
    torch.manual_seed(1)
    plain, bpp, mse = rd_loss(model, x, t)
    torch.manual_seed(1)
    equalized, bpp_eq, mse_eq = rd_loss(model, x, t, equalize_above=0.008)
    assert torch.equal(bpp, bpp_eq) and torch.equal(mse, mse_eq)
    lam = torch.tensor([0.0008, 0.008, 0.08])
    per_sample = bpp + lam * mse
    assert torch.isclose(plain, per_sample.mean(), rtol=1e-4)
    assert torch.isclose(equalized, (per_sample * torch.tensor([1.0, 1.0, 0.1])).mean(), rtol=1e-4)


def test_a_widened_range_keeps_the_old_model_at_the_lambdas_both_cover(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from widen_range import widen

    from bbimg.models.vae import quality_to_lambda

    torch.manual_seed(0)
    old = HierarchicalVAE(config_from_dict(TINY))
    for p in old.film.parameters():            # a FiLM that is not the identity at every t
        torch.nn.init.normal_(p, std=0.3)
    weights = {"config": dict(vars(old.cfg)), "model": old.state_dict(), "step": 7}
    wide_weights = widen(weights, 0.64)
    wide = HierarchicalVAE(config_from_dict(wide_weights["config"]))
    wide.load_state_dict(wide_weights["model"])
    assert wide_weights["step"] == 7 and wide.cfg.lambda_max == 0.64
    x = torch.rand(1, 3, 64, 64)
    for t_old in (0.0, 0.3, 1.0):
        lam = quality_to_lambda(torch.tensor([t_old]), old.cfg)
        t_new = torch.log(lam / 0.0008) / math.log(0.64 / 0.0008)
        assert torch.allclose(quality_to_lambda(t_new, wide.cfg), lam, rtol=1e-5)
        torch.manual_seed(2)
        a = old(x, torch.tensor([t_old]))
        torch.manual_seed(2)
        b = wide(x, t_new)
        assert torch.allclose(a.x_hat, b.x_hat, atol=1e-5) and torch.allclose(a.kl_y, b.kl_y, rtol=1e-4)
    # Above the old range the widened model asks for more bits than at the old top.
    torch.manual_seed(2)
    top = wide(x, torch.tensor([1.0]))
    assert not torch.allclose(top.x_hat, b.x_hat, atol=1e-5)
    with pytest.raises(ValueError, match="does not widen"):
        widen(weights, 0.05)
