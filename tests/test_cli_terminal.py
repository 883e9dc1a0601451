"""What the command line prints and where: terminals, pipes, warnings, progress, --version, --help."""
import importlib
import inspect
import os
import pty
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg.cli.main import main

cli = importlib.import_module("bbimg.cli.main")  # the module: bbimg.cli.main is also the name of the group
BBIMG = [sys.executable, "-m", "bbimg.cli"]
TORCH_IMPORT = re.compile(r"\|\s*torch(\.|\s*$)", re.M)  # a torch line in python -X importtime output


def run(*args, input=None):
    return CliRunner().invoke(main, list(map(str, args)), input=input, catch_exceptions=False)


@pytest.fixture
def coded(tiny_model, tmp_path, photo):
    photo.save(tmp_path / "a.png")
    assert run("encode", tmp_path / "a.png", tmp_path / "a.bbi", "--model", tiny_model, "--quiet").exit_code == 0
    return tmp_path


def run_on_pty(args, stream: str) -> subprocess.CompletedProcess:
    """Run bbimg with stdout (or stdin) on a pseudo-terminal, as when typed at a shell."""
    leader, follower = pty.openpty()
    try:
        kwargs = {"stdout": follower} if stream == "stdout" else {"stdin": follower, "stdout": subprocess.PIPE}
        return subprocess.run(BBIMG + list(map(str, args)), stderr=subprocess.PIPE, text=True, timeout=120, **kwargs)
    finally:
        os.close(follower)
        os.close(leader)


# ---------------------------------------------------------------- terminals and pipes


def test_binary_output_to_a_terminal_is_refused(coded, tiny_model):
    for args in (("encode", coded / "a.png", "-", "--model", tiny_model), ("decode", coded / "a.bbi", "-")):
        proc = run_on_pty(args, "stdout")
        assert proc.returncode == 1
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("bbimg: error:")
        assert "use -f/--force" in proc.stderr and "redirect" in proc.stderr


def test_binary_input_from_a_terminal_is_refused(coded):
    proc = run_on_pty(("decode", "-", coded / "x.png"), "stdin")
    assert proc.returncode == 1 and proc.stderr.startswith("bbimg: error:") and "stdin" in proc.stderr
    assert not (coded / "x.png").exists()


def test_force_writes_to_a_terminal(coded, monkeypatch):
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    assert run("decode", coded / "a.bbi", "-").exit_code == 1
    forced = run("decode", coded / "a.bbi", "-", "-f")
    assert forced.exit_code == 0 and forced.stdout_bytes[:4] == b"\x89PNG"


