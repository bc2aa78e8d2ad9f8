"""Built-in data readers, registered through the same hook as third-party plugins."""

from __future__ import annotations

from crystalgnn_plugins.hookspecs import hookimpl


@hookimpl
def register_readers(register):
    from crystalgnn_plugins.data.ase_db import read_ase_db
    from crystalgnn_plugins.data.cdvae_csv import read_cdvae_csv
    from crystalgnn_plugins.data.cif_folder import read_cif_folder
    from crystalgnn_plugins.data.extxyz import read_extxyz

    register(
        "cdvae-csv",
        read_cdvae_csv,
        description="CDVAE CSV (*.csv): a `cif` column, an id column and scalar property columns",
    )
    register(
        "cif-folder",
        read_cif_folder,
        description="CGCNN folder: id_prop.csv (id,value[,value...]) and one <id>.cif per row",
    )
    register(
        "ase-db",
        read_ase_db,
        description="ASE database (*.db): stored energy, forces, stress and numeric key-value pairs",
    )
    register(
        "extxyz",
        read_extxyz,
        description="extended XYZ (*.xyz, *.extxyz): calculator results and numeric info entries",
    )
