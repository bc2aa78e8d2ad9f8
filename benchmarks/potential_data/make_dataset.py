#!/usr/bin/env python
"""Generate the teacher-labelled training set for the default interatomic potential.

Parents (perov_5 and carbon_24 CDVAE CSVs, ASE elemental crystals, decorated
binary / ternary prototypes) are perturbed (rattle, strain, supercell, short
Langevin MD) and labelled with CHGNet 0.3.0 (energy eV, forces eV/Å, stress
eV/Å³ ASE sign, magmoms). Frames go to an ASE SQLite database
``OUT/frames.db`` with key-value pairs ``parent_id``, ``source``, ``kind``,
``split`` (train/val/test, fixed per parent), ``teacher``. Work is done in
chunks of parents, each committed in one transaction; ``--resume`` skips the
parents already in the database, so the run can be killed at any time.

Usage::

    python benchmarks/potential_data/make_dataset.py --out DIR \\
        --perov ../shared/data/perov_5/dev.csv --carbon ../shared/data/carbon_24/dev.csv \\
        [--max-parents N] [--frames-per-parent K] [--seed 0] [--workers 1] [--resume]
    python benchmarks/potential_data/make_dataset.py --out DIR --summary
    python benchmarks/potential_data/make_dataset.py --check-stress

See README.md in this folder for the output format and timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # so pd_* import when run as a script, in tests and in workers
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pd_structures as S  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402

DB_NAME = "frames.db"
PROGRESS_NAME = "progress.json"
SUMMARY_NAME = "summary.json"
FORMAT_VERSION = 1
TEACHER_NAME = "chgnet-0.3.0"
SKIP_KEYS = ("skipped_close", "skipped_teacher", "skipped_force")

# Settings that determine the frames; they must not change when resuming.
FRAME_KEYS = (
    "format_version", "teacher", "seed", "frames_per_parent", "md_interval",
    "md_temperature", "md_friction", "max_force", "min_distance", "split_fractions",
)  # fmt: skip


def log(msg: str) -> None:
    print(msg, flush=True)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def frame_config(args: argparse.Namespace) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "teacher": TEACHER_NAME,
        "seed": int(args.seed),
        "frames_per_parent": int(args.frames_per_parent),
        "md_interval": int(args.md_interval),
        "md_temperature": [float(t) for t in args.md_temperature],
        "md_friction": float(args.md_friction),
        "max_force": float(args.max_force),
        "min_distance": float(S.MIN_DISTANCE),
        "split_fractions": list(S.SPLIT_FRACTIONS),
    }


# ----------------------------------------------------------------------------- parents


def gather_parents(args: argparse.Namespace) -> list[S.Parent]:
    """All parents of the requested sources, selected (``--max-parents`` per source) and ordered."""
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in S.SOURCES]
    if bad:
        raise SystemExit(f"unknown source(s) {bad}; choose from {list(S.SOURCES)}")
    parents: list[S.Parent] = []
    for source, path in (("perov5", args.perov), ("carbon24", args.carbon)):
        if source not in sources:
            continue
        if path is None:
            log(
                f"note: no --{'perov' if source == 'perov5' else 'carbon'} given, skipping {source}"
            )
            continue
        t = time.perf_counter()
        found = S.dataset_parents(path, source)
        log(f"{source}: {len(found)} parents from {path} ({time.perf_counter() - t:.1f} s)")
        parents += found
    if "element" in sources:
        found = S.element_parents()
        log(f"element: {len(found)} parents")
        parents += found
    if "prototype" in sources:
        t = time.perf_counter()
        found = S.prototype_parents()
        log(f"prototype: {len(found)} parents ({time.perf_counter() - t:.1f} s)")
        parents += found
    if "generated" in sources:
        if args.generated is None:
            log("note: no --generated given, skipping generated")
        else:
            found = S.generated_parents(args.generated)
            log(f"generated: {len(found)} parents from {args.generated}")
            parents += found
    ids = Counter(p.parent_id for p in parents)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        raise SystemExit(f"duplicate parent ids: {dup[:5]}")
    return S.select_parents(parents, args.max_parents, args.seed)


# ----------------------------------------------------------------------------- frames + labels


def _bad_label(lab: dict | None, n_atoms: int, max_force: float) -> str | None:
    if lab is None:
        return "skipped_teacher"
    finite = (
        math.isfinite(lab["energy"])
        and np.isfinite(lab["forces"]).all()
        and np.isfinite(lab["stress"]).all()
        and lab["forces"].shape == (n_atoms, 3)
    )
    if not finite:
        return "skipped_teacher"
    if np.linalg.norm(lab["forces"], axis=1).max(initial=0.0) > max_force:
        return "skipped_force"
    return None


def process_chunk(
    teacher, parents: Sequence[S.Parent], cfg: dict
) -> tuple[list[dict], dict, float]:
    """Frames and labels for a chunk of parents.

    Returns ``(rows, stats, cpu_seconds)``: rows are dicts with ``atoms``
    (plain Atoms), ``labels`` and ``kvp``; ``stats[parent_id]`` counts frames
    and skips; ``cpu_seconds`` is the CPU time this process spent on the chunk.
    """
    import pd_teacher as T

    cpu0 = time.process_time()

    seed, k_frames = cfg["seed"], cfg["frames_per_parent"]
    stats = {p.parent_id: {"frames": 0, **dict.fromkeys(SKIP_KEYS, 0)} for p in parents}

    # 1. teacher E(V) scan for synthetic parents (batched over the chunk)
    cells = {p.parent_id: p.atoms for p in parents}
    scales = {p.parent_id: 1.0 for p in parents}
    synth = [p for p in parents if p.prescale]
    if synth:
        for p, (atoms, f) in zip(
            synth, T.prescale_many(teacher, [p.atoms for p in synth]), strict=True
        ):
            cells[p.parent_id], scales[p.parent_id] = atoms, f

    # 2. static frames (one batched teacher call for the chunk)
    pending: list[tuple[S.Parent, S.Frame]] = []
    plans = {}
    for p in parents:
        atoms = cells[p.parent_id]
        plans[p.parent_id] = plan = S.frame_plan(len(atoms), k_frames)
        for fr in S.make_static_frames(atoms, plan, S.parent_rng(seed, p.parent_id)):
            if S.too_close(fr.atoms, cfg["min_distance"]):
                stats[p.parent_id]["skipped_close"] += 1
            else:
                pending.append((p, fr))
    labels = teacher.label([fr.atoms for _, fr in pending])

    rows: list[dict] = []
    frame_no: Counter = Counter()

    def add(p: S.Parent, kind: str, atoms, lab, info: dict) -> None:
        why = _bad_label(lab, len(atoms), cfg["max_force"])
        if why:
            stats[p.parent_id][why] += 1
            return
        kvp = {
            "parent_id": p.parent_id,
            "source": p.source,
            "kind": kind,
            "split": "train" if p.source in S.TRAIN_ONLY_SOURCES else S.assign_split(p.parent_id, seed),
            "teacher": TEACHER_NAME,
            "frame": int(frame_no[p.parent_id]),
        }
        if p.prescale:
            kvp["prescale"] = float(scales[p.parent_id])
        kvp.update(
            {k: int(v) if isinstance(v, int | np.integer) else float(v) for k, v in info.items()}
        )
        frame_no[p.parent_id] += 1
        stats[p.parent_id]["frames"] += 1
        rows.append({"atoms": atoms, "labels": lab, "kvp": kvp})

    for (p, fr), lab in zip(pending, labels, strict=True):
        add(p, fr.kind, fr.atoms, lab, fr.info)

    # 3. short Langevin MD per parent (teacher as ASE calculator)
    t_lo, t_hi = cfg["md_temperature"]
    for p in parents:
        n_md = plans[p.parent_id]["md"]
        if n_md <= 0:
            continue
        rng = S.parent_rng(seed, p.parent_id, "md")
        temperature = float(rng.uniform(t_lo, t_hi))
        start = S.repeat_to(cells[p.parent_id], 4)  # 1-3 atom cells: MD needs a few atoms
        snaps = T.md_snapshots(
            teacher, start, n_md, cfg["md_interval"], temperature, rng,
            friction_per_fs=cfg["md_friction"],
        )  # fmt: skip
        stats[p.parent_id]["skipped_teacher"] += n_md - len(snaps)
        for atoms, lab, step in snaps:
            if S.too_close(atoms, cfg["min_distance"]):
                stats[p.parent_id]["skipped_close"] += 1
                continue
            add(p, "md", atoms, lab, {"temperature_K": temperature, "md_step": step})
    rows.sort(key=lambda r: (r["kvp"]["parent_id"], r["kvp"]["frame"]))
    return rows, stats, time.process_time() - cpu0


# ----------------------------------------------------------------------------- storage


def done_parent_ids(db_path: Path) -> set[str]:
    """Parent ids with rows in the database (each parent is committed with its chunk)."""
    if not db_path.exists():
        return set()
    con = sqlite3.connect(db_path, timeout=60)
    try:
        has = con.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE name='text_key_values'"
        ).fetchone()[0]
        if not has:
            return set()
        cur = con.execute("SELECT DISTINCT value FROM text_key_values WHERE key='parent_id'")
        return {r[0] for r in cur}
    finally:
        con.close()


def training_parents(db_path: Path, sources: Sequence[str], max_parents: int | None,
                     done: set[str]) -> list[tuple[str, str, object]]:
    """``(parent_id, source, Atoms)`` of the training-split parents (their ``kind=parent``
    rows) of each source, the first ``max_parents`` in hash order, without those in
    ``done`` (validation and test parents are never returned)."""
    from ase.db import connect

    db = connect(db_path)
    out = []
    for source in sources:
        rows = sorted(db.select(kind="parent", split="train", source=source), key=lambda r: S.order_key(r.parent_id))
        out += [(r.parent_id, source, r.toatoms()) for r in rows[:max_parents] if r.parent_id not in done]
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``ValueError`` otherwise."""
    try:
        shard, shards = (int(x) for x in text.split("/"))
    except ValueError:
        shard, shards = -1, 0
    if not 0 <= shard < shards:
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return shard, shards


