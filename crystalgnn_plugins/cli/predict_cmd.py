"""``crystalgnn predict``: apply a model to structure files or a data file."""

from __future__ import annotations

import argparse
import csv
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict with a trained model",
        description="Predict energies (eV, eV/atom), forces (max |F|, eV/Å) and stress (eV/Å³) with an "
        "energy model, or a property with a property model; writes CSV.",
    )
    p.add_argument("inputs", nargs="+", help="structure files (CIF, POSCAR, extxyz, ...) or data files")
    p.add_argument("--model", "-m", default=None,
                   help="energy or property model: saved-model directory or shipped model name "
                   "(default: the shipped default potential, 'default')")
    p.add_argument("--format", help="read inputs with this data reader instead of ase.io")
    p.add_argument("--out", "-o", help="CSV output file (default: standard output)")
    p.add_argument("--batch-size", type=int, default=64, help="structures per model call (default: 64)")
    p.set_defaults(func=run)


def _check_model(model, name: str | None) -> None:
    """Raise a ValueError unless ``model`` is an energy model or a property model."""
    from crystalgnn_plugins.models.base import CrystalModel
    from crystalgnn_plugins.models.energy import EnergyModel

    if isinstance(model, EnergyModel) or (isinstance(model, CrystalModel) and hasattr(model, "target")):
        return
    kind = getattr(model, "model_type", "") or type(model).__name__
    what = "a crystal generator" if kind == "crystal_flow" else f"a {type(model).__name__}"
    hint = "; `crystalgnn generate` uses generators" if kind == "crystal_flow" else ""
    raise ValueError(f"predict needs an energy model (a potential) or a property model, but --model "
                     f"{name if name is not None else 'default'} is {what} (model_type {kind!r}){hint}")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.stress import full_3x3_to_voigt_6_stress

    from crystalgnn_plugins.models.energy import EnergyModel
    from crystalgnn_plugins.models.pretrained import resolve_model
    from crystalgnn_plugins.training.evaluate import predict

    model = resolve_model(args.model)
    _check_model(model, args.model)
    from crystalgnn_plugins.cli.inputs import read_structures

    ids, structures = read_structures(args.inputs, args.format)
    pred = predict(model, list(structures), args.batch_size, ids)
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        if isinstance(model, EnergyModel):
            writer.writerow(["id", "formula", "energy_eV", "energy_per_atom_eV", "max_force_eV_per_A",
                             "stress_xx", "stress_yy", "stress_zz", "stress_yz", "stress_xz", "stress_xy"])
            for k, (sid, atoms) in enumerate(zip(ids, structures)):
                s = np.asarray(pred["stress"][k])
                voigt = full_3x3_to_voigt_6_stress(s)
                fmax = float(np.linalg.norm(pred["forces"][k], axis=1).max())
                e = float(pred["energy"][k])
                writer.writerow([sid, atoms.get_chemical_formula(), f"{e:.6f}", f"{e / len(atoms):.6f}", f"{fmax:.6f}",
                                 *(f"{v:.6g}" for v in voigt)])
        else:
            key = model.target
            writer.writerow(["id", "formula", f"{key}" + (f" ({model.target_units})" if model.target_units else "")])
            for k, (sid, atoms) in enumerate(zip(ids, structures)):
                writer.writerow([sid, atoms.get_chemical_formula(), f"{float(pred[key][k]):.6g}"])
    finally:
        if args.out:
            out.close()
    return 0
