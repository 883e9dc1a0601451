"""Regenerate the codec's test vectors in tests/vectors/ (the bytes and pixels the tests pin).

    python tools/make_vectors.py --check    # say what differs from tests/vectors/, write nothing
    python tools/make_vectors.py            # rewrite the vectors, their expected decodes and vectors.json

Run it only when the bytes the codec writes, or the pixels it decodes, change on purpose (a new
model, a format or coder change), never to make a failing tests/test_vectors.py pass; the commit
that carries the new vectors must say why the bytes changed and by how much (sizes and PSNR,
which ``--check`` prints). The vectors are made with the shipped default model and the codec's
defaults on this machine's CPU; ``tests/vectors/README.md`` says what the tests check.

Each vector is a small crop of a Kodak image (``--kodak``; the crops are kept in tests/vectors/
as PNGs, so the Kodak set is needed only to add a vector) coded at one quality. ``tiled`` vectors
are coded and decoded with the transforms forced to run tile by tile (:func:`forced_tiles`, the
hook bench/large_image.py and tests/test_tiling.py use: a 150 x 100 image in 3 x 2 tiles instead
of a 2048 x 2048 one). Vectors with ``frozen`` set are files written by an older version of the
codec (formats 1.0, 1.1 and 1.3): their bytes are never rewritten, only their expected decode.
``--only`` remakes the named vectors and keeps the other entries of the manifest as they are.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
MANIFEST = VECTORS / "vectors.json"
KODAK = ROOT.parent / "shared" / "data" / "kodak"

#: Forced tiling for ``tiled`` vectors: every size tiled, 64-pixel analysis/synthesis tiles,
#: 64-pixel (one z position) hyper/prior tiles.
TILES = dict(THRESHOLD_PIXELS=0, TILE_LATENTS=4, PRIOR_TILE=1)

#: How the frozen format 1.0 files were made: the codec as of the commit before format 1.1
#: (df479aa, "Prior skip"), whose C++ sources and shipped weights equal today's.
MADE_BY_1_0 = ("bbimg at git rev df479aa^ (format 1.0): git archive df479aa^ | tar -x -C /tmp/old; "
               "cp bbimg/_core*.so /tmp/old/bbimg/; PYTHONPATH=/tmp/old python -c "
               "'bbimg.codec.encode(Image.open(source), quality)'")

#: The frozen format 1.1 files: the codec before format 1.3's block plans (git rev 1adb8d5).
MADE_BY_1_1 = ("bbimg at git rev 1adb8d5 (format 1.1): git archive 1adb8d5 | tar -x -C /tmp/old; "
               "build the extension there; PYTHONPATH=/tmp/old python -c 'bbimg.codec.encode(source, quality)'")


#: The frozen format 1.3 files: the last codec writing the 1.x layout by default (git rev d8343e5).
MADE_BY_1_3 = ("bbimg at git rev d8343e5 (format 1.3): git archive d8343e5 | tar -x -C /tmp/old; "
               "build the extension there; PYTHONPATH=/tmp/old python tools/make_vectors.py")


@dataclass(frozen=True)
class Source:
    """A crop of a Kodak image, stored as ``tests/vectors/<name>.png``."""

    name: str
    kodak: str
    box: tuple[int, int, int, int]  # left, upper, right, lower
    mode: str = "RGB"
    alpha: bool = False  # add a soft elliptic alpha mask (an RGBA vector)


@dataclass(frozen=True)
class Vector:
    name: str
    source: str
    quality: int
    tiled: bool = False
    frozen: str | None = None  # how an older codec made the file; None: today's encoder makes it


SOURCES = {s.name: s for s in (
    Source("kodim23_67x45", "kodim23.png", (300, 100, 367, 145)),
    Source("kodim05_3x5", "kodim05.png", (400, 300, 403, 305)),
    Source("kodim13_130x9", "kodim13.png", (200, 250, 330, 259)),
    Source("kodim08_80x61_grey", "kodim08.png", (340, 220, 420, 281), mode="L"),
    Source("kodim21_150x100", "kodim21.png", (280, 180, 430, 280)),
    Source("kodim15_61x37", "kodim15.png", (330, 200, 391, 237)),
    Source("kodim03_40x33_grey", "kodim03.png", (380, 150, 420, 183), mode="L"),
    Source("kodim20_72x52_rgba", "kodim20.png", (250, 200, 322, 252), alpha=True),
)}

VECTORS_LIST = (
    Vector("rgb_67x45_q1", "kodim23_67x45", 1),
    Vector("rgb_67x45_q40", "kodim23_67x45", 40),
    Vector("rgb_67x45_q100", "kodim23_67x45", 100),
    Vector("rgb_3x5_q75", "kodim05_3x5", 75),
    Vector("rgb_130x9_q60", "kodim13_130x9", 60),
    Vector("grey_80x61_q50", "kodim08_80x61_grey", 50),
    Vector("tiled_150x100_q40", "kodim21_150x100", 40, tiled=True),
    Vector("rgba_72x52_q60", "kodim20_72x52_rgba", 60),
    Vector("v1_3_rgb_67x45_q1", "kodim23_67x45", 1, frozen=MADE_BY_1_3),
    Vector("v1_3_rgb_67x45_q40", "kodim23_67x45", 40, frozen=MADE_BY_1_3),
    Vector("v1_3_rgb_67x45_q100", "kodim23_67x45", 100, frozen=MADE_BY_1_3),
    Vector("v1_3_rgb_3x5_q75", "kodim05_3x5", 75, frozen=MADE_BY_1_3),
    Vector("v1_3_rgb_130x9_q60", "kodim13_130x9", 60, frozen=MADE_BY_1_3),
    Vector("v1_3_grey_80x61_q50", "kodim08_80x61_grey", 50, frozen=MADE_BY_1_3),
    Vector("v1_3_tiled_150x100_q40", "kodim21_150x100", 40, tiled=True, frozen=MADE_BY_1_3),
    Vector("v1_3_rgba_72x52_q60", "kodim20_72x52_rgba", 60, frozen=MADE_BY_1_3),
    Vector("v1_1_rgb_67x45_q1", "kodim23_67x45", 1, frozen=MADE_BY_1_1),
    Vector("v1_1_rgb_67x45_q40", "kodim23_67x45", 40, frozen=MADE_BY_1_1),
    Vector("v1_1_rgb_67x45_q100", "kodim23_67x45", 100, frozen=MADE_BY_1_1),
    Vector("v1_1_rgb_3x5_q75", "kodim05_3x5", 75, frozen=MADE_BY_1_1),
    Vector("v1_1_rgb_130x9_q60", "kodim13_130x9", 60, frozen=MADE_BY_1_1),
    Vector("v1_1_grey_80x61_q50", "kodim08_80x61_grey", 50, frozen=MADE_BY_1_1),
    Vector("v1_1_tiled_150x100_q40", "kodim21_150x100", 40, tiled=True, frozen=MADE_BY_1_1),
    Vector("v1_0_rgb_61x37_q40", "kodim15_61x37", 40, frozen=MADE_BY_1_0),
    Vector("v1_0_grey_40x33_q75", "kodim03_40x33_grey", 75, frozen=MADE_BY_1_0),
)


def numerics() -> dict:
    """What decides the transforms' float rounding here: the back end and its version, the CPU
    architecture and its widest vector ISA (ONNX Runtime picks AVX-512 or AVX2 kernels at run time).
    The vectors pin exact pixels and bytes where this equals the manifest's ``numerics``."""
    from bbimg import transforms
    from bbimg.model_files import DEFAULT_MODEL

    backend = transforms.load_transforms(DEFAULT_MODEL).backend
    name = "torch" if isinstance(backend, transforms.TorchBackend) else "onnxruntime"
    if name == "torch":
        import torch
        version = torch.__version__
    else:
        import onnxruntime
        version = onnxruntime.__version__
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = next((f for f in ("avx512f", "avx2", "neon", "asimd") if f in flags), "unknown")
    return dict(backend=name, version=version, machine=platform.machine(), isa=isa)


