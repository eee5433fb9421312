r"""A minimal PNG writer (NumPy and zlib only), for the demo's image grids."""

import struct
import zlib
from pathlib import Path

import numpy as np
from jaxtyping import ArrayLike


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_bytes(image: ArrayLike) -> bytes:
    """Encode an 8-bit image as PNG: `uint8` of shape (h, w) (grey) or (h, w, 3) (RGB)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(
            f"png_bytes needs a uint8 array (h, w) or (h, w, 3); got {img.dtype} {img.shape}."
        )
    h, w = img.shape[:2]
    colour = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def image_grid(
    images: ArrayLike, scale: int = 4, pad: int = 2, value_range=(-1.0, 1.0)
) -> np.ndarray:
    """Tile grey images (rows, cols, h, w) into one uint8 image, each pixel repeated `scale`
    times and the tiles separated by `pad` white pixels. Values are mapped from `value_range`
    to [0, 255] and clipped; NaN pixels are drawn black."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4:
        raise ValueError(f"image_grid needs (rows, cols, h, w); got shape {x.shape}.")
    lo, hi = value_range
    x = np.nan_to_num((x - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    x = np.round(255 * np.clip(x, 0, 1)).astype(np.uint8)
    x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols, h, w = x.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
    for i in range(rows):
        for j in range(cols):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            out[top : top + h, left : left + w] = x[i, j]
    return out


def write_png(path: str | Path, image: ArrayLike) -> Path:
    """Write a uint8 image (see `png_bytes`) to `path`; returns the path."""
    path = Path(path)
    path.write_bytes(png_bytes(image))
    return path
