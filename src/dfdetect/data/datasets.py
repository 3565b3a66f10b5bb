"""Find labelled images, split them reproducibly, and serve them to a DataLoader without dying on bad files.

Layouts read:
  (a) ``ROOT/{real,fake}/**`` (any depth, any supported format);
  (b) the 140k collection: ``real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}`` with
      ``train.csv``/``valid.csv``/``test.csv`` (their ``label`` column says real = 1, so we read
      ``label_str`` and map it to our convention: real = 0, fake = 1).
Without given splits, a stratified seeded split is made and saved as a manifest CSV
(path relative to the data root, label, split), so evaluation reruns on exactly the same files.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from dfdetect.core.errors import DfdetectError
from dfdetect.core.labels import LABELS
from dfdetect.data.io import ImageLoadError, is_image_file, open_image

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Item:
    path: str
    """Path relative to the data root (or absolute)."""
    label: int
    split: str = ""
    source: str = ""
    """Which data folder the image came from (multi-folder manifests); empty for one-folder data."""


class DataLayoutError(DfdetectError, ValueError):
    pass


def _find_140k_base(root: Path) -> Path | None:
    for base in (root, root / "real-vs-fake", root / "real_vs_fake" / "real-vs-fake"):
        if all((base / s).is_dir() for s in SPLITS):
            return base
    return None


def _csv_dir(root: Path, base: Path) -> Path | None:
    for d in (base, base.parent, base.parent.parent, root):
        if (d / "train.csv").is_file():
            return d
    return None


def scan(root: str | Path) -> tuple[list[Item], bool]:
    """Return (items, has_given_splits). Paths in items are relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data folder {root} does not exist")
    base = _find_140k_base(root)
    if base is not None:
        return _scan_140k(root, base), True
    if (root / "real").is_dir() and (root / "fake").is_dir():
        items = []
        for cls, label in LABELS.items():
            for p in sorted((root / cls).rglob("*")):
                if p.is_file() and is_image_file(p):
                    items.append(Item(p.relative_to(root).as_posix(), label))
        if not items:
            raise DataLayoutError(f"{root}/real and {root}/fake hold no images")
        return items, False
    raise DataLayoutError(
        f"{root}: expected ROOT/real and ROOT/fake folders, or the 140k layout "
        "real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}"
    )


def _scan_140k(root: Path, base: Path) -> list[Item]:
    csv_dir = _csv_dir(root, base)
    items: list[Item] = []
    for split in SPLITS:
        csv_path = csv_dir / f"{split}.csv" if csv_dir else None
        if csv_path is not None and csv_path.is_file():
            with open(csv_path, newline="") as f:
                for row in csv.DictReader(f):
                    label_str = (row.get("label_str") or "").strip().lower()
                    if label_str not in LABELS:
                        raise DataLayoutError(f"{csv_path}: label_str {label_str!r} is not real/fake")
                    rel = (base / row["path"]).relative_to(root).as_posix()
                    items.append(Item(rel, LABELS[label_str], split))
        else:
            for cls, label in LABELS.items():
                for p in sorted((base / split / cls).rglob("*")):
                    if p.is_file() and is_image_file(p):
                        items.append(Item(p.relative_to(root).as_posix(), label, split))
    return items


def stratified_split(items: Sequence[Item], val_fraction: float, test_fraction: float, seed: int) -> list[Item]:
    """Split per class with a seeded shuffle: same inputs, same manifest, on any machine."""
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for label in sorted({it.label for it in items}):
        group = sorted((it for it in items if it.label == label), key=lambda it: it.path)
        order = rng.permutation(len(group))
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * val_fraction)
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "valid" if rank < n_test + n_val else "train"
            out.append(Item(group[idx].path, label, split))
    return sorted(out, key=lambda it: (SPLITS.index(it.split), it.path))


