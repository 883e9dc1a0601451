"""What a bf16 synthesis would cost in quality and save in time, where the CPU computes in bf16.

    python bench/bf16_synthesis.py [--images N] [--qualities 75,100] [--repeat R]

ONNX Runtime's CPU provider has no bf16 convolution on x86, so the measurement runs the exported
graph's torch twin (``bbimg.models.onnx_export.SubPixelSynthesis``: sub-pixel convolutions, the
quality folded in) under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (oneDNN: bf16 inputs and
weights, fp32 sums; the GDN in bf16), against the same module in fp32 and against the shipped
ONNX Runtime fp32 synthesis of the decoder. Each Kodak image is encoded once (``bbimg.encode``,
default model and effort, each quality of ``--qualities``); the decoder's latent y is taken from its decode, and each
synthesis maps it to 8-bit pixels the way the decoder does (clip, x255, round half to even).
Times: the fastest of ``R`` runs of the synthesis alone, in this process, 2 threads, after a
warm-up run. Writes bench/results/bf16_synthesis.csv (image, quality, psnr_onnx, psnr_fp32,
psnr_bf16, onnx_s, fp32_s, bf16_s, isa) and prints the means per quality. Needs torch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, isa, kodak_images, psnr, write_csv  # noqa: E402

COLUMNS = ("image", "quality", "psnr_onnx", "psnr_fp32", "psnr_bf16", "onnx_s", "fp32_s", "bf16_s", "isa")


def fastest(fn, repeat: int):
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--qualities", default="75,100", help="bbimg qualities (75: the default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "bf16_synthesis.csv")
    args = ap.parse_args()

    import torch

    import bbimg
    from bbimg import codec, runtime, transforms
    from bbimg.models.onnx_export import SubPixelSynthesis
    from bbimg.models.registry import load_model

    torch.set_num_threads(2)
    qualities = [int(q) for q in args.qualities.split(",")]
    _, model = load_model(codec.DEFAULT_MODEL)
    synthesis = SubPixelSynthesis(model.float().eval()).eval()
    caught = {}
    real = transforms.Transforms.synthesis_pixels

    def catch(self, y, t, height, width, fast=False):  # the decoder's own y and t
        caught.update(y=y.copy(), t=t, size=(height, width), backend=self.backend)
        return real(self, y, t, height, width, fast)

    transforms.Transforms.synthesis_pixels = catch

    def to_pixels(x: np.ndarray, height: int, width: int) -> np.ndarray:
        x = np.clip(x[0, :, :height, :width], 0.0, 1.0) * np.float32(255.0)
        return np.round(x).transpose(1, 2, 0).astype(np.uint8)

    rows = []
    for (name, source), quality in ((image, q) for q in qualities for image in kodak_images(args.images)):
        decoded = np.asarray(bbimg.decode(bbimg.encode(source, quality=quality)).convert("RGB"))
        y, t, (height, width) = caught["y"], caught["t"], caught["size"]
        assert isinstance(caught["backend"], runtime.OrtTransforms), "needs the ONNX Runtime back end"
        onnx_out, onnx_s = fastest(lambda: caught["backend"].synthesis(y, t), args.repeat)
        assert np.array_equal(to_pixels(onnx_out, height, width), decoded)  # the decoder's pixels
        yt, tt = torch.from_numpy(y), torch.tensor([t], dtype=torch.float32)
        with torch.no_grad():
            fp32, fp32_s = fastest(lambda: synthesis(yt, tt).numpy(), args.repeat)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16, bf16_s = fastest(lambda: synthesis(yt, tt).float().numpy(), args.repeat)
        row = dict(image=name, quality=quality, psnr_onnx=psnr(source, decoded),
                   psnr_fp32=psnr(source, to_pixels(fp32, height, width)),
                   psnr_bf16=psnr(source, to_pixels(bf16, height, width)),
                   onnx_s=onnx_s, fp32_s=fp32_s, bf16_s=bf16_s, isa=isa())
        rows.append(row)
        print(f"{name} q{quality}: PSNR {row['psnr_onnx']:.3f} (ONNX fp32) / {row['psnr_fp32']:.3f} (torch fp32) / "
              f"{row['psnr_bf16']:.3f} dB (bf16); synthesis {onnx_s:.3f} / {fp32_s:.3f} / {bf16_s:.3f} s", flush=True)
    write_csv(rows, args.out, COLUMNS)
    for quality in qualities:
        at = [r for r in rows if r["quality"] == quality]
        mean = {k: float(np.mean([r[k] for r in at])) for k in COLUMNS[2:8]}
        print(f"q{quality}, mean over {len(at)} images: bf16 - fp32 {mean['psnr_bf16'] - mean['psnr_fp32']:+.3f} dB "
              f"(worst {min(r['psnr_bf16'] - r['psnr_fp32'] for r in at):+.3f}); synthesis ONNX fp32 "
              f"{mean['onnx_s']:.3f} s, torch fp32 {mean['fp32_s']:.3f} s, torch bf16 {mean['bf16_s']:.3f} s ({isa()})")


if __name__ == "__main__":
    main()
