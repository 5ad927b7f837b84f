"""Decoding images safely: only regular files, a pixel budget checked from the header, decodes that completed.

Images come from people and from the network, so nothing about them is trusted:

- a path must name a regular file: it is opened without blocking and checked with `fstat`, so a
  FIFO, a directory, a device such as /dev/zero or a symlink loop is refused at once instead of
  hanging or reading forever;
- the size in the header is checked against a pixel budget (`max_pixels`, default
  `DEFAULT_MAX_PIXELS`) before any pixel is decoded: a 219-byte PNG that declares 12000x12000
  pixels is refused in microseconds instead of taking gigabytes;
- the decode must be complete: Pillow's `LOAD_TRUNCATED_IMAGES` is never turned on, and a PNG whose
  compressed data ends before its last row (which Pillow fills with zeros without a word) is refused;
- animated images give their first frame; every mode (CMYK, palettes with transparency, 16-bit,
  1-bit, grey with alpha, float) becomes RGB 8-bit, alpha dropped as the original model's reader does.

Every problem is an `ImageError` with one line naming the image.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from sed_deploy.core.errors import ConfigError, ImageError, first_line


@dataclass(frozen=True)
class EncodedImage:
    """An image file read and decoded once: its name, its bytes (what a server is sent) and its pixels."""

    name: str
    data: bytes
    rgb: np.ndarray


ImageSource = str | Path | bytes | Image.Image | np.ndarray | EncodedImage

DEFAULT_MAX_PIXELS = 64_000_000  # 64 megapixels: an 8000x8000 photo; decoding it needs about 200 MB
MAX_PIXELS_LIMIT = 1_000_000_000  # no budget above this is taken: a 1-gigapixel image is gigabytes in RGB alone
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or not 1 <= max_pixels <= MAX_PIXELS_LIMIT:
        raise ConfigError(f"the pixel budget (max_pixels) must be a whole number from 1 to {MAX_PIXELS_LIMIT:,}, "
                          f"got {max_pixels!r}")
    return max_pixels


def check_pixel_budget(width: int, height: int, max_pixels: int, name: str) -> None:
    """Raise `ImageError` if a `width` x `height` image is empty or exceeds `max_pixels`."""
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height:,} pixels, more than the pixel budget of "
                         f"{max_pixels:,}; downscale it or raise the budget (--max-pixels, or max_pixels=)")


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image to RGB uint8 [H,W,3], EXIF orientation applied.

    Args:
        source: a path, encoded bytes, a PIL image, or an array ([H,W], [H,W,1..4]).
        max_pixels: refuse images with more pixels than this (checked before decoding).

    Raises:
        ImageError: one line, if it cannot be read, is not an image, is incomplete or too large.
    """
    check_max_pixels(max_pixels)
    if isinstance(source, EncodedImage):
        check_pixel_budget(source.rgb.shape[1], source.rgb.shape[0], max_pixels, source.name)
        return source.rgb
    if isinstance(source, np.ndarray):
        array = _array_to_rgb8(source)
        check_pixel_budget(array.shape[1], array.shape[0], max_pixels, "image array")
        return array
    if isinstance(source, Image.Image):
        check_pixel_budget(source.width, source.height, max_pixels, "PIL image")
        return _decoded(source, "PIL image", None)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return _decode(io.BytesIO(data), "image bytes", max_pixels, data)
    if isinstance(source, str | os.PathLike):
        with open_regular_file(source) as f:
            return _decode(f, str(source), max_pixels, None)
    raise ImageError(f"expected an image as a path, bytes, a PIL image or a numpy array, got {type(source).__name__}")


def read_image_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> EncodedImage:
    """Read an image file once and decode it (`load_image`'s checks); the bytes are kept for a server."""
    check_max_pixels(max_pixels)
    with open_regular_file(path) as f:
        data = f.read()
    return EncodedImage(str(path), data, _decode(io.BytesIO(data), str(path), max_pixels, data))


def open_regular_file(path: str | os.PathLike):
    """Open `path` for reading if it is a regular file, without ever blocking (FIFOs) or following a loop."""
    name = str(path)
    if not name:
        raise ImageError("an image path is empty")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot open ({exc.strerror or first_line(exc)})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "not a regular file"
        raise ImageError(f"{name}: is {kind}, not an image file")
    return os.fdopen(fd, "rb")


