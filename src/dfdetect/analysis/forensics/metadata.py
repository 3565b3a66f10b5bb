"""Metadata analysis: EXIF (IFD0, Exif, GPS, IFD1 thumbnail), XMP, ICC and PNG text, read with Pillow.

Everything here comes from the file and is attacker-controlled: values are truncated, decoded leniently and
must be HTML-escaped by whoever displays them. Flags are *indicators*: most platforms strip metadata, and any
field can be written by anyone, so neither a flag nor its absence proves anything.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image

log = logging.getLogger(__name__)

MAX_VALUE_CHARS = 300

EDITING_SOFTWARE = (
    "photoshop", "lightroom", "gimp", "affinity", "pixelmator", "paint.net", "snapseed", "facetune", "canva",
    "picsart", "photopea", "krita", "capture one", "darktable", "rawtherapee", "luminar", "meitu", "faceapp",
    "photoscape", "fotor", "polarr", "vsco", "airbrush", "remini", "photodirector", "corel", "acdsee", "inkscape",
)  # fmt: skip
AI_GENERATORS = (
    "stable diffusion", "stablediffusion", "midjourney", "dall-e", "dall·e", "dalle", "firefly", "novelai",
    "comfyui", "automatic1111", "invokeai", "leonardo", "imagen", "flux", "stylegan", "diffusers", "generative",
)  # fmt: skip
PNG_GENERATOR_KEYS = ("parameters", "prompt", "workflow", "negative_prompt", "sd-metadata", "invokeai_metadata")
XMP_FIELDS = ("CreatorTool", "ModifyDate", "CreateDate", "MetadataDate", "softwareAgent", "DigitalSourceType")
TIMESTAMP_TOLERANCE_S = 60
THUMB_DIFF_LIMIT = 0.12
"""Mean absolute difference (0..1 grey scale) between the EXIF thumbnail and the downscaled image above
which the thumbnail is flagged (re-encoding and resampling alone stay well below ~0.05)."""


@dataclass
class Flag:
    """One finding: a short code, a severity (info | weak | notable) and a human sentence."""

    code: str
    severity: str
    message: str


@dataclass
class Metadata:
    format: str | None = None
    mode: str | None = None
    width: int = 0
    height: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    """Display name -> value (strings, truncated): the table in the report."""
    has_exif: bool = False
    has_gps: bool = False
    has_xmp: bool = False
    icc_description: str | None = None
    thumbnail_size: tuple[int, int] | None = None
    thumbnail_diff: float | None = None
    flags: list[Flag] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    """Any EXIF value -> printable, bounded string (bytes decoded leniently, NULs stripped)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, tuple):
        value = ", ".join(_text(v) for v in value)
    s = str(value).replace("\x00", "").strip()
    s = "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in s)
    return s if len(s) <= MAX_VALUE_CHARS else s[: MAX_VALUE_CHARS - 1] + "…"


def parse_exif_time(value: str | None) -> datetime | None:
    """'YYYY:MM:DD HH:MM:SS' (EXIF) -> datetime; None when absent or malformed."""
    if not value:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value.strip()[:19], fmt)
        except ValueError:
            continue
    return None


def thumbnail_difference(image: Image.Image, thumb: Image.Image) -> float:
    """Mean absolute grey difference (0..1) between a thumbnail and the image downscaled to the same size."""
    t = thumb.convert("L")
    small = image.convert("L").resize(t.size, Image.Resampling.BOX)
    return float(np.abs(np.asarray(small, np.float32) - np.asarray(t, np.float32)).mean() / 255.0)


def _exif_thumbnail(img: Image.Image, ifd1: dict[int, Any]) -> Image.Image | None:
    """The JPEG thumbnail that IFD1 points to (offsets from Pillow's parse, relative to the TIFF header)."""
    raw = img.info.get("exif")
    off, length = ifd1.get(0x0201), ifd1.get(0x0202)
    if not raw or not isinstance(off, int) or not isinstance(length, int) or length <= 0:
        return None
    base = 6 if raw[:6] == b"Exif\x00\x00" else 0
    data = raw[base + off : base + off + length]
    try:
        with Image.open(io.BytesIO(data)) as t:
            t.load()
            return t.copy()
    except (OSError, SyntaxError, ValueError) as e:
        log.debug("unreadable EXIF thumbnail: %s", e)
        return None


def _xmp_fields(xmp: bytes | str) -> dict[str, str]:
    """A few well-known XMP properties (attribute or element form). Not a general XMP parser: it only pulls
    out the tool and date fields that matter here, without expanding entities."""
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    text = text[:200_000]
    out: dict[str, str] = {}
    for name in XMP_FIELDS:
        m = re.search(rf'\b[\w-]+:{name}\s*=\s*"([^"]*)"', text) or re.search(
            rf"<[\w-]+:{name}>([^<]*)</[\w-]+:{name}>", text
        )
        if m:
            out[name] = _text(m.group(1))
    return out


