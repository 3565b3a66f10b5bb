"""One split manifest over several data folders, stratified by folder and label, near-duplicates kept together.

Behind ``dfdetect split``. Every folder is ``ROOT/{real,fake}/**``; the manifest's paths are relative to the
folders' common parent (``faces140k-more/fake/x.jpg``), so one ``--data PARENT --manifest split.csv`` trains or
scores on all of them, and the ``source`` column (the folder) lets ``evaluate`` report each folder on its own.

Near-duplicates (perceptual hash within ``max_distance`` bits, closed transitively) form groups, and a group is
assigned as a whole: it never straddles train and test. ``keep`` pins the split of images an earlier manifest
assigned (so a model trained on that manifest's train split can be fine-tuned on the new one without seeing a
test image); a group holding a pinned image follows its earliest pinned split (train before valid before test).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dfdetect.data.datasets import SPLITS, DataLayoutError, Item, manifest_hash, read_manifest, scan
from dfdetect.data.neardup import group_ids, near_duplicate_pairs, phash

log = logging.getLogger(__name__)


@dataclass
class SplitReport:
    """What ``make_split`` did: counts per folder/label/split and the near-duplicate grouping."""

    items: list[Item]
    groups: list[int]
    n_groups: int
    n_multi_groups: int
    n_grouped_images: int
    n_cross_folder_groups: int
    n_pinned: int
    n_unhashed: int
    counts: dict[str, dict[str, int]]


def collect(folders: Sequence[str | Path]) -> tuple[Path, list[Item]]:
    """Items of several ``ROOT/{real,fake}`` folders, paths relative to their common parent, source = folder."""
    folders = [Path(f) for f in folders]
    names = [f.resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise DataLayoutError(f"data folders must have distinct names (they become the source column): {names}")
    parents = {f.resolve().parent for f in folders}
    if len(parents) != 1:
        raise DataLayoutError("data folders must sit side by side in one parent folder (the manifest's root)")
    items: list[Item] = []
    for folder, name in zip(folders, names):
        found, has_splits = scan(folder)
        if has_splits:
            raise DataLayoutError(f"{folder} has its own splits (140k layout); split needs ROOT/{{real,fake}} folders")
        items += [Item(f"{name}/{it.path}", it.label, "", name) for it in found]
    return parents.pop(), items


def assign_splits(
    items: Sequence[Item],
    groups: Sequence[int],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    pinned: dict[str, str] | None = None,
) -> list[Item]:
    """Assign whole groups to splits, per (source, label) stratum, seeded; pinned paths keep their split."""
    pinned = pinned or {}
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    split_of: dict[int, str] = {}
    for g, idx in members.items():
        fixed = [pinned[items[i].path] for i in idx if items[i].path in pinned]
        if fixed:
            split_of[g] = min(fixed, key=SPLITS.index)
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, int], list[int]] = defaultdict(list)
    for g in sorted(members):
        rep = items[g]  # the group's first item stands for its stratum
        strata[(rep.source, rep.label)].append(g)
    for key in sorted(strata):
        gs = strata[key]
        total = sum(len(members[g]) for g in gs)
        want = {"test": round(total * test_fraction), "valid": round(total * val_fraction)}
        have = Counter()
        for g in gs:
            if g in split_of:
                have[split_of[g]] += len(members[g])
        free = [gs[k] for k in rng.permutation(len(gs)) if gs[k] not in split_of]
        for g in free:
            split = next((s for s in ("test", "valid") if have[s] < want[s]), "train")
            split_of[g] = split
            have[split] += len(members[g])
    out = [replace(it, split=split_of[groups[i]]) for i, it in enumerate(items)]
    return sorted(out, key=lambda it: (SPLITS.index(it.split), it.path))


def make_split(
    folders: Sequence[str | Path],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    max_distance: int = 4,
    keep: str | Path | None = None,
    workers: int = 4,
    progress: bool = True,
) -> tuple[Path, SplitReport]:
    """Collect, hash, group and split; returns the common root and a report (items carry their split)."""
    from tqdm.auto import tqdm

    root, items = collect(folders)
    pinned: dict[str, str] = {}
    if keep:
        keep = Path(keep)
        from dfdetect.data.datasets import manifest_root

        kept_root = manifest_root(keep)
        prefix = kept_root.name if kept_root is not None else ""
        known = {it.path for it in items}
        for it in read_manifest(keep):
            # an old one-folder manifest's paths are relative to that folder; a multi-folder one's to the parent
            path = it.path if it.path in known else f"{prefix}/{it.path}"
            if path in known:
                pinned[path] = it.split
        if not pinned:
            raise DataLayoutError(f"no image of {keep} is in the given folders")
    paths = [root / it.path for it in items]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        hashes = list(tqdm(pool.map(phash, paths), total=len(paths), desc="hash", unit="img", disable=not progress))
    unhashed = [i for i, h in enumerate(hashes) if h is None]
    for i in unhashed:
        log.warning("cannot decode %s: it gets a group of its own", paths[i])
    ok = [i for i, h in enumerate(hashes) if h is not None]
    pairs = [(ok[a], ok[b], d) for a, b, d in near_duplicate_pairs([hashes[i] for i in ok], max_distance)]
    groups = group_ids(len(items), pairs)
    assigned = assign_splits(items, groups, val_fraction, test_fraction, seed, pinned)
    # keep each item's group id aligned with the sorted output
    group_of = {it.path: groups[i] for i, it in enumerate(items)}
    size = Counter(groups)
    multi = {g for g, n in size.items() if n > 1}
    sources: dict[int, set[str]] = defaultdict(set)
    for i, g in enumerate(groups):
        if g in multi:
            sources[g].add(items[i].source)
    cross = {g for g, s in sources.items() if len(s) > 1}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for it in assigned:
        counts[f"{it.source}/{'fake' if it.label else 'real'}"][it.split] += 1
    report = SplitReport(
        items=assigned,
        groups=[group_of[it.path] for it in assigned],
        n_groups=len(size),
        n_multi_groups=len(multi),
        n_grouped_images=sum(size[g] for g in multi),
        n_cross_folder_groups=len(cross),
        n_pinned=len(pinned),
        n_unhashed=len(unhashed),
        counts=dict(counts),
    )
    return root, report


def write_split_manifest(report: SplitReport, path: str | Path, root: str | Path) -> str:
    """Write path,label,split,source,group rows under a ``# root:`` line; returns the manifest hash."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Relative to the manifest when possible, so a clone with the data beside it resolves the same root.
    try:
        shown = os.path.relpath(Path(root).resolve(), Path.cwd())
    except ValueError:  # another drive on Windows
        shown = str(Path(root).resolve())
    with open(path, "w", newline="") as f:
        f.write(f"# root: {shown}\n")
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "source", "group"])
        for it, g in zip(report.items, report.groups):
            w.writerow([it.path, it.label, it.split, it.source, g])
    return manifest_hash(path)


