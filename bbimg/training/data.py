"""Training images: decoded once, downscaled, cached as uint8 arrays, served as random crops.

A *packed* folder (``pack_image_set``) holds the training and held-out splits already downscaled, as
JPEG q92 4:4:4 files small enough to travel with the repository to a lent GPU machine (41 MiB for
the 819 photos of ``shared/data/train``); ``load_image_set`` takes it as it is.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["ImageSet", "load_image_set", "pack_image_set", "is_validation_file", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PACKED_MANIFEST = "packed.json"
_SPLITS = {False: "train", True: "validation"}


def is_validation_file(name: str, fraction: float) -> bool:
    """Deterministic hold-out by file name, so every machine splits the same way."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _load(path: Path, downscale: int) -> np.ndarray:
    with Image.open(path) as im:
        target = (max(1, im.width // downscale), max(1, im.height // downscale))
        if im.format == "JPEG":
            # DCT-domain scaling: fast, and it averages away the source's block artifacts.
            im.draft("RGB", target)
        im = im.convert("RGB")
        if im.size != target:
            im = im.resize(target, Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


@dataclass
class ImageSet:
    images: list[np.ndarray]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @functools.cached_property
    def _pick_probabilities(self) -> np.ndarray:
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        return areas / areas.sum()

    def random_crops(self, rng: np.random.Generator, batch: int, crop: int) -> np.ndarray:
        """(batch, 3, crop, crop) uint8 crops, images drawn in proportion to their area, random flips."""
        picks = rng.choice(len(self.images), size=batch, p=self._pick_probabilities)
        out = np.empty((batch, 3, crop, crop), dtype=np.uint8)
        for i, k in enumerate(picks):
            im = self.images[k]
            h, w = im.shape[:2]
            if h < crop or w < crop:
                im = np.pad(im, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
                h, w = im.shape[:2]
            top = rng.integers(0, h - crop + 1)
            left = rng.integers(0, w - crop + 1)
            patch = im[top:top + crop, left:left + crop]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            out[i] = patch.transpose(2, 0, 1)
        return out

    def fixed_crops(self, crop: int, count: int) -> np.ndarray:
        """Deterministic centre crops for validation."""
        rng = np.random.default_rng(1234)
        picks = rng.permutation(len(self.images))[:count]
        crops = []
        for k in picks:
            im = self.images[k]
            h, w = im.shape[:2]
            if h < crop or w < crop:
                continue
            top, left = (h - crop) // 2, (w - crop) // 2
            crops.append(im[top:top + crop, left:left + crop].transpose(2, 0, 1))
        return np.stack(crops) if crops else np.zeros((0, 3, crop, crop), np.uint8)


def _load_all(paths: list[Path], downscale: int) -> list[np.ndarray]:
    # Pillow releases the GIL while decoding: threads load a GPU machine's 16 cores in parallel.
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: _load(p, downscale), paths))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _split_files(folder: Path, validation: bool, val_fraction: float) -> list[Path]:
    """A packed folder's own split, or a plain folder's files held out by name hash."""
    if (Path(folder) / PACKED_MANIFEST).exists():
        return _image_files(Path(folder) / _SPLITS[validation])
    return [p for p in _image_files(folder) if is_validation_file(p.name, val_fraction) == validation]


def load_image_set(folders: list[Path], *, downscale: int = 2, validation: bool = False,
                   val_fraction: float = 0.05, cache_dir: Path | None = None) -> ImageSet:
    """All images under ``folders`` (training or held-out part), cached after the first decode.

    Packed folders are used as packed: their split and downscaling were fixed by ``pack_image_set``."""
    packed = [p for folder in folders if (Path(folder) / PACKED_MANIFEST).exists()
              for p in _split_files(folder, validation, val_fraction)]
    files = [p for folder in folders if not (Path(folder) / PACKED_MANIFEST).exists()
             for p in _split_files(folder, validation, val_fraction)]
    key = hashlib.sha256(repr(([str(p) for p in files], downscale)).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"images-{key}.pkl" if cache_dir and files else None
    if cache and cache.exists():
        with open(cache, "rb") as f:
            images = pickle.load(f)
    else:
        images = ImageSet(_load_all(files, downscale), [p.name for p in files])
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks may write at the same time
            with open(tmp, "wb") as f:
                pickle.dump(images, f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(cache)
    # Packed files decode fast (already downscaled), so they are never cached.
    return ImageSet(images.images + _load_all(packed, 1), images.names + [p.name for p in packed])


def pack_image_set(folders: list[Path], out: Path, *, downscale: int = 2, val_fraction: float = 0.05,
                   quality: int = 92) -> dict[str, int]:
    """Write both splits of ``folders``, downscaled, as JPEG files under ``out/train`` and
    ``out/validation`` (4:4:4, ``quality``) with a manifest; returns the image count of each split."""
    out = Path(out)
    counts = {}
    for validation, split in _SPLITS.items():
        images = load_image_set(folders, downscale=downscale, validation=validation, val_fraction=val_fraction)
        (out / split).mkdir(parents=True, exist_ok=True)
        for stale in (out / split).glob("*.jpg"):
            stale.unlink()
        for i, im in enumerate(images.images):
            Image.fromarray(im).save(out / split / f"{i:04d}.jpg", "JPEG", quality=quality, subsampling=0)
        counts[split] = len(images)
    manifest = dict(counts=counts, downscale=downscale, val_fraction=val_fraction, quality=quality)
    (out / PACKED_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts
