"""Shared by the generator benchmarks: the fixed 80/10/10 split (seed 0) of
each CDVAE dev CSV, as pymatgen ``Structure``s with their properties."""

from __future__ import annotations

from pathlib import Path

from pymatgen.io.ase import AseAtomsAdaptor

from crystalgnn_plugins.data import read_cdvae_csv
from crystalgnn_plugins.data.splits import split_indices

#: condition name -> target columns kept with each structure
DATASETS = {"perov_5": ["heat_ref", "heat_all"], "carbon_24": ["energy_per_atom"]}


def load_split(csv: str | Path, dataset: str, seed: int = 0) -> dict[str, list]:
    """``{"train"|"val"|"test": [Structure, ...]}``; each structure's
    ``properties`` carry ``material_id`` and the dataset's target values."""
    records = read_cdvae_csv(csv, targets=DATASETS[dataset])
    parts = split_indices(len(records), (0.8, 0.1, 0.1), seed=seed)
    out = {}
    for name, idx in zip(("train", "val", "test"), parts):
        structures = []
        for i in idx:
            rec = records[int(i)]
            s = AseAtomsAdaptor.get_structure(rec.atoms)
            s.properties = {"material_id": rec.id, "dataset": dataset, **rec.targets}
            structures.append(s)
        out[name] = structures
    return out
