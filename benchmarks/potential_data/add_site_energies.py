#!/usr/bin/env python
"""Add the teacher's per-atom (site) energies to the frames of ``make_dataset.py``'s database.

CHGNet 0.3.0 reads its energy out atom by atom; those site energies (eV, summing to the
frame's stored energy) are stored in each row's ``data["energies"]``, where
:func:`crystalgnn_plugins.data.read_ase_db` finds them as the per-atom target ``energies``.
A student trained on them (``train_default.py --site-energy-weight``) gets one energy label
per atom instead of one per frame: the teacher's local energy function, not only its sums.

Frames labelled since session 22 (``make_dataset.py``, ``add_relax_frames.py``,
``add_contact_frames.py``: ``write_rows``) already come with them when CHGNet's fast path
labelled them; this script fills in the older rows. Rows already holding ``data["energies"]``
are skipped, so a killed run continues where it
stopped (``--resume`` is implied). ``--workers`` processes label chunks of rows; the main
process alone writes, each chunk in one transaction. A frame whose
site energies do not add up to its stored energy within ``--tolerance`` eV/atom (i.e. was
labelled by another teacher) is reported and left without them.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/potential_data/add_site_energies.py --db DIR/frames.db \\
        [--splits train,val] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import make_dataset as M  # noqa: E402
from make_dataset import log  # noqa: E402


def pending_rows(db, splits: list[str] | None) -> list:
    """The rows (of ``splits``) without stored site energies."""
    todo = []
    for row in db.select():
        if splits is not None and row.get("split") not in splits:
            continue
        if "energies" in (row.data or {}):
            continue
        todo.append(row)
    return todo


def _sites(atoms_list: list) -> list:
    """Worker: the teacher's site energies of some frames (see make_dataset._init_worker)."""
    return M._WORKER_TEACHER.site_energies(atoms_list)


def write_chunk(db, rows: list, sites: list, tolerance: float) -> dict[str, int]:
    """Store the site energies of ``rows`` in their ``data`` column, in one transaction;
    count what was not stored.

    ``Database.update`` would also rewrite each row's key-value tables, which ASE does not
    index by row id (a scan of the whole table per row: 10 rows/s on this database); the
    data column is written here directly, encoded as ASE encodes it.
    """
    stats = {"written": 0, "failed": 0, "mismatch": 0}
    keep = []
    for row, site in zip(rows, sites, strict=True):
        if site is None:
            stats["failed"] += 1
            continue
        if abs(site.sum() - row.energy) / row.natoms > tolerance:
            stats["mismatch"] += 1
            log(f"row {row.id} ({row.get('parent_id')}): site energies sum to {site.sum():.4f} eV, "
                f"stored energy {row.energy:.4f} eV; not stored")
            continue
        keep.append((row, site))
    with db.managed_connection() as con:  # sets db.version, which decides the encoding
        con.executemany(
            "UPDATE systems SET data=? WHERE id=?",
            [(db.encode({**(row.data or {}), "energies": site}, binary=db.version >= 9), row.id) for row, site in keep],
        )
        con.commit()
    stats["written"] = len(keep)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="frames.db of make_dataset.py (updated in place)")
    ap.add_argument("--splits", default=None, help="comma-separated splits to label (default: all rows)")
    ap.add_argument("--workers", type=int, default=1, help="processes, each with its own CHGNet")
    ap.add_argument("--chunk", type=int, default=256, help="rows per worker task and per transaction")
    ap.add_argument("--batch-size", type=int, default=16, help="CHGNet batch size (frames)")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="eV/atom between the sites' sum and the stored energy")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = ap.parse_args(argv)

    import ase.db

    db = ase.db.connect(args.db)
    if db.type != "db":
        raise SystemExit(f"{args.db}: an SQLite ASE database (.db) is needed, not {db.type!r}")
    splits = None if args.splits is None else [s.strip() for s in args.splits.split(",") if s.strip()]
    t0 = time.perf_counter()
    todo = pending_rows(db, splits)
    log(f"{len(todo)} rows without site energies (read in {time.perf_counter() - t0:.0f} s)")
    if not todo:
        return 0
    other = [r for r in todo if r.get("teacher", M.TEACHER_NAME) != M.TEACHER_NAME]
    if other:
        log(f"{len(other)} rows labelled by another teacher are left without site energies")
        todo = [r for r in todo if r.get("teacher", M.TEACHER_NAME) == M.TEACHER_NAME]
    chunks = [todo[k:k + args.chunk] for k in range(0, len(todo), args.chunk)]
    total = {"written": 0, "failed": 0, "mismatch": 0}
    t0 = time.perf_counter()
    done = 0
    with mp.get_context("fork").Pool(
        args.workers, initializer=M._init_worker, initargs=(args.threads, args.batch_size, os.getpid())
    ) as pool:
        results = pool.imap(_sites, [[r.toatoms() for r in chunk] for chunk in chunks])
        for chunk, sites in zip(chunks, results, strict=True):
            for k, v in write_chunk(db, chunk, sites, args.tolerance).items():
                total[k] += v
            done += len(chunk)
            rate = done / (time.perf_counter() - t0)
            log(f"{done}/{len(todo)} rows, {rate:.1f}/s, eta {(len(todo) - done) / rate / 60:.0f} min, {total}")
    log(f"done: {total}")
    return 1 if total["mismatch"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
