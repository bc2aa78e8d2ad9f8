"""Random and group splits are reproducible, disjoint and complete."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crystalgnn_plugins.data import group_split, split_indices


def _check_partition(parts, n):
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    joined = np.concatenate(parts)
    assert len(joined) == n and set(joined.tolist()) == set(range(n))


def test_split_indices_sizes_and_reproducibility():
    train, val, test = split_indices(3787)
    _check_partition((train, val, test), 3787)
    assert (len(train), len(val), len(test)) == (3029, 379, 379)
    again = split_indices(3787, (0.8, 0.1, 0.1), seed=0)
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = split_indices(3787, seed=1)
    assert not np.array_equal(other[2], test)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 500),
    weights=st.tuples(*(st.integers(0, 10),) * 3).filter(lambda w: sum(w) > 0),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_indices_is_a_partition(n, weights, seed):
    fractions = tuple(w / sum(weights) for w in weights)
    parts = split_indices(n, fractions, seed)
    _check_partition(parts, n)
    for part, f, w in zip(parts, fractions, weights, strict=True):
        assert abs(len(part) - f * n) < 1
        if w == 0:
            assert len(part) == 0


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.8, float("nan"), 0.2)]
)
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, fractions)
    with pytest.raises(ValueError, match="fractions"):
        group_split(["a"] * 10, fractions)


def test_bad_n():
    with pytest.raises(ValueError):
        split_indices(-1)


def test_group_split_keeps_groups_together():
    rng = np.random.default_rng(0)
    groups = [f"mp-{k}" for k in rng.integers(0, 60, size=600)]
    parts = group_split(groups, (0.8, 0.1, 0.1), seed=3)
    _check_partition(parts, len(groups))
    part_groups = [{groups[i] for i in p} for p in parts]
    assert not part_groups[0] & part_groups[1]
    assert not part_groups[0] & part_groups[2]
    assert not part_groups[1] & part_groups[2]
    sizes = np.array([len(p) for p in parts]) / len(groups)
    np.testing.assert_allclose(sizes, (0.8, 0.1, 0.1), atol=0.05)


def test_group_split_reproducible_and_independent_of_record_order():
    groups = [f"g{k % 23}" for k in range(200)]
    a = group_split(groups, seed=5)
    b = group_split(groups, seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # shuffling the records moves indices but not the group assignment
    order = np.random.default_rng(1).permutation(len(groups))
    shuffled = [groups[i] for i in order]
    c = group_split(shuffled, seed=5)
    for x, y in zip(a, c, strict=True):
        assert {groups[i] for i in x} == {shuffled[i] for i in y}
    assert any(
        {groups[i] for i in x} != {groups[i] for i in y}
        for x, y in zip(a, group_split(groups, seed=6), strict=True)
    )


def test_group_split_small_and_degenerate_cases():
    train, val, test = group_split(["a", "b", "c"], (0.8, 0.1, 0.1))
    assert len(train) == len(val) == len(test) == 1  # every positive part gets a group
    train, val, test = group_split(["a", "a", "b"], (0.5, 0.0, 0.5))
    assert len(val) == 0 and len(train) + len(test) == 3
    assert [len(p) for p in group_split([], (0.8, 0.1, 0.1))] == [0, 0, 0]
    parts = group_split([1, 1, 2, 3, 3, 3], (1.0, 0.0, 0.0))
    np.testing.assert_array_equal(parts[0], np.arange(6))
