"""The overview picture of face mode: the whole photo with each face's box, number and P(fake); the face that
decided the image verdict (the most suspicious one) gets a thicker box and a "decides" tag."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

FAKE_RGB = (198, 40, 40)
REAL_RGB = (46, 125, 50)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_faces(img: Image.Image, result: Any, max_side: int = 1280) -> Image.Image:
    """``img`` (RGB) with the boxes of ``result`` (a ``FaceResult``) drawn, downscaled to at most ``max_side``."""
    out = img.convert("RGB").copy()
    k = min(1.0, max_side / max(out.size))
    if k < 1.0:
        out = out.resize((round(out.width * k), round(out.height * k)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(out)
    fsize = max(12, round(max(out.size) / 60))
    font = _font(fsize)
    thr = result.threshold
    for i, f in enumerate(result.faces):
        x, y, w, h = (v * k for v in f.box)
        color = FAKE_RGB if f.score >= thr else REAL_RGB
        decides = i == result.decided
        width = max(2, round(max(out.size) / (250 if decides else 500)))
        draw.rectangle((x, y, x + w, y + h), outline=color, width=width)
        text = f"{i + 1}: {f.score:.2f}" + ("  decides" if decides else "")
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y - th - 6 if y - th - 6 >= 0 else y + h + 2
        draw.rectangle((x, ty, x + tw + 6, ty + th + 6), fill=color)
        draw.text((x + 3, ty + 3 - tb[1]), text, fill=(255, 255, 255), font=font)
    return out
