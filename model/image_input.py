"""Turn whatever a user uploads into a plain RGB picture, or refuse it with a message a person understands.

Accepted: JPEG, PNG, WebP, GIF and TIFF (first frame), BMP; any mode (grayscale, palette, RGBA, CMYK,
16-bit); EXIF orientation is applied. Refused: empty, non-image or corrupt data, images larger than
MAX_PIXELS (decompression bombs are caught from the header, before any pixel is decoded), images with
a side under MIN_SIDE pixels or an aspect ratio beyond MAX_ASPECT.

`load_rgb` is what the predictor uses: the same decoding as an H×W×3 array. The common upload, a
complete JPEG with no EXIF rotation, is decoded by libjpeg-turbo through OpenCV straight into that
array (Pillow's pixels exactly, tested, in about half the time: no intermediate image and no copy).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = int(os.environ.get("SKIN_MAX_PIXELS", 50_000_000))
MIN_SIDE = 32
MAX_ASPECT = 10.0
# Pillow format ids; "JPEG" also opens multi-picture JPEGs (MPO) from phone cameras.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, TIFF, BMP"

# Our own header check (MAX_PIXELS) runs first; Pillow's bomb guard stays on as a second line.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)


class ImageError(ValueError):
    """An upload that cannot be analysed; str(error) is meant for the person who sent it."""


def load_image(source: bytes | str | Path | Image.Image | np.ndarray) -> Image.Image:
    """Decode `source` (bytes, a file path, a PIL image or an HxW[xC] uint8 array) into an RGB image."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    image = source if isinstance(source, Image.Image) else _open(_read(source))
    _check_size(*image.size)
    return _decode(image)


def load_rgb(source: bytes | str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """`load_image` as a writable H×W×3 uint8 array: what the model, Grad-CAM and overlays work on."""
    if isinstance(source, (np.ndarray, Image.Image)):
        return np.array(load_image(source))
    data = _read(source)
    image = _open(data)
    _check_size(*image.size)
    fast = _decode_complete_jpeg(image, data)
    return fast if fast is not None else np.array(_decode(image))


def _read(source: bytes | str | Path) -> bytes:
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    if not data:
        raise ImageError("The upload is empty: no image data was received.")
    return data


def _open(data: bytes) -> Image.Image:
    """Parse the header only (no pixels yet), with only the accepted formats' parsers."""
    with _readable_errors():
        try:
            # Only the accepted formats' parsers ever see the bytes: no EPS (Ghostscript), PSD, ICO, ...
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            raise ImageError("This file is not an image we can read. Accepted formats: "
                             f"{ACCEPTED_NAMES}.") from None


def _decode(image: Image.Image) -> Image.Image:
    with _readable_errors():
        image.seek(0)  # multi-frame GIF/TIFF/WebP: the first frame
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))


@contextlib.contextmanager
def _readable_errors():
    """Pillow's failures on untrusted bytes, as an ImageError a person can read (MemoryError stays)."""
    try:
        yield
    except (ImageError, MemoryError):
        raise
    except Image.DecompressionBombError:
        raise _too_large() from None
    except Exception as exc:
        # Any parser failure (truncated EXIF, oversized PNG text chunk, bad WebP, malformed TIFF tags
        # raising KeyError/TypeError/struct.error) means a corrupt file.
        raise _corrupt(exc) from None


def _decode_complete_jpeg(image: Image.Image, data: bytes) -> np.ndarray | None:
    """The fast path for the usual upload, or None to let Pillow decode it.

    Taken only where OpenCV and Pillow read the file the same way: a 3-channel JPEG (not MPO, CMYK
    or grayscale) that ends with its end-of-image marker (a truncated one must be refused, which
    Pillow does and OpenCV does not) and has no EXIF rotation to apply.
    """
    if image.format != "JPEG" or image.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            return None
    except Exception:  # unreadable EXIF: Pillow's path decides what that means
        return None
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape != (image.height, image.width, 3):
        return None
    return rgb


def _corrupt(exc: Exception) -> ImageError:
    return ImageError("The image file is truncated or corrupt and cannot be decoded "
                      f"({exc.__class__.__name__}).")


def _too_large() -> ImageError:
    return ImageError(f"The image is too large: at most {MAX_PIXELS:,} pixels are accepted.")


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise _too_large()
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"The image is too small ({width}×{height} pixels); each side must be at "
                         f"least {MIN_SIDE} pixels.")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError(f"The image's aspect ratio ({width}×{height}) is too extreme; a dermoscopic "
                         f"photo is expected (at most {MAX_ASPECT:g}:1).")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: rescale to 8 bits instead of letting Pillow clip everything above 255 to white.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels often hold black: show them as white paper, as a viewer would.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"Expected an H×W×3 image array, got shape {array.shape}.")
    _check_size(array.shape[1], array.shape[0])
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))
