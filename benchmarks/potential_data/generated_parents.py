#!/usr/bin/env python
"""New parent crystals for the potential's training set, made by the project's generator.

The shipped generator samples crystals like the perov_5 / carbon_24 training crystals
(default physics guidance), the default potential relaxes them (batched FIRE + Fréchet
cell filter, at the data set's pressure), and the converged ones become parents of the
``generated`` source of ``make_dataset.py`` (``--generated FILE``), which perturbs them
and lets the teacher label the frames like every other parent. They add compositions
and structures that no data set crystal has, around the places where the generator's
physics guidance and relaxations use the potential.

No held-out crystal leaks in: a sample is dropped if its reduced formula is that of a
``val``/``test`` parent of ``--db`` and either it has two or more elements (the perov_5
compositions are specific enough that a shared formula is treated as the same crystal)
or it matches such a parent under ``StructureMatcher()`` (elemental crystals, e.g.
carbon). ``make_dataset.py`` puts every generated parent in the training split.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/potential_data/generated_parents.py \\
        --db DIR/frames.db --n perov_5=3000,carbon_24=1000 --seed 100 --out DIR/generated.json.gz
    OMP_NUM_THREADS=1 python benchmarks/potential_data/make_dataset.py --out DIR \\
        --sources generated --generated DIR/generated.json.gz --resume

The output is a gzipped JSON list of ``{"id", "condition", "structure"}`` (pymatgen
``Structure.as_dict()``), written atomically; ids are ``generated:<condition>-s<seed>-<k>``.
Each condition's kept samples are also saved on their own (``OUT.<condition>.part``) as
soon as they are done, so a run that is stopped and started again with the same
arguments skips the finished conditions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

from crystalgnn_plugins._atomic import atomic_write_json


def held_out_parents(db: Path) -> dict[str, list]:
    """``{reduced formula: [Structure, ...]}``: one structure per val/test parent of the
    database, its ``kind=parent`` frame if it has one, else any of its frames (a parent
    whose own frame was skipped, e.g. for a large force, is held out all the same)."""
    import ase.db
    from pymatgen.io.ase import AseAtomsAdaptor

    chosen: dict[str, tuple[bool, object]] = {}
    with ase.db.connect(db, use_lock_file=False) as conn:
        for split in ("val", "test"):
            for row in conn.select(split=split):
                is_parent = row.get("kind") == "parent"
                pid = row.get("parent_id", f"row {row.id}")
                if pid not in chosen or (is_parent and not chosen[pid][0]):
                    chosen[pid] = (is_parent, row.toatoms())
    out: dict[str, list] = defaultdict(list)
    for _, atoms in chosen.values():
        s = AseAtomsAdaptor.get_structure(atoms)
        out[s.composition.reduced_formula].append(s)
    return out


def leaks(structure, held_out: dict[str, list], matcher) -> bool:
    """True if ``structure`` may be a held-out parent (see the module docstring)."""
    same = held_out.get(structure.composition.reduced_formula)
    if not same:
        return False
    if len(structure.composition.elements) > 1:
        return True
    return any(matcher.fit(structure, h) for h in same)


def parse_counts(text: str) -> dict[str, int]:
    counts = {}
    for part in text.split(","):
        name, _, n = part.partition("=")
        if not n.strip().isdigit():
            raise argparse.ArgumentTypeError(f"--n: expected CONDITION=COUNT, got {part!r}")
        counts[name.strip()] = int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="the teacher frames database (for its held-out parents)")
    ap.add_argument("--n", type=parse_counts, default={"perov_5": 3000, "carbon_24": 1000},
                    help="samples per generator condition, e.g. perov_5=3000,carbon_24=1000")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--model", default=None, help="energy model for guidance and relaxation (default: shipped)")
    ap.add_argument("--generator", default=None, help="generator (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from crystalgnn_plugins.generation import CrystalStructureSource

    torch.set_num_threads(args.threads)
    held_out = held_out_parents(Path(args.db))
    print(f"{sum(map(len, held_out.values()))} held-out parents, {len(held_out)} formulas", flush=True)
    source = CrystalStructureSource(args.generator, energy_model=args.model)
    known = set(source.energy_model().elements or [])
    matcher = StructureMatcher()
    rows, counts = [], {}
    out = Path(args.out)

    def settings(n: int) -> dict:
        return {"n": n, "seed": args.seed, "generator": args.generator, "model": args.model,
                "db": str(Path(args.db).resolve())}

    for condition, n in args.n.items():
        part = out.with_name(f"{out.name}.{condition}.part")
        if part.exists():
            with gzip.open(part, "rt") as fh:
                saved = json.load(fh)
            if saved.get("settings") == settings(n):
                rows += saved["rows"]
                counts[condition] = saved["counts"]
                print(condition, "(saved)", saved["counts"], flush=True)
                continue
        t0 = time.perf_counter()
        kept: list[dict] = []
        samples = source.get_structures(n, condition=condition, seed=args.seed, relax=True)
        c = {"sampled": len(samples), "unconverged": 0, "unknown_elements": 0, "held_out": 0}
        for k, s in enumerate(samples):
            relaxation = s.properties["generation"]["relaxation"]
            if not relaxation["converged"] or relaxation["error"]:
                c["unconverged"] += 1
            elif known and not {e.symbol for e in s.composition.elements} <= known:
                c["unknown_elements"] += 1
            elif leaks(s, held_out, matcher):
                c["held_out"] += 1
            else:
                s.properties = {}
                kept.append({"id": f"generated:{condition}-s{args.seed}-{k}", "condition": condition,
                             "structure": s.as_dict()})
        c["kept"] = len(kept)
        c["seconds"] = round(time.perf_counter() - t0, 1)
        counts[condition] = c
        rows += kept
        print(condition, c, flush=True)
        atomic_write_json(part, {"settings": settings(n), "counts": c, "rows": kept}, indent=None, compress=True)
    atomic_write_json(out, rows, indent=None, compress=True)
    print(f"{len(rows)} parents written to {out}: {counts}")


if __name__ == "__main__":
    main()
