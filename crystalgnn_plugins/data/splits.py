"""Reproducible train / validation / test splits, random or by group."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["group_split", "split_indices"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise ValueError(f"fractions must be finite and >= 0, got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fr} (sum {sum(fr)})")
    return fr  # type: ignore[return-value]


def _sizes(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Part sizes summing to ``n``, each within 1 of ``f * n`` (largest remainder).

    A part with fraction 0 is empty; leftover records go to the parts with the
    largest fractional remainders (ties: train, val, test).
    """
    total = sum(fractions)
    exact = [f / total * n for f in fractions]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda k: -(exact[k] - sizes[k]))
    for k in [k for k in order if fractions[k] > 0][: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def split_indices(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Random split of ``range(n)`` into train / val / test indices.

    A fixed-seed permutation (``numpy.random.default_rng(seed)``) is cut into
    parts whose sizes sum to ``n`` and are each within 1 of ``f * n`` (largest
    remainder rounding; a part with fraction 0 is empty). Same ``n``,
    ``fractions`` and ``seed`` give the same split.

    Args:
        n: number of records.
        fractions: ``(train, val, test)``, non-negative, summing to 1.
        seed: random seed.

    Returns:
        ``(train, val, test)`` sorted int64 index arrays, disjoint, covering ``range(n)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    fr = _check_fractions(fractions)
    n_train, n_val, _ = _sizes(int(n), fr)
    perm = np.random.default_rng(seed).permutation(int(n)).astype(np.int64)
    parts = np.split(perm, [n_train, n_train + n_val])
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


def group_split(
    groups: Sequence[Hashable],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Split record indices so that all records of a group land in the same part.

    Use it to keep e.g. all strained / rattled / MD frames of one parent
    structure together, so nothing of a test structure leaks into training.
    Groups are shuffled with ``numpy.random.default_rng(seed)`` (from their
    sorted order, so the record order does not matter) and assigned one at a
    time to the part furthest below its target size, relative to that size;
    a part with fraction 0 stays empty, and every part with a positive
    fraction gets at least one group if there are enough groups. Part sizes
    are therefore only approximately ``fractions`` when groups are large.

    Args:
        groups: group label of each record (e.g. parent material id).
        fractions: ``(train, val, test)``, non-negative, summing to 1.
        seed: random seed.

    Returns:
        ``(train, val, test)`` sorted int64 index arrays into ``groups``,
        disjoint and covering all records.
    """
    fr = _check_fractions(fractions)
    labels = list(groups)
    try:
        unique = sorted(set(labels))
    except TypeError:  # unorderable labels: first-appearance order
        unique = list(dict.fromkeys(labels))
    members: dict[Hashable, list[int]] = {g: [] for g in unique}
    for i, g in enumerate(labels):
        members[g].append(i)

    target = np.array(fr) * len(labels)
    counts = np.zeros(3)
    parts: list[list[int]] = [[], [], []]
    for k in np.random.default_rng(seed).permutation(len(unique)):
        idx = members[unique[k]]
        deficit = np.where(target > 0, (target - counts) / np.where(target > 0, target, 1), -np.inf)
        part = int(np.argmax(deficit))  # ties: train, then val, then test
        parts[part].extend(idx)
        counts[part] += len(idx)
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]
