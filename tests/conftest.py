import numpy as np
import pytest
from PIL import Image

TINY = dict(widths=(8, 8, 8), latent_channels=8, hyper_width=8, hyper_channels=4)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """The suite's caches (weights digests) go to a temporary folder, not the user's ~/.cache;
    subprocesses inherit it."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture
def tiny_config():
    from bbimg.models import VAEConfig
    return VAEConfig(**TINY)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A natural-ish test image: blurred noise plus a gradient, uint8 RGB."""
    base = rng.random((h // 8 + 2, w // 8 + 2, 3))
    im = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float64)
    arr = arr * 0.8 + np.linspace(0, 50, w)[None, :, None]
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(smooth_image(rng, 96 + 16 * i, 128)).save(folder / f"img{i}.png")
    return folder


TINY_MODEL = "tiny-test"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny model with fixed random weights, installed under $BBIMG_MODEL_PATH as 'tiny-test'."""
    import dataclasses
    import os

    torch = pytest.importorskip("torch")

    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 0},
                   folder / f"{TINY_MODEL}.pt")
    old = os.environ.get("BBIMG_MODEL_PATH")
    os.environ["BBIMG_MODEL_PATH"] = str(folder)
    yield TINY_MODEL
    if old is None:
        os.environ.pop("BBIMG_MODEL_PATH", None)
    else:
        os.environ["BBIMG_MODEL_PATH"] = old


def install_onnx_tiny(folder, name: str, seed: int = 1):
    """Write a tiny model with fixed random weights and its ONNX export to ``folder`` (put it on
    $BBIMG_MODEL_PATH to use it); returns the model as torch loads it."""
    import dataclasses

    torch = pytest.importorskip("torch")

    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.models.onnx_export import export
    from bbimg.models.registry import load_model
    from bbimg.training.trainer import export_weights

    torch.manual_seed(seed)
    model = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 0},
                   folder / f"{name}.pt")
    export(name, folder)
    return load_model(name, path=folder / f"{name}.pt")[1]


@pytest.fixture
def photo():
    """A 96x80 RGB test image."""
    return Image.fromarray(smooth_image(np.random.default_rng(3), 80, 96))


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: on a busy machine more torch intra-op threads only add synchronisation waits
    (nothing to set where torch is not installed)."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_coded(tiny_model):
    """A small image (72x100) coded for real with the tiny model at quality 60: (bytes, pixels)."""
    from bbimg import codec

    image = smooth_image(np.random.default_rng(5), 72, 100)
    return codec.encode(image, 60, model=tiny_model), image


@pytest.fixture
def cli_rejects(tmp_path):
    """``cli_rejects(data, what)``: ``bbimg decode`` of ``data`` fails with exit status 1, one
    ``bbimg: error:`` line on stderr, and leaves no output or temporary file behind."""
    from click.testing import CliRunner

    from bbimg.cli.main import main

    work = tmp_path / "cli_rejects"
    work.mkdir()
    src, out = work / "in.bbi", work / "out.png"

    def check(data: bytes, what: str) -> None:
        src.write_bytes(data)
        r = CliRunner().invoke(main, ["decode", str(src), str(out)], catch_exceptions=False)
        assert r.exit_code == 1, (what, r.exit_code, r.output)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("bbimg: error: "), (what, r.stderr)
        assert sorted(p.name for p in work.iterdir()) == ["in.bbi"], what  # no output, no temp file
    return check