def subsample(items: Sequence[Item], n: int, split: str = "train", seed: int = 0) -> list[Item]:
    """Keep ``n`` of the ``split`` rows, stratified by (source, label) in proportion; other splits untouched.

    Nested by construction for a fixed seed (each stratum is one seeded permutation, cut at its share), so a
    learning curve's smaller training sets are subsets of its larger ones.
    """
    pool = [it for it in items if it.split == split]
    if not 0 < n <= len(pool):
        raise ValueError(f"cannot keep {n} of the {len(pool)} {split} images")
    strata: dict[tuple[str, int], list[Item]] = defaultdict(list)
    for it in sorted(pool, key=lambda it: it.path):
        strata[(it.source, it.label)].append(it)
    keys = sorted(strata)
    exact = {k: n * len(strata[k]) / len(pool) for k in keys}
    take = {k: int(exact[k]) for k in keys}
    # largest remainders get the leftover images, so the total is exactly n
    for k in sorted(keys, key=lambda k: exact[k] - take[k], reverse=True)[: n - sum(take.values())]:
        take[k] += 1
    kept: set[str] = set()
    for k in keys:
        order = np.random.default_rng([seed, len(strata[k])]).permutation(len(strata[k]))
        kept.update(strata[k][i].path for i in order[: take[k]])
    return [it for it in items if it.split != split or it.path in kept]