def _decode(stream, name: str, max_pixels: int, data: bytes | None) -> np.ndarray:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library turned it on: incomplete files would pass silently
        raise ImageError(f"{name}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; "
                         "turn it off so that incomplete images are refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget decides
            image = Image.open(stream)
            check_pixel_budget(image.width, image.height, max_pixels, name)
            if image.format == "PNG":
                _check_png_complete(stream if data is None else io.BytesIO(data), name)
                stream.seek(0)
            image.load()
        return _decoded(image, name, image.format)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can decode (corrupt, empty or another format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: larger than Pillow's hard limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                         "(a decompression bomb?); downscale it") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode it; downscale it or lower --max-pixels") from None
    except Exception as exc:  # Pillow's plugins raise many types (OSError, SyntaxError, struct.error, ...)
        raise ImageError(f"{name}: cannot decode image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    if "truncated" in text.lower():
        return "the file is truncated: it ends before the last pixel"
    return text if text != type(exc).__name__ else f"{type(exc).__name__}"


def _decoded(image: Image.Image, name: str, fmt: str | None) -> np.ndarray:
    """The first frame of a loaded PIL image as RGB uint8, EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "palette images with transparency": handled below
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image = _exif_transposed(image)
            rgb = _pil_to_rgb8(image)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to convert it; downscale it") from None
    except Exception as exc:
        raise ImageError(f"{name}: cannot convert image of mode {image.mode} to RGB ({_reason(exc)})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"{name}: the image has no pixels")
    return rgb


def _exif_transposed(image: Image.Image) -> Image.Image:
    """`ImageOps.exif_transpose`; a malformed EXIF block is ignored (the pixels are still good)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - EXIF is metadata: a broken block must not lose the picture
        return image


def _pil_to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        return _array_to_rgb8(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb8(array: np.ndarray) -> np.ndarray:
    """Grey, grey+alpha, RGB or RGBA arrays of any bool, integer or float type -> RGB uint8 (alpha dropped)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
    elif a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    else:
        raise ImageError(f"expected an image array [H,W], [H,W,3] or [H,W,4], got shape {list(a.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"the image array has no pixels (shape {list(array.shape)})")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(a.dtype, np.floating):
        with np.errstate(all="ignore"):
            finite = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            peak = 1.0 if float(finite.max(initial=0.0)) <= 1.0 else 255.0
            return np.clip(finite * (255.0 / peak), 0, 255).round().astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ImageError(f"expected an image array of integers, floats or booleans, got dtype {a.dtype}")
    # 16-bit samples (Pillow's I;16, or I holding values above 255) map their full range onto 8 bits
    sixteen_bit = a.dtype == np.uint16 or int(a.max(initial=0)) > 255
    scale = 255.0 / 65535.0 if sixteen_bit else 1.0
    return np.clip(a.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)


def _check_png_complete(stream, name: str, chunk: int = 1 << 20) -> None:
    """Raise `ImageError` unless the PNG's compressed image data holds every row its header declares.

    Pillow fills the missing rows of a PNG whose zlib stream ends early with zeros and says nothing;
    here the stream is inflated in bounded pieces and its length compared with the header's.
    """
    stream.seek(0)
    if stream.read(8) != _PNG_SIGNATURE:
        return
    expected, inflater, produced = None, zlib.decompressobj(), 0
    while True:
        head = stream.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", stream.read(13))
            expected = _png_raw_size(width, height, depth, _PNG_CHANNELS.get(colour, 4), interlace)
            stream.seek(length - 13 + 4, os.SEEK_CUR)
        elif kind == b"IDAT":
            remaining = length
            while remaining and produced < (expected or 0):
                piece = stream.read(min(chunk, remaining))
                if not piece:
                    break
                remaining -= len(piece)
                produced += _inflated_size(inflater, piece, chunk)
            stream.seek(remaining + 4, os.SEEK_CUR)
        elif kind == b"IEND":
            break
        else:
            stream.seek(length + 4, os.SEEK_CUR)
        if expected is not None and produced >= expected:
            return
    if expected is not None and produced < expected:
        raise ImageError(f"{name}: the PNG is truncated: its data holds {produced} of the {expected} bytes "
                         "its header declares (missing rows would be zeros)")


def _inflated_size(inflater, data: bytes, limit: int) -> int:
    """Bytes `data` inflates to, in pieces of at most `limit` bytes (bounded memory)."""
    total = 0
    try:
        while data:
            total += len(inflater.decompress(data, limit))
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        return total  # corrupt data: Pillow's decoder reports it
    return total


def _png_raw_size(width: int, height: int, depth: int, channels: int, interlace: int) -> int:
    """Bytes of the filtered scanlines of a PNG image (one filter byte per row)."""
    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * channels * depth + 7) // 8)

    if not interlace:
        return rows(width, height)
    def count(size: int, start: int, step: int) -> int:
        return (size - start + step - 1) // step if size > start else 0

    return sum(rows(count(width, x0, dx), count(height, y0, dy)) for x0, y0, dx, dy in _ADAM7)
