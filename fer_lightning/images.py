"""The one place that reads images (predict, the Python API and the app): a path, encoded bytes, a
numpy array or a PIL image in, a uint8 BGR (H, W, 3) or gray (H, W) array out.

Encoded images are measured from their header before they are decoded: one over ``MAX_PIXELS``
(or the ``max_pixels`` given) is refused in one line, as Pillow refuses decompression bombs, so a
small file that decodes to gigabytes never does. Every failure is an ``ImageError``.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_lightning.errors import ImageError, check_whole_number

# the default pixel limit: 100 megapixels, above any camera photo's; a decoded image this large
# takes 300 MB as BGR
MAX_PIXELS = 100_000_000

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | Image.Image


@contextmanager
def opencv_log_silenced() -> Iterator[None]:
    """Mute OpenCV's native log (it prints on stderr) for the duration: its failure reasons are
    native log lines, ours are one line each."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_image(
    image: ImageInput, *, rgb: bool = False, max_pixels: int | None = None
) -> np.ndarray:
    """``image`` as a uint8 array: BGR (H, W, 3), or gray (H, W) for a gray array or PIL image.

    ``image`` is a file path, the bytes of an encoded file (PNG, JPEG, ...), a uint8 array (gray
    (H, W), BGR (H, W, 3) or BGRA (H, W, 4); RGB and RGBA with ``rgb=True``) or a PIL image.
    Images over ``max_pixels`` pixels (None: ``MAX_PIXELS``) are refused before decoding.
    """
    limit = MAX_PIXELS if max_pixels is None else check_whole_number("max_pixels", max_pixels, 1)
    if isinstance(image, np.ndarray):
        return _from_array(image, rgb, limit)
    if isinstance(image, Image.Image):
        return _from_pil(image, limit)
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_image(bytes(image), "the image bytes", limit)
    if isinstance(image, str | os.PathLike):
        path = Path(image).expanduser()
        return decode_image(read_file(path), str(path), limit)
    raise ImageError(
        f"cannot read an image from a {type(image).__name__}; give a path, encoded bytes, a "
        "uint8 numpy array or a PIL image"
    )


def read_file(path: Path) -> bytes:
    """The bytes of the file at ``path``; a missing or unreadable file is one line."""
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such image file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{path}: a folder, not an image file") from err
    except OSError as err:
        raise ImageError(f"{path}: cannot read the file ({err.strerror or err})") from err


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An encoded image (``name`` in errors) decoded to BGR uint8, once its header has shown it
    holds at most ``max_pixels`` pixels."""
    if not data:
        raise ImageError(f"{name}: an empty file (0 bytes), not an image")
    size = header_size(data, name, max_pixels)
    if size is not None:
        check_pixels(*size, max_pixels, name)
    with opencv_log_silenced():
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:  # e.g. a header OpenCV's own pixel limit refuses
            image = None
    if image is None:
        raise ImageError(f"{name}: not a readable image (OpenCV cannot decode it)")
    # formats Pillow cannot measure are checked once decoded
    check_pixels(image.shape[1], image.shape[0], max_pixels, name)
    return image


def header_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding its pixels; None for a format
    Pillow does not know (OpenCV may still decode it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                return header.size
    except Image.DecompressionBombError as err:
        # over twice Pillow's own limit, which it refuses to measure further; its message gives
        # the pixel count
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        if pixels > max_pixels:
            raise ImageError(
                f"{name}: {pixels:,} pixels, over the limit of {max_pixels:,} (max_pixels); "
                "a decompression bomb, or a photo to shrink first"
            ) from err
        return None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels in one line."""
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (max_pixels); a decompression bomb, or a photo to shrink first"
        )


def _from_array(array: np.ndarray, rgb: bool, max_pixels: int) -> np.ndarray:
    """A uint8 gray, BGR(A) or, with ``rgb``, RGB(A) array as gray or BGR."""
    channels = array.shape[2] if array.ndim == 3 else None
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or channels not in (None, 1, 3, 4):
        raise ImageError(
            f"an image array must be uint8 gray (H, W), color (H, W, 3) or with alpha "
            f"(H, W, 4); got {array.dtype} {array.shape}"
        )
    check_pixels(array.shape[1], array.shape[0], max_pixels, "the image array")
    if channels == 1:
        return np.ascontiguousarray(array[:, :, 0])
    if channels == 4:
        return cv2.cvtColor(array, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    if channels == 3 and rgb:
        return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(array)


def _from_pil(image: Image.Image, max_pixels: int) -> np.ndarray:
    """A PIL image (measured before its pixels are loaded) as gray or BGR."""
    check_pixels(*image.size, max_pixels, "the PIL image")
    try:
        if image.mode in ("L", "1"):
            return np.asarray(image.convert("L"), dtype=np.uint8).copy()
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as err:  # a lazily opened file that turns out truncated
        raise ImageError(f"the PIL image: cannot load its pixels ({err})") from err
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def to_gray(image: np.ndarray) -> np.ndarray:
    """A gray (H, W) or BGR (H, W, 3) uint8 image as gray."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
