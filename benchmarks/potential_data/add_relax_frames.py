#!/usr/bin/env python
"""Add teacher-labelled frames where the *student* relaxes to (active learning).

The relaxation benchmark (``benchmarks/compare_chgnet.py --sections relax``) asks that
our relaxed structures match CHGNet's. The frames of ``make_dataset.py`` sit around
the parents (rattles, strains, MD); a relaxation can leave that region and end in a
minimum of the student that the teacher does not have. This script finds those
places and labels them:

for every training-split parent of the chosen sources (read from the database's
``kind=parent`` rows; validation and test parents are never touched), the parent is
rattled by 0.1 Å (seeded per parent, as in the benchmark), relaxed with the given
model (batched FIRE + Fréchet cell filter, ``--fmax``, ``--steps``), and the teacher
labels the model's relaxed structure (``kind=student_relaxed``) and, with
``--midpoints``, the midpoint of the start and end (positions and cell,
``kind=student_path``). Rows carry the parent's ``parent_id``, ``source`` and
``split``, ``student`` (the model's name) and ``al_round`` (``--round``: a later round
relaxes every parent again, with a new rattle, using a newer student), and are written per
chunk in one transaction; ``--resume`` skips parents that already have such frames in
this round.

``--relaxer teacher`` lets the teacher relax the rattled parents instead (ASE FIRE +
Fréchet cell filter, as the benchmark's CHGNet reference does) and keeps its own labels
along the way: its relaxed structure (``kind=teacher_relaxed``) and ``--path-frames``
structures along its path, denser early on (``teacher_path``). These sit between the
parents and the teacher's minima, e.g. the distorted perovskites CHGNet relaxes to,
which the student must reproduce. ``--shard i/n`` splits the parents between parallel
runs (e.g. ``0/2`` and ``1/2`` on two cores).

Usage::

    python benchmarks/potential_data/add_relax_frames.py --db DIR/frames.db --model default \\
        --sources perov5 [--max-parents N] [--midpoints] [--repeat 2] [--resume]

``--repeat 2`` relaxes 2x2x2 supercells instead (as in the benchmark's 40-atom
perovskites, where octahedra can tilt, which a 5-atom cell cannot); rows carry
``repeat``, and ``--resume`` counts a parent as done per round and supercell size.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pd_structures as S  # noqa: E402
from make_dataset import (  # noqa: E402
    TEACHER_NAME,
    _bad_label,
    log,
    log_chunk,
    parse_shard,
    training_parents,
    write_rows,
)

KINDS = ("student_relaxed", "student_path", "teacher_relaxed", "teacher_path")
RATTLE = 0.1  # Å, as in the relaxation benchmark


def parents_to_do(db_path: Path, sources: list[str], resume: bool, max_parents: int | None,
                  round_: int = 1, repeat: int = 1, relaxer: str = "student") -> list:
    """``(parent_id, source, Atoms)`` of the training parents still to do in
    this active-learning round and supercell size (rows without ``al_round`` belong
    to round 1, rows without ``repeat`` to primitive cells)."""
    from ase.db import connect

    db = connect(db_path)
    done: set[str] = set()
    if resume:
        for kind in (k for k in KINDS if k.startswith(relaxer)):
            rows = db.select(kind=kind, columns=["key_value_pairs"])  # no structures decoded
            done |= {r.parent_id for r in rows
                     if int(r.get("al_round", 1)) == round_ and int(r.get("repeat", 1)) == repeat}
    return training_parents(db_path, sources, max_parents, done)


def rattled(atoms, parent_id: str, seed: int, repeat: int = 1):
    """The parent (as a ``repeat`` x ``repeat`` x ``repeat`` supercell), rattled by
    ``RATTLE`` Å with the parent's own seeded stream."""
    rng = S.parent_rng(seed, parent_id, "student_relax" if repeat == 1 else f"student_relax_x{repeat}")
    start = S._plain(atoms.repeat((repeat,) * 3) if repeat > 1 else atoms)
    start.positions += rng.normal(scale=RATTLE, size=start.positions.shape)
    return start


