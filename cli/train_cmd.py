"""``bbimg train``: the one training loop (``bbimg.training.trainer``) behind Click options.

Option defaults come from ``TrainOptions``' fields, so the command line and the library never disagree.
torch is imported only when the command runs.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from bbimg.training.options import TrainOptions  # torch-free: `bbimg --help` does not import torch

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.default is not dataclasses.MISSING}


def _option(name: str, *decls: str, **kw):
    """A Click option for the TrainOptions field ``name``, with that field's default."""
    default = _DEFAULTS[name]
    return click.option(*decls, name, default=default, show_default=default is not None, **kw)


@click.command()
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of training images (repeatable). Part is held out for validation; "
                                  "a packed folder (tools/gpu_burst/pack_data.py) brings its own split.")
@_option("state_dir", "--state-dir", type=click.Path(file_okay=False, path_type=Path),
         help="Where the full training state (with optimizer) is kept and resumed from.")
@_option("minutes", "--minutes", type=click.FloatRange(min=0),
         help="Wall-clock budget of this run, loading included (the deadline).")
@_option("max_steps", "--steps", type=click.IntRange(min=0), help="Stop at this total step count.")
@_option("batch", "--batch", type=click.IntRange(min=1))
@_option("crop", "--crop", type=click.IntRange(min=64), help="Crop size; a multiple of 64.")
@_option("lr", "--lr", type=click.FloatRange(min=0), help="Learning rate (the peak, with --lr-min).")
@_option("lr_min", "--lr-min", type=click.FloatRange(min=0),
         help="Decay the learning rate to this (cosine) over the end of the budget.")
@_option("decay_from", "--decay-from", type=click.FloatRange(0, 1),
         help="With --lr-min: fraction of the budget after which the decay starts.")
@_option("warmup_steps", "--warmup-steps", type=click.IntRange(min=0),
         help="Linear learning-rate warm-up at the start of this run.")
@_option("threads", "--threads", type=click.IntRange(min=1), help="CPU threads (default: PyTorch's choice).")
@_option("bf16", "--bf16/--no-bf16", help="bf16 autocast (fast only on CPUs with native bf16 and on GPUs).")
@_option("dim_kl_cap", "--dim-kl-cap", type=click.FloatRange(min=0),
         help="Charge twice the KL bits any single latent dimension holds above this (e.g. 8): "
              "REC cannot deliver more than ~kappa bits per dimension.")
@_option("equalize_above", "--equalize-above", type=click.FloatRange(min=0, min_open=True),
         help="A lambda: divide the loss of samples above it by lambda / this (keeps a widened range's "
              "high-lambda samples from dominating the gradient).")
@_option("device", "--device", help="cpu, cuda or cuda:N.")
@_option("checkpoint_minutes", "--checkpoint-minutes", type=click.FloatRange(min=0))
@_option("downscale", "--downscale", type=click.IntRange(min=1),
         help="Downscale factor applied to training images (removes JPEG artifacts).")
@_option("init", "--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
         help="Weights to start from when the state dir is empty (e.g. the shipped model).")
@_option("seed", "--seed", type=int)
@_option("parts_dir", "--parts-dir", type=click.Path(file_okay=False, path_type=Path),
         help="Also write each checkpoint as files under 16 MiB here (to carry the state off a lent "
              "machine; tools/gpu_burst/merge.py joins them).")
@click.option("--widths", default=None, help="Hidden widths at 1/2,1/4,1/8 resolution for a new model, e.g. 64,96,128.")
@click.option("--latent-channels", type=int, default=None, help="Channels of y for a new model.")
@click.option("--hyper-width", type=int, default=None, help="Hidden width of the hyper transforms (new model).")
@click.option("--hyper-channels", type=int, default=None, help="Channels of z for a new model.")
@click.option("--quiet", is_flag=True, help="No progress bar and no log lines on stderr.")
def train(widths, latent_channels, hyper_width, hyper_channels, quiet, **options) -> None:
    """Train (or resume training) the VAE on folders of images.

    Resumes from STATE_DIR/state.pt when it exists; writes a checkpoint every few minutes and at the
    end, and appends held-out validation figures to STATE_DIR/validation.csv. Under torchrun it trains
    with DistributedDataParallel. On a terminal a progress bar shows the step, the loss and the time
    left to the deadline.
    """
    from bbimg.transforms import require_torch

    from .main import CliError, _require_cuda

    if options["crop"] % 64:
        raise click.BadParameter("must be a multiple of 64", param_hint="--crop")
    if options["minutes"] is None and options["max_steps"] is None:
        raise click.UsageError("give --minutes or --steps")
    model = {}
    if widths:
        try:
            model["widths"] = tuple(int(w) for w in widths.split(","))
        except ValueError:
            raise click.BadParameter("give three integers separated by commas", param_hint="--widths") from None
    for key, value in (("latent_channels", latent_channels), ("hyper_width", hyper_width),
                       ("hyper_channels", hyper_channels)):
        if value:
            model[key] = value
    require_torch("bbimg train")
    if options["device"].startswith("cuda"):
        _require_cuda()
    from bbimg.training.trainer import train as run_training

    opts = TrainOptions(**{**options, "data": list(options["data"])}, model=model,
                        progress=not quiet and sys.stderr.isatty())
    try:
        result = run_training(opts, log=(lambda s: None) if quiet else (lambda s: click.echo(s, err=True)))
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot train: {exc}") from exc
    click.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
