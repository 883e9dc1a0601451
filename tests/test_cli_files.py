"""The command line treats files as Unix tools do: it never destroys its input, gives new files the
umask's mode, keeps the mode of a file it replaces, and leaves no partial file on any failure."""
import errno
import importlib
import os
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bbimg.cli.main import main

cli = importlib.import_module("bbimg.cli.main")  # the module: bbimg.cli.main is also the name of the group


def run(*args, input=None):
    return CliRunner().invoke(main, list(map(str, args)), input=input, catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    """Exit 1 and a single ``bbimg: error:`` line naming what went wrong; no traceback, no repr."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bbimg: error: "), lines[0]
    assert "Traceback" not in result.output and " object at 0x" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


@pytest.fixture
def coded(tiny_model, tmp_path, photo):
    """tmp_path holding a.png and its encoding a.bbi (tiny model)."""
    photo.save(tmp_path / "a.png")
    assert run("encode", tmp_path / "a.png", tmp_path / "a.bbi", "--model", tiny_model, "--quiet").exit_code == 0
    return tmp_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------- never destroy the input


def test_decode_onto_its_own_input_leaves_it_byte_identical(coded):
    before = (coded / "a.bbi").read_bytes()
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "a.bbi"), "input")
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "a.bbi", "--format", "PNG"), "input")
    assert (coded / "a.bbi").read_bytes() == before


@pytest.mark.parametrize("link", ["symlink", "hardlink", "dotted"])
def test_output_that_is_the_input_through_a_link_is_refused(coded, link, tiny_model):
    image_before, coded_before = (coded / "a.png").read_bytes(), (coded / "a.bbi").read_bytes()
    if link == "symlink":
        (coded / "img-link.png").symlink_to(coded / "a.png")
        (coded / "bbi-link.png").symlink_to("a.bbi")  # relative link
    elif link == "hardlink":
        os.link(coded / "a.png", coded / "img-link.png")
        os.link(coded / "a.bbi", coded / "bbi-link.png")
    else:
        (coded / "sub").mkdir()
        os.symlink(coded / "a.png", coded / "img-link.png")
        (coded / "bbi-link.png").symlink_to("a.bbi")
    encode_out = coded / "img-link.png" if link != "dotted" else coded / "sub" / ".." / "a.png"
    assert_one_line_error(run("encode", coded / "a.png", encode_out, "--model", tiny_model), "input")
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "bbi-link.png"), "input")
    assert (coded / "a.png").read_bytes() == image_before
    assert (coded / "a.bbi").read_bytes() == coded_before
    assert no_temp_files(coded)


def test_decode_to_bbi_is_refused_with_the_transcode_pipe(coded):
    result = run("decode", coded / "a.bbi", coded / "b.bbi")
    line = assert_one_line_error(result, "b.bbi")
    assert "| bbimg encode -" in line
    assert not (coded / "b.bbi").exists()
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "b.png", "--format", "bbi"))
    assert not (coded / "b.png").exists()


# ---------------------------------------------------------------- modes


def test_new_outputs_get_the_umask_mode(coded, umask_022, tiny_model):
    assert run("encode", coded / "a.png", coded / "n.bbi", "--model", tiny_model, "--quiet").exit_code == 0
    assert run("decode", coded / "n.bbi", coded / "n.png", "--quiet").exit_code == 0
    assert stat.S_IMODE((coded / "n.bbi").stat().st_mode) == 0o644
    assert stat.S_IMODE((coded / "n.png").stat().st_mode) == 0o644
    os.umask(0o027)
    assert run("decode", coded / "n.bbi", coded / "m.png", "--quiet").exit_code == 0
    assert stat.S_IMODE((coded / "m.png").stat().st_mode) == 0o640


def test_an_overwritten_file_keeps_its_mode(coded, umask_022, tiny_model):
    for name, args in (("old.png", ("decode", coded / "a.bbi")),
                       ("old.bbi", ("encode", coded / "a.png"))):
        target = coded / name
        target.write_bytes(b"old contents")
        target.chmod(0o640)
        extra = ("--model", tiny_model) if args[0] == "encode" else ()
        assert run(*args, target, "--quiet", *extra).exit_code == 0
        assert target.read_bytes() != b"old contents"
        assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symlinked_output_is_written_through(coded):
    (coded / "real.png").write_bytes(b"old")
    (coded / "link.png").symlink_to("real.png")
    assert run("decode", coded / "a.bbi", coded / "link.png", "--quiet").exit_code == 0
    assert (coded / "link.png").is_symlink()
    assert (coded / "real.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_disk_full_gives_one_line_and_no_file(coded, monkeypatch, tiny_model, command):
    def full(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "_write_all", full)
    src, out = (coded / "a.png", coded / "new.bbi") if command == "encode" else (coded / "a.bbi", coded / "new.png")
    extra = ("--model", tiny_model) if command == "encode" else ()
    assert_one_line_error(run(command, src, out, *extra), str(out), "no space left on device")
    assert not out.exists() and no_temp_files(coded)
    existing = coded / ("keep.bbi" if command == "encode" else "keep.png")
    existing.write_bytes(b"precious")
    assert_one_line_error(run(command, src, existing, *extra), "no space left on device")
    assert existing.read_bytes() == b"precious" and no_temp_files(coded)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_real_enospc_on_dev_full(coded):
    assert_one_line_error(run("decode", coded / "a.bbi", "/dev/full"), "/dev/full", "no space left on device")


def test_device_output_is_written_into_not_replaced(coded):
    assert run("decode", coded / "a.bbi", os.devnull, "--quiet").exit_code == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_ctrl_c_while_writing_leaves_no_file(coded, monkeypatch):
    def interrupted(fd, data):
        os.write(fd, bytes(data[:10]))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_write_all", interrupted)
    existing = coded / "keep.png"
    existing.write_bytes(b"precious")
    for out in (coded / "new.png", existing):
        result = run("decode", coded / "a.bbi", out)
        assert result.exit_code == 130 and "Traceback" not in result.output
    assert not (coded / "new.png").exists() and existing.read_bytes() == b"precious"
    assert no_temp_files(coded)


# ---------------------------------------------------------------- one line per user error


def test_output_is_a_directory(coded, tiny_model):
    (coded / "out").mkdir()
    assert_one_line_error(run("encode", coded / "a.png", coded / "out", "--model", tiny_model), "is a directory")
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "out"), "is a directory")
    assert list((coded / "out").iterdir()) == []


def test_output_directory_missing(coded):
    out = coded / "missing" / "b.png"
    assert_one_line_error(run("decode", coded / "a.bbi", out), str(out), "does not exist")


def test_non_image_inputs_name_the_file(coded, tiny_model):
    (coded / "notes.txt").write_text("just some words\n")
    (coded / "empty.png").write_bytes(b"")
    for name in ("notes.txt", "empty.png"):
        line = assert_one_line_error(run("encode", coded / name, coded / "x.bbi", "--model", tiny_model))
        assert line == f"bbimg: error: cannot encode {coded / name}: not an image file Pillow can read"
    piped = CliRunner().invoke(main, ["encode", "-", str(coded / "x.bbi"), "--model", tiny_model], input=b"text")
    assert assert_one_line_error(piped) == "bbimg: error: cannot encode stdin: not an image file Pillow can read"
    assert_one_line_error(run("decode", coded / "notes.txt", coded / "x.png"), "notes.txt")
    assert not (coded / "x.bbi").exists() and not (coded / "x.png").exists()


def test_corrupt_bbi(coded):
    data = (coded / "a.bbi").read_bytes()
    (coded / "cut.bbi").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("decode", coded / "cut.bbi", coded / "x.png"), "cut.bbi")
    assert_one_line_error(run("info", coded / "cut.bbi"), "cut.bbi")
    assert not (coded / "x.png").exists()


def test_unreadable_input(coded, monkeypatch):
    target = coded / "a.bbi"
    target.chmod(0)
    if os.geteuid() == 0:  # root reads anything: show it what everyone else gets
        real_read_bytes = Path.read_bytes

        def read_bytes(self):
            if self == target:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert_one_line_error(run("decode", target, coded / "x.png"), str(target), "permission denied")
    assert_one_line_error(run("info", target), "permission denied")


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_out_of_memory_is_one_line(coded, monkeypatch, tiny_model, command):
    import bbimg.codec

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(bbimg.codec, command, no_memory)
    src = coded / ("a.png" if command == "encode" else "a.bbi")
    extra = ("--model", tiny_model) if command == "encode" else ()
    if command == "decode":
        extra = ("--format", "PNG")
    assert_one_line_error(run(command, src, coded / "x.out", *extra), "out of memory")
    assert not (coded / "x.out").exists()


def test_out_of_memory_outside_the_codec_is_one_line(coded, monkeypatch):
    def no_memory(path):
        raise MemoryError

    monkeypatch.setattr(cli, "_read_input", no_memory)
    assert_one_line_error(run("info", coded / "a.bbi"), "out of memory")


def test_an_unexpected_failure_is_one_line_unless_debugging(coded, monkeypatch):
    import bbimg.codec

    def broken(*args, **kwargs):
        raise AttributeError("module 'x' has no attribute 'y'")

    monkeypatch.setattr(bbimg.codec, "info", broken)
    assert_one_line_error(run("info", coded / "a.bbi"), "internal error", "BBIMG_DEBUG=1")
    monkeypatch.setenv("BBIMG_DEBUG", "1")
    with pytest.raises(AttributeError):
        run("info", coded / "a.bbi")


def test_missing_torch_names_the_extra(coded, monkeypatch):
    import bbimg.codec

    def needs_torch(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(bbimg.codec, "decode", needs_torch)
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "x.png"), "bbimg[torch]")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    assert_one_line_error(run("decode", coded / "a.bbi", coded / "x.png", "--device", "cuda"), "bbimg[torch]")
