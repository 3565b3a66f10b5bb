"""Do lfw-faceswap's swaps sit next to their own originals across the split? A perceptual-hash check.

A face swap keeps the target photo's background, hair and framing, so a swap and the original it was made from
would be close in a whole-image perceptual hash. If such pairs straddled train and test, the test would score the
person and the background the model saw in training, not the manipulation. The collection does not record which
original each swap came from, so this compares distances: for every image, the Hamming distance of its 64-bit
phash to the nearest *real* image (any split, and train only). If swaps had their originals in the set, swaps
would be much nearer to some real image than reals are to each other. As a yardstick, the same distance is
measured between originals and a crude swap made here (the central face box of another original pasted in).

    python experiments/lfw_pairs/run.py [--data ../shared/data] [--manifest src/dfdetect/weights/split.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dfdetect.data.datasets import read_manifest
from dfdetect.data.neardup import phash

BOX = (0.35, 0.3, 0.65, 0.75)  # inner face (brows to chin) in LFW's centred framing, as a face swap replaces

THRESHOLDS = (2, 4, 6, 8, 10, 12)


def _pasted_distances(paths: list[Path], n: int, seed: int = 0) -> np.ndarray:
    """Phash distance between an original and itself with another original's central face box pasted in."""
    import imagehash
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for a, b in rng.choice(len(paths), size=(n, 2), replace=True):
        if a == b:
            continue
        with Image.open(paths[a]) as ia, Image.open(paths[b]) as ib:
            target, donor = ia.convert("RGB"), ib.convert("RGB").resize(ia.size)
        w, h = target.size
        box = (int(BOX[0] * w), int(BOX[1] * h), int(BOX[2] * w), int(BOX[3] * h))
        swapped = target.copy()
        swapped.paste(donor.crop(box), box[:2])
        out.append(imagehash.phash(target) - imagehash.phash(swapped))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--manifest", type=Path, default=Path("src/dfdetect/weights/split.csv"))
    ap.add_argument("--source", default="lfw-faceswap")
    args = ap.parse_args()

    items = [it for it in read_manifest(args.manifest) if it.source == args.source]
    hashes = [phash(args.data / it.path) for it in items]
    keep = [i for i, h in enumerate(hashes) if h is not None]
    items = [items[i] for i in keep]
    h = np.array([int(hashes[i], 16) for i in keep], dtype=np.uint64)
    label = np.array([it.label for it in items])
    split = np.array([it.split for it in items])
    dist = np.bitwise_count(h[:, None] ^ h[None, :]).astype(int)
    np.fill_diagonal(dist, 64 + 1)  # an image is not its own neighbour
    real, real_train = label == 0, (label == 0) & (split == "train")

    print(f"{args.source}: {len(items)} images ({int(label.sum())} swaps, {int((label == 0).sum())} originals)")
    print("nearest real image, Hamming distance of 64-bit phash")
    print(f"{'images':<30}{'n':>6}{'median':>8}" + "".join(f"{'<=' + str(t):>7}" for t in THRESHOLDS))
    for name, lab in (("swaps", 1), ("originals", 0)):
        for scope, mask in (("any split", real), ("train", real_train)):
            for part in ("all", "test"):
                m = (label == lab) & ((split == "test") if part == "test" else True)
                nn = dist[np.ix_(np.flatnonzero(m), np.flatnonzero(mask))].min(1)
                counts = "".join(f"{int((nn <= t).sum()):>7}" for t in THRESHOLDS)
                print(f"{f'{name} ({part}) -> {scope}':<30}{int(m.sum()):>6}{np.median(nn):>8.0f}{counts}")

    originals = [args.data / it.path for it in items if it.label == 0]
    pasted = _pasted_distances(originals, 300)
    counts = "".join(f"{int((pasted <= t).sum()):>7}" for t in THRESHOLDS)
    print(f"{'yardstick: pasted face box':<30}{len(pasted):>6}{np.median(pasted):>8.0f}{counts}")


if __name__ == "__main__":
    main()