def pixel_digest(image: Image.Image) -> str:
    """sha256 of a decoded image: its mode, size and exact pixel bytes."""
    head = f"{image.mode} {image.width}x{image.height}\n".encode()
    return hashlib.sha256(head + image.tobytes()).hexdigest()


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images (arrays or Pillow images of one mode and size)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@contextlib.contextmanager
def forced_tiles(on: bool = True) -> Iterator[None]:
    """Run the transforms tile by tile with :data:`TILES` inside the block (nothing when ``on`` is false)."""
    from bbimg import tiling

    if not on:
        yield
        return
    old = {k: getattr(tiling, k) for k in TILES}
    try:
        for k, v in TILES.items():
            setattr(tiling, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(tiling, k, v)


def encode(vector: Vector, source: Image.Image) -> bytes:
    """The vector's bytes as today's encoder writes them (shipped model, the codec's defaults)."""
    from bbimg import codec

    with forced_tiles(vector.tiled):
        return codec.encode(source, vector.quality)


def decode(vector: Vector, data: bytes) -> Image.Image:
    from bbimg import codec

    with forced_tiles(vector.tiled):
        return codec.decode(data)


def load_source(name: str, kodak: Path = KODAK) -> Image.Image:
    """The stored crop; made from the Kodak image (and stored) when it is not there yet."""
    path = VECTORS / f"{name}.png"
    if path.exists():
        return Image.open(path).copy()
    s = SOURCES[name]
    image = Image.open(kodak / s.kodak).convert(s.mode).crop(s.box)
    if s.alpha:
        h, w = image.height, image.width
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
        alpha = np.clip((1.1 - r) * 400, 0, 255).astype(np.uint8)  # opaque centre, soft edge, clear corners
        image.putalpha(Image.fromarray(alpha))
    image.save(path, optimize=True)
    return image


def load_manifest() -> dict:
    return {e["file"]: e for e in json.loads(MANIFEST.read_text())["vectors"]} if MANIFEST.exists() else {}


def make(vector: Vector, kodak: Path = KODAK, write: bool = True) -> dict:
    """The manifest entry of ``vector`` (writing its .bbi and expected decode when ``write``)."""
    from bbimg import codec
    from bbimg import format as bbi

    source = load_source(vector.source, kodak)
    bbi_path = VECTORS / f"{vector.name}.bbi"
    if vector.frozen:
        data = bbi_path.read_bytes()  # made by an older codec: never rewritten
    else:
        data = encode(vector, source)
    decoded = decode(vector, data)
    info = bbi.read_info(data)
    if write:
        if not vector.frozen:
            bbi_path.write_bytes(data)
        decoded.save(VECTORS / f"{vector.name}.decoded.png", optimize=True)
    entry = dict(file=bbi_path.name, source=f"{vector.source}.png", kodak=SOURCES[vector.source].kodak,
                 crop=list(SOURCES[vector.source].box), mode=decoded.mode, width=decoded.width,
                 height=decoded.height, quality=vector.quality, tiled=TILES if vector.tiled else None,
                 format_version="%d.%d" % info.version, model=codec.model_of(info.header),
                 bbi_bytes=len(data), bbi_sha256=hashlib.sha256(data).hexdigest(),
                 decoded_png=f"{vector.name}.decoded.png", decoded_sha256=pixel_digest(decoded),
                 psnr=round(psnr(decoded, source), 4))
    if vector.frozen:
        entry["made_by"] = vector.frozen
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with tests/vectors/, write nothing")
    ap.add_argument("--kodak", type=Path, default=KODAK, help="folder of the Kodak PNGs (only to add a source)")
    ap.add_argument("--only", help="comma-separated vector names: remake these, keep the manifest's other entries")
    args = ap.parse_args(argv)
    VECTORS.mkdir(parents=True, exist_ok=True)
    old = load_manifest()
    only = None if args.only is None else set(args.only.split(","))
    if only is not None and only - {v.name for v in VECTORS_LIST}:
        ap.error(f"unknown vectors: {', '.join(sorted(only - {v.name for v in VECTORS_LIST}))}")
    entries, changed = [], 0
    for vector in VECTORS_LIST:
        if only is not None and vector.name not in only:
            entries.append(old[f"{vector.name}.bbi"])
            continue
        entry = make(vector, args.kodak, write=not args.check)
        before = old.get(entry["file"])
        same = before is not None and all(before.get(k) == entry[k] for k in ("bbi_sha256", "decoded_sha256"))
        changed += not same
        was = "new" if before is None else f"was {before['bbi_bytes']} B, {before['psnr']:.2f} dB"
        print(f"{entry['file']:26} {entry['width']}x{entry['height']} {entry['mode']:3} q{entry['quality']:<3} "
              f"{entry['bbi_bytes']:5} B  {entry['psnr']:6.2f} dB  {'same' if same else 'CHANGED (' + was + ')'}")
        entries.append(entry)
    if args.check:
        return 1 if changed else 0
    here = numerics()
    if only is not None and MANIFEST.exists():
        kept = json.loads(MANIFEST.read_text())["numerics"]
        if kept != here:
            print(f"warning: the manifest's numerics {kept} are kept, the remade vectors were made on {here}: check "
                  f"that their bytes and decodes are the same as on the manifest's")
        here = kept
    MANIFEST.write_text(json.dumps({"numerics": here, "vectors": entries}, indent=1) + "\n")
    print(f"wrote {len(entries)} vectors to {VECTORS.relative_to(ROOT)} ({changed} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