def teacher_path(start, calc, fmax: float, steps: int, keep: int) -> tuple[list, bool, int]:
    """Relax ``start`` with the teacher (ASE FIRE + FrechetCellFilter, as in the
    benchmark's CHGNet reference) and keep its own labels along the way: the final
    structure (``teacher_relaxed``) and up to ``keep`` structures along the path after
    the start, denser early on (``teacher_path``). No extra teacher call: each kept frame's
    labels are the calculator's results at that geometry. Returns
    ``([(kind, atoms, labels)], converged, steps)``."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    work = start.copy()
    work.calc = calc
    path: list = []

    def record() -> None:
        if not calc.check_state(work):  # the stored results belong to this geometry
            lab = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in calc.results.items()}
            path.append((S._plain(work), lab))

    opt = FIRE(FrechetCellFilter(work), logfile=None)
    opt.attach(record, interval=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy logm accuracy notes, pymatgen constraint notes
        converged = bool(opt.run(fmax=fmax, steps=steps))
    work.get_potential_energy()
    record()
    if not path:
        return [], converged, int(opt.nsteps)
    final = ("teacher_relaxed", *path[-1])
    inner = path[1:-1]  # neither the start (a plain rattle) nor the end
    # denser early on, where the forces are large and the path moves most: step
    # fractions (k / keep)^2 of the path, k = 0 .. keep - 1
    picks = sorted({int(round((k / keep) ** 2 * (len(inner) - 1))) for k in range(keep)}) if inner and keep > 0 else []
    return [("teacher_path", *inner[k]) for k in picks] + [final], converged, int(opt.nsteps)


def midpoint(a, b):
    """Half way from ``a`` to ``b``: cell and fractional coordinates (wrapped steps)."""
    mid = a.copy()
    d = b.get_scaled_positions(wrap=False) - a.get_scaled_positions(wrap=False)
    d -= np.round(d)
    cell = 0.5 * (a.cell.array + b.cell.array)
    mid.set_cell(cell, scale_atoms=False)
    mid.set_scaled_positions(a.get_scaled_positions(wrap=False) + 0.5 * d)
    return mid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="frames.db of make_dataset.py (frames are added to it)")
    ap.add_argument("--model", default="default", help="student: shipped name or saved model directory")
    ap.add_argument("--sources", default="perov5", help="comma separated, e.g. perov5,prototype")
    ap.add_argument("--max-parents", type=int, default=None, help="per source")
    ap.add_argument("--midpoints", action="store_true", help="also label the start-end midpoints")
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--chunk-size", type=int, default=256, help="parents relaxed and written together")
    ap.add_argument("--max-force", type=float, default=50.0, help="eV/Å; frames beyond are skipped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--round", type=int, default=1, help="active-learning round (a new round relaxes every parent again)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="relax repeat^3 supercells of the parents (2: 40-atom perovskite cells, where "
                         "octahedra can tilt, as in the benchmark's 2x2x2 cells)")
    ap.add_argument("--relaxer", choices=("student", "teacher"), default="student",
                    help="who relaxes the rattled parents: the student model (labels where it ends; "
                         "default) or the teacher itself (its own labels along its path, --path-frames)")
    ap.add_argument("--path-frames", type=int, default=4,
                    help="teacher relaxer: frames kept along the path besides the relaxed one")
    ap.add_argument("--shard", default="0/1", help="i/n: only every n-th parent from the i-th (parallel runs)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    try:
        shard, shards = parse_shard(args.shard)
    except ValueError as err:
        ap.error(str(err))

    import pd_teacher as T
    import torch
    from ase.db import connect

    from crystalgnn_plugins.models.pretrained import resolve_model
    from crystalgnn_plugins.relaxation import relax

    torch.set_num_threads(args.threads)
    db_path = Path(args.db)
    todo = parents_to_do(db_path, [s.strip() for s in args.sources.split(",") if s.strip()], args.resume,
                         args.max_parents, args.round, args.repeat, args.relaxer)
    todo = todo[shard::shards]
    log(f"{len(todo)} training parents to relax ({args.sources}, {args.relaxer} relaxes, shard {args.shard})")
    teacher = T.Teacher(threads=args.threads)
    db = connect(db_path)
    t0, written, skipped = time.perf_counter(), 0, 0
    chunk_size = args.chunk_size if args.relaxer == "student" else max(1, min(args.chunk_size, 16))
    if args.relaxer == "teacher":
        calc = T.TeacherCalculator(teacher)
    else:
        student = resolve_model(args.model)
    producer = "teacher" if args.relaxer == "teacher" else str(args.model)
    for lo in range(0, len(todo), chunk_size):
        chunk = todo[lo : lo + chunk_size]
        starts = [rattled(atoms, pid, args.seed + 1000 * (args.round - 1), args.repeat) for pid, _, atoms in chunk]
        labelled = []  # (parent_id, source, kind, atoms, info, labels)
        if args.relaxer == "teacher":
            for (pid, source, _), start in zip(chunk, starts, strict=True):
                try:
                    frames, converged, nsteps = teacher_path(start, calc, args.fmax, args.steps, args.path_frames)
                except RuntimeError:  # the teacher failed on a geometry
                    skipped += 1
                    continue
                info = {"teacher_converged": int(converged), "teacher_steps": nsteps, "repeat": int(args.repeat)}
                labelled += [(pid, source, kind, atoms, info, lab) for kind, atoms, lab in frames]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = relax(starts, student, fmax=args.fmax, steps=args.steps, batched=True, on_error="skip")
            frames = []  # (parent_id, source, kind, atoms, info)
            for (pid, source, _), start, res in zip(chunk, starts, results, strict=True):
                if res.error is not None:
                    skipped += 1
                    continue
                end = S._plain(res.structure)  # Atoms in, Atoms out
                info = {"student_converged": int(bool(res.converged)), "student_steps": int(res.steps),
                        "repeat": int(args.repeat)}
                candidates = [("student_relaxed", end)] + ([("student_path", midpoint(start, end))] if args.midpoints else [])
                for kind, atoms in candidates:
                    if S.too_close(atoms):  # not worth a teacher call
                        skipped += 1
                        continue
                    frames.append((pid, source, kind, atoms, info))
            labels = teacher.label([f[3] for f in frames])
            labelled = [(*f, lab) for f, lab in zip(frames, labels, strict=True)]
        rows, number = [], {}
        for pid, source, kind, atoms, info, lab in labelled:
            if S.too_close(atoms) or _bad_label(lab, len(atoms), args.max_force):
                skipped += 1
                continue
            number[pid] = number.get(pid, 0) + 1
            kvp = {"parent_id": pid, "source": source, "kind": kind, "split": "train", "teacher": TEACHER_NAME,
                   "frame": 1000 * args.round + 100 * (args.repeat - 1) + number[pid], "student": producer,
                   "al_round": int(args.round), **info}
            rows.append({"atoms": atoms, "labels": lab, "kvp": kvp})
        write_rows(db, rows)
        written += len(rows)
        log_chunk(lo + len(chunk), len(todo), written, skipped, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
