"""The model's grid: how pixels map to latent positions, in one place (no numpy, no torch).

y has one position per 16 x 16 pixels, z one per 4 x 4 y positions; images are padded (by
replicating the last row and column) to a multiple of their product, the model's stride."""
from __future__ import annotations

__all__ = ["LATENT_STRIDE", "Z_STRIDE", "MODEL_STRIDE", "padded_size"]

LATENT_STRIDE = 16                      # pixels per y position
Z_STRIDE = 4                            # y positions per z position
MODEL_STRIDE = LATENT_STRIDE * Z_STRIDE  # pixels per z position: images are padded to a multiple of it


def padded_size(height: int, width: int, stride: int = MODEL_STRIDE) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``stride``: the size the transforms run on."""
    return -(-height // stride) * stride, -(-width // stride) * stride
