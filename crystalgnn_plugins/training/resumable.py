"""A training data loader that resumes in the middle of an epoch.

Lightning saves a data loader's ``state_dict()`` in its checkpoints and restores it
with ``load_state_dict()`` (the ``_Stateful`` protocol). :class:`ResumableLoader`
keeps the epoch and the number of batches it has handed out; its
:class:`EpochShuffle` sampler draws one fixed permutation per (seed, epoch), so a
run resumed from a mid-epoch checkpoint continues the same epoch with exactly the
batches it had not trained yet, instead of starting the epoch again (Lightning does
not prefetch from a loader whose length it knows, so the count is the number of
batches trained). :func:`settings_changes` says which settings keep a run from
resuming.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch


class EpochShuffle(torch.utils.data.Sampler[int]):
    """Indices ``0..n-1`` in a random order that depends only on ``seed`` and the
    epoch (``set_epoch``, called by Lightning); after :meth:`skip`, the next pass
    over that epoch leaves out its first indices."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = int(n), int(seed)
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, epoch: int, count: int) -> None:
        """The next pass over ``epoch`` starts at its ``count``-th index."""
        self._skip = (int(epoch), int(count))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = min(self._skip[1], self.n)
        self._skip = None
        return iter(order[start:])


class ResumableLoader(torch.utils.data.DataLoader):
    """A shuffling ``DataLoader`` (via :class:`EpochShuffle`) with ``state_dict`` /
    ``load_state_dict``: the epoch and the batches handed out so far."""

    def __init__(self, dataset: Any, batch_size: int, seed: int = 0, **kwargs: Any):
        self.shuffle_sampler = EpochShuffle(len(dataset), seed)
        super().__init__(dataset, batch_size=batch_size, sampler=self.shuffle_sampler, **kwargs)
        self.batches_done = 0

    def __iter__(self):
        sampler = self.shuffle_sampler
        skipped = sampler._skip
        done = skipped[1] // self.batch_size if skipped is not None and skipped[0] == sampler.epoch else 0
        self.batches_done = done
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.shuffle_sampler.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.shuffle_sampler.skip(state["epoch"], state["batches_done"] * self.batch_size)


_UNSET = object()  # a setting one of the two runs does not have


def _flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(settings, dict):
        flat: dict[str, Any] = {}
        for key, value in settings.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: settings}
    return {prefix[:-1]: settings}


def _short(value: Any, width: int = 60) -> str:
    text = "unset" if value is _UNSET else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def settings_changes(stored: dict[str, Any], new: dict[str, Any], limit: int = 8) -> str:
    """The settings (dotted names for nested ones) whose values differ between the
    ``stored`` settings of a run's checkpoints and the ``new`` ones, e.g.
    ``"lr 0.001 -> 0.01"``; ``""`` if none differ."""
    old = _flatten(json.loads(json.dumps(stored, sort_keys=True, default=str)))
    now = _flatten(json.loads(json.dumps(new, sort_keys=True, default=str)))
    changed = [
        f"{key} {_short(old.get(key, _UNSET))} -> {_short(now.get(key, _UNSET))}"
        for key in sorted(old.keys() | now.keys())
        if old.get(key, _UNSET) != now.get(key, _UNSET)
    ]
    if len(changed) > limit:
        changed = changed[:limit] + [f"and {len(changed) - limit} more"]
    return "; ".join(changed)
