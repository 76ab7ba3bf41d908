"""Decoding image files to RGB uint8: PIL for the cached datasets, ``torchvision.io`` for streamed files.

Any mode becomes RGB (grayscale replicated, alpha dropped, palettes expanded, 16-bit scaled to 8),
an EXIF orientation is applied, and with a ``size`` the shorter side is resized to it and the
centre cropped.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (antialiased), then the central ``size x size`` square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _scale_16_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (PIL modes ``I;16*``, ``I``) to 8-bit ``L``: PIL's own conversion clips at 255."""
    pixels = np.asarray(image).astype(np.int64)
    return Image.fromarray(np.clip((pixels + 128) // 257, 0, 255).astype(np.uint8), mode="L")


def decode_image(data: bytes, name: str, size: int | None = None) -> np.ndarray:
    """Decodes image bytes to RGB uint8 ``(H, W, 3)``, resized by :func:`_fit` when ``size`` is set.

    Any mode is converted to RGB (palette with transparency via RGBA; alpha is dropped; 16-bit
    values divided by 257); an EXIF orientation is applied first. A file PIL cannot decode raises ``ValueError`` naming ``name``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                image = ImageOps.exif_transpose(image)  # phone photos: upright, as image viewers show them
            if image.mode.startswith("I"):
                image = _scale_16_bit(image)
            if image.mode == "P":
                image = image.convert("RGBA")
            image = image.convert("RGB")
            if size is not None:
                image = _fit(image, size)
            return np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ValueError(
            f"cannot decode image {name}: {error} (corrupt or not an image: delete or replace it)"
        ) from error


def read_file(path: str, size: int) -> np.ndarray:
    """Decodes one file for streaming: torchvision.io for JPEG/PNG, PIL for the rest or on failure."""
    from torchvision import io as tvio
    from torchvision.transforms.v2 import functional as TF

    if path.lower().endswith((".jpg", ".jpeg", ".png")):
        try:
            image = tvio.decode_image(tvio.read_file(path), mode=tvio.ImageReadMode.RGB, apply_exif_orientation=True)
            if image.dtype != torch.uint8:
                raise RuntimeError("16-bit PNG")  # PIL below scales it to 8 bits
            image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
            return image.permute(1, 2, 0).numpy()
        except RuntimeError:
            pass  # CMYK JPEGs and other oddities: PIL below decodes them or names the file
    return np.array(decode_image(Path(path).read_bytes(), path, size))  # writable, for torch.from_numpy


def decode_into(out: np.ndarray, items: Sequence[tuple[str, Callable[[], bytes]]], size: int | None) -> None:
    """Decodes ``items`` (name, bytes getter) into ``out`` (N, 3, H, W), in a few threads (PIL releases the GIL)."""
    expected = out.shape[2:]

    def work(i: int) -> None:
        name, read = items[i]
        pixels = decode_image(read(), name, size)
        if pixels.shape[:2] != expected:
            raise ValueError(
                f"image {name} is {pixels.shape[1]}x{pixels.shape[0]}, but the first image of the split is "
                f"{expected[1]}x{expected[0]}: set --data.image_size=S (build_dataset(image_size=S)) to resize every image to SxS"
            )
        out[i] = pixels.transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(work, range(len(items)), chunksize=256):
            pass


def first_image_shape(items: Sequence[tuple[str, Callable[[], bytes]]], size: int | None) -> tuple[int, int]:
    if size is not None:
        return size, size
    name, read = items[0]
    return decode_image(read(), name).shape[:2]
