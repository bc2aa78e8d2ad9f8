"""Benchmark: our energy model against its teacher, CHGNet 0.3.0, on this machine.

Everything runs with the same torch thread count (``--threads``). Accuracy and
relaxations run in this process; speed and scaling time each model and size in a
fresh subprocess so that peak-RSS figures do not mix. Sections (``--sections``, comma separated):

accuracy
    Energy (meV/atom), force (meV/Å) and stress (GPa) MAE of our model against the
    stored CHGNet 0.3.0 labels of the ``split=test`` frames of the teacher
    database (``--db``, see ``benchmarks/potential_data/README.md``). Frames with
    elements the model was not trained on are left out and counted.
relax
    Held-out perovskites: the ``kind=parent`` rows of the ``perov5:*`` parents in
    ``split=test`` of ``--db`` (without a database: the same held-out parents, by the
    data set's split function, in their ``--perov CSV`` geometry).
    ``--n-primitive`` primitive cells and ``--n-supercell`` 2x2x2 supercells (of
    other parents), each rattled by 0.1 Å (seeded), are relaxed with CHGNet (ASE
    ``FIRE`` + ``FrechetCellFilter``, one by one; cached in ``--cache``) and with
    our model one by one and batched (``crystalgnn_plugins.relaxation.relax``).
    Reports converged counts, the ``StructureMatcher()`` match rate and mean RMS
    distance of our relaxed structures against CHGNet's, and wall times. With
    ``--reference-noise A``, CHGNet also relaxes every start moved by ``A`` Å more, and
    the report gives how often CHGNet matches itself: how sensitive the reference
    minima are to the start, the floor of the match criterion.
speed
    Single-point energy + forces + stress of rattled (0.05 Å) cubic SrTiO3
    supercells (320 and 2,560 atoms) through the ASE calculators (``GNNCalculator``
    / ``CHGNetCalculator``): median of ``--repeats`` fresh calculations after one
    warm-up, and the ratio ours / CHGNet. Each model and size runs in a fresh
    subprocess with an address-space cap (``--mem-limit-gb``): CHGNet's
    ``CHGNetCalculator`` peaks at about 6 GB for 320 atoms and was OOM-killed at
    22 GB for 2,560 atoms on the 24 GB dev machine; a size that does not fit is
    reported as out of memory instead of taking the machine down. CHGNet keeps
    the double-backward graph of its force/stress autograd
    (``create_graph=True``); a third row, CHGNet*, times it with
    ``create_graph=False`` forced (about a third of the memory) so that there
    is a CHGNet time at every size. The acceptance ratio is against CHGNet as
    shipped (``CHGNetCalculator``).
scaling
    Our time per atom and peak RSS for 100 ... 10,000 atoms (near-cubic SrTiO3
    supercells), one fresh subprocess per size.

Reproduce (2 cores, nothing else running)::

    OMP_NUM_THREADS=2 python benchmarks/compare_chgnet.py --threads 2 \\
        --model default --db /work/runs/potential_data/frames.db \\
        --cache /work/runs/compare_chgnet/chgnet_relax_cache.json \\
        --out /work/runs/compare_chgnet/report.json

Quick smoke test::

    OMP_NUM_THREADS=1 python benchmarks/compare_chgnet.py --threads 1 --model /tmp/cmp_model \\
        --db /work/runs/potential_data/frames.db --n-primitive 2 --n-supercell 1 --repeats 1 \\
        --sizes 100,320 --max-test-frames 50 --cache /tmp/cmp_cache.json --out /tmp/cmp.json

The CHGNet relaxations are cached by structure id, rattle seed and amplitude,
relaxation settings and a hash of the rattled input, so reruns (e.g. for a new
model) skip them; the reported CHGNet wall time is then the one recorded when the
relaxation was actually run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("accuracy", "relax", "speed", "scaling")
DEFAULT_SIZES = (100, 320, 1000, 2560, 5000, 10000)
SPEED_SIZES = (320, 2560)
RATTLE_RELAX = 0.1  # Å
RATTLE_SPEED = 0.05  # Å
CHGNET_VERSION = "0.3.0"


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- helpers
def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    from crystalgnn_plugins._atomic import atomic_write_json as write

    write(path, data, indent=1, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from a sha256 of ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def near_cubic_repeats(num_atoms: int, atoms_per_cell: int = 5) -> tuple[int, int, int]:
    """Supercell repeats ``a <= b <= c`` with ``atoms_per_cell*a*b*c`` close to
    ``num_atoms`` and the cell as cubic as possible."""
    target = max(1.0, num_atoms / atoms_per_cell)
    best, best_cost = (1, 1, 1), float("inf")
    top = int(round(target ** (1 / 3))) + 3
    for a in range(1, top + 1):
        for b in range(a, int(np.sqrt(target / a)) + 3):
            c = max(b, int(round(target / (a * b))))
            for cc in (c, c + 1):
                err = abs(a * b * cc - target) / target
                cost = err + 0.05 * (cc / a - 1.0)
                if cost < best_cost:
                    best, best_cost = (a, b, cc), cost
    return best


def srtio3_supercell(num_atoms: int, seed: int = 0, rattle: float = RATTLE_SPEED, a: float = 3.905):
    """Cubic SrTiO3 repeated to about ``num_atoms`` atoms, rattled (seeded)."""
    from ase import Atoms

    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cell = Atoms("SrTiO3", scaled_positions=frac, cell=np.eye(3) * a, pbc=True)
    atoms = cell.repeat(near_cubic_repeats(num_atoms))
    if rattle > 0:
        atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def load_our_model(spec: str | None, device: str = "cpu"):
    """Our energy model from a saved-model dir or shipped name; exits with a clear error."""
    from crystalgnn_plugins.models import EnergyModel, ModelFileError
    from crystalgnn_plugins.models.pretrained import resolve_model

    try:
        model = resolve_model(spec, device=device)
    except ModelFileError as exc:
        sys.exit(f"error: cannot load --model {spec or '(shipped default)'}: {exc}")
    if not isinstance(model, EnergyModel):
        sys.exit(f"error: --model {spec!r} is a {type(model).__name__}, not an energy model")
    return model.eval()


def load_chgnet():
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(sys.stderr):  # CHGNet prints a banner on load
        return CHGNet.load(model_name=CHGNET_VERSION, use_device="cpu", verbose=False)


def chgnet_calculator(chgnet):
    from chgnet.model.dynamics import CHGNetCalculator

    with contextlib.redirect_stdout(sys.stderr):  # "CHGNet will run on cpu"
        return CHGNetCalculator(model=chgnet, use_device="cpu")


def unknown_elements(model, numbers) -> list[str]:
    from ase.data import chemical_symbols

    if model.elements is None:
        return []
    known = set(model.elements)
    return sorted({chemical_symbols[z] for z in np.asarray(numbers).tolist()} - known)


def require_db(path: str | None, what: str) -> Path:
    if not path:
        sys.exit(f"error: the {what} section needs --db (the teacher frames database)")
    p = Path(path)
    if not p.is_file():
        sys.exit(f"error: frames database not found: {p} (needed by the {what} section)")
    return p


# --------------------------------------------------------------------------- accuracy
def section_accuracy(args, model) -> dict:
    from crystalgnn_plugins.data import read_ase_db
    from crystalgnn_plugins.training.evaluate import evaluate

    db = require_db(args.db, "accuracy")
    split = args.accuracy_split
    log(f"[accuracy] reading split={split} frames from {db} ...")
    records = read_ase_db(db, selection=f"split={split}", targets=["energy", "forces", "stress"])
    n_total = len(records)
    if args.max_test_frames and n_total > args.max_test_frames:
        rng = np.random.default_rng(args.seed)
        keep = np.sort(rng.choice(n_total, size=args.max_test_frames, replace=False))
        records = [records[k] for k in keep]
    kept, skipped, skipped_elements = [], 0, set()
    for rec in records:
        bad = unknown_elements(model, rec.atoms.numbers)
        if bad:
            skipped += 1
            skipped_elements.update(bad)
        else:
            kept.append(rec)
    log(f"[accuracy] {n_total} test frames, {len(records)} used, {skipped} left out "
        f"(unknown elements {sorted(skipped_elements)}); evaluating {len(kept)} ...")
    if not kept:
        return {"frames_total": n_total, "frames": 0, "frames_unknown_elements": skipped,
                "unknown_elements": sorted(skipped_elements)}
    t0 = time.perf_counter()
    metrics = evaluate(model, kept, targets=["energy", "forces", "stress"], batch_size=args.batch_size)
    wall = time.perf_counter() - t0
    breakdown = accuracy_breakdown(model, kept, db, args.batch_size, split)
    out = {
        "split": split,
        "frames_total": n_total,
        "frames_sampled": len(records),
        "frames": len(kept),
        "frames_unknown_elements": skipped,
        "unknown_elements": sorted(skipped_elements),
        "energy_mae_mev_per_atom": 1e3 * metrics["energy_per_atom"]["mae"],
        "force_mae_mev_per_A": 1e3 * metrics["forces"]["mae"] if "forces" in metrics else None,
        "stress_mae_gpa": metrics["stress_gpa"]["mae"] if "stress_gpa" in metrics else None,
        "energy_rmse_mev_per_atom": 1e3 * metrics["energy_per_atom"]["rmse"],
        "wall_s": wall,
        **breakdown,
    }
    log(f"[accuracy] done in {wall:.1f} s")
    return out


_CONTACT_ORDER = {"<0.6": "0", "0.6-0.8": "1", ">=0.8": "2"}  # closest first (other keys: by name)


def _contact_class(atoms) -> str:
    """``"<0.6"``, ``"0.6-0.8"`` or ``">=0.8"``: the frame's shortest pair over the sum of
    the two covalent radii (periodic images included)."""
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, 3.0)
    ratio = (d / (covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]])).min() if len(d) else np.inf
    return "<0.6" if ratio < 0.6 else ("0.6-0.8" if ratio < 0.8 else ">=0.8")


def accuracy_breakdown(model, records, db: Path, batch_size: int, split: str = "test") -> dict:
    """Energy (meV/atom) and force (meV/Å) MAE of the test frames by parent source,
    by frame kind, by closest contact (the shortest pair over its covalent bond length:
    below 0.6, 0.6-0.8, from 0.8) and by element (energy: frames containing the element;
    forces: atoms of the element), for the model card; the median energy error and the
    parents with the largest energy MAE (the tail that the mean hides)."""
    from ase.db import connect

    from crystalgnn_plugins.training.evaluate import predict

    with connect(db) as conn:  # rec.id is the row id (the frames carry no id key)
        meta = {str(row.id): (row.get("source", "?"), row.get("kind", "?"), row.get("parent_id", "?"))
                for row in conn.select(f"split={split}")}
    pred = predict(model, [r.atoms for r in records], batch_size=batch_size)
    e_err, f_err = [], []
    groups: dict[str, dict[str, list[float]]] = {"by_source": {}, "by_kind": {}, "by_contact": {}}
    per_element_e: dict[str, list[float]] = {}
    per_element_f: dict[str, list[float]] = {}
    per_parent: dict[str, list[float]] = {}
    for rec, energy, forces in zip(records, pred["energy"], pred["forces"]):
        n = len(rec.atoms)
        de = 1e3 * abs(float(energy) - rec.targets["energy"]) / n
        df = 1e3 * np.abs(np.asarray(forces) - rec.targets["forces"])  # (n, 3)
        e_err.append(de)
        f_err.append(df.mean())
        source, kind, parent = meta.get(rec.id, ("?", "?", "?"))
        for key, name in (("by_source", source), ("by_kind", kind), ("by_contact", _contact_class(rec.atoms))):
            groups[key].setdefault(name, []).append((de, df.mean()))
        if parent != "?":  # frames without a parent id are not pooled into one "parent"
            per_parent.setdefault(parent, []).append(de)
        symbols = np.array(rec.atoms.get_chemical_symbols())
        for el in set(symbols):
            per_element_e.setdefault(el, []).append(de)
            per_element_f.setdefault(el, []).extend(df[symbols == el].ravel().tolist())
    out = {
        key: {name: {"frames": len(v), "energy_mae_mev_per_atom": float(np.mean([a for a, _ in v])),
                     "force_mae_mev_per_A": float(np.mean([b for _, b in v])),
                     "share_of_energy_mae": float(np.sum([a for a, _ in v]) / max(np.sum(e_err), 1e-300))}
              for name, v in sorted(g.items(), key=lambda kv: _CONTACT_ORDER.get(kv[0], kv[0]))}
        for key, g in groups.items()
    }
    total = float(np.sum(e_err))
    worst = sorted(per_parent.items(), key=lambda kv: -np.mean(kv[1]))
    out["energy_median_mev_per_atom"] = float(np.median(e_err))
    out["test_parents"] = len(per_parent)
    out["worst_parents"] = [
        {"parent_id": pid, "frames": len(v), "energy_mae_mev_per_atom": float(np.mean(v)),
         "energy_max_mev_per_atom": float(np.max(v))} for pid, v in worst[:10]]
    out["worst_10_parents_share_of_energy_mae"] = float(sum(np.sum(v) for _, v in worst[:10]) / total) if total else None
    out["by_element"] = {
        el: {"frames": len(per_element_e[el]), "energy_mae_mev_per_atom": float(np.mean(per_element_e[el])),
             "force_mae_mev_per_A": float(np.mean(per_element_f[el]))}
        for el in sorted(per_element_e)
    }
    return out


# --------------------------------------------------------------------------- relax
def relax_inputs(args) -> tuple[list, str]:
    """Rattled primitive cells and 2x2x2 supercells of held-out perovskites, with ids."""
    parents: list[tuple[str, Any]] = []
    source = ""
    if args.db and Path(args.db).is_file():
        import ase.db

        db = ase.db.connect(args.db, use_lock_file=False)  # only read; another process may be writing
        rows = list(db.select("split=test,kind=parent"))
        parents = sorted(
            ((row.parent_id, row.toatoms()) for row in rows
             if str(row.get("parent_id", "")).startswith("perov5:")),
            key=lambda item: item[0],
        )
        source = f"{args.db}: kind=parent rows of perov5:* parents in split=test"
    if not parents:
        if not args.perov:
            where = f"no perov5:* test parents in {args.db}" if args.db else "no --db"
            sys.exit(f"error: relax section: {where}, and no --perov CSV to fall back on")
        from crystalgnn_plugins.data import read_cdvae_csv

        sys.path.insert(0, str(Path(__file__).resolve().parent / "potential_data"))
        from pd_structures import assign_split

        log(f"[relax] no held-out perovskites from --db; taking them from {args.perov}")
        records = read_cdvae_csv(args.perov, targets=[])
        # the parents the database would hold in split=test (the split is a fixed
        # function of the parent id and the data set's seed 0), in the CSV's geometry
        # rather than the database's (rescaled to the teacher's E(V) minimum)
        parents = sorted(((f"perov5:{r.id}", r.atoms) for r in records
                          if assign_split(f"perov5:{r.id}", 0) == "test"), key=lambda item: item[0])
        source = f"{args.perov}: perov5 parents of the database's split=test, CSV geometry"
    need = args.n_primitive + args.n_supercell
    # seeded hash order: the sample stays the same while the (growing) db gains parents,
    # except for new parents that sort in front
    parents.sort(key=lambda item: hashlib.sha256(f"{args.seed}|{item[0]}".encode()).hexdigest())
    picked = parents[: min(need, len(parents))]
    if len(picked) < need:
        log(f"[relax] only {len(picked)} parents for {need} structures: supercells reuse parents")
    structures = []
    for j in range(args.n_primitive):
        pid, atoms = picked[j % len(picked)]
        structures.append((pid, atoms.copy()))
    for j in range(args.n_supercell):
        pid, atoms = picked[(args.n_primitive + j) % len(picked)]
        structures.append((f"{pid}@2x2x2", atoms.repeat((2, 2, 2))))
    out = []
    for sid, atoms in structures:
        atoms.calc = None
        atoms.rattle(stdev=RATTLE_RELAX, seed=stable_seed(args.seed, sid, RATTLE_RELAX))
        atoms.info["id"] = sid
        out.append(atoms)
    return out, source


def cache_key(atoms, seed: int, fmax: float, steps: int) -> str:
    """Cache key of one CHGNet reference relaxation (the input's hash included)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(np.round(atoms.positions, 8).tobytes())
    digest.update(np.round(atoms.cell.array, 8).tobytes())
    return (f"{atoms.info['id']}|seed={seed}|rattle={RATTLE_RELAX}|chgnet-{CHGNET_VERSION}"
            f"|FIRE+FrechetCellFilter|fmax={fmax}|steps={steps}|input={digest.hexdigest()[:16]}")


def load_cache(path: str | None) -> dict:
    if not path or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        sys.exit(f"error: cannot read the CHGNet relaxation cache {path}: {exc} (delete it to start afresh)")
    return data.get("relaxations", {})


def chgnet_relax_one(atoms, calc, fmax: float, steps: int) -> dict:
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    work = atoms.copy()
    work.calc = calc
    t0 = time.perf_counter()
    target = FrechetCellFilter(work)
    opt = FIRE(target, logfile=None)
    with warnings.catch_warnings():
        # scipy's logm (FrechetCellFilter) warns about ~1e-13 inaccuracies
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        converged = bool(opt.run(fmax=fmax, steps=steps))
    energy = float(work.get_potential_energy())
    wall = time.perf_counter() - t0
    return {
        "numbers": work.numbers.tolist(),
        "positions": work.positions.tolist(),
        "cell": work.cell.array.tolist(),
        "energy": energy,
        "converged": converged,
        "steps": int(opt.nsteps),
        "wall_s": wall,
    }


def _spacegroup(structure, symprec: float = 0.1) -> str:
    """International symbol (spglib, ``symprec`` Å), or ``"?"`` when the analysis fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_symbol()
    except Exception:  # symmetry analysis is a diagnostic only
        return "?"


def section_relax(args, model, chgnet_fn) -> dict:
    from ase import Atoms
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    from crystalgnn_plugins.relaxation import relax

    structures, source = relax_inputs(args)
    log(f"[relax] {len(structures)} structures ({args.n_primitive} primitive + {args.n_supercell} "
        f"2x2x2 supercells, rattled {RATTLE_RELAX} Å) from {source}")

    # ---- CHGNet reference, one by one, cached
    cache = load_cache(args.cache)
    chgnet_calc: list = []  # loaded on the first relaxation not in the cache

    def chgnet_relaxations(starts: list, label: str) -> tuple[list[dict], int]:
        out, from_cache = [], 0
        for k, atoms in enumerate(starts):
            key = cache_key(atoms, args.seed, args.fmax, args.steps)
            if key in cache:
                from_cache += 1
                out.append(cache[key])
                continue
            if not chgnet_calc:
                chgnet_calc.append(chgnet_calculator(chgnet_fn()))
            res = cache[key] = chgnet_relax_one(atoms, chgnet_calc[0], args.fmax, args.steps)
            out.append(res)
            if args.cache:
                atomic_write_json(args.cache, {"description": "CHGNet 0.3.0 reference relaxations "
                                               "(benchmarks/compare_chgnet.py)", "relaxations": cache})
            log(f"[relax] {label} {k + 1}/{len(starts)} {atoms.info['id']} ({len(atoms)} atoms): "
                f"{'converged' if res['converged'] else 'NOT converged'} in {res['steps']} steps, {res['wall_s']:.1f} s")
        if from_cache:
            log(f"[relax] {label}: {from_cache} of {len(starts)} relaxations taken from the cache {args.cache}")
        return out, from_cache

    ref, from_cache = chgnet_relaxations(structures, "CHGNet")

    # ---- CHGNet against itself: the same starts moved by --reference-noise Å more
    noisy_ref = []
    if args.reference_noise > 0:
        moved_starts = []
        for atoms in structures:
            moved = atoms.copy()
            moved.rattle(stdev=args.reference_noise, seed=stable_seed(args.seed, atoms.info["id"], "noise",
                                                                      args.reference_noise))
            moved.info["id"] = f"{atoms.info['id']}+noise{args.reference_noise}"
            moved_starts.append(moved)
        noisy_ref, _ = chgnet_relaxations(moved_starts, f"CHGNet (+{args.reference_noise} Å)")

    # ---- ours
    runs = {}
    for mode, batched in (("one_by_one", False), ("batched", True)):
        log(f"[relax] ours, {mode.replace('_', ' ')} ...")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # summarised below
            results = relax(structures, model, fmax=args.fmax, steps=args.steps, relax_cell=True,
                            batched=batched, batch_size=args.batch_size, device="cpu", on_error="skip")
        wall = time.perf_counter() - t0
        runs[mode] = (results, wall)
        log(f"[relax] ours, {mode.replace('_', ' ')}: {sum(r.converged for r in results)}/{len(results)} "
            f"converged, {wall:.1f} s")

    # ---- comparison against CHGNet's relaxed structures
    matcher = StructureMatcher()
    adaptor = AseAtomsAdaptor()
    ref_structs = [adaptor.get_structure(Atoms(numbers=r["numbers"], positions=r["positions"],
                                               cell=r["cell"], pbc=True)) for r in ref]
    out: dict[str, Any] = {
        "source": source,
        "structures": len(structures),
        "ids": [a.info["id"] for a in structures],
        "fmax": args.fmax,
        "steps": args.steps,
        "chgnet": {
            "converged": sum(bool(r["converged"]) for r in ref),
            "wall_s": sum(float(r["wall_s"]) for r in ref),
            "from_cache": from_cache,
            "mean_steps": float(np.mean([r["steps"] for r in ref])) if ref else None,
        },
    }
    ref_spacegroups = [_spacegroup(r) for r in ref_structs]
    for mode, (results, wall) in runs.items():
        matched, rms, failed, rows = 0, [], 0, []
        for atoms, res, ref_s, rf, ref_sg in zip(structures, results, ref_structs, ref, ref_spacegroups, strict=True):
            row = {"id": atoms.info["id"], "atoms": len(atoms), "chgnet_converged": bool(rf["converged"]),
                   "chgnet_spacegroup": ref_sg}
            rows.append(row)
            if res.error is not None:
                failed += 1
                row["error"] = res.error
                continue
            ours = adaptor.get_structure(res.structure)
            fit = bool(matcher.fit(ours, ref_s))
            row.update({"converged": bool(res.converged), "matched": fit, "spacegroup": _spacegroup(ours),
                        "volume_ratio": ours.volume / ref_s.volume,
                        "energy_diff_mev_per_atom": 1e3 * (res.energy - rf["energy"]) / len(atoms)})
            if fit:
                matched += 1
                dist = matcher.get_rms_dist(ours, ref_s)
                if dist is not None:
                    rms.append(float(dist[0]))
        n_ok = len(results) - failed
        out[f"ours_{mode}"] = {
            "converged": sum(bool(r.converged) for r in results),
            "failed": failed,
            "errors": sorted({r.error for r in results if r.error is not None}),
            "wall_s": wall,
            "mean_steps": float(np.mean([r.steps for r in results if r.error is None])) if n_ok else None,
            "matched": matched,
            "match_rate": matched / len(results) if results else None,
            "mean_rms_dist": float(np.mean(rms)) if rms else None,
            "mean_abs_energy_diff_mev_per_atom": float(np.mean([
                1e3 * abs(r.energy - rf["energy"]) / len(rf["numbers"])
                for r, rf in zip(results, ref, strict=True) if r.error is None
            ])) if n_ok else None,
            "per_structure": rows,
        }
    if noisy_ref:
        rows, matched = [], 0
        for atoms, rf, ref_s, nz in zip(structures, ref, ref_structs, noisy_ref, strict=True):
            nz_s = adaptor.get_structure(Atoms(numbers=nz["numbers"], positions=nz["positions"],
                                               cell=nz["cell"], pbc=True))
            fit = bool(matcher.fit(nz_s, ref_s))
            matched += fit
            rows.append({"id": atoms.info["id"], "matched": fit, "converged": bool(nz["converged"]),
                         "spacegroup": _spacegroup(nz_s), "volume_ratio": nz_s.volume / ref_s.volume,
                         "energy_diff_mev_per_atom": 1e3 * (nz["energy"] - rf["energy"]) / len(atoms)})
        out["chgnet_vs_itself"] = {
            "noise_A": args.reference_noise,
            "converged": sum(r["converged"] for r in rows),
            "matched": matched,
            "match_rate": matched / len(rows),
            "per_structure": rows,
        }
        for mode in runs:  # ours, on the structures whose CHGNet minimum is reproducible
            ours_rows = out[f"ours_{mode}"]["per_structure"]
            kept = [o for o, own in zip(ours_rows, rows, strict=True) if own["matched"]]
            out["chgnet_vs_itself"][f"ours_{mode}_matched_where_chgnet_matches_itself"] = sum(
                bool(o.get("matched")) for o in kept)
    chg = out["chgnet"]["wall_s"]
    out["speedup_batched_vs_chgnet"] = chg / out["ours_batched"]["wall_s"] if out["ours_batched"]["wall_s"] else None
    out["speedup_one_by_one_vs_chgnet"] = (chg / out["ours_one_by_one"]["wall_s"]
                                           if out["ours_one_by_one"]["wall_s"] else None)
    return out


# --------------------------------------------------------------------------- speed
def _time_calc(calc, atoms, repeats: int) -> tuple[float, list[float]]:
    """Median wall time (s) of fresh energy+forces+stress calculations after a warm-up."""
    def once() -> None:
        calc.reset()  # drop the stored results so this call recomputes everything
        for name in ("energy", "forces", "stress"):  # one calculation; the rest is read back
            calc.get_property(name, atoms)

    once()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _mem_limit_bytes(args) -> int | None:
    """Address-space cap for the timing subprocesses (CHGNet's autograd needs ~6 GB at
    320 atoms and more than 20 GB at 2,560: without a cap it can OOM the machine)."""
    if args.mem_limit_gb is not None:
        return int(args.mem_limit_gb * 2**30) if args.mem_limit_gb > 0 else None
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh}
        return int(0.6 * info["MemAvailable"] * 1024)
    except (OSError, KeyError, ValueError):  # pragma: no cover - not Linux
        return None


def _current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        return None


def timing_child(args) -> None:
    """Run in a fresh process: time one model at one size, print one JSON line."""
    kind, _, size = args.child.partition(":")
    n = int(size)
    import torch

    torch.set_num_threads(args.threads)
    atoms = srtio3_supercell(n, seed=args.seed)
    row: dict[str, Any] = {"model": kind, "requested": n, "atoms": len(atoms)}
    try:
        if kind == "ours":
            from crystalgnn_plugins.calculators import GNNCalculator

            model = load_our_model(args.model)
            unknown = unknown_elements(model, atoms.numbers)
            if unknown:
                raise ValueError(f"the model does not know {unknown}")
            calc = GNNCalculator(model, device="cpu")
        elif kind in ("chgnet", "chgnet_nograph"):
            if kind == "chgnet_nograph":
                _inference_only_autograd()
            calc = chgnet_calculator(load_chgnet())
        else:
            raise ValueError(f"unknown child kind {kind!r}")
        # each model as its users run it: GNNCalculator keeps freed buffers in the C
        # allocator (process-wide); CHGNet runs with the allocator's defaults (with the
        # same setting its 2,560-atom runs exceed the memory cap)
        from crystalgnn_plugins.calculators.host_memory import host_memory_reused

        row["host_memory_reused"] = host_memory_reused()
        row["rss_after_load_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        row["rss_before_calc_mb"] = _current_rss_mb()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            t, times = _time_calc(calc, atoms, args.repeats)
        row.update(ms=1e3 * t, us_per_atom=1e6 * t / len(atoms), all_ms=[1e3 * x for x in times])
    except (MemoryError, RuntimeError, ValueError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError) or "alloc" in text.lower():
            text = f"out of memory ({text})"
        row["error"] = text
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps(row), flush=True)


def _inference_only_autograd() -> None:
    """For the ``chgnet_nograph`` row: CHGNet 0.3.0 takes forces and stress with
    ``torch.autograd.grad(..., create_graph=True)`` (kept for training), which holds
    the double-backward graph in memory. In this dedicated child process, force
    ``create_graph=False`` so CHGNet is also timed as a pure inference code."""
    import torch

    real_grad = torch.autograd.grad

    def grad(*a, **kw):
        kw["create_graph"] = False
        return real_grad(*a, **kw)

    torch.autograd.grad = grad


def run_child(args, kind: str, n: int) -> dict:
    """Time ``kind`` ("ours" / "chgnet") at ``n`` atoms in a fresh, memory-capped process."""
    limit = _mem_limit_bytes(args)

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{kind}:{n}",
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    if args.model is not None:
        cmd += ["--model", str(args.model)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=cap)
    lines = res.stdout.strip().splitlines()
    if res.returncode == 0 and lines:
        try:
            row = json.loads(lines[-1])
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            row["mem_limit_gb"] = None if limit is None else limit / 2**30
            return row
    tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    if res.returncode < 0 or "memory" in res.stderr.lower():
        error = f"failed (exit {res.returncode}, probably out of memory, cap {limit and limit / 2**30:.1f} GB): {tail}"
    else:
        error = f"failed (exit {res.returncode}): {tail}"
    return {"model": kind, "requested": n, "atoms": None, "error": error}


def section_speed(args) -> dict:
    rows = []
    for n in args.speed_sizes:
        entry: dict[str, Any] = {"requested": n}
        for kind in ("ours", "chgnet", "chgnet_nograph"):
            log(f"[speed] ~{n} atoms: {kind} (fresh process) ...")
            row = run_child(args, kind, n)
            entry["atoms"] = row.get("atoms") or entry.get("atoms")
            entry[f"{kind}_ms"] = row.get("ms")
            entry[f"{kind}_all_ms"] = row.get("all_ms")
            entry[f"{kind}_peak_rss_mb"] = row.get("peak_rss_mb")
            if row.get("error"):
                entry[f"{kind}_error"] = row["error"]
                log(f"[speed] ~{n} atoms: {kind} {row['error']}")
            else:
                log(f"[speed] {row['atoms']} atoms: {kind} {row['ms']:.0f} ms (peak RSS {row['peak_rss_mb']:.0f} MB)")
        ours, chg, chg_ng = entry.get("ours_ms"), entry.get("chgnet_ms"), entry.get("chgnet_nograph_ms")
        entry["ratio_ours_over_chgnet"] = ours / chg if ours and chg else None
        entry["ratio_ours_over_chgnet_nograph"] = ours / chg_ng if ours and chg_ng else None
        rows.append(entry)
    return {"repeats": args.repeats, "rattle_A": RATTLE_SPEED, "rows": rows}


# --------------------------------------------------------------------------- scaling
def section_scaling(args) -> dict:
    rows = []
    for n in args.sizes:
        log(f"[scaling] ~{n} atoms (fresh process) ...")
        row = run_child(args, "ours", n)
        rows.append(row)
        if row.get("error"):
            log(f"[scaling] ~{n} atoms: {row['error']}")
        else:
            log(f"[scaling] {row['atoms']} atoms: {row['ms']:.0f} ms, {row['us_per_atom']:.1f} µs/atom, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB")
    return {"repeats": args.repeats, "rows": rows}

# --------------------------------------------------------------------------- report
def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not np.isfinite(value):
        return "nan"
    return format(value, spec)


def print_report(report: dict) -> None:
    log("")
    log(f"=== ours ({report['model']}) vs CHGNet {CHGNET_VERSION}, torch threads {report['threads']} ===")
    acc = report.get("accuracy")
    if acc:
        log(f"\n-- accuracy vs CHGNet labels, split={acc.get('split', 'test')} --")
        log(f"frames evaluated        {acc['frames']} (of {acc['frames_total']}; "
            f"{acc['frames_unknown_elements']} left out for unknown elements {acc['unknown_elements']})")
        if acc["frames"]:
            log(f"energy MAE              {_fmt(acc['energy_mae_mev_per_atom'], '.1f')} meV/atom")
            log(f"force MAE               {_fmt(acc['force_mae_mev_per_A'], '.1f')} meV/Å")
            log(f"stress MAE              {_fmt(acc['stress_mae_gpa'], '.3f')} GPa")
            for key in ("by_source", "by_kind", "by_contact"):
                for name, v in acc.get(key, {}).items():
                    label = f"contact {name}" if key == "by_contact" else name
                    share = f"  ({100 * v['share_of_energy_mae']:.0f} % of the E MAE)" if "share_of_energy_mae" in v else ""
                    log(f"  {label:<22}{v['frames']:>6} frames  E {v['energy_mae_mev_per_atom']:7.1f} meV/atom"
                        f"  F {v['force_mae_mev_per_A']:7.1f} meV/Å{share}")
            if acc.get("worst_10_parents_share_of_energy_mae") is not None:
                log(f"energy median error     {acc['energy_median_mev_per_atom']:.1f} meV/atom; the 10 worst of "
                    f"{acc['test_parents']} parents make {100 * acc['worst_10_parents_share_of_energy_mae']:.0f} % "
                    "of the energy MAE: " + ", ".join(f"{w['parent_id']} {w['energy_mae_mev_per_atom']:.0f}"
                                                      for w in acc["worst_parents"]))
            worst = sorted(acc.get("by_element", {}).items(), key=lambda kv: -kv[1]["energy_mae_mev_per_atom"])[:10]
            log("  worst elements (energy MAE of frames containing them, meV/atom): "
                + ", ".join(f"{el} {v['energy_mae_mev_per_atom']:.0f}" for el, v in worst))
    rel = report.get("relax")
    if rel:
        n = rel["structures"]
        log(f"\n-- relaxation of {n} rattled held-out perovskites (fmax {rel['fmax']}, {rel['steps']} steps) --")
        log(f"{'':<20}{'converged':>11}{'failed':>8}{'mean steps':>12}{'match':>9}{'mean RMS':>10}"
            f"{'|dE| meV/at':>13}{'wall s':>9}{'CHGNet/this':>13}")
        c = rel["chgnet"]
        log(f"{'CHGNet one by one':<20}{c['converged']:>7}/{n:<3}{'':>8}{_fmt(c['mean_steps'], '.0f'):>12}"
            f"{'':>9}{'':>10}{'':>13}{c['wall_s']:>9.1f}{'1.00':>13}"
            + (f"   ({c['from_cache']} cached)" if c["from_cache"] else ""))
        for mode, label in (("one_by_one", "ours one by one"), ("batched", "ours batched")):
            o = rel[f"ours_{mode}"]
            speed = c["wall_s"] / o["wall_s"] if o["wall_s"] else None
            log(f"{label:<20}{o['converged']:>7}/{n:<3}{o['failed']:>8}{_fmt(o['mean_steps'], '.0f'):>12}"
                f"{o['matched']:>5}/{n:<3}{_fmt(o['mean_rms_dist'], '.3f'):>10}"
                f"{_fmt(o['mean_abs_energy_diff_mev_per_atom'], '.1f'):>13}{o['wall_s']:>9.1f}{_fmt(speed, '.2f'):>13}")
        log(f"speed-up batched vs CHGNet: {_fmt(rel['speedup_batched_vs_chgnet'], '.2f')}x "
            f"(one by one: {_fmt(rel['speedup_one_by_one_vs_chgnet'], '.2f')}x)")
        own = rel.get("chgnet_vs_itself")
        if own:
            log(f"CHGNet against itself (starts moved by {own['noise_A']} Å more): {own['matched']}/{n} match, "
                f"{own['converged']}/{n} converged; ours (batched) matches CHGNet on "
                f"{own.get('ours_batched_matched_where_chgnet_matches_itself')} of those {own['matched']}")
    spd = report.get("speed")
    if spd:
        log(f"\n-- single point E+F+S, rattled cubic SrTiO3, median of {spd['repeats']} after a warm-up "
            "(fresh process per model and size) --")
        log("(CHGNet* = CHGNet with create_graph=False forced: inference-only autograd, less memory)")
        log(f"{'atoms':>7}{'ours ms':>10}{'CHGNet ms':>11}{'CHGNet* ms':>12}{'ours/CHGNet':>13}{'ours/CHGNet*':>14}"
            f"{'ours RSS MB':>13}{'CHGNet RSS MB':>15}{'CHGNet* RSS MB':>16}")
        for r in spd["rows"]:
            log(f"{_fmt(r['atoms'], 'd'):>7}{_fmt(r['ours_ms'], '.1f'):>10}{_fmt(r['chgnet_ms'], '.1f'):>11}"
                f"{_fmt(r.get('chgnet_nograph_ms'), '.1f'):>12}"
                f"{_fmt(r['ratio_ours_over_chgnet'], '.3f'):>13}{_fmt(r.get('ratio_ours_over_chgnet_nograph'), '.3f'):>14}"
                f"{_fmt(r['ours_peak_rss_mb'], '.0f'):>13}"
                f"{_fmt(r['chgnet_peak_rss_mb'], '.0f'):>15}{_fmt(r.get('chgnet_nograph_peak_rss_mb'), '.0f'):>16}")
            for kind in ("ours", "chgnet", "chgnet_nograph"):
                if r.get(f"{kind}_error"):
                    log(f"        {kind}: {r[f'{kind}_error']}")
            for kind in ("ours", "chgnet"):
                if r.get(f"{kind}_error"):
                    log(f"{'':>7}{kind}: {r[kind + '_error']}")
    sca = report.get("scaling")
    if sca:
        log(f"\n-- scaling of ours (fresh process per size, median of {sca['repeats']}) --")
        log(f"{'atoms':>7}{'ms':>10}{'µs/atom':>10}{'peak RSS MB':>13}{'RSS before calc MB':>20}")
        for r in sca["rows"]:
            if r.get("error"):
                log(f"{_fmt(r['atoms'], 'd'):>7}  ~{r['requested']} atoms: {r['error']}")
                continue
            log(f"{r['atoms']:>7}{r['ms']:>10.1f}{r['us_per_atom']:>10.1f}{r['peak_rss_mb']:>13.0f}"
                f"{_fmt(r.get('rss_before_calc_mb'), '.0f'):>20}")


# --------------------------------------------------------------------------- main
def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _sections(text: str) -> list[str]:
    names = [x for x in text.replace(" ", "").split(",") if x]
    bad = [x for x in names if x not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Compare our energy model with CHGNet 0.3.0: accuracy on the teacher's test "
                    "frames, relaxations, single-point speed and scaling.",
        epilog="See the module docstring for the reproduce command.",
    )
    p.add_argument("--model", default=None,
                   help="saved-model directory or shipped model name (default: the shipped default)")
    p.add_argument("--sections", type=_sections, default=list(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both models (default 1)")
    p.add_argument("--db", help="teacher frames database (benchmarks/potential_data), e.g. "
                                "/work/runs/potential_data/frames.db; opened read-only")
    p.add_argument("--max-test-frames", type=int, default=0,
                   help="accuracy: evaluate a seeded sample of at most this many test frames (0: all)")
    p.add_argument("--accuracy-split", default="test", choices=["test", "val", "train"],
                   help="accuracy: the split evaluated (default test; train: how well the model fits its "
                        "own training frames, with --max-test-frames to sample them)")
    p.add_argument("--perov", help="relax: perov_5 CDVAE CSV used when the db has no held-out perovskites")
    p.add_argument("--n-primitive", type=int, default=30, help="relax: primitive cells (default 30)")
    p.add_argument("--n-supercell", type=int, default=10, help="relax: 2x2x2 supercells (default 10)")
    p.add_argument("--fmax", type=float, default=0.05, help="relax: force threshold, eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=500, help="relax: maximum FIRE steps (default 500)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="batch size of our batched relaxation and of the accuracy evaluation (default 64)")
    p.add_argument("--reference-noise", type=float, default=0.0,
                   help="relax: also relax each start moved by this many Å more (seeded) with CHGNet and "
                        "report how many of those match CHGNet's own relaxed structures (the floor of the "
                        "match criterion; default 0: off)")
    p.add_argument("--cache", help="relax: JSON cache of the CHGNet reference relaxations "
                                   "(default: none, CHGNet relaxations are always rerun)")
    p.add_argument("--repeats", type=int, default=3, help="speed/scaling: timed repeats after a warm-up (default 3)")
    p.add_argument("--speed-sizes", type=_int_list, default=list(SPEED_SIZES),
                   help="speed: approximate atom counts (default 320,2560)")
    p.add_argument("--sizes", type=_int_list, default=list(DEFAULT_SIZES),
                   help="scaling: approximate atom counts (default 100,320,1000,2560,5000,10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and rattles (default 0)")
    p.add_argument("--out", help="write the report as JSON here (atomic write)")
    p.add_argument("--mem-limit-gb", type=float, default=None,
                   help="speed/scaling: address-space cap of each timing subprocess, GB (default: 60%% of "
                        "MemAvailable; 0: no cap). A size that does not fit is reported as out of memory")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        sys.exit("error: --threads and --repeats must be >= 1")
    if args.child:
        timing_child(args)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if ("accuracy" in args.sections or "relax" in args.sections) and args.db and not Path(args.db).is_file():
        sys.exit(f"error: frames database not found: {args.db}")
    if "accuracy" in args.sections:
        require_db(args.db, "accuracy")

    model = load_our_model(args.model)
    log(f"our model: {args.model or 'shipped default'} ({sum(p.numel() for p in model.parameters())} parameters, "
        f"elements: "
        f"{'any' if model.elements is None else len(model.elements)}); torch threads {torch.get_num_threads()}")

    chgnet_cache: list = []

    def chgnet_fn():
        if not chgnet_cache:
            log(f"loading CHGNet {CHGNET_VERSION} ...")
            chgnet_cache.append(load_chgnet())
        return chgnet_cache[0]

    report: dict[str, Any] = {
        "model": str(args.model or "default"),
        "chgnet": CHGNET_VERSION,
        "threads": args.threads,
        "seed": args.seed,
        "sections": args.sections,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "host_load_avg": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    t_start = time.perf_counter()
    for name in args.sections:
        t0 = time.perf_counter()
        if name == "accuracy":
            report[name] = section_accuracy(args, model)
        elif name == "relax":
            report[name] = section_relax(args, model, chgnet_fn)
        elif name == "speed":
            report[name] = section_speed(args)
        elif name == "scaling":
            report[name] = section_scaling(args)
        log(f"[{name}] section took {time.perf_counter() - t0:.1f} s")
        if args.out:  # keep what we have if a later section fails
            atomic_write_json(args.out, report)
    report["wall_s"] = time.perf_counter() - t_start
    print_report(report)
    if args.out:
        atomic_write_json(args.out, report)
        log(f"\nreport written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
