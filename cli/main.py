"""``bbimg``: thin Click front end; every subcommand parses, calls one library function, reports.

Exit codes: 0 success, 1 bad input or corrupt file (one-line message, no traceback), 2 usage error.
Outputs are written to a temporary file beside the target and renamed into place, so a failure never
leaves a partial file and never touches an existing one.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import click

DEFAULT_STATE_DIR = Path.home() / ".cache" / "bbimg" / "train"
_DECODE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                   ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM",
                   ".gif": "GIF", ".bbi": "BBI"}


class CliError(click.ClickException):
    """A one-line failure: exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"bbimg: error: {self.format_message()}", err=True)


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


@contextmanager
def _atomic_output(path: str):
    """Yield a binary file; on success it replaces ``path`` (or goes to stdout for '-')."""
    if path == "-":
        import io
        buf = io.BytesIO()
        yield buf
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise CliError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _progress_printer(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(stage: str) -> None:
        click.echo(f"\r\033[K{stage}...", err=True, nl=False)
    return show


def _library_errors():
    """Map library failures to one-line CLI errors."""
    from PIL import UnidentifiedImageError

    from bbimg.format import BbiError
    return (BbiError, ValueError, UnidentifiedImageError, OSError, SyntaxError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bbimg")
def main() -> None:
    """bbimg: learned lossy image compression with relative entropy coding.

    \b
      bbimg encode photo.png photo.bbi -q 60
      bbimg decode photo.bbi photo.png
      cat a.png | bbimg encode - - | bbimg decode - b.png
    """


@main.command()
@click.argument("input", type=str)
@click.argument("output", type=str)
@click.option("-q", "--quality", type=click.IntRange(1, 100), default=75, show_default=True,
              help="Higher means more bits and better quality.")
@click.option("--bpp", type=click.FloatRange(min=0.001, max=64.0), default=None,
              help="Target size in bits per pixel (instead of -q); met within about 2%.")
@click.option("--model", default=None, help="Model name (see `bbimg models`).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="Seed of the shared randomness; the same input and seed give the same bytes.")
@click.option("--quiet", is_flag=True, help="No summary line on stderr.")
def encode(input, output, quality, bpp, model, device, seed, quiet) -> None:
    """Compress INPUT (any image Pillow reads; '-' = stdin) to OUTPUT .bbi ('-' = stdout)."""
    import io

    from PIL import Image

    from bbimg.codec import encode as encode_image
    from bbimg.model_files import DEFAULT_MODEL

    if bpp is not None and click.get_current_context().get_parameter_source("quality").name != "DEFAULT":
        raise click.UsageError("give either -q/--quality or --bpp, not both")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CliError("--device cuda: no CUDA device is available")
    raw = _read_input(input)
    stats: list = []
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            data = encode_image(image, quality, bpp=bpp, model=model or DEFAULT_MODEL, device=device, seed=seed,
                                progress=_progress_printer(quiet), stats=stats)
    except _library_errors() as exc:
        raise CliError(f"cannot encode {input}: {exc}") from exc
    with _atomic_output(output) as f:
        f.write(data)
    if not quiet:
        st = stats[0]
        from bbimg.format import read_header
        h = read_header(data)
        click.echo(f"\r\033[K" if sys.stderr.isatty() else "", err=True, nl=False)
        click.echo(f"{output}: {len(data)} bytes, {len(data) * 8 / (h.width * h.height):.4f} bpp "
                   f"({h.width}x{h.height}, q={h.quality_q}, ideal {st.kl_bits / (h.width * h.height):.4f} bpp)",
                   err=True)


@main.command()
@click.argument("input", type=str)
@click.argument("output", type=str)
@click.option("--format", "fmt", default=None,
              help="Output format (PNG, JPEG, ...); default from OUTPUT's extension, PNG for '-'.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def decode(input, output, fmt, device, quiet) -> None:
    """Decompress a .bbi INPUT ('-' = stdin) to an image OUTPUT ('-' = PNG on stdout)."""
    from bbimg.codec import decode as decode_image

    if fmt is None:
        if output == "-":
            fmt = "PNG"
        else:
            ext = Path(output).suffix.lower()
            if ext not in _DECODE_FORMATS:
                raise click.UsageError(f"cannot tell the output format from {output!r}; use --format")
            fmt = _DECODE_FORMATS[ext]
    fmt = fmt.upper()
    data = _read_input(input)
    try:
        image = decode_image(data, device=device)
    except _library_errors() as exc:
        raise CliError(f"cannot decode {input}: {exc}") from exc
    # zlib level 3: a third of the default level's time for ~5% larger PNGs (Kodak, 768x512)
    options = {"compress_level": 3} if fmt == "PNG" else {}
    if image.info.get("icc_profile") and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["icc_profile"] = image.info["icc_profile"]
    with _atomic_output(output) as f:
        try:
            image.save(f, format=fmt, **options)
        except (KeyError, ValueError, OSError) as exc:
            raise CliError(f"cannot write {fmt}: {exc}") from exc
    if not quiet and output != "-":
        click.echo(f"{output}: {image.width}x{image.height} {image.mode}", err=True)


@main.command()
@click.argument("file", type=str)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(file, as_json) -> None:
    """Describe a .bbi FILE from its headers, without decoding pixels."""
    from bbimg.codec import info as file_info

    data = _read_input(file)
    try:
        facts = file_info(data)
    except _library_errors() as exc:
        raise CliError(f"{file}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"{file}: bbimg {facts['version']}, {facts['width']}x{facts['height']}, {facts['bytes']} bytes, "
               f"{facts['bpp']:.4f} bpp")
    click.echo(f"  model {facts['model']} (weights {facts['weights_sha256'][:16]}), quality {facts['quality']} "
               f"(t={facts['quality_t']:.4f}), colour {facts['colour']}, seed {facts['seed']}")
    pick = "nearest" if facts["temperature"] == 0 else f"temperature {facts['temperature']:g}"
    click.echo(f"  REC: kappa {facts['kappa']}, selection {pick}, "
               f"{facts.get('blocks', '?')} blocks, predicted {facts.get('predicted_bits', '?')} bits, "
               f"actual {facts['bytes'] * 8} bits")
    for s in facts["sections"]:
        click.echo(f"  section {s['tag']}: {s['bytes']} bytes{'' if s['required'] else ' (optional)'}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json) -> None:
    """List the installed models."""
    from bbimg.models import DEFAULT_MODEL, available_models, load_model

    rows = []
    for name in available_models():
        info_, _ = load_model(name)
        rows.append(dict(name=name, default=name == DEFAULT_MODEL, steps=info_.step,
                         train_hours=round(info_.train_hours, 2), sha256=info_.sha256.hex(),
                         bytes=info_.path.stat().st_size))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']}{' (default)' if r['default'] else ''}: {r['steps']} training steps, "
                   f"{r['train_hours']} h, {r['bytes'] / 1e6:.1f} MB, sha256 {r['sha256'][:16]}")


@main.command()
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of training images (repeatable). Part is held out for validation.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STATE_DIR,
              show_default=True, help="Where the full training state (with optimizer) is kept and resumed from.")
@click.option("--minutes", type=float, default=None, help="Wall-clock budget for this run.")
@click.option("--steps", "max_steps", type=int, default=None, help="Stop at this total step count.")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=128, show_default=True, help="Crop size; a multiple of 64.")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice).")
@click.option("--bf16/--no-bf16", default=False, help="bf16 autocast (fast only on CPUs with native bf16).")
@click.option("--dim-kl-cap", type=click.FloatRange(min=0), default=None,
              help="Charge twice the KL bits any single latent dimension holds above this (e.g. 8): "
                   "REC cannot deliver more than ~kappa bits per dimension.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True)
@click.option("--downscale", type=int, default=2, show_default=True,
              help="Downscale factor applied to training images (removes JPEG artifacts).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Weights to start from when the state dir is empty (e.g. the shipped model).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--widths", default=None, help="Hidden widths at 1/2,1/4,1/8 resolution for a new model, e.g. 64,96,128.")
@click.option("--latent-channels", type=int, default=None, help="Channels of y for a new model.")
@click.option("--hyper-width", type=int, default=None, help="Hidden width of the hyper transforms (new model).")
@click.option("--hyper-channels", type=int, default=None, help="Channels of z for a new model.")
@click.option("--progress/--no-progress", default=True)
def train(data, state_dir, minutes, max_steps, batch, crop, lr, threads, bf16, dim_kl_cap, device,
          checkpoint_minutes, downscale, init, seed, widths, latent_channels, hyper_width, hyper_channels,
          progress) -> None:
    """Train (or resume training) the VAE on folders of images.

    Resumes from STATE_DIR/state.pt when it exists; writes a checkpoint every few minutes and at the
    end, and appends held-out validation figures to STATE_DIR/validation.csv. Under torchrun it trains
    with DistributedDataParallel.
    """
    from bbimg.training.trainer import TrainOptions, train as run_training

    if crop % 64:
        raise click.BadParameter("must be a multiple of 64", param_hint="--crop")
    if minutes is None and max_steps is None:
        raise click.UsageError("give --minutes or --steps")
    model = {}
    if widths:
        model["widths"] = tuple(int(w) for w in widths.split(","))
    for key, value in (("latent_channels", latent_channels), ("hyper_width", hyper_width),
                       ("hyper_channels", hyper_channels)):
        if value:
            model[key] = value
    opts = TrainOptions(data=list(data), state_dir=state_dir, minutes=minutes, max_steps=max_steps,
                        batch=batch, crop=crop, lr=lr, threads=threads, bf16=bf16, device=device,
                        checkpoint_minutes=checkpoint_minutes, downscale=downscale, init=init, seed=seed,
                        model=model, progress=progress and sys.stderr.isatty(), dim_kl_cap=dim_kl_cap)
    result = run_training(opts, log=lambda s: click.echo(s, err=True))
    click.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


@main.command("eval")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-q", "--quality", "qualities", type=click.IntRange(1, 100), multiple=True,
              help="Quality to evaluate (repeatable; default 75).")
@click.option("--csv", "csv_path", type=str, default=None,
              help="Write codec,param,image,bpp,psnr,ms_ssim rows to this CSV file ('-' = stdout).")
@click.option("--model", default=None, help="Model name (see `bbimg models`).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
def eval_(folder, qualities, csv_path, model, device) -> None:
    """Encode and decode every image in FOLDER; print bpp, PSNR and MS-SSIM per image and on average.

    bpp counts the real .bbi bytes. MS-SSIM needs pytorch-msssim (pip install bbimg[bench]) and
    images of at least 161 pixels a side; otherwise it shows as nan.
    """
    import csv
    import io
    import math

    from bbimg.evaluate import CSV_COLUMNS, evaluate, image_files, mean_rows, ms_ssim_note
    from bbimg.model_files import DEFAULT_MODEL

    paths = image_files(folder)
    if not paths:
        raise CliError(f"no images in {folder}")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CliError("--device cuda: no CUDA device is available")
    qualities = list(dict.fromkeys(qualities)) or [75]
    if (note := ms_ssim_note()) is not None:
        click.echo(f"bbimg: note: {note}", err=True)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=len(paths) * len(qualities), unit="image", file=sys.stderr, leave=False)

    def progress(done: int, total: int, label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(done - bar.n)

    try:
        rows = evaluate(paths, qualities, model=model or DEFAULT_MODEL, device=device,
                        progress=progress if bar is not None else None)
    except _library_errors() as exc:
        raise CliError(f"cannot evaluate: {exc}") from exc
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
        with _atomic_output(csv_path) as f:
            f.write(text.getvalue().encode())


if __name__ == "__main__":
    main()
