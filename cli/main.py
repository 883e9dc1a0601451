"""``bbimg``: thin Click front end; every subcommand parses, calls one library function, reports.

Exit codes: 0 success, 1 bad input, corrupt file or refused operation (one line on stderr, no
traceback), 2 usage error, 130 interrupted. Files are handled as Unix tools handle them: the input
is never overwritten, a new output gets mode 0666 & ~umask and an overwritten one keeps its mode,
and every output is written to a temporary file beside the target and renamed into place, so a
failure (Ctrl-C included) never leaves a partial file and never touches an existing one.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

from bbimg.defaults import DEFAULT_EFFORT, DEFAULT_QUALITY

_DECODE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                   ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM",
                   ".gif": "GIF", ".bbi": "BBI"}
#: Images above this many pixels get a progress bar (on a terminal): ~4 MP takes tens of seconds.
PROGRESS_MIN_PIXELS = 4_000_000
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class CliError(click.ClickException):
    """A one-line failure: exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"bbimg: error: {self.format_message()}", err=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stdout_is_terminal() -> bool:
    return _is_terminal(sys.stdout)


def _stderr_is_terminal() -> bool:
    return _is_terminal(sys.stderr)


def _name(path: str) -> str:
    """How messages name a file: '-' is stdin or stdout."""
    return "stdin" if path == "-" else path


def _clean(message: object, path: str) -> str:
    """A library message fit for one line: no object reprs (Pillow names a BytesIO by its repr)."""
    return _OBJECT_REPR.sub(_name(path), " ".join(str(message).split()))


# ---------------------------------------------------------------- input and output files


def _check_input(path: str) -> None:
    if path == "-" and _is_terminal(sys.stdin):
        raise CliError("refusing to read binary data from a terminal; redirect stdin (bbimg CMD - OUT < file)")


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {_os_reason(exc)}") from exc


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return reason[0].lower() + reason[1:] if reason else type(exc).__name__


def _same_file(input: str, output: str) -> bool:
    """True when writing ``output`` would replace ``input``: the same path, a symlink to it, or a hard link."""
    if "-" in (input, output):
        return False
    try:
        st_in = os.stat(input)
    except OSError:
        return False  # reading it will fail with its own message
    try:
        st_out = os.stat(output)
    except OSError:
        return os.path.realpath(input) == os.path.realpath(output)
    return (st_in.st_dev, st_in.st_ino) == (st_out.st_dev, st_out.st_ino)


def _check_output(path: str, force: bool, what: str, input: str | None = None) -> None:
    """Refuse, before any work, an output that cannot or must not be written."""
    if path == "-":
        if _stdout_is_terminal() and not force:
            raise CliError(f"refusing to write {what} to a terminal; redirect stdout or use -f/--force")
        return
    if input is not None and _same_file(input, path):
        raise CliError(f"refusing to write {path}: it is the input file {input} (give another output name)")
    if os.path.isdir(path):
        raise CliError(f"cannot write {path}: is a directory")
    if _is_special_file(path):
        return  # a device or FIFO (/dev/null, a named pipe): written into directly
    target = os.path.realpath(path)  # a symlinked output is written through, as cp and gzip do
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise CliError(f"cannot write {path}: directory {os.path.dirname(path) or '.'} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {path}: permission denied (directory {os.path.dirname(path) or '.'})")