def read_metadata(path: str | Path) -> Metadata:
    """Read metadata from the original file (not a decoded copy) and flag the usual inconsistencies."""
    md = Metadata()
    with Image.open(path) as img:
        md.format, md.mode = img.format, img.mode
        md.width, md.height = img.size
        exif = img.getexif()
        ifd0 = {k: v for k, v in exif.items() if k not in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)}
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        ifd1 = exif.get_ifd(ExifTags.IFD.IFD1)
        md.has_exif = bool(ifd0 or sub or gps)
        md.has_gps = bool(gps)
        fields: dict[str, str] = {}
        for tags in (ifd0, sub):
            for k, v in tags.items():
                name = ExifTags.TAGS.get(k)
                if name and name not in ("MakerNote", "UserComment", "PrintImageMatching") and k < 0xC000:
                    fields[name] = _text(v)
        if isinstance(sub.get(0x9286), bytes):  # UserComment: 8-byte charset prefix
            fields["UserComment"] = _text(sub[0x9286][8:])
        if gps:
            fields["GPS"] = "present (location data)"
        xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
        if xmp:
            md.has_xmp = True
            fields.update({f"XMP {k}": v for k, v in _xmp_fields(xmp).items()})
        icc = img.info.get("icc_profile")
        if icc:
            md.icc_description = _icc_description(icc)
            fields["ICC profile"] = md.icc_description or f"{len(icc)} bytes"
        png_text = (
            {str(k): _text(v) for k, v in (getattr(img, "text", None) or {}).items()} if img.format == "PNG" else {}
        )
        for k, v in png_text.items():
            fields[f"PNG {_text(k)}"] = v
        if ifd1:
            thumb = _exif_thumbnail(img, ifd1)
            if thumb is not None:
                md.thumbnail_size = thumb.size
                fields["EXIF thumbnail"] = f"{thumb.size[0]}x{thumb.size[1]}"
                img.load()
                md.thumbnail_diff = round(thumbnail_difference(img, thumb), 4)
        md.fields = fields
    md.flags = _flags(md, fields, png_text, Path(path))
    return md


def _icc_description(icc: bytes) -> str | None:
    try:
        from PIL import ImageCms

        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile
        return _text(prof.profile_description or "") or None
    except (ImportError, OSError, ValueError, TypeError) as e:
        log.debug("unreadable ICC profile: %s", e)
        return None


def _flags(md: Metadata, f: dict[str, str], png_text: dict[str, str], path: Path) -> list[Flag]:
    flags: list[Flag] = []
    tools = [f.get(k, "") for k in ("Software", "ProcessingSoftware", "HostComputer", "XMP CreatorTool")]
    tools += [f.get("XMP softwareAgent", "")]
    tool_text = " | ".join(t for t in tools if t)
    low = tool_text.lower()
    if any(s in low for s in EDITING_SOFTWARE):
        flags.append(Flag("editing_software", "notable", f"editing software named in metadata: {tool_text}"))
    elif tool_text:
        flags.append(Flag("software_tag", "info", f"software tag: {tool_text}"))
    gen_keys = [k for k in png_text if k.lower() in PNG_GENERATOR_KEYS]
    if (
        any(s in low for s in AI_GENERATORS)
        or gen_keys
        or "trainedalgorithmicmedia" in f.get("XMP DigitalSourceType", "").lower().replace(" ", "")
    ):
        what = tool_text or ", ".join(gen_keys) or f.get("XMP DigitalSourceType", "")
        flags.append(Flag("generator_metadata", "notable", f"metadata written by an image generator: {what}"))
    if not md.has_exif:
        flags.append(
            Flag("no_exif", "weak", "no EXIF at all (common: messaging apps, social media and generators strip it)")
        )
    elif not (f.get("Make") or f.get("Model")):
        flags.append(Flag("missing_camera_data", "weak", "EXIF present but no camera make/model"))
    t_mod, t_orig = parse_exif_time(f.get("DateTime")), parse_exif_time(f.get("DateTimeOriginal"))
    t_dig = parse_exif_time(f.get("DateTimeDigitized"))
    for name in ("DateTime", "DateTimeOriginal", "DateTimeDigitized"):
        if f.get(name) and parse_exif_time(f[name]) is None:
            flags.append(Flag("bad_timestamp", "weak", f"{name} is not a valid EXIF time: {f[name]}"))
    if t_mod and t_orig and abs((t_mod - t_orig).total_seconds()) > TIMESTAMP_TOLERANCE_S:
        flags.append(
            Flag(
                "timestamp_mismatch",
                "notable",
                f"file modified ({f['DateTime']}) long after capture ({f['DateTimeOriginal']}): saved again later",
            )
        )
    if t_dig and t_orig and abs((t_dig - t_orig).total_seconds()) > TIMESTAMP_TOLERANCE_S:
        flags.append(Flag("timestamp_mismatch", "notable", "DateTimeDigitized differs from DateTimeOriginal"))
    if md.thumbnail_diff is not None and md.thumbnail_diff > THUMB_DIFF_LIMIT:
        flags.append(
            Flag(
                "thumbnail_mismatch",
                "notable",
                f"EXIF thumbnail differs from the image (mean abs diff {md.thumbnail_diff:.3f}): "
                "the picture may have been changed after the thumbnail was written",
            )
        )
    if md.has_gps:
        flags.append(Flag("gps_present", "info", "GPS location present (privacy: it stays in shared copies)"))
    ext = path.suffix.lower().lstrip(".")
    fmt = (md.format or "").lower()
    if ext and fmt and ext not in {fmt, "jpg" if fmt == "jpeg" else fmt, "tif" if fmt == "tiff" else fmt}:
        flags.append(Flag("extension_mismatch", "weak", f"file extension .{ext} but content is {md.format}"))
    return flags