def log_chunk(done: int, total: int, written: int, skipped: int, t0: float) -> None:
    """One progress line of a chunked labelling run started at ``t0`` (perf_counter)."""
    rate = done / (time.perf_counter() - t0)
    log(f"{done}/{total} parents, {written} frames written, {skipped} skipped "
        f"({rate:.2f} parents/s, {(total - done) / rate / 60:.0f} min left)")


def write_rows(db, rows: Sequence[dict]) -> None:
    """Write rows in ONE transaction (committed at the end of the ``with``)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    if len(rows) >= 4000:  # ASE commits every 5000 changes inside a transaction
        raise ValueError("chunk too large for one transaction; lower --chunk-size")
    with db:
        for r in rows:
            atoms, lab = r["atoms"], r["labels"]
            atoms.calc = SinglePointCalculator(
                atoms,
                energy=lab["energy"],
                forces=lab["forces"],
                stress=lab["stress"],
                magmoms=lab["magmoms"] if len(lab["magmoms"]) == len(atoms) else None,
            )
            # the teacher's per-atom energies (train_default.py --site-energy-weight), where it gave them
            sites = lab.get("energies")
            db.write(atoms, key_value_pairs=r["kvp"],
                     data={"energies": np.asarray(sites, float)} if sites is not None and len(sites) == len(atoms) else None)


def load_progress(out: Path) -> dict:
    path = out / PROGRESS_NAME
    if path.exists():
        with open(path) as fh:
            return json.load(fh)
    return {"parents": {}, "wall_time_s": 0.0, "sessions": []}


# ----------------------------------------------------------------------------- summary


def summarize(out: Path) -> dict:
    """Counts from the database (truth) plus skip counts / wall time from progress.json."""
    import ase.db
    from ase.data import chemical_symbols

    db_path = out / DB_NAME
    if not db_path.exists():
        raise SystemExit(f"no database at {db_path}")
    db = ase.db.connect(db_path)
    by = {k: Counter() for k in ("source", "kind", "split")}
    by_source_kind: Counter = Counter()
    parents_by = {k: defaultdict(set) for k in ("source", "split")}
    el_frames: Counter = Counter()
    el_atoms: Counter = Counter()
    natoms: list[int] = []
    fmax = smax = 0.0
    epa: list[float] = []
    for row in db.select(include_data=False):
        kv = row.key_value_pairs
        for k in by:
            by[k][kv.get(k, "?")] += 1
        by_source_kind[f"{kv.get('source')}/{kv.get('kind')}"] += 1
        for k in parents_by:
            parents_by[k][kv.get(k, "?")].add(kv.get("parent_id"))
        nums, cnt = np.unique(row.numbers, return_counts=True)
        for z, c in zip(nums, cnt, strict=True):
            el_frames[chemical_symbols[z]] += 1
            el_atoms[chemical_symbols[z]] += int(c)
        natoms.append(row.natoms)
        if row.get("forces") is not None and len(row.forces):
            fmax = max(fmax, float(np.linalg.norm(row.forces, axis=1).max()))
        if row.get("stress") is not None:
            smax = max(smax, float(np.abs(row.stress).max()))
        epa.append(row.energy / row.natoms)
    progress = load_progress(out)
    skipped = Counter()
    for st in progress.get("parents", {}).values():
        for k in SKIP_KEYS:
            skipped[k] += st.get(k, 0)
    n_frames = len(natoms)
    wall = float(progress.get("wall_time_s", 0.0))
    summary = {
        "frames": n_frames,
        "atoms": int(sum(natoms)),
        "parents": len({p for s in parents_by["source"].values() for p in s}),
        "frames_by_source": dict(sorted(by["source"].items())),
        "frames_by_kind": dict(sorted(by["kind"].items())),
        "frames_by_split": dict(sorted(by["split"].items())),
        "frames_by_source_kind": dict(sorted(by_source_kind.items())),
        "parents_by_source": {k: len(v) for k, v in sorted(parents_by["source"].items())},
        "parents_by_split": {k: len(v) for k, v in sorted(parents_by["split"].items())},
        "elements": {
            el: {"frames": el_frames[el], "atoms": el_atoms[el]}
            for el in sorted(el_frames, key=lambda e: chemical_symbols.index(e))
        },
        "n_elements": len(el_frames),
        "skipped": dict(skipped) | {"total": int(sum(skipped.values()))},
        "natoms_min_mean_max": [min(natoms, default=0), float(np.mean(natoms)) if natoms else 0.0,
                                max(natoms, default=0)],
        "energy_per_atom_min_max": [float(min(epa, default=0)), float(max(epa, default=0))],
        "max_force_norm": fmax,
        "max_abs_stress": smax,
        "wall_time_s": wall,
        "frames_per_s": n_frames / wall if wall > 0 else None,
        "teacher": TEACHER_NAME,
        "config": progress.get("config"),
    }  # fmt: skip
    atomic_write_json(out / SUMMARY_NAME, summary, indent=1, sort_keys=True)
    return summary


def print_summary(s: dict) -> None:
    log("== summary ==")
    log(f"frames {s['frames']} ({s['atoms']} atoms) from {s['parents']} parents; "
        f"wall {_hms(s['wall_time_s'])}" + (f", {s['frames_per_s']:.2f} frames/s" if s["frames_per_s"] else ""))  # fmt: skip
    for key in ("frames_by_source", "frames_by_kind", "frames_by_split", "parents_by_source",
                "parents_by_split", "skipped"):  # fmt: skip
        log(f"{key}: {s[key]}")
    els = " ".join(f"{e}:{v['frames']}" for e, v in s["elements"].items())
    log(f"elements ({s['n_elements']}, frames containing each): {els}")
    log(f"natoms min/mean/max {s['natoms_min_mean_max']}; E/atom range {s['energy_per_atom_min_max']}; "
        f"max |F| {s['max_force_norm']:.2f} eV/Å; max |σ| {s['max_abs_stress']:.3f} eV/Å³")  # fmt: skip


# ----------------------------------------------------------------------------- workers

_WORKER_TEACHER = None


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel kill this worker when the main process dies (e.g. ``kill -9``)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux / no libc: workers exit at their next write
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def _init_worker(threads: int, batch_size: int, parent_pid: int) -> None:
    global _WORKER_TEACHER
    _die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import pd_teacher as T

    _WORKER_TEACHER = T.Teacher(batch_size=batch_size, threads=threads)


def _work(parents: list[S.Parent], cfg: dict) -> tuple[list[dict], dict, float]:
    return process_chunk(_WORKER_TEACHER, parents, cfg)


# ----------------------------------------------------------------------------- main run


def run(args: argparse.Namespace) -> int:
    import ase.db

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / DB_NAME
    cfg = frame_config(args)
    if db_path.exists() and not args.resume:
        raise SystemExit(f"{db_path} exists: pass --resume to continue it, or choose another --out")

    parents = gather_parents(args)
    db = ase.db.connect(db_path)
    # without --resume the database is new: a stale progress.json must not mark parents done
    progress = (
        load_progress(out) if args.resume else {"parents": {}, "wall_time_s": 0.0, "sessions": []}
    )
    if args.resume and db_path.exists() and db.metadata:
        old = db.metadata.get("config", {})
        diff = {k: (old.get(k), cfg[k]) for k in FRAME_KEYS if old.get(k) != cfg[k]}
        if diff:
            raise SystemExit(f"--resume with different frame settings (old, new): {diff}")
    else:
        db.metadata = {"config": cfg, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    progress["config"] = cfg
    done = done_parent_ids(db_path) | set(progress.get("parents", {}))
    todo = [p for p in parents if p.parent_id not in done]
    n_total = len(parents)
    n_done0 = n_total - len(todo)
    log(f"{n_total} parents selected, {n_done0} already done, {len(todo)} to do; "
        f"{cfg['frames_per_parent']} frames/parent, seed {cfg['seed']}, workers {args.workers}")  # fmt: skip
    chunk_size = max(1, min(args.chunk_size, 3000 // max(cfg["frames_per_parent"], 1)))
    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]

    t0 = time.perf_counter()
    wall0 = float(progress.get("wall_time_s", 0.0))
    session = {"start": time.strftime("%Y-%m-%d %H:%M:%S"), "parents": 0, "frames": 0}
    progress.setdefault("sessions", []).append(session)
    state = {"parents": 0, "frames": 0, "atoms": 0, "skipped": 0, "cpu": 0.0}

    def commit(rows: list[dict], stats: dict, cpu_s: float) -> None:
        write_rows(db, rows)  # committed before progress.json mentions these parents
        progress["parents"].update(stats)
        state["parents"] += len(stats)
        state["frames"] += len(rows)
        state["atoms"] += sum(len(r["atoms"]) for r in rows)
        state["skipped"] += sum(st[k] for st in stats.values() for k in SKIP_KEYS)
        state["cpu"] += cpu_s
        elapsed = time.perf_counter() - t0
        session.update(parents=state["parents"], frames=state["frames"], wall_s=elapsed,
                       cpu_s=state["cpu"], end=time.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
        progress["wall_time_s"] = wall0 + elapsed
        atomic_write_json(out / PROGRESS_NAME, progress, indent=1, sort_keys=True)
        rate = state["parents"] / elapsed
        eta = (len(todo) - state["parents"]) / rate if rate > 0 else math.inf
        n_done = n_done0 + state["parents"]
        log(
            f"parents {n_done}/{n_total} ({100 * n_done / max(n_total, 1):.1f}%) | "
            f"frames {state['frames']} (+{len(rows)}) | {state['frames'] / elapsed:.2f} frames/s, "
            f"{state['atoms'] / elapsed:.0f} atoms/s | skipped {state['skipped']} | "
            f"elapsed {_hms(elapsed)} ETA {_hms(eta)} | "
            f"{state['frames'] / max(state['cpu'], 1e-9):.2f} frames per worker-CPU-s"
        )

    if chunks and args.workers <= 1:
        import pd_teacher as T

        teacher = T.Teacher(batch_size=args.batch_size, threads=args.threads)
        log(f"teacher {TEACHER_NAME} loaded ({'fast' if getattr(teacher, 'fast', False) else 'predict_graph'} path), "
            f"torch threads {args.threads}")  # fmt: skip
        for chunk in chunks:
            commit(*process_chunk(teacher, chunk, cfg))
    elif chunks:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=args.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(args.threads, args.batch_size, os.getpid()),
        ) as pool:  # fmt: skip
            queue = list(reversed(chunks))
            running: set = set()
            try:
                while queue or running:
                    while queue and len(running) < args.workers + 1:
                        running.add(pool.submit(_work, queue.pop(), cfg))
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        commit(*fut.result())
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
    if not chunks:
        log("nothing to do")
    summary = summarize(out)
    print_summary(summary)
    return 0


def check_stress_cli(args: argparse.Namespace) -> int:
    import pd_teacher as T
    from ase.build import bulk

    teacher = T.Teacher(batch_size=args.batch_size, threads=args.threads)
    rng = np.random.default_rng(0)
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.05, seed=1)
    si.set_cell(si.cell.array @ (np.eye(3) + S.strain_tensor(rng, 0.02, 0.01)), scale_atoms=True)
    sto = S.scale_to_bonds(S.build_prototype("perovskite", ("Sr", "Ti", "O")),
                           {("Sr", "O"): 2.58, ("Ti", "O"): 2.0})  # fmt: skip
    sto.rattle(0.05, seed=2)
    sto.set_cell(sto.cell.array @ (np.eye(3) + S.strain_tensor(rng, 0.02, 0.01)), scale_atoms=True)
    report = {}
    for name, atoms in (("Si2 (rattled, strained)", si), ("SrTiO3 (rattled, strained)", sto)):
        r = T.check_stress(teacher, atoms)
        report[name] = {
            k: (np.round(v, 7).tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()
        }
    print(json.dumps(report, indent=1), flush=True)
    return 0


def benchmark_cli(args: argparse.Namespace) -> int:
    """Time the teacher on perov_5 frames: batched static labelling and MD steps."""
    import pd_teacher as T

    if not args.perov:
        raise SystemExit("--benchmark needs --perov")
    n_par = args.max_parents if isinstance(args.max_parents, int) else 20
    parents = S.select_parents(S.dataset_parents(args.perov, "perov5"), n_par, args.seed)
    teacher = T.Teacher(batch_size=args.batch_size, threads=args.threads)
    k = args.frames_per_parent
    frames = []
    for p in parents:
        plan = S.frame_plan(len(p.atoms), k)
        for fr in S.make_static_frames(p.atoms, plan, S.parent_rng(args.seed, p.parent_id)):
            if not S.too_close(fr.atoms):
                frames.append(fr.atoms)
    teacher.label(frames[:4])  # warm-up
    report: dict = {"threads": args.threads, "batch_size": args.batch_size, "parents": len(parents)}
    for name, sel in (("static_all", frames), ("static_5_atoms", [a for a in frames if len(a) <= 5]),
                      ("static_40_atoms", [a for a in frames if len(a) >= 40])):  # fmt: skip
        if not sel:
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        teacher.label(sel)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        n_at = sum(len(a) for a in sel)
        report[name] = {"frames": len(sel), "atoms": n_at, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                        "frames_per_s": round(len(sel) / wall, 2), "frames_per_cpu_s": round(len(sel) / cpu, 2),
                        "atoms_per_s": round(n_at / wall, 1)}  # fmt: skip
    n_md = S.frame_plan(5, k)["md"]
    if n_md:
        steps = 0
        w0, c0 = time.perf_counter(), time.process_time()
        for p in parents[:5]:
            rng = S.parent_rng(args.seed, p.parent_id, "md")
            snaps = T.md_snapshots(
                teacher, S.repeat_to(p.atoms, 4), n_md, args.md_interval, 600.0, rng
            )
            steps += len(snaps) * args.md_interval
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        report["md_steps_5_atoms"] = {"steps": steps, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                      "steps_per_s": round(steps / wall, 2),
                                      "steps_per_cpu_s": round(steps / cpu, 2)}  # fmt: skip
        st = report["static_all"]
        per_parent_wall = (len(frames) / len(parents)) / st[
            "frames_per_s"
        ] + n_md * args.md_interval / (steps / wall)
        report["estimated_perov5_parent_s"] = round(per_parent_wall, 3)
        report["estimated_perov5_frames_per_s_end_to_end"] = round(k / per_parent_wall, 2)
    print(json.dumps(report, indent=1), flush=True)
    return 0


def parse_max_parents(text: str) -> int | dict[str, int]:
    """``"20"`` -> 20; ``"carbon24=1000,perov5=5"`` -> ``{"carbon24": 1000, "perov5": 5}``."""
    text = text.strip()
    if "=" not in text:
        return int(text)
    out = {}
    for part in text.split(","):
        src, _, n = part.partition("=")
        if src.strip() not in S.SOURCES:
            raise argparse.ArgumentTypeError(f"unknown source {src!r} (choose from {S.SOURCES})")
        out[src.strip()] = int(n)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", help="output directory (frames.db, progress.json, summary.json)")
    ap.add_argument("--perov", help="perov_5 CDVAE CSV (e.g. ../shared/data/perov_5/dev.csv)")
    ap.add_argument("--carbon", help="carbon_24 CDVAE CSV")
    ap.add_argument("--generated", help="parents made by the generator (generated_parents.py output); training only")
    ap.add_argument(
        "--sources", default=",".join(S.SOURCES), help="comma list of sources (default: all)"
    )
    ap.add_argument(
        "--max-parents",
        type=parse_max_parents,
        default=None,
        help="at most N parents per source (seeded subset): 'N' for every source, or "
        "'carbon24=1000,perov5=2000' (unlisted sources uncapped)",
    )
    ap.add_argument(
        "--frames-per-parent", type=int, default=10, help="frames per parent K (default 10)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="processes, each with its own CHGNet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument("--chunk-size", type=int, default=16, help="parents per committed chunk")
    ap.add_argument("--batch-size", type=int, default=16, help="CHGNet batch size (frames)")
    ap.add_argument("--md-interval", type=int, default=5, help="MD steps between snapshots")
    ap.add_argument(
        "--md-temperature", type=float, nargs=2, default=(300.0, 1000.0), metavar=("TMIN", "TMAX")
    )
    ap.add_argument("--md-friction", type=float, default=0.02, help="Langevin friction, 1/fs")
    ap.add_argument(
        "--max-force", type=float, default=50.0, help="skip frames with a force above this (eV/Å)"
    )
    ap.add_argument("--resume", action="store_true", help="continue an existing --out")
    ap.add_argument(
        "--summary", action="store_true", help="only (re)write and print summary.json of --out"
    )
    ap.add_argument(
        "--check-stress", action="store_true", help="compare teacher stress with finite differences"
    )
    ap.add_argument("--benchmark", action="store_true",
                    help="time the teacher on --max-parents (default 20) perov_5 parents' frames")  # fmt: skip
    args = ap.parse_args(argv)
    if not (args.check_stress or args.benchmark) and not args.out:
        ap.error("--out is required")
    if args.frames_per_parent < 1 or args.workers < 1 or args.chunk_size < 1:
        ap.error("--frames-per-parent, --workers and --chunk-size must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.check_stress:
        return check_stress_cli(args)
    if args.benchmark:
        return benchmark_cli(args)
    if args.summary:
        print_summary(summarize(Path(args.out)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
