import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path, photo):
    src = tmp_path / "a.png"
    photo.save(src)
    return tmp_path, src


def run(*args, input=None):
    return CliRunner().invoke(main, list(map(str, args)), input=input, catch_exceptions=False)


def test_encode_decode_info(tiny_model, files):
    tmp, src = files
    r = run("encode", src, tmp / "a.bbi", "-q", "30", "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert "bpp" in r.stderr
    r = run("decode", tmp / "a.bbi", tmp / "b.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp / "b.png").size == Image.open(src).size
    r = run("info", tmp / "a.bbi", "--json")
    facts = json.loads(r.stdout)
    assert facts["bytes"] == (tmp / "a.bbi").stat().st_size and facts["quality"] == 30
    assert {s["tag"] for s in facts["sections"]} >= {"ZPL2", "ZIDX", "YPL2", "YIDX"}
    r = run("info", tmp / "a.bbi")
    assert "bpp" in r.stdout and "YIDX" in r.stdout


def test_stdin_stdout_through_runner(tiny_model, files):
    tmp, src = files
    r = CliRunner().invoke(main, ["encode", "-", "-", "--model", tiny_model, "--quiet"], input=src.read_bytes())
    assert r.exit_code == 0
    coded = r.stdout_bytes
    assert coded[:4] == b"\x89BBI"
    r = CliRunner().invoke(main, ["decode", "-", "-"], input=coded)
    assert r.exit_code == 0 and r.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_pipe(tiny_model, files):
    tmp, src = files
    exe = [sys.executable, "-m", "bbimg.cli"]
    env = dict(os.environ)
    cmd = (f"cat {src} | {' '.join(exe)} encode - - --model {tiny_model} | "
           f"{' '.join(exe)} decode - {tmp / 'piped.png'}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp / "piped.png").size == Image.open(src).size
    assert "Traceback" not in proc.stderr


def test_console_script_quick_exit_keeps_every_byte_and_status(tiny_model, files):
    """The console script leaves without the interpreter's teardown after encode and decode: the
    same stdout bytes and stderr lines as an in-process run, and the same exit statuses."""
    tmp, src = files
    exe = [sys.executable, "-m", "bbimg.cli"]
    enc = subprocess.run(exe + ["encode", str(src), "-", "--model", tiny_model], capture_output=True, timeout=300)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout == run("encode", src, "-", "--model", tiny_model, "--quiet").stdout_bytes
    assert enc.stderr.decode().startswith("stdout: ") and b"bpp" in enc.stderr  # the summary, flushed
    dec = subprocess.run(exe + ["decode", "-", "-"], input=enc.stdout, capture_output=True, timeout=300)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == CliRunner().invoke(main, ["decode", "-", "-"], input=enc.stdout).stdout_bytes
    out = tmp / "quick.png"
    dec = subprocess.run(exe + ["decode", "-", str(out)], input=enc.stdout, capture_output=True, timeout=300)
    assert dec.returncode == 0 and Image.open(out).size == Image.open(src).size
    assert dec.stderr.decode().strip() == f"{out}: {Image.open(src).width}x{Image.open(src).height} RGB"
    bad = subprocess.run(exe + ["decode", str(src), str(tmp / "x.png")], capture_output=True, timeout=300)
    assert bad.returncode == 1 and not (tmp / "x.png").exists()
    assert subprocess.run(exe + ["--help"], capture_output=True, timeout=300).returncode == 0


def test_bad_input_exits_1_without_traceback_or_output(tiny_model, files):
    tmp, src = files
    junk = tmp / "junk.png"
    junk.write_bytes(b"not an image at all")
    out = tmp / "out.bbi"
    r = run("encode", junk, out, "--model", tiny_model)
    assert r.exit_code == 1 and r.stderr.startswith("bbimg: error:") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not list(tmp.glob(".*part"))
    r = run("decode", junk, tmp / "x.png")
    assert r.exit_code == 1 and not (tmp / "x.png").exists()
    r = run("encode", tmp / "missing.png", out)
    assert r.exit_code == 1


def test_corrupt_file_keeps_existing_output(tiny_model, files):
    tmp, src = files
    assert run("encode", src, tmp / "a.bbi", "--model", tiny_model).exit_code == 0
    data = bytearray((tmp / "a.bbi").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp / "bad.bbi").write_bytes(bytes(data))
    existing = tmp / "keep.png"
    existing.write_bytes(b"precious")
    r = run("decode", tmp / "bad.bbi", existing)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert existing.read_bytes() == b"precious"


def test_usage_errors_exit_2(tiny_model, files):
    tmp, src = files
    assert run("encode", src, tmp / "a.bbi", "-q", "0").exit_code == 2
    assert run("encode", src, tmp / "a.bbi", "-q", "50", "--bpp", "0.5").exit_code == 2
    assert run("encode", src).exit_code == 2
    assert run("encode", src, tmp / "a.bbi", "--model", tiny_model).exit_code == 0
    assert run("decode", tmp / "a.bbi", tmp / "a.unknownext").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_models_lists_installed(tiny_model):
    r = run("models", "--json")
    assert r.exit_code == 0
    names = [m["name"] for m in json.loads(r.stdout)]
    assert tiny_model in names


def test_help_explains():
    r = run("--help")
    assert "encode" in r.stdout and "decode" in r.stdout
    r = run("encode", "--help")
    assert "--bpp" in r.stdout and "quality" in r.stdout.lower()
