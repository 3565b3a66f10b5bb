"""Make 'photos in the wild' from the aligned examples: a group photo (one real and one fake face pasted
into a 1280x720 scene) and a 3-second video of it with the faces drifting, for the README's face-mode demo.
    python scripts/make_wild_examples.py --out runs/wild
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]


def scene(rng: np.random.Generator, w: int = 1280, h: int = 720) -> Image.Image:
    noise = rng.integers(60, 200, (h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(6))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/wild"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    real = Image.open(ROOT / "examples/real/00362.jpg").convert("RGB").resize((300, 300), Image.Resampling.LANCZOS)
    fake = Image.open(ROOT / "examples/fake/0H9IEK046U.jpg").convert("RGB").resize((300, 300), Image.Resampling.LANCZOS)
    bg = scene(rng)
    group = bg.copy()
    group.paste(real, (150, 200))
    group.paste(fake, (800, 180))
    group.save(a.out / "group_photo.jpg", quality=92)
    import cv2

    writer = cv2.VideoWriter(str(a.out / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720))
    for t in range(30):
        frame = bg.copy()
        frame.paste(fake, (200 + 10 * t, 200))
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()
    print(f"wrote {a.out / 'group_photo.jpg'} and {a.out / 'clip.avi'}")


if __name__ == "__main__":
    main()
