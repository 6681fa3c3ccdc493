"""Reading, resizing and encoding images: the I/O that every pair pays for.

Resize/crop policy for `--size S` (documented in docs/usage.md): the shorter side is
scaled to S (area interpolation when shrinking, bilinear when enlarging), then the
centre S x S square is cropped. Instance masks go through the same geometry with
nearest-neighbour interpolation, so a mask pixel always matches an image pixel.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from metauas.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # gif: first frame
# Largest image decoded (width x height), checked from the file's header before any
# decoding: a 30000 x 30000 PNG is under a megabyte on disk and 2.7 GB in memory.
MAX_PIXELS = 100_000_000
# A file read whole is at most what its pixels could need uncompressed (16-bit RGBA: 8
# bytes a pixel) plus room for metadata: a 40 GB file named as an image is not read.
FILE_SLACK = 64 << 20


def file_limit(max_pixels: int) -> int:
    """Bytes of an image file read into memory, for a pixel limit."""
    return 8 * max_pixels + FILE_SLACK


class SkipSource(Exception):
    """A source image (or instance) that cannot be used; `reason` is counted in index.json."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding its pixels; None
    when Pillow does not know the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as err:  # over Pillow's own bound: its message has the count
        found = re.search(r"\((\d+) pixels\)", str(err))
        return (int(found.group(1)) if found else 2**40, 1)
    except Exception:  # noqa: BLE001 - a hostile header may trip any of Pillow's parsers
        return None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header alone (Pillow reads only what it
    needs, through Python: no name reaches OpenCV); None when it is no image Pillow knows,
    or cannot be read."""
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                return im.size
    except Image.DecompressionBombError:  # an image, if a large one: read_rgb says how large
        return (2**20, 2**20)
    except Exception:  # noqa: BLE001 - missing, unreadable, or a header that trips Pillow
        return None


def check_pixels(data: bytes, max_pixels: int, what: str) -> None:
    """SkipSource unless the header gives a size of at most `max_pixels`: 'too_large' over
    it, 'unreadable' when Pillow cannot measure the header (OpenCV alone would decode it
    unmeasured: a Radiance .hdr can claim any size)."""
    size = header_size(data)
    if size is None:
        raise SkipSource("unreadable", f"{what}: not an image whose size its header gives")
    if size[0] * size[1] > max_pixels:
        raise SkipSource("too_large", f"{what}: {size[0] * size[1]:,} pixels, over the limit of {max_pixels:,}")


def decode_bounded(
    data: bytes, what: str, max_pixels: int = MAX_PIXELS, flags: int = cv2.IMREAD_UNCHANGED
) -> np.ndarray:
    """The one image decoder of the project: every decode (files, uploads, shard members)
    comes here. Pixels are counted from the header first (`check_pixels`), so OpenCV only
    ever allocates for an image within the limit; then `cv2.imdecode` with `flags`
    (OpenCV's channel order). SkipSource 'unreadable', 'too_large' naming `what`."""
    check_pixels(data, max_pixels, what)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # e.g. a header OpenCV refuses on its own
        img = None
    if img is None or img.ndim not in (2, 3):
        raise SkipSource("unreadable", what)
    return img


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grey, RGBA (composited on white) or RGB uint8 -> contiguous RGB uint8."""
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
    if img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255
        return (img[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def read_file(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, read through Python (a name that is not UTF-8 never reaches
    OpenCV, whose Python binding crashes on one); SkipSource 'unreadable' (missing, not a
    regular file, no permission) or 'too_large' (over `max_bytes`, from its size)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise SkipSource("unreadable", f"{path}: not a file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise SkipSource("too_large", f"{path}: {size:,} bytes, over the limit of {max_bytes:,}")
            data = f.read(size + 1)  # not read(max_bytes): CPython allocates what it is asked for
    except OSError as err:
        raise SkipSource("unreadable", f"{path}: {err.strerror or err}") from None
    if len(data) > max_bytes:  # a file that grew while read
        raise SkipSource("too_large", f"{path}: over the limit of {max_bytes:,} bytes")
    return data


def read_rgb(path: Path, min_side: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB uint8, or raise SkipSource: 'unreadable' (missing, not
    an image, corrupt, no read permission), 'too_large' (over `max_pixels`, seen in the
    header before decoding, or a file larger than such an image could be) or
    'too_small' (shorter side under `min_side`)."""
    return decode_rgb(read_file(path, file_limit(max_pixels)), str(path), min_side, max_pixels)


def decode_rgb(data: bytes, what: str, min_side: int = 1, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`read_rgb` for bytes already in memory (an upload to the page): the same pixel
    limit from the header, the same decoding, the same SkipSource reasons naming `what`."""
    img = decode_bounded(data, what, max_pixels)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if min(img.shape[:2]) < min_side:
        raise SkipSource("too_small", what)
    return to_rgb(img)


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by suffix), sorted; [] when it is no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 of an image file a user named; an unreadable file is a UserError naming
    it and saying why (missing, a folder, not an image, truncated), since each has its
    own remedy."""
    try:
        return read_rgb(Path(path), 1)
    except SkipSource as skip:
        if skip.reason == "too_large":
            raise UserError(f"image too large to read: {skip}") from None
        raise UserError(f"cannot read image {path}: {unreadable_reason(Path(path))}") from None


def unreadable_reason(path: Path) -> str:
    """Why a file the decoder refused cannot be read, in words a user can act on."""
    import io

    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        return "it is a folder (give an image file, or the folder where a folder is accepted)"
    if not path.exists():
        return "no such file"
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"not readable ({err.strerror or err})"
    if not data:
        return "the file is empty"
    try:
        with Image.open(io.BytesIO(data)) as im:
            kind = im.format
            im.load()
    except UnidentifiedImageError:
        return f"not an image (no known image format; {IMAGE_SUFFIXES[0]}, .png, .bmp, .tif, .webp are read)"
    except Exception as err:  # noqa: BLE001 - a damaged file may trip any of Pillow's decoders
        return f"truncated or corrupt {kind} file ({err})"
    return f"{kind} data that OpenCV cannot decode"


def fit_square(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Scale the shorter side to `size`, crop the centre square (the `--size` policy)."""
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def fit_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return fit_square(mask.astype(np.uint8), size, nearest=True).astype(bool)


def encode(img: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """RGB (or single-channel) uint8 -> file bytes. png is lossless, jpg/webp lossy."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = {
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
    }[fmt]
    ok, buf = cv2.imencode("." + fmt, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {fmt} image")
    return buf.tobytes()


def decode(data: bytes, grey: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """File bytes -> RGB uint8 (or single channel with grey=True), through the bounded
    decoder; ValueError for bytes that do not decode or an image over `max_pixels`."""
    try:
        img = decode_bounded(data, "image bytes", max_pixels, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    except SkipSource as skip:
        raise ValueError(f"undecodable image bytes ({skip})") from None
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def drawable(text: str, limit: int = 120) -> str:
    """`text` as OpenCV may draw it: printable ASCII (its Hershey fonts draw nothing
    else, and its Python binding crashes on text that is not valid UTF-8, such as a file
    name's surrogate escapes); anything else becomes '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


def draw_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of `rgb` with `mask` (H x W, nonzero = changed) tinted red and outlined in
    yellow: how every sheet and report of this project shows a change or a defect."""
    m = mask > 0
    out = rgb.copy()
    out[m] = (0.5 * out[m] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    return out