def test_broken_pipe_exits_quietly(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    assert run("encode", tmp_path / "big.png", tmp_path / "big.bbi", "--model", tiny_model, "--quiet").exit_code == 0
    # 288 KiB of BMP into a pipe whose reader leaves after one byte
    cmd = " ".join(BBIMG) + f" decode {tmp_path / 'big.bbi'} - --format BMP | head -c 1 > /dev/null"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 1, proc.stderr
    # a reader gone before the first byte: the write surely fails with EPIPE
    for args in (("decode", tmp_path / "big.bbi", "-"), ("encode", tmp_path / "big.png", "-", "--model", tiny_model)):
        writer = subprocess.Popen(BBIMG + list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        writer.stdout.close()
        stderr = writer.communicate(timeout=300)[1].decode()
        assert writer.returncode == 1 and "Traceback" not in stderr and "Exception ignored" not in stderr
        assert len([line for line in stderr.splitlines() if not line.startswith("stdout:")]) <= 1, stderr


# ---------------------------------------------------------------- warnings


class BbimgWarning(UserWarning):
    """Stands in for bbimg.image.BbimgWarning: the CLI knows the library's warnings by this name."""


def test_library_warnings_are_one_line_and_quiet_silences_them(coded, monkeypatch, tiny_model):
    import bbimg.codec

    real_encode = bbimg.codec.encode

    def encode_with_warnings(*args, **kwargs):
        warnings.warn("16-bit samples coded at 8 bits", BbimgWarning)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(bbimg.codec, "encode", encode_with_warnings)
    src = coded / "a.png"
    result = run("encode", src, coded / "w.bbi", "--model", tiny_model)
    assert result.exit_code == 0
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"bbimg: warning: {src}: 16-bit samples coded at 8 bits" and len(lines) == 2
    result = run("encode", src, coded / "w.bbi", "--model", tiny_model, "--quiet")
    assert result.exit_code == 0 and result.stderr == ""


def test_a_16_bit_png_warns(tiny_model, tmp_path):
    import bbimg.image
    if not hasattr(bbimg.image, "BbimgWarning"):
        pytest.skip("bbimg.image.BbimgWarning is not in this library version yet")
    grey16 = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 12).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    result = run("encode", tmp_path / "g16.png", tmp_path / "g16.bbi", "--model", tiny_model)
    assert result.exit_code == 0
    warned = [line for line in result.stderr.splitlines() if line.startswith("bbimg: warning:")]
    assert len(warned) == 1 and str(tmp_path / "g16.png") in warned[0] and "16" in warned[0]
    result = run("encode", tmp_path / "g16.png", tmp_path / "g16.bbi", "--model", tiny_model, "--quiet")
    assert result.exit_code == 0 and result.stderr == ""


# ---------------------------------------------------------------- progress


def test_no_progress_on_a_non_terminal(coded, monkeypatch, tiny_model):
    monkeypatch.setattr(cli, "PROGRESS_MIN_PIXELS", 0)  # every image counts as large
    result = run("encode", coded / "a.png", coded / "p.bbi", "--model", tiny_model)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(str(coded / "p.bbi"))
    result = run("decode", coded / "p.bbi", coded / "p.png")
    assert result.exit_code == 0 and result.stderr == f"{coded / 'p.png'}: 96x80 RGB\n"


def test_progress_bar_on_a_terminal_for_large_images(coded, monkeypatch, tiny_model):
    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    small = run("encode", coded / "a.png", coded / "p.bbi", "--model", tiny_model)
    assert "\r" not in small.stderr  # 96x80 is far below the threshold
    monkeypatch.setattr(cli, "PROGRESS_MIN_PIXELS", 0)
    for args, label in ((("encode", coded / "a.png", coded / "p.bbi", "--model", tiny_model), "encode"),
                        (("decode", coded / "p.bbi", coded / "p.png"), "decode")):
        result = run(*args)
        assert result.exit_code == 0 and f"\r{label}:" in result.stderr, result.stderr
        quiet = run(*args, "--quiet")
        assert quiet.exit_code == 0 and quiet.stderr == ""


def test_eval_progress_only_on_a_terminal(tiny_model, tmp_path, photo, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    photo.save(folder / "one.png")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "two.png")
    plain = run("eval", folder, "--model", tiny_model)
    assert plain.exit_code == 0 and "\r" not in plain.stderr
    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    shown = run("eval", folder, "--model", tiny_model)
    assert shown.exit_code == 0 and "0/2 [" in shown.stderr and "image/s" in shown.stderr
    quiet = run("eval", folder, "--model", tiny_model, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "" and "(mean)" in quiet.stdout


# ---------------------------------------------------------------- decompression bombs


def test_max_pixels(coded):
    import bbimg.codec
    if "max_pixels" not in inspect.signature(bbimg.codec.decode).parameters:
        pytest.skip("bbimg.codec.decode has no max_pixels in this library version yet")
    result = run("decode", coded / "a.bbi", coded / "x.png", "--max-pixels", 96 * 80 - 1)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--max-pixels" in result.stderr and "a.bbi" in result.stderr and not (coded / "x.png").exists()
    assert run("decode", coded / "a.bbi", coded / "x.png", "--max-pixels", 96 * 80).exit_code == 0
    assert run("decode", coded / "a.bbi", coded / "y.png", "--max-pixels", 0).exit_code == 0


# ---------------------------------------------------------------- --version, --help, no torch


def test_version_names_model_and_core_without_torch():
    from bbimg import __version__, rec
    from bbimg.model_files import DEFAULT_MODEL

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bbimg.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == f"bbimg {__version__}"
    assert DEFAULT_MODEL in proc.stdout
    build = "CUDA build" if rec.core_info()["cuda_compiled"] else "CPU-only build"
    assert build in proc.stdout
    assert not TORCH_IMPORT.search(proc.stderr)


def test_encode_decode_info_do_not_import_torch(tmp_path):
    """With the shipped model (ONNX Runtime on the CPU) no command of the main path loads torch."""
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    env = {k: v for k, v in os.environ.items() if k != "BBIMG_MODEL_PATH"}
    for args in (("encode", tmp_path / "a.png", tmp_path / "a.bbi"), ("decode", tmp_path / "a.bbi", tmp_path / "b.png"),
                 ("info", tmp_path / "a.bbi")):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bbimg.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not TORCH_IMPORT.search(proc.stderr), args


def test_help_explains_each_command():
    group = run("--help").stdout
    assert "bbimg encode photo.png photo.bbi" in group and "'-'" in group and "--version" in group
    encode = run("encode", "--help").stdout
    assert "'-' = stdin" in encode and "--force" in encode and "--quiet" in encode and "INPUT" in encode
    decode = " ".join(run("decode", "--help").stdout.split())
    assert "'-' is stdin" in decode and "transcode" in decode and "bbimg decode old.bbi - | bbimg encode -" in decode
    assert "--max-pixels" in decode and "0 = no limit" in decode
    assert "--quiet" in run("eval", "--help").stdout
