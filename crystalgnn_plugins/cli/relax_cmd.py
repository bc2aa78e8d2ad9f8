"""``crystalgnn relax``: relax structures with an energy model; write extxyz or an ASE db."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "relax",
        help="relax structures with an energy model",
        description="Relax structures (positions and cell) with FIRE and an energy model, "
        "until every force (and FrechetCellFilter cell force) is below --fmax eV/Å or --steps "
        "steps are done. Writes the relaxed structures with their energy, forces and stress to "
        "an extxyz file (or an ASE database if OUT ends with .db) and prints a table. "
        "Exit code 0 even if some structures did not converge (the summary says so).",
    )
    p.add_argument("inputs", nargs="+", help="structure files (CIF, POSCAR, extxyz, ... read by ase.io) or ASE .db files")
    p.add_argument("--out", "-o", required=True, help="output file: .extxyz/.xyz, or .db for an ASE database")
    p.add_argument("--model", "-m", default=None, help="saved-model directory or shipped model name")
    p.add_argument("--fmax", type=float, default=0.05, help="force convergence threshold, eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=500, help="maximum FIRE steps per structure (default 500)")
    p.add_argument("--no-cell", action="store_true", help="relax positions only, keep the cell fixed")
    p.add_argument("--pressure", type=float, default=0.0,
                   help="external hydrostatic pressure, GPa (cell relaxation on E + PV; default 0)")
    p.add_argument("--batched", action="store_true", help="relax many structures at once (batched FIRE)")
    p.add_argument("--batch-size", type=int, default=64, help="structures per batch with --batched (default 64)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--float64", action="store_true", help="run the model in double precision")
    p.add_argument("--skip-errors", action="store_true",
                   help="report structures that cannot be relaxed (unknown element, overlapping atoms) "
                   "and go on; by default the first one stops the command")
    p.set_defaults(func=run)


def _annotate(result) -> None:
    info = result.structure.info
    info["id"] = result.id
    info["relax_converged"] = bool(result.converged)
    info["relax_steps"] = int(result.steps)
    info["relax_residual"] = float(result.residual)
    info["relax_max_force"] = float(result.max_force)
    info["energy_per_atom"] = float(result.energy_per_atom)


def _write(out: Path, results) -> None:
    """Write atomically: to a temporary file next to ``out``, then rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    is_db = out.suffix.lower() == ".db"
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{'.db' if is_db else '.extxyz'}")
    try:
        if is_db:
            import ase.db

            with ase.db.connect(str(tmp), type="db", append=False) as db:
                for r in results:
                    db.write(r.structure, key_value_pairs={
                        "name": r.id,
                        "relax_converged": bool(r.converged),
                        "relax_steps": int(r.steps),
                        "relax_residual": float(r.residual),
                        "relax_max_force": float(r.max_force),
                        "energy_per_atom": float(r.energy_per_atom),
                    })
        else:
            from ase.io import write

            for r in results:
                _annotate(r)
            write(str(tmp), [r.structure for r in results], format="extxyz")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _table(results) -> str:
    width = max([len("id")] + [len(r.id) for r in results])
    lines = [f"{'id':<{width}}  {'converged':>9}  {'steps':>5}  {'E/atom (eV)':>12}  {'fmax (eV/Å)':>11}"]
    for r in results:
        if r.error is not None:
            lines.append(f"{r.id:<{width}}  {'error':>9}  {'-':>5}  {'-':>12}  {'-':>11}  {r.error}")
            continue
        lines.append(
            f"{r.id:<{width}}  {'yes' if r.converged else 'NO':>9}  {r.steps:>5d}  "
            f"{r.energy_per_atom:>12.5f}  {r.residual:>11.4f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from crystalgnn_plugins.relaxation import NotConvergedWarning, SkippedStructureWarning, relax

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out)
    if out.suffix.lower() not in (".db", ".extxyz", ".xyz"):
        raise ValueError(f"--out {args.out}: use a .extxyz (or .xyz) file or an ASE .db file")
    from crystalgnn_plugins.cli.inputs import read_structures

    ids, structures = read_structures(args.inputs)
    with warnings.catch_warnings():
        # the table and the summary below say it
        warnings.simplefilter("ignore", NotConvergedWarning)
        warnings.simplefilter("ignore", SkippedStructureWarning)
        try:
            results = relax(
                structures, args.model, fmax=args.fmax, steps=args.steps, relax_cell=not args.no_cell,
                pressure=args.pressure, batched=args.batched, batch_size=args.batch_size, device=args.device,
                dtype=torch.float64 if args.float64 else None, ids=ids,
                on_error="skip" if args.skip_errors else "raise",
            )
        except TypeError as exc:  # e.g. --model generator: a one-line error, not a traceback
            if "needs an energy model" not in str(exc):
                raise
            raise ValueError(f"--model {args.model or 'default'}: {exc}") from None
    good = [r for r in results if r.error is None]
    _write(out, good)
    print(_table(results))
    n_conv = sum(r.converged for r in good)
    summary = f"{n_conv}/{len(results)} converged"
    unconverged = len(good) - n_conv
    if unconverged:
        summary += f"; {unconverged} did NOT converge to fmax={args.fmax} eV/Å within {args.steps} steps"
    failed = len(results) - len(good)
    if failed:
        summary += f"; {failed} failed (not written)"
    print(summary)
    print(f"wrote {len(good)} structures to {out}")
    if unconverged or failed:
        print(f"crystalgnn relax: warning: {summary}", file=sys.stderr)
    return 0
