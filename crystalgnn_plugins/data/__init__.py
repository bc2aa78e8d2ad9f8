"""Data readers producing :class:`Record` objects, and reproducible splits.

Formats (reader names in the plugin ``readers`` registry): ``cdvae-csv``,
``cif-folder``, ``ase-db``, ``extxyz``. Units: energies eV, forces eV/Å, stress
eV/Å³ (Voigt ``xx, yy, zz, yz, xz, xy``, ASE sign). Importing this package does
not import torch, pymatgen or pandas.
"""

from __future__ import annotations

from crystalgnn_plugins.data.ase_db import read_ase_db
from crystalgnn_plugins.data.cdvae_csv import read_cdvae_csv
from crystalgnn_plugins.data.cif_folder import read_cif_folder
from crystalgnn_plugins.data.extxyz import read_extxyz
from crystalgnn_plugins.data.readers import infer_format, read_records
from crystalgnn_plugins.data.records import DataError, Record
from crystalgnn_plugins.data.splits import group_split, split_indices

__all__ = [
    "DataError",
    "Record",
    "group_split",
    "infer_format",
    "read_ase_db",
    "read_cdvae_csv",
    "read_cif_folder",
    "read_extxyz",
    "read_records",
    "split_indices",
]
