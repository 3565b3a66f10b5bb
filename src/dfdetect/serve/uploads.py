"""Reading an upload request: the streaming multipart/form-data parser with its size limits, the ``Upload`` it
yields per file, the form fields that come with the files, and file-type sniffing for stored copies.

Each file is held once: its part's chunks are written (through memoryviews, not sliced copies) into one
``io.BytesIO``, whose buffer becomes the file's ``bytes`` when the part ends (``getvalue`` hands it over without a
copy when nothing else refers to it), and that one object is what the hash, the decoder and the image store read:
a file of N bytes costs about 1.1 N while it streams in and N after.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from dfdetect.runtime import pipeline
from dfdetect.serve.settings import BODY_TIMEOUT_S

FILE_FIELDS = ("files", "file")
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16
MAX_CASE_ID_LEN = 200
MAGIC = (
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"GIF8", "gif", "image/gif"),
    (b"BM", "bmp", "image/bmp"),
    (b"II*\x00", "tif", "image/tiff"),
    (b"MM\x00*", "tif", "image/tiff"),
)
EXT_TYPES = {ext: mime for _, ext, mime in MAGIC} | {"webp": "image/webp"}


@dataclass
class Upload:
    """One file part: the client's (sanitised) file name and its bytes."""

    name: str
    data: bytes = b""


class _TooLarge(Exception):
    pass


class _BadForm(Exception):
    pass


def safe_name(raw: str) -> str:
    """The last path component of a client file name, without control characters, at most 255 chars."""
    name = PurePosixPath(raw.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload"


def sniff(data: bytes) -> tuple[str, str]:
    """(file extension, MIME type) from the first bytes; ("bin", "application/octet-stream") when unknown."""
    for magic, ext, mime in MAGIC:
        if data.startswith(magic):
            return ext, mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    return "bin", "application/octet-stream"


class _Collector:
    """python-multipart callbacks that collect file parts (size-checked per chunk) and small text fields."""

    def __init__(self, max_file_bytes: int, max_files: int):
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self.fields: dict[str, str] = {}
        self._headers: list[tuple[bytes, bytes]] = []
        self._hname = b""
        self._hvalue = b""
        self._part: Upload | None = None
        self._buf: io.BytesIO | None = None
        self._field: tuple[str, bytearray] | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._headers, self._part, self._field = [], None, None
        self._buf = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._hname.lower(), self._hvalue))
        self._hname, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        disposition = next((v for k, v in self._headers if k == b"content-disposition"), b"")
        _, opts = parse_options_header(disposition)
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in opts:
            if name not in FILE_FIELDS:
                raise _BadForm(f"upload files under the field name 'files', not {name!r}")
            if len(self.uploads) >= self.max_files:
                raise _TooLarge(f"too many files in one request (at most {self.max_files})")
            self._part = Upload(safe_name(opts[b"filename"].decode("utf-8", "replace")))
            self.uploads.append(self._part)
            self._buf = io.BytesIO()
        else:
            if len(self.fields) >= MAX_FIELDS:
                raise _BadForm("too many form fields")
            self._field = (name, bytearray())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None and self._buf is not None:
            if self._buf.tell() + (end - start) > self.max_file_bytes:
                raise _TooLarge(f"{self._part.name}: file exceeds the {self.max_file_bytes / 1e6:g} MB upload limit")
            self._buf.write(memoryview(data)[start:end])
        elif self._field is not None:
            buf = self._field[1]
            if len(buf) + (end - start) > MAX_FIELD_BYTES:
                raise _TooLarge(f"form field {self._field[0]!r} is too large")
            buf += data[start:end]

    def on_part_end(self) -> None:
        if self._part is not None and self._buf is not None:
            self._part.data = self._buf.getvalue()  # the buffer itself: no copy, as the BytesIO goes now
            self._buf = None
        elif self._field is not None:
            name, buf = self._field
            self.fields[name] = bytes(buf).decode("utf-8", "replace")


async def read_multipart(
    request: Request, max_file_bytes: int, max_files: int, stall_s: float = BODY_TIMEOUT_S
) -> tuple[list[Upload], dict[str, str]]:
    """Stream a multipart/form-data body: file parts under ``files``/``file`` and small text fields.

    Sizes are checked while reading, so an oversize file costs at most ``max_file_bytes`` of memory
    before the request is answered 413; nothing is spooled to disk; a body that sends nothing for ``stall_s`` seconds
    is answered 408. A malformed body (a boundary python-multipart
    refuses, such as one over its 256-byte limit, broken framing, a client that disconnects) is 400.
    """
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(415, "send the images as multipart/form-data (field name 'files')")
    limit_total = max_files * (max_file_bytes + MAX_FIELD_BYTES) + 1024 * 1024
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_total:
        raise HTTPException(413, f"request body too large ({int(length)} bytes; at most {max_files} files)")
    collector = _Collector(max_file_bytes, max_files)
    seen = 0
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
        chunks = request.stream()
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), stall_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body stalled (nothing for {stall_s:g} s)") from None
            seen += len(chunk)
            if seen > limit_total:
                raise _TooLarge("request body too large")
            parser.write(chunk)
        parser.finalize()
    except _TooLarge as e:
        raise HTTPException(413, str(e)) from None
    except _BadForm as e:
        raise HTTPException(422, str(e)) from None
    except HTTPException:
        raise
    except Exception as e:  # python-multipart's parse errors (the boundary too), client disconnects
        raise HTTPException(400, f"invalid multipart body ({type(e).__name__})") from None
    return collector.uploads, collector.fields


# ---- form fields ----------------------------------------------------------------------------------
def parse_threshold(raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        t = float(raw)
    except ValueError:
        raise HTTPException(422, f"threshold must be a number in [0, 1], not {raw[:40]!r}") from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise HTTPException(422, f"threshold must be in [0, 1], not {t}")
    return t


def parse_case_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    case = "".join(ch for ch in raw.strip() if ch.isprintable())
    if len(case) > MAX_CASE_ID_LEN:
        raise HTTPException(422, f"case_id is longer than {MAX_CASE_ID_LEN} characters")
    return case or None


def parse_bool(raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def parse_faces(raw: str | None) -> bool | None:
    """The ``faces`` form field through the pipeline's rule: auto (default) -> None, on -> True, off -> False."""
    try:
        return pipeline.parse_faces(raw or "auto")
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


@dataclass
class UploadForm:
    """The form fields every upload endpoint reads (``faces`` is parsed apart, only where face mode exists)."""

    threshold: float | None = None
    case_id: str | None = None
    record: bool = True
    align: bool = True


def parse_form(form: dict[str, str]) -> UploadForm:
    """Validate the common form fields (422 on a bad one)."""
    return UploadForm(
        threshold=parse_threshold(form.get("threshold")),
        case_id=parse_case_id(form.get("case_id")),
        record=parse_bool(form.get("record"), True),
        align=parse_bool(form.get("align"), True),
    )