def write_manifest(items: Sequence[Item], path: str | Path, root: str | Path) -> str:
    """Write the split manifest; returns its SHA-256 (recorded in metrics and model cards)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        f.write(f"# root: {Path(root).resolve()}\n")
        w = csv.writer(f)
        with_source = any(it.source for it in items)
        w.writerow(["path", "label", "split"] + (["source"] if with_source else []))
        for it in items:
            w.writerow([it.path, it.label, it.split] + ([it.source] if with_source else []))
    return manifest_hash(path)


def manifest_hash(path: str | Path) -> str:
    """Hash of the manifest rows (not the root comment line), so it is the same on every machine."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_manifest(path: str | Path) -> list[Item]:
    with open(path, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return [Item(r["path"], int(r["label"]), r["split"], r.get("source") or "") for r in rows]


def limit_per_class(items: Sequence[Item], n: int | None) -> list[Item]:
    if not n:
        return list(items)
    counts: dict[tuple[str, int], int] = {}
    out = []
    for it in items:
        key = (it.split, it.label)
        if counts.get(key, 0) < n:
            counts[key] = counts.get(key, 0) + 1
            out.append(it)
    return out


TRANSFORM_ERRORS = (RuntimeError, ValueError, OSError, MemoryError)
"""What preprocessing one decoded image can raise because of that image (a 2 x 2 px photo under a 7 x 7 blur
kernel: RuntimeError); other exception types are bugs and propagate."""


class ImageDataset(Dataset):
    """(image tensor, label, index) per item. A file that cannot be decoded or preprocessed yields None (logged
    once per file) and is dropped by ``collate``, which hands its index on for the run's bad-file list."""

    def __init__(self, items: Sequence[Item], root: str | Path, transform: Callable | None = None):
        self.items = list(items)
        self.root = Path(root)
        self.transform = transform
        self._cache: list[np.ndarray | None] | None = None
        self.known_bad: set[int] = set()
        """Indices already logged as bad. DataLoader workers log into their own copy: the trainer adds each
        epoch's bad indices here so that later epochs' workers stay quiet about them."""

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> Path:
        p = Path(self.items[index].path)
        return p if p.is_absolute() else self.root / p

    def _decode(self, index: int) -> Image.Image | None:
        try:
            return open_image(self.path(index))
        except ImageLoadError as e:
            self._skip(index, str(e))
            return None

    def _skip(self, index: int, reason: str) -> None:
        if index not in self.known_bad:
            self.known_bad.add(index)
            log.warning("skipping %s", reason)

    def _decode_array(self, index: int) -> np.ndarray | None:
        img = self._decode(index)
        return None if img is None else np.array(img)  # writable: torchvision warns on read-only arrays

    def preload(self, threads: int = 8) -> None:
        """Decode everything once into memory (uint8): later epochs skip JPEG decoding entirely."""
        with ThreadPoolExecutor(threads) as pool:
            self._cache = list(pool.map(self._decode_array, range(len(self))))

    def __getitem__(self, index: int):
        img = self._decode(index) if self._cache is None else self._cache[index]
        if img is None:
            return None, self.items[index].label, index
        if self.transform is not None:
            try:
                img = self.transform(img)
            except TRANSFORM_ERRORS as e:
                self._skip(index, f"{self.path(index)}: cannot be preprocessed ({type(e).__name__}: {e})")
                return None, self.items[index].label, index
        return img, self.items[index].label, index


def collate(batch):
    """Stack the good samples; return the indices of bad ones so the caller can count and list them."""
    good = [b for b in batch if b[0] is not None]
    bad = [b[2] for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    images = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    index = torch.tensor([b[2] for b in good], dtype=torch.long)
    return images, labels, index, bad


def resolve_items(
    root: str | Path,
    manifest: str | Path | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[Item]:
    """Items with splits: from a manifest, from the data's given splits, or from a new stratified split."""
    if manifest:
        return read_manifest(manifest)
    items, has_splits = scan(root)
    if has_splits:
        return items
    return stratified_split(items, val_fraction, test_fraction, seed)


def manifest_root(path: str | Path) -> Path | None:
    """The data root recorded in a manifest's first line (``# root: PATH``), if it names a path."""
    first = Path(path).read_text().split("\n", 1)[0]
    return Path(first[len("# root: ") :]).resolve() if first.startswith("# root: ") else None


def select_items(
    data: str | Path, split: str = "test", manifest: str | Path | None = None, model: str | Path | None = None
) -> tuple[list[Item], str]:
    """Which images a model is scored on (evaluate, robustness, int8), and a phrase saying why.

    In order: the ``split`` rows of ``manifest`` if given; else the ``split`` rows of the model's own manifest
    (``split.csv`` beside ``model``: a run folder's, or the shipped models'), when it was made from this folder or
    holds it as one of its source folders (same folder name, every file present), so a model is never scored on
    its own training images; else the data's own split (140k layout); else every image, with a warning when some
    share label and file name with the model's training or validation images (a copied subset).
    """
    data = Path(data)
    if manifest:
        return [it for it in read_manifest(manifest) if it.split == split], f"split {split!r} of {manifest}"
    own = Path(model).parent / "split.csv" if model else None
    rows = read_manifest(own) if own is not None and own.is_file() else []
    if rows:
        if manifest_root(own) == data.resolve():  # type: ignore[arg-type]
            return [it for it in rows if it.split == split], f"split {split!r} of the model's manifest {own}"
        prefix = data.name + "/"
        mine = [
            Item(it.path[len(prefix) :], it.label, it.split)
            for it in rows
            if it.source == data.name and it.path.startswith(prefix) and it.split == split
        ]
        if mine and all((data / it.path).is_file() for it in mine):
            return mine, f"split {split!r} of the model's manifest {own} (its folder {data.name})"
    items, has_splits = scan(data)
    if has_splits:
        return [it for it in items if it.split == split], f"given split {split!r}"
    seen = {(it.label, Path(it.path).name) for it in rows if it.split in ("train", "valid")}
    n = sum((it.label, Path(it.path).name) in seen for it in items)
    if n:
        why = (
            f"{n} of the {len(items)} images share label and file name with the model's training or validation "
            f"images ({own}): their scores overstate what the model does on unseen images"
        )
        return items, f"all images; {why}"  # callers print the phrase and store it with the metrics
    return items, "all images"


def make_loader(
    ds: ImageDataset, batch_size: int, shuffle: bool, workers: int, seed: int = 0, sampler: Sampler | None = None
) -> DataLoader:
    """The one DataLoader recipe (training, validation, evaluation, ensembles, head fitting)."""
    # A fresh seeded generator per loader makes the order and the workers' augmentation seeds
    # a function of (seed, epoch) alone, which is what makes --resume exact.
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=g,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