def _is_special_file(path: str) -> bool:
    """An existing output that is not a regular file (/dev/null, a FIFO): written into, not replaced."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_output(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` ('-' = stdout) as a whole file or not at all."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = os.path.realpath(path)
    try:
        _replace_file(target, data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {_os_reason(exc)}") from exc


def _replace_file(target: str, data: bytes) -> None:
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        with open(target, "wb") as f:  # a device or FIFO: there is no file to replace
            _write_all(f.fileno(), data)
        return
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part", dir=directory)
    try:
        if old is None:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
        else:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, old.st_uid, old.st_gid)
                except PermissionError:
                    pass  # not ours to give away: the new file is ours, as with cp
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- library calls


@contextmanager
def _reporting(action: str, path: str, hint: str = "") -> Iterator[None]:
    """Turn a library failure into ``bbimg: error: cannot ACTION PATH: cause``."""
    from PIL import Image, UnidentifiedImageError

    from bbimg.format import BbiError

    from bbimg.codec import ImageTooLargeError

    name = _name(path)
    try:
        yield
    except MemoryError as exc:
        raise CliError(f"cannot {action} {name}: out of memory") from exc
    except UnidentifiedImageError as exc:
        raise CliError(f"cannot {action} {name}: not an image file Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise CliError(f"cannot {action} {name}: {_clean(exc, path)}") from exc
    except ImageTooLargeError as exc:
        raise CliError(f"cannot {action} {name}: {_clean(exc, path)}{hint}") from exc
    except BbiError as exc:
        raise CliError(f"cannot {action} {name}: {_clean(exc, path)}") from exc
    except OSError as exc:
        if exc.errno is not None and exc.strerror:
            raise CliError(f"cannot {action} {name}: {_os_reason(exc)}") from exc
        raise CliError(f"cannot {action} {name}: {_clean(exc, path)}") from exc
    except (ValueError, SyntaxError, EOFError) as exc:
        raise CliError(f"cannot {action} {name}: {_clean(exc, path)}") from exc


def _is_bbimg_warning(category: type) -> bool:
    from PIL import Image
    try:
        from bbimg.image import BbimgWarning
    except ImportError:
        BbimgWarning = None
    if BbimgWarning is not None and issubclass(category, BbimgWarning):
        return True
    return (issubclass(category, UserWarning) and category.__name__ == "BbimgWarning") or \
        issubclass(category, Image.DecompressionBombWarning)


@contextmanager
def _warnings_to_stderr(path: str, quiet: bool) -> Iterator[None]:
    """Print the library's warnings (16-bit input coded at 8 bits, ...) as ``bbimg: warning: FILE: message``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            others = []
            for w in caught:
                if _is_bbimg_warning(w.category):
                    if not quiet:
                        click.echo(f"bbimg: warning: {_name(path)}: {_clean(w.message, path)}", err=True)
                else:
                    others.append(w)
    for w in others:  # anything else goes to Python's usual warning display
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextmanager
def _stage_bar(pixels: int, quiet: bool, stages: tuple[str, ...] | None, desc: str, slow: bool = False) \
        -> Iterator[Callable[[str], None] | None]:
    """A tqdm bar over the codec's stages on a terminal for large images (or ``slow`` work, e.g.
    high efforts); yields the codec's callback."""
    if quiet or (pixels <= PROGRESS_MIN_PIXELS and not slow) or not _stderr_is_terminal():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=len(stages) if stages else None, desc=desc, unit="stage", file=sys.stderr, leave=False)

    def progress(stage: str) -> None:
        done = stages.index(stage) if stages and stage in stages else bar.n + (0 if stages else 1)
        bar.set_postfix_str(stage, refresh=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def _require_torch(option: str):
    """``import torch``, or one line saying that ``option`` needs the torch extra."""
    try:
        import torch
    except ImportError as exc:
        raise CliError(f"{option} needs PyTorch, an optional extra: {_TORCH_EXTRA}") from exc
    return torch


def _require_cuda() -> None:
    torch = _require_torch("--device cuda")
    if not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")


_TORCH_EXTRA = "pip install 'bbimg[torch]'"


# ---------------------------------------------------------------- commands


#: Set by a command whose work is written, closed and renamed: :func:`console` then leaves
#: without the interpreter's teardown (freeing ONNX Runtime's sessions and unloading the modules:
#: ~90 ms, a sixth of a Kodak decode). Only there: a command that may still hold worker processes
#: (``train``) exits normally, and so does ``main`` called from Python (tests, ``CliRunner``).
_done = False


def _leave_now() -> None:
    global _done
    _done = True


class _Group(click.Group):
    """Failures that can happen anywhere become one line: out of memory, a closed pipe, Ctrl-C, a bug.
    Commands in :data:`_LAZY_COMMANDS` are imported when named (or listed by ``--help``), not by
    every ``bbimg decode``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str):
        if name in _LAZY_COMMANDS and name not in self.commands:
            module, attr = _LAZY_COMMANDS[name]
            import importlib

            self.add_command(getattr(importlib.import_module(module, __package__), attr), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MemoryError as exc:
            raise CliError("out of memory") from exc
        except BrokenPipeError:
            # the reader went away (bbimg decode x.bbi - | head -c 1): stop quietly, as cat and gzip do
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                pass
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\nbbimg: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ImportError as exc:
            if (exc.name or "").split(".")[0] == "torch":
                raise CliError(f"this needs PyTorch, an optional extra: {_TORCH_EXTRA}") from exc
            raise CliError(_clean(exc, "-")) from exc
        except Exception as exc:  # a bug: still one line for the user, the traceback on request
            if os.environ.get("BBIMG_DEBUG"):
                raise
            raise CliError(f"internal error: {type(exc).__name__}: {_clean(exc, '-')} "
                           "(please report it; BBIMG_DEBUG=1 shows the traceback)") from exc


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    """Package version, default model and the native core's build; imports no torch."""
    if not value or ctx.resilient_parsing:
        return
    import bbimg
    from bbimg.model_files import DEFAULT_MODEL

    click.echo(f"bbimg {bbimg.__version__}")
    click.echo(f"default model: {DEFAULT_MODEL}")
    try:
        from bbimg import rec
        core = rec.core_info()
        build = "CUDA build" if core["cuda_compiled"] else "CPU-only build"
        device = "CUDA device usable" if rec.cuda_available() else "no CUDA device"
        click.echo(f"core: {core['version']} ({build}, {core['kernels']} kernels; {device})")
    except Exception as exc:  # the version must print even from a broken install
        click.echo(f"core: not loadable ({type(exc).__name__}: {exc})")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, the default model and the native core's build, and exit.")
def main() -> None:
    """bbimg: learned lossy image compression with relative entropy coding.

    \b
      bbimg encode photo.png photo.bbi -q 60     # higher -q: more bytes, better quality
      bbimg encode photo.png photo.bbi --bpp 0.5 # or a target size in bits per pixel
      bbimg decode photo.bbi photo.png           # format from the extension
      bbimg info photo.bbi                       # header facts, no decoding
      cat a.png | bbimg encode - - | bbimg decode - b.png

    '-' as a file name means stdin or stdout. bbimg never overwrites its input, refuses to write
    binary data to a terminal (-f/--force to insist), keeps the mode of a file it replaces and
    never leaves a partial file behind. Errors are one line on stderr and exit status 1.
    """


@main.command()
@click.argument("input", type=str)
@click.argument("output", type=str)
@click.option("-q", "--quality", type=click.IntRange(1, 100), default=DEFAULT_QUALITY, show_default=True,
              help="Higher means more bits and better quality.")
@click.option("--bpp", type=click.FloatRange(min=0.001, max=64.0), default=None,
              help="Target size in bits per pixel (instead of -q); met within about 2%.")
@click.option("--model", default=None, help="Model name (see `bbimg models`).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="Seed of the shared randomness; the same input and seed give the same bytes.")
@click.option("-e", "--effort", type=click.IntRange(1, 9), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder effort. 1-4: faster, with fewer candidates per block (1: ~1.9x faster, ~9% more "
                   "bits for the same quality on Kodak; 4: ~1.3x, ~2%). 6: candidates chosen by the decoded image "
                   "(same size, better quality; ~3x the time). 7-9: also refine the latents for this image "
                   "(9: ~10% fewer bits on Kodak, ~15x the time). Above 5 needs bbimg[torch]; every effort "
                   "decodes the same way, at the same speed.")
@click.option("--exact", is_flag=True,
              help="Keep the colour under fully transparent pixels (by default it is smoothed, as cwebp does).")
@click.option("-f", "--force", is_flag=True, help="Write to stdout even when it is a terminal.")
@click.option("--quiet", is_flag=True, help="No summary line, warnings or progress bar on stderr.")
def encode(input, output, quality, bpp, model, device, seed, effort, exact, force, quiet) -> None:
    """Compress INPUT to the .bbi file OUTPUT.

    INPUT is any image Pillow reads ('-' = stdin); OUTPUT '-' is stdout. OUTPUT must not be INPUT
    (nor a link to it). Alpha is kept losslessly. 16-bit input is coded at 8 bits and animated
    input by its first frame, each with a warning on stderr. Images above 4 MP show a progress bar
    on a terminal.

    \b
      bbimg encode photo.png photo.bbi -q 60
      bbimg encode photo.png photo.bbi -q 60 -e 9     # slower, better
      bbimg encode big.png big.bbi -e 1               # about 4x faster, a little larger
      bbimg encode scan.tif - --bpp 0.3 > scan.bbi
    """
    from PIL import Image

    from bbimg.codec import ENCODE_STAGES
    from bbimg.codec import encode as encode_image
    from bbimg.model_files import DEFAULT_MODEL

    if bpp is not None and click.get_current_context().get_parameter_source("quality").name != "DEFAULT":
        raise click.UsageError("give either -q/--quality or --bpp, not both")
    _check_input(input)
    _check_output(output, force, "a .bbi file", input)
    if device == "cuda":
        _require_cuda()
    if effort > DEFAULT_EFFORT:
        _require_torch(f"--effort above {DEFAULT_EFFORT}")
    raw = _read_input(input)
    stats: list = []
    with _warnings_to_stderr(input, quiet), _reporting("encode", input):
        with Image.open(io.BytesIO(raw)) as image:
            with _stage_bar(image.width * image.height, quiet, ENCODE_STAGES, "encode",
                            slow=effort > DEFAULT_EFFORT) as progress:
                data = encode_image(image, quality, bpp=bpp, model=model or DEFAULT_MODEL, device=device,
                                    seed=seed, effort=effort, exact=exact, progress=progress, stats=stats)
    _write_output(output, data)
    _leave_now()
    if not quiet:
        st = stats[0]
        from bbimg.format import read_header
        h = read_header(data)
        click.echo(f"{_name(output) if output != '-' else 'stdout'}: {len(data)} bytes, "
                   f"{len(data) * 8 / (h.width * h.height):.4f} bpp ({h.width}x{h.height}, q={h.quality_q}, "
                   f"ideal {st.kl_bits / (h.width * h.height):.4f} bpp)", err=True)


@main.command()
@click.argument("input", type=str)
@click.argument("output", type=str)
@click.option("--format", "fmt", default=None,
              help="Output format (PNG, JPEG, ...); default from OUTPUT's extension, PNG for '-' or a device.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--max-pixels", type=click.IntRange(min=0), default=None, metavar="N",
              help="Refuse files of more than N pixels (width x height); 0 = no limit. Default: the "
                   "library's limit (bbimg.codec.MAX_DECODE_PIXELS), a guard against decompression bombs.")
@click.option("--fast", is_flag=True,
              help="Decode with the model's light synthesis: the same file decoded in less time at a "
                   "slightly lower quality (docs/model.md gives both); needs ONNX Runtime (the default on the CPU).")
@click.option("-f", "--force", is_flag=True, help="Write to stdout even when it is a terminal.")
@click.option("--quiet", is_flag=True, help="No summary line, warnings or progress bar on stderr.")
def decode(input, output, fmt, device, max_pixels, fast, force, quiet) -> None:
    """Decompress the .bbi file INPUT to the image OUTPUT.

    INPUT '-' is stdin; OUTPUT '-' is stdout (PNG unless --format says otherwise). OUTPUT must not
    be INPUT (nor a link to it). A .bbi OUTPUT is refused: it would re-encode the decoded pixels, a
    second lossy generation. Images above 4 MP show a progress bar on a terminal. To transcode on
    purpose, say so with a pipe:

    \b
      bbimg decode photo.bbi photo.png
      bbimg decode photo.bbi - --format JPEG > photo.jpg
      bbimg decode old.bbi - | bbimg encode - new.bbi -q 40     # transcode
    """
    from bbimg import codec

    _check_input(input)
    _check_output(output, force, "image data", input)
    if fmt is None:
        if output == "-" or _is_special_file(output):
            fmt = "PNG"
        else:
            ext = Path(output).suffix.lower()
            if ext not in _DECODE_FORMATS:
                raise click.UsageError(f"cannot tell the output format from {output!r}; use --format")
            fmt = _DECODE_FORMATS[ext]
    fmt = fmt.upper()
    if fmt == "BBI":
        raise CliError(f"refusing to decode {_name(input)} to .bbi (a lossy re-encode); to transcode, pipe: "
                       f"bbimg decode {input} - | bbimg encode - {output} -q N")
    data = _read_input(input)
    pixels = 0
    try:
        from bbimg.format import read_header
        header = read_header(data)
        pixels = header.width * header.height
    except Exception:  # a bad header is reported by decode itself, with its cause
        pass
    hint = "; --max-pixels N raises the limit (0 = no limit)"
    with _warnings_to_stderr(input, quiet), _reporting("decode", input, hint):
        with _stage_bar(pixels, quiet, codec.DECODE_STAGES, "decode") as progress:
            # --max-pixels 0: up to the format's own limit, i.e. no extra limit
            limit = None if max_pixels is None else (max_pixels or codec.MAX_PIXELS)
            image = codec.decode(data, device=device, max_pixels=limit, progress=progress, fast=fast)
    try:
        encoded = _encode_image(image, fmt)
    except MemoryError as exc:
        raise CliError(f"cannot write {_name(output)}: out of memory") from exc
    except (KeyError, ValueError, OSError) as exc:
        raise CliError(f"cannot write {fmt} to {output if output != '-' else 'stdout'}: "
                       f"{_clean(exc, output)}") from exc
    _write_output(output, encoded)
    _leave_now()
    if not quiet and output != "-":
        click.echo(f"{output}: {image.width}x{image.height} {image.mode}", err=True)


def _encode_image(image, fmt: str):
    """The bytes of the decoded ``image`` in format ``fmt``, with its ICC profile where the format
    holds one. PNG goes through ``bbimg.png`` (its rows deflated on every core: a decoded photo is
    viewed, not archived); every other format through Pillow."""
    icc = image.info.get("icc_profile") if fmt in ("PNG", "JPEG", "WEBP", "TIFF") else None
    if fmt == "PNG":
        import numpy as np

        from bbimg import png
        if image.mode in png.MODES:
            return png.encode(np.asarray(image), image.mode, icc_profile=icc)
    options = {"compress_level": 1} if fmt == "PNG" else {}  # a mode bbimg.png does not write
    if icc:
        options["icc_profile"] = icc
    encoded = io.BytesIO()
    image.save(encoded, format=fmt, **options)
    return encoded.getbuffer()


@main.command()
@click.argument("file", type=str)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(file, as_json) -> None:
    """Describe the .bbi FILE ('-' = stdin) from its headers, without decoding pixels."""
    from bbimg.codec import info as file_info

    _check_input(file)
    data = _read_input(file)
    with _reporting("read", file):
        facts = file_info(data)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"{file}: bbimg {facts['version']}, {facts['width']}x{facts['height']}, {facts['bytes']} bytes, "
               f"{facts['bpp']:.4f} bpp")
    model = facts["model"] if facts["model_installed"] else f"{facts['model']} (not installed)"
    click.echo(f"  model {model} (weights {facts['weights_sha256'][:16]}), quality {facts['quality']} "
               f"(t={facts['quality_t']:.4f}), seed {facts['seed']}")
    source = f"{facts['source_mode']} {facts['source_bit_depth']}-bit"
    click.echo(f"  decodes to {facts['mode']} {facts['bit_depth']}-bit, {facts['width']}x{facts['height']}, "
               f"orientation {facts['orientation']}{', ICC profile' if facts['icc_profile'] else ''} "
               f"(source {source})")
    pick = "nearest" if facts["temperature"] == 0 else f"temperature {facts['temperature']:g}"
    click.echo(f"  REC: kappa {facts['kappa']}, selection {pick}, "
               f"{facts.get('blocks', '?')} blocks, predicted {facts.get('predicted_bits', '?')} bits, "
               f"actual {facts['bytes'] * 8} bits")
    click.echo(f"  side information {facts['side_bytes']} bytes (header, framing, CRCs, block plans), "
               f"candidate indices {facts['index_bytes']} bytes")
    for s in facts["sections"]:
        click.echo(f"  section {s['tag']}: {s['bytes']} bytes{'' if s['required'] else ' (optional)'}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json) -> None:
    """List the installed models."""
    from bbimg.model_files import DEFAULT_MODEL, find_weights, installed_models, training_facts, weights_sha256
    from bbimg.runtime import fast_synthesis_path

    rows = []
    for name in installed_models():
        path = find_weights(name)
        facts = training_facts(path)
        rows.append(dict(name=name, default=name == DEFAULT_MODEL, steps=facts.get("step"),
                         train_hours=round(facts.get("train_hours", float("nan")), 2),
                         sha256=weights_sha256(path).hex(), bytes=path.stat().st_size,
                         fast_synthesis=fast_synthesis_path(name, path).is_file()))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']}{' (default)' if r['default'] else ''}: {r['steps']} training steps, "
                   f"{r['train_hours']} h, {r['bytes'] / 1e6:.1f} MB, sha256 {r['sha256'][:16]}"
                   + (", fast synthesis (decode --fast)" if r["fast_synthesis"] else ""))


#: Commands in modules of their own, imported when used: name -> (module, attribute).
_LAZY_COMMANDS = {"train": (".train_cmd", "train")}


@main.command("eval")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-q", "--quality", "qualities", type=click.IntRange(1, 100), multiple=True,
              help="Quality to evaluate (repeatable; default %d)." % DEFAULT_QUALITY)
@click.option("--csv", "csv_path", type=str, default=None,
              help="Write codec,param,image,bpp,psnr,ms_ssim rows to this CSV file ('-' = stdout).")
@click.option("--model", default=None, help="Model name (see `bbimg models`).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar or notes on stderr.")
def eval_(folder, qualities, csv_path, model, device, quiet) -> None:
    """Encode and decode every image in FOLDER; print bpp, PSNR and MS-SSIM per image and on average.

    bpp counts the real .bbi bytes. MS-SSIM needs pytorch-msssim (pip install bbimg[bench]) and
    images of at least 161 pixels a side; otherwise it shows as nan. A progress bar over the
    images shows on stderr when it is a terminal.

    \b
      bbimg eval shared/data/kodak -q 40 -q 75 --csv results.csv
    """
    import csv
    import math

    from bbimg.evaluate import CSV_COLUMNS, evaluate, image_files, mean_rows, ms_ssim_note
    from bbimg.model_files import DEFAULT_MODEL

    paths = image_files(folder)
    if not paths:
        raise CliError(f"no images in {folder}")
    if csv_path is not None:
        _check_output(csv_path, True, "CSV")
    if device == "cuda":
        _require_cuda()
    qualities = list(dict.fromkeys(qualities)) or [DEFAULT_QUALITY]
    if not quiet and (note := ms_ssim_note()) is not None:
        click.echo(f"bbimg: note: {note}", err=True)
    bar = None
    if not quiet and _stderr_is_terminal():
        from tqdm import tqdm
        bar = tqdm(total=len(paths) * len(qualities), unit="image", file=sys.stderr, leave=False)

    def progress(done: int, total: int, label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(done - bar.n)

    try:
        with _warnings_to_stderr(str(folder), quiet), _reporting("evaluate", str(folder)):
            rows = evaluate(paths, qualities, model=model or DEFAULT_MODEL, device=device,
                            progress=progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()

    def num(v: float, digits: int) -> str:
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"

    to_err = csv_path == "-"  # the CSV owns stdout then
    width = max(len("(mean)"), *(len(r["image"]) for r in rows))
    click.echo(f"{'image':{width}s} {'q':>3s} {'bytes':>8s} {'bpp':>7s} {'psnr':>6s} {'ms-ssim':>7s}", err=to_err)
    for r in rows:
        click.echo(f"{r['image']:{width}s} {r['param']:3d} {r['bytes']:8d} {r['bpp']:7.4f} {num(r['psnr'], 2):>6s} "
                   f"{num(r['ms_ssim'], 4):>7s}", err=to_err)
    for r in mean_rows(rows):
        click.echo(f"{r['image']:{width}s} {r['param']:3d} {'':8s} {r['bpp']:7.4f} {num(r['psnr'], 2):>6s} "
                   f"{num(r['ms_ssim'], 4):>7s}", err=to_err)
    if csv_path is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _write_output(csv_path, text.getvalue().encode())


def console(**kwargs) -> None:
    """The ``bbimg`` console script and ``python -m bbimg.cli``: :func:`main`, then, after encode
    and decode, an exit without the interpreter's teardown once stdout and stderr are flushed."""
    try:
        main(**kwargs)  # standalone: always ends in SystemExit
        code = 0
    except SystemExit as exc:
        code = exc.code
    if not _done or not isinstance(code, (int, type(None))):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # the reader went away before the last bytes
    os._exit(code or 0)


if __name__ == "__main__":
    console(prog_name="bbimg")

