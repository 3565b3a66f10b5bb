"""Safe image decoding: any common format in, an RGB PIL image out, or one clear ImageLoadError.

EXIF orientation is applied; grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB;
decompression bombs are refused rather than decoded.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dfdetect.core.errors import DfdetectError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 89_478_485  # Pillow's own default bomb limit (~ 9459 x 9459)
MAX_ASPECT = 20.0
"""Images longer than this many times their short side are refused before their pixels are decoded: no face
photo has that shape, and a few bytes of PNG can declare 70000 x 100 or 2 x 40,000,000 pixels."""


class ImageLoadError(DfdetectError, ValueError):
    """The file is missing, empty, not an image, corrupt, or too large to decode safely."""


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def open_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode an image file (path or bytes) into RGB. Raises ImageLoadError with the reason (the pixel and
    aspect-ratio limits are checked on the header, before any pixel is decoded)."""
    return read_image(source, max_pixels, max_aspect)[0]


def read_image(
    source: str | Path | bytes, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT
) -> tuple[Image.Image, dict[int, Any] | None]:
    """:func:`open_image` plus the JPEG quantisation tables of the same header (None for other formats), so a
    folder scan's quality estimate costs no second parse of the file."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError(f"{name}: empty file")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        fp = Path(source)
        if not fp.is_file():
            raise ImageLoadError(f"{name}: no such file")
        if fp.stat().st_size == 0:
            raise ImageLoadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # Our own check below states our limit; Pillow's warning (past its limit) would only repeat it in
            # other words, and its error (past twice its limit) is reworded below to the same message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(_too_many_pixels(name, f"{w}x{h} = {w * h:,} px", max_pixels))
                if min(w, h) < 1 or max(w, h) > max_aspect * min(w, h):
                    raise ImageLoadError(
                        f"{name}: {w}x{h} px is beyond the {max_aspect:g}:1 aspect-ratio limit (not a photo to score)"
                    )
                tables = getattr(img, "quantization", None) or None
                img.load()
                # In place: an upright image (nearly all) is not copied; a rotated one is transposed anyway.
                ImageOps.exif_transpose(img, in_place=True)
                return to_rgb(img), tables
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        # Pillow refuses on open, before the size can be read: its message carries the pixel count.
        count = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(count.group(1)):,} px" if count else "the image"
        raise ImageLoadError(_too_many_pixels(name, size, max_pixels)) from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{name}: not an image or unsupported format") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({e})") from e
    except Exception as e:  # noqa: BLE001 - Pillow's decoders meet malformed bytes with struct.error, IndexError...
        raise ImageLoadError(f"{name}: corrupt image ({type(e).__name__}: {e})") from e


def _too_many_pixels(name: str, size: str, max_pixels: int) -> str:
    limit = f"the {max_pixels:,}-pixel limit ({max_pixels / 1e6:.0f} Mpx)"
    return f"{name}: {size} exceeds {limit}: refused as a possible decompression bomb"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
