"""Face detectors side by side on the alignment check's images: OpenCV Haar (upright, what `find_faces` runs
before alignment's rotated search) vs facenet-pytorch's MTCNN (weights inside its wheel).

facenet-pytorch 2.6 pins torch<2.3, numpy<2 and Pillow<10.3, so it cannot be installed beside dfdetect's pins;
unpack its wheel instead and point --facenet-dir at it (its package __init__ is bypassed: it imports requests):

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fn && mkdir /tmp/fnpkg && \
        python -c "import zipfile,glob; zipfile.ZipFile(glob.glob('/tmp/fn/*.whl')[0]).extractall('/tmp/fnpkg')"
    python experiments/faces_alignment/faces_detector_compare.py --facenet-dir /tmp/fnpkg
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image

from dfdetect.data.datasets import select_items
from dfdetect.faces.detect import find_faces

SPLIT = Path(__file__).resolve().parents[2] / "src" / "dfdetect" / "weights" / "split-v1.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--facenet-dir", type=Path, required=True, help="Folder holding the unpacked facenet_pytorch.")
    a = ap.parse_args()
    pkg = types.ModuleType("facenet_pytorch")
    pkg.__path__ = [str(a.facenet_dir / "facenet_pytorch")]
    sys.modules["facenet_pytorch"] = pkg
    from facenet_pytorch.models.mtcnn import MTCNN

    items, _ = select_items(a.data, "test", SPLIT, None)
    files = [a.data / it.path for it in items if it.label == 0][:15]
    files += [a.data / it.path for it in items if it.label == 1][:15]
    mtcnn = MTCNN(keep_all=True, device="cpu")
    for mag in (0, 15, 20):
        found, extra, secs = {"haar": 0, "mtcnn": 0}, {"haar": 0, "mtcnn": 0}, {"haar": 0.0, "mtcnn": 0.0}
        for i, p in enumerate(files):
            ang = mag if i % 2 == 0 else -mag
            noise = np.random.default_rng(i).normal(128, 20, (768, 1024, 3))
            c = Image.fromarray(noise.clip(0, 255).astype(np.uint8))
            c.paste(Image.open(p).convert("RGB").resize((300, 300), Image.Resampling.LANCZOS), (400, 200))
            if ang:
                c = c.rotate(ang, resample=Image.Resampling.BICUBIC, center=(550, 350))
            t0 = time.perf_counter()
            n = len(find_faces(c))
            secs["haar"] += time.perf_counter() - t0
            found["haar"] += n >= 1
            extra["haar"] += max(0, n - 1)
            t0 = time.perf_counter()
            boxes, prob = mtcnn.detect(c)
            secs["mtcnn"] += time.perf_counter() - t0
            n = 0 if boxes is None else int((prob > 0.9).sum())
            found["mtcnn"] += n >= 1
            extra["mtcnn"] += max(0, n - 1)
        k = len(files)
        print(
            f"tilt {mag:2d}: found Haar {found['haar']}/{k}, MTCNN {found['mtcnn']}/{k}; extra boxes Haar "
            f"{extra['haar']}, MTCNN {extra['mtcnn']}; ms/image Haar {1000 * secs['haar'] / k:.0f}, "
            f"MTCNN {1000 * secs['mtcnn'] / k:.0f}"
        )


if __name__ == "__main__":
    main()
