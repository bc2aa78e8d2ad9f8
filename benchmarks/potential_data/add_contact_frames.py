#!/usr/bin/env python
"""Add teacher-labelled short-contact frames: one pair of atoms pushed together.

A rattle of up to 0.3 Å occasionally brings two atoms to half their bond length, and
the teacher then puts the frame several eV/atom above its parent. Such frames are
rare in ``make_dataset.py``'s data (a pair closer than 0.6 of the covalent bond
length in about one frame in 700), yet on the held-out frames five of them made 11 %
of the default potential's energy MAE: the student is far too soft there. This
script labels that range on purpose:

for every training-split parent of the chosen sources (its ``kind=parent`` row;
validation and test parents are never touched), seeded per parent, the cell is
repeated to at least 4 atoms, every atom is rattled by ``--rattle`` Å, a random atom
and its nearest neighbour (not its own image) are moved towards each other along their
bond until they are ``f`` times their covalent bond length apart, ``f`` uniform in
``--ratio`` (default 0.45-0.8), and the teacher labels the frame (``kind=contact``).
Frames with a pair closer than 0.6 Å or a force above ``--max-force`` are skipped,
as in ``make_dataset.py``. ``--per-parent k`` makes k such frames per parent;
``--resume`` skips parents that already have them; ``--shard i/n`` splits the parents
between parallel runs.

Usage::

    python benchmarks/potential_data/add_contact_frames.py --db DIR/frames.db \\
        --sources perov5,prototype,element,carbon24 [--per-parent 1] [--shard 0/2] [--resume]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pd_structures as S  # noqa: E402
from ase.data import covalent_radii  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402
from make_dataset import (  # noqa: E402
    TEACHER_NAME,
    _bad_label,
    log,
    log_chunk,
    parse_shard,
    training_parents,
    write_rows,
)

KIND = "contact"


def contact_frame(atoms, parent_id: str, seed: int, index: int, ratio: tuple[float, float], rattle: float):
    """The parent (repeated to >= 4 atoms), rattled, with one nearest-neighbour pair
    pushed to ``f`` x its covalent bond length, ``f`` uniform in ``ratio``; ``None`` if no
    atom has a neighbour within 5 Å. Returns ``(Atoms, info)``."""
    rng = S.parent_rng(seed, parent_id, f"contact{index}")
    frame = S.repeat_to(S._plain(atoms), 4)
    frame.positions += rng.normal(scale=rattle, size=frame.positions.shape)
    i, j, d, vec = neighbor_list("ijdD", frame, 5.0)
    other = i != j
    i, j, d, vec = i[other], j[other], d[other], vec[other]
    if not len(i):
        return None
    a = int(rng.choice(np.unique(i)))
    edges = np.flatnonzero(i == a)
    e = edges[np.argmin(d[edges])]
    b = int(j[e])
    bond = covalent_radii[frame.numbers[a]] + covalent_radii[frame.numbers[b]]
    f = float(rng.uniform(*ratio))
    target = min(f * bond, 0.9 * d[e])  # an already closer pair still moves in
    shift = 0.5 * (d[e] - target) * vec[e] / d[e]
    frame.positions[a] += shift
    frame.positions[b] -= shift
    return frame, {"contact_ratio": float(target / bond), "contact_pair": f"{frame.get_chemical_symbols()[a]}-"
                                                                      f"{frame.get_chemical_symbols()[b]}"}


def parents_to_do(db_path: Path, sources: list[str], resume: bool, max_parents: int | None) -> list:
    """``(parent_id, source, Atoms)`` of the training parents without contact frames."""
    from ase.db import connect

    done = {r.parent_id for r in connect(db_path).select(kind=KIND, columns=["key_value_pairs"])} if resume else set()
    return training_parents(db_path, sources, max_parents, done)


def _ratio(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.split("-"))
    if not 0 < lo < hi < 1:
        raise argparse.ArgumentTypeError(f"need 0 < lo < hi < 1, got {text!r}")
    return lo, hi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="frames.db of make_dataset.py (frames are added to it)")
    ap.add_argument("--sources", default="perov5,prototype,element,carbon24", help="comma separated")
    ap.add_argument("--max-parents", type=int, default=None, help="per source")
    ap.add_argument("--per-parent", type=int, default=1, help="contact frames per parent")
    ap.add_argument("--ratio", type=_ratio, default=(0.45, 0.8),
                    help="lo-hi: the pushed pair ends at this fraction of its covalent bond length")
    ap.add_argument("--rattle", type=float, default=0.05, help="Å, on every atom before the push")
    ap.add_argument("--chunk-size", type=int, default=64, help="parents labelled and written together")
    ap.add_argument("--max-force", type=float, default=50.0, help="eV/Å; frames beyond are skipped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shard", default="0/1", help="i/n: only every n-th parent from the i-th (parallel runs)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    try:
        shard, shards = parse_shard(args.shard)
    except ValueError as err:
        ap.error(str(err))
    if args.per_parent < 1:
        ap.error(f"--per-parent must be at least 1, got {args.per_parent}")

    import pd_teacher as T
    import torch
    from ase.db import connect

    torch.set_num_threads(args.threads)
    db_path = Path(args.db)
    todo = parents_to_do(db_path, [s.strip() for s in args.sources.split(",") if s.strip()], args.resume,
                         args.max_parents)[shard::shards]
    log(f"{len(todo)} training parents, {args.per_parent} contact frame(s) each (shard {args.shard})")
    teacher = T.Teacher(threads=args.threads)
    db = connect(db_path)
    t0, written, skipped = time.perf_counter(), 0, 0
    for lo in range(0, len(todo), args.chunk_size):
        chunk = todo[lo : lo + args.chunk_size]
        frames = []  # (parent_id, source, k, atoms, info)
        for pid, source, atoms in chunk:
            for k in range(args.per_parent):
                made = contact_frame(atoms, pid, args.seed, k, args.ratio, args.rattle)
                if made is None or S.too_close(made[0]):
                    skipped += 1
                    continue
                frames.append((pid, source, k, *made))
        labels = teacher.label([f[3] for f in frames])
        rows = []
        for (pid, source, k, atoms, info), lab in zip(frames, labels, strict=True):
            if _bad_label(lab, len(atoms), args.max_force):
                skipped += 1
                continue
            kvp = {"parent_id": pid, "source": source, "kind": KIND, "split": "train", "teacher": TEACHER_NAME,
                   "frame": 2000 + k, **info}
            rows.append({"atoms": atoms, "labels": lab, "kvp": kvp})
        write_rows(db, rows)
        written += len(rows)
        log_chunk(lo + len(chunk), len(todo), written, skipped, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
