"""Near-duplicate images: 64-bit perceptual hashes, pairs within a Hamming distance, and groups of them.

The 140k collection's StyleGAN fakes hold different files of visibly the same synthetic person; a split that
keeps such twins apart scores memory, not detection. ``near_duplicate_pairs`` finds candidate pairs with the
pigeonhole trick (two hashes within k bits agree exactly on at least one of k + 1 bit bands), so it scales
past brute force; ``group_ids`` closes the pairs transitively (union-find) into groups a split keeps whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def phash(path: str | Path) -> str | None:
    """Perceptual hash (imagehash ``phash``, 64-bit hex) of an image file, or None when it cannot be decoded."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return str(imagehash.phash(img.convert("RGB")))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(-1)


def near_duplicate_pairs(hashes: Sequence[str], max_distance: int = 4) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and Hamming(phash_i, phash_j) <= max_distance (64-bit hex hashes)."""
    h = np.array([int(x, 16) for x in hashes], dtype=np.uint64)
    n = len(h)
    if n < 2:
        return []
    k = max(0, int(max_distance))
    n_bands = min(k + 1, 64)
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    found: dict[tuple[int, int], int] = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        band = (h >> np.uint64(lo)) & mask
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        cuts = np.flatnonzero(np.diff(sorted_band)) + 1
        for group in np.split(order, cuts):
            if len(group) < 2:
                continue
            g = np.sort(group)
            d = _popcount(h[g][:, None] ^ h[g][None, :])
            ii, jj = np.nonzero(np.triu(d <= k, 1))
            for a, b in zip(ii, jj):
                found[(int(g[a]), int(g[b]))] = int(d[a, b])
    return sorted((i, j, d) for (i, j), d in found.items())


def group_ids(n: int, pairs: Sequence[tuple[int, int, int]]) -> list[int]:
    """Connected components of the near-duplicate graph: item i's group is the smallest index in its component."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
