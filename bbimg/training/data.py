"""Training images: decoded once, downscaled, cached as uint8 arrays, served as random crops."""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["ImageSet", "load_image_set", "is_validation_file", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


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

    def random_crops(self, rng: np.random.Generator, batch: int, crop: int) -> np.ndarray:
        """(batch, 3, crop, crop) uint8 crops, images drawn in proportion to their area, random flips."""
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        picks = rng.choice(len(self.images), size=batch, p=areas / areas.sum())
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


def load_image_set(folders: list[Path], *, downscale: int = 2, validation: bool = False,
                   val_fraction: float = 0.05, cache_dir: Path | None = None) -> ImageSet:
    """All images under ``folders`` (training or held-out part), cached after the first decode."""
    files = sorted(p for folder in folders for p in Path(folder).rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in files if is_validation_file(p.name, val_fraction) == validation]
    key = hashlib.sha256(repr(([str(p) for p in files], downscale)).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"images-{key}.pkl" if cache_dir else None
    if cache and cache.exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    images = ImageSet([_load(p, downscale) for p in files], [p.name for p in files])
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks may write at the same time
        with open(tmp, "wb") as f:
            pickle.dump(images, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache)
    return images
