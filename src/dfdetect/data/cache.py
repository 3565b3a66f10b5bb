"""A pre-decoded uint8 image cache on disk: decode + resize every image once, memory-map it afterwards.

``CACHE_DIR/images_{S}.npy`` is an (N, S, S, 3) uint8 array (each image's shorter side resized to S with
the model's interpolation, then centre-cropped to S x S, i.e. ``preprocess.resize_crop`` at S), and
``CACHE_DIR/images_{S}.json`` maps each image (by its absolute path) to its row and says which files were
unreadable. The JSON is written last, so its presence marks a complete cache. Later runs (and every
DDP rank, and every DataLoader worker) open the array with ``mmap_mode="r"``: the OS page cache holds
it once per machine, and epochs cost a memcpy + augmentation instead of a JPEG decode.

Augmentation (rotation, scaling, flips, random crops) runs on the cached S x S image rather than the
original resolution; with S = the model's resize side this is what the un-cached path sees after its
first resize, except for non-square sources, whose long-side margins the cache has already cropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dfdetect.data.datasets import ImageDataset, Item
from dfdetect.data.io import ImageLoadError, open_image
from dfdetect.data.preprocess import resize_crop

log = logging.getLogger(__name__)


def cache_paths(cache_dir: str | Path, size: int) -> tuple[Path, Path]:
    d = Path(cache_dir)
    return d / f"images_{size}.npy", d / f"images_{size}.json"


def _abs(root: Path, item: Item) -> str:
    p = Path(item.path)
    return str((p if p.is_absolute() else root / p).resolve())


def load_index(cache_dir: str | Path, size: int) -> dict | None:
    _, index_path = cache_paths(cache_dir, size)
    if not index_path.is_file():
        return None
    return json.loads(index_path.read_text())


def build_cache(
    items: Sequence[Item],
    root: str | Path,
    cache_dir: str | Path,
    size: int,
    interpolation: str = "bicubic",
    threads: int = 8,
) -> Path:
    """Make (or reuse) the cache for ``items``; returns the .npy path. Reused when it already holds them all."""
    root = Path(root)
    npy, index_path = cache_paths(cache_dir, size)
    wanted = sorted({_abs(root, it) for it in items})
    index = load_index(cache_dir, size)
    if index is not None and npy.is_file() and set(wanted) <= set(index["rows"]):
        log.info("image cache %s: reusing %d images", npy, len(index["rows"]))
        return npy
    if index is not None:
        log.warning("image cache %s lacks some of this run's images; rebuilding it", npy)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(wanted), size, size, 3))
    dc = {"input_size": [3, size, size], "resize": size, "interpolation": interpolation}

    def put(row: int) -> bool:
        try:
            img = open_image(wanted[row])
        except ImageLoadError as e:
            log.warning("skipping %s", e)
            return False
        arr[row] = np.asarray(resize_crop(img.convert("RGB"), dc))
        return True

    log.info("image cache %s: decoding %d images at %d px (once)", npy, len(wanted), size)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        ok = list(pool.map(put, range(len(wanted))))
    arr.flush()  # renaming a file that is still mapped is fine on POSIX
    os.replace(tmp, npy)
    meta = {
        "size": size,
        "interpolation": interpolation,
        "shape": [len(wanted), size, size, 3],
        "rows": {p: i for i, p in enumerate(wanted)},
        "bad": [p for p, good in zip(wanted, ok, strict=True) if not good],
    }
    tmp_json = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
    tmp_json.write_text(json.dumps(meta))
    os.replace(tmp_json, index_path)
    return npy


class CachedImageDataset(ImageDataset):
    """An :class:`ImageDataset` that reads decoded pixels from the memory-mapped cache instead of files."""

    def __init__(self, items: Sequence[Item], root: str | Path, transform, cache_dir: str | Path, size: int):
        super().__init__(items, root, transform)
        index = load_index(cache_dir, size)
        if index is None:
            raise FileNotFoundError(f"no image cache at {cache_paths(cache_dir, size)[1]}; build it first")
        self.npy = cache_paths(cache_dir, size)[0]
        bad = set(index["bad"])
        rows = index["rows"]
        self.rows = []
        for it in self.items:
            p = _abs(self.root, it)
            if p not in rows:
                raise KeyError(f"{p} is not in the image cache {self.npy}")
            self.rows.append(-1 if p in bad else rows[p])
        self._arr: np.ndarray | None = None

    def __getstate__(self):
        # DataLoader workers re-open the map themselves (pickling a memmap would copy the whole array).
        state = dict(self.__dict__)
        state["_arr"] = None
        return state

    def _decode_array(self, index: int) -> np.ndarray | None:
        row = self.rows[index]
        if row < 0:
            return None
        if self._arr is None:
            self._arr = np.load(self.npy, mmap_mode="r")
        return np.array(self._arr[row])  # a private, writable copy of one image

    def _decode(self, index: int):
        return self._decode_array(index)
