"""The product on a GPU: a full encode/decode with device="cuda" (transforms on torch CUDA, the REC
search on the CUDA engine) against the CPU path. Skips where no GPU or no CUDA build exists."""
import numpy as np
import pytest

from bbimg import codec, rec

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and rec.cuda_available()),
                                reason="needs a CUDA GPU and a core built with nvcc")

KODAK = "kodim05"


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def kodak_crop():
    from pathlib import Path

    from PIL import Image
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / f"{KODAK}.png"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return np.asarray(Image.open(path).convert("RGB"))[:256, :384].copy()


@pytest.mark.parametrize("quality", [10, 75])
def test_cuda_encode_decodes_like_the_cpu_path(kodak_crop, quality):
    cpu = codec.encode(kodak_crop, quality)
    gpu = codec.encode(kodak_crop, quality, device="cuda")
    # Same plan sizes up to the transforms' float differences (the plan comes from float KL sums).
    assert abs(len(gpu) - len(cpu)) <= 0.01 * len(cpu) + 8
    for data in (cpu, gpu):
        on_cpu = np.asarray(codec.decode(data))
        on_gpu = np.asarray(codec.decode(data, device="cuda"))
        # The bit stream is exact on both; pixels differ only by the synthesis transform's float error.
        assert _psnr(on_cpu, on_gpu) > 45
    assert abs(_psnr(kodak_crop, codec.decode(gpu)) - _psnr(kodak_crop, codec.decode(cpu))) < 0.2
