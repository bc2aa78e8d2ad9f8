"""Parent structures, perturbed frames and the parent split (pure functions, no torch).

Used by ``make_dataset.py``; everything here is deterministic: prototype and
element parents do not depend on any seed, and every random draw for a parent
comes from :func:`parent_rng` (a function of ``--seed`` and the parent id
only), so a parent's frames do not depend on which other parents are in the
run, on their order, on the chunking or on the number of workers.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from ase.neighborlist import neighbor_list

__all__ = [
    "KINDS",
    "MIN_DISTANCE",
    "SOURCES",
    "TRAIN_ONLY_SOURCES",
    "SPLIT_FRACTIONS",
    "Frame",
    "Parent",
    "assign_split",
    "charge_of",
    "dataset_parents",
    "element_parents",
    "frame_plan",
    "make_static_frames",
    "min_distance",
    "order_key",
    "parent_rng",
    "prototype_parents",
    "repeat_to",
    "scale_to_bonds",
    "select_parents",
    "stable_hash",
    "strain_tensor",
    "too_close",
]

SOURCES = ("perov5", "carbon24", "element", "prototype", "generated")
#: sources whose parents are only ever training parents (augmentation, not a test of
#: anything: the held-out splits stay those of the real and reference crystals)
TRAIN_ONLY_SOURCES = frozenset({"generated"})
KINDS = ("parent", "rattle", "strain", "supercell", "md")
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
MIN_DISTANCE = 0.6  # Å; frames with a shorter interatomic distance are skipped

NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn"})
MAX_Z = 83  # H..Bi
EXCLUDED = NOBLE_GASES | {"Pm"}  # Pm: radioactive, no ASE reference state
LANTHANIDES = frozenset(chemical_symbols[57:72])


# ----------------------------------------------------------------------------- basics


@dataclass
class Parent:
    """One parent structure.

    Attributes:
        parent_id: stable id, ``<source>:<name>``.
        source: one of :data:`SOURCES`.
        atoms: the structure (plain periodic :class:`ase.Atoms`).
        prescale: refine the lattice scale with a teacher E(V) scan before
            making frames (synthetic parents, whose cell comes from radii).
    """

    parent_id: str
    source: str
    atoms: Atoms
    prescale: bool = False


@dataclass
class Frame:
    """One unlabelled frame: ``kind`` is one of :data:`KINDS`, ``info`` holds
    scalar metadata (e.g. ``rattle_std``) stored as key-value pairs."""

    kind: str
    atoms: Atoms
    info: dict


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is stable across processes and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def parent_rng(seed: int, parent_id: str, stream: str = "frames") -> np.random.Generator:
    """The random generator of one parent (``stream`` separates independent uses)."""
    return np.random.default_rng([int(seed) % 2**63, stable_hash(stream, parent_id)])


def assign_split(
    parent_id: str, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> str:
    """``train`` / ``val`` / ``test`` for a parent: a fixed function of (id, seed).

    A uniform number ``u`` in [0, 1) from the hash of ``(seed, parent_id)`` is
    cut at the cumulative fractions, so the split of a parent never depends on
    the other parents (adding parents or resuming does not move anything) and
    all frames of a parent share its split. Part sizes are ``fractions`` up to
    binomial noise.
    """
    f_train, f_val, f_test = (float(f) for f in fractions)
    if min(f_train, f_val, f_test) < 0 or abs(f_train + f_val + f_test - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    u = stable_hash("split", int(seed), parent_id) / 2**64
    if u < f_train:
        return "train"
    return "val" if u < f_train + f_val else "test"


def order_key(parent_id: str, seed: int = 0) -> int:
    """Processing / sub-sampling order of parents (a seeded hash, mixes sources and sizes)."""
    return stable_hash("order", int(seed), parent_id)


def select_parents(
    parents: Iterable[Parent], max_per_source: int | dict[str, int] | None = None, seed: int = 0
) -> list[Parent]:
    """Parents in hash order, at most ``max_per_source`` of each source.

    ``max_per_source`` is one cap for every source, or a ``{source: cap}``
    dict (sources not in it are not capped). The subset of a source is the
    first ``cap`` of that source in :func:`order_key` order, so a larger
    ``--max-parents`` extends a smaller run (resume works across such changes).
    """
    ordered = sorted(parents, key=lambda p: (order_key(p.parent_id, seed), p.parent_id))
    if max_per_source is None:
        return ordered
    taken: dict[str, int] = {}
    out = []
    for p in ordered:
        cap = max_per_source.get(p.source) if isinstance(max_per_source, dict) else max_per_source
        if cap is None or taken.get(p.source, 0) < cap:
            taken[p.source] = taken.get(p.source, 0) + 1
            out.append(p)
    return out


def _plain(atoms: Atoms) -> Atoms:
    """A plain periodic Atoms (drops pymatgen's MSONAtoms subclass, calculators, info)."""
    return Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        cell=atoms.cell.array,
        pbc=True,
    )


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Shortest interatomic distance (periodic images included); ``inf`` if none < cutoff."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else math.inf


def too_close(atoms: Atoms, dmin: float = MIN_DISTANCE) -> bool:
    """True if two atoms (or an atom and a periodic image) are closer than ``dmin``."""
    return len(neighbor_list("d", atoms, dmin)) > 0


def repeat_to(atoms: Atoms, min_atoms: int) -> Atoms:
    """Repeat the cell along its currently shortest axis until it has >= ``min_atoms`` atoms."""
    reps = [1, 1, 1]
    lengths = atoms.cell.lengths()
    while len(atoms) * reps[0] * reps[1] * reps[2] < min_atoms:
        axis = int(np.argmin(lengths * np.array(reps)))
        reps[axis] *= 2
    return atoms.repeat(reps) if reps != [1, 1, 1] else atoms.copy()


# ----------------------------------------------------------------------------- dataset parents


def _read_cdvae(path: Path) -> list[tuple[str, Atoms]]:
    try:
        from crystalgnn_plugins.data import read_cdvae_csv
    except ImportError:  # pragma: no cover - fallback when the package is not importable
        read_cdvae_csv = None
    if read_cdvae_csv is not None:
        return [(r.id, r.atoms) for r in read_cdvae_csv(path)]
    from pymatgen.core import Structure  # pragma: no cover
    from pymatgen.io.ase import AseAtomsAdaptor  # pragma: no cover

    csv.field_size_limit(2**31 - 1)  # pragma: no cover
    out = []  # pragma: no cover
    with open(path, newline="", encoding="utf-8-sig") as fh:  # pragma: no cover
        for i, row in enumerate(csv.DictReader(fh)):
            rid = row.get("material_id") or str(i)
            out.append((rid, AseAtomsAdaptor.get_atoms(Structure.from_str(row["cif"], fmt="cif"))))
    return out  # pragma: no cover


def dataset_parents(path: str | Path, source: str) -> list[Parent]:
    """Parents from a CDVAE CSV (``cif`` + ``material_id`` columns): ids ``<source>:<material_id>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: CSV file not found: {path}")
    return [
        Parent(f"{source}:{rid}", source, _plain(atoms), prescale=False)
        for rid, atoms in _read_cdvae(path)
    ]


def generated_parents(path: str | Path) -> list[Parent]:
    """Parents from ``generated_parents.py`` output (gzipped JSON of ``id`` + pymatgen
    ``structure`` dicts): crystals made by the project's generator, relaxed by the model."""
    import gzip
    import json

    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generated: parent file not found: {path}")
    with gzip.open(path, "rt") as fh:
        rows = json.load(fh)
    out = []
    for k, row in enumerate(rows):
        if not str(row.get("id", "")).startswith("generated:") or "structure" not in row:
            raise ValueError(f"{path}: entry {k} needs an id 'generated:...' and a structure, got keys {sorted(row)}")
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(row["structure"]))
        out.append(Parent(row["id"], "generated", _plain(atoms), prescale=False))
    return out


# ----------------------------------------------------------------------------- elements


def _usable_elements() -> list[str]:
    return [chemical_symbols[z] for z in range(1, MAX_Z + 1) if chemical_symbols[z] not in EXCLUDED]


@functools.cache
def _is_metal(symbol: str) -> bool:
    from pymatgen.core import Element

    return bool(Element(symbol).is_metal)


def _volume_per_atom_from_radius(symbol: str) -> float:
    """fcc volume per atom (4√2 r³) from the metallic (else covalent) radius."""
    from pymatgen.core import Element

    r = Element(symbol).metallic_radius or covalent_radii[atomic_numbers[symbol]]
    return 4.0 * math.sqrt(2.0) * float(r) ** 3


def _lattice_for_volume(structure: str, v0: float) -> dict:
    if structure == "fcc":
        return {"a": (4 * v0) ** (1 / 3)}
    if structure == "bcc":
        return {"a": (2 * v0) ** (1 / 3)}
    if structure == "sc":
        return {"a": v0 ** (1 / 3)}
    if structure == "hcp":  # ideal c/a; V(2 atoms) = (√3/2) a² c
        coa = math.sqrt(8 / 3)
        a = (2 * v0 / (math.sqrt(3) / 2 * coa)) ** (1 / 3)
        return {"a": a, "c": coa * a}
    raise ValueError(structure)


ALTERNATE_LATTICES = ("fcc", "bcc", "hcp", "sc")


def element_parents() -> list[Parent]:
    """Elemental crystals: ASE reference states plus fcc/bcc/hcp/sc polymorphs.

    * ``element:<X>-<symmetry>`` for every element H..Bi (noble gases, Pm
      excluded) whose ASE reference state ``ase.build.bulk`` can build
      (fcc, bcc, hcp, diamond, and the simple rhombohedral / bct ones);
      elements whose reference state fails (molecular H/N/O/F, halogens, S,
      Se, Te, P, B, Mn, Ga) are skipped here (they appear in prototypes).
    * for metals (pymatgen ``Element.is_metal``) and for the non-metals whose
      reference state builds (C, Si, Ge, As, Sb), the other lattices of
      fcc / bcc / hcp (ideal c/a) / sc at the reference volume per atom
      (metallic-radius volume if there is no reference), ids
      ``element:<X>-<lattice>``. Without them such an element has a single
      elemental parent, and when that one falls into the test split no training
      frame has the element bonded to itself (Si: 0.9 eV/atom off on Si-diamond).

    All have ``prescale=True`` (the teacher's equilibrium volume is found
    before perturbing).
    """
    out: list[Parent] = []
    for sym in _usable_elements():
        z = atomic_numbers[sym]
        ref = reference_states[z] or {}
        ref_sym = ref.get("symmetry")
        v0 = None
        try:
            atoms = bulk(sym)
        except Exception:  # noqa: BLE001 - ASE raises various errors for unsupported states
            atoms = None
        if atoms is not None:
            out.append(Parent(f"element:{sym}-{ref_sym}", "element", _plain(atoms), prescale=True))
            v0 = atoms.get_volume() / len(atoms)
        if atoms is None and not _is_metal(sym):  # molecular reference states
            continue
        if v0 is None:
            v0 = _volume_per_atom_from_radius(sym)
        for lat in ALTERNATE_LATTICES:
            if lat == ref_sym:
                continue
            alt = bulk(sym, lat, **_lattice_for_volume(lat, v0))
            out.append(Parent(f"element:{sym}-{lat}", "element", _plain(alt), prescale=True))
    return out


# ----------------------------------------------------------------------------- prototypes

ANIONS = {
    "O": -2, "S": -2, "Se": -2, "Te": -2,
    "F": -1, "Cl": -1, "Br": -1, "I": -1, "H": -1,
    "N": -3, "P": -3, "As": -3, "Sb": -3,
    "C": -4,
}  # fmt: skip
# pymatgen has no ionic radius for these anions; rough crystal radii (Å) chosen so
# that sums with cation crystal radii give typical bond lengths (LiH, TiC, InP,
# GaAs, InSb). They only seed the teacher E(V) scan.
ANION_RADIUS_FALLBACK = {"H": 1.15, "C": 1.42, "P": 1.85, "As": 1.95, "Sb": 2.15}
NON_CATIONS = frozenset({"H", "C", "N", "O", "F", "Cl", "Br", "I", "S", "Se", "Te", "P"})


# Well-known oxidation states that pymatgen's ``common_oxidation_states`` lacks
# (e.g. Cu+ in CuCl / Cu2O, Ti3+ in TiN, V4+ in VO2, Au+ in CsAu-type salts).
EXTRA_STATES = {
    "Cu": (1,), "Ag": (1,), "Au": (1,), "Ti": (3,), "V": (3, 4), "Nb": (4,),
    "Cr": (2,), "Mn": (3,), "Mo": (3,), "W": (5,), "Ge": (2,), "Eu": (2,), "Yb": (2,),
    "Sm": (2,), "Ni": (3,), "Co": (3,), "Ru": (3,), "Ir": (3,), "Rh": (4,),
}  # fmt: skip


@functools.cache
def cation_states(symbol: str) -> tuple[int, ...]:
    """Positive oxidation states: pymatgen ``common_oxidation_states`` ∪ :data:`EXTRA_STATES`."""
    from pymatgen.core import Element

    states = set(Element(symbol).common_oxidation_states) | set(EXTRA_STATES.get(symbol, ()))
    return tuple(sorted(s for s in states if s > 0))


@functools.cache
def ionic_radius(symbol: str, ox: int) -> float:
    """Shannon crystal radius (pymatgen ``Species.ionic_radius``) with fallbacks, Å."""
    from pymatgen.core import Element, Species

    try:
        with warnings.catch_warnings():  # "No default ionic radius ... Using ls data" etc.
            warnings.simplefilter("ignore")
            r = Species(symbol, ox).ionic_radius
    except Exception:  # noqa: BLE001
        r = None
    if r:
        return float(r)
    if ox < 0 and symbol in ANION_RADIUS_FALLBACK:
        return ANION_RADIUS_FALLBACK[symbol]
    el = Element(symbol)
    r = el.average_cationic_radius if ox > 0 else el.average_anionic_radius
    if r and float(r) > 0:
        return float(r)
    return float(covalent_radii[atomic_numbers[symbol]])


@functools.cache
def covalent_radius(symbol: str) -> float:
    return float(covalent_radii[atomic_numbers[symbol]])


@functools.cache
def metallic_radius(symbol: str) -> float:
    from pymatgen.core import Element

    r = Element(symbol).metallic_radius
    return float(r) if r else covalent_radius(symbol)


def _frac_atoms(cell, symbols, frac) -> Atoms:
    return Atoms(
        symbols=list(symbols), scaled_positions=np.asarray(frac, float), cell=cell, pbc=True
    )


_FCC = 0.5 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)


def _hex(a: float, c: float) -> np.ndarray:
    return np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])


# Placeholder species marking the roles (cation A, cation B, anion X) in templates
# built with pymatgen from Wyckoff positions.
_ROLE_SPECIES = ("Mg", "Al", "O")


def _from_spacegroup(sg: str, lattice, n_roles: int, coords) -> tuple:
    from pymatgen.core import Structure

    species = list(_ROLE_SPECIES[: n_roles - 1]) + ["O"]
    s = Structure.from_spacegroup(sg, lattice, species, coords).get_primitive_structure()
    roles = [species.index(site.specie.symbol) for site in s]
    return s.lattice.matrix, s.frac_coords, roles


_FCC_FRAC = {"rocksalt": [0.5] * 3, "zincblende": [0.25] * 3}


@functools.cache
def _template(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(cell, fractional positions, role of each site) of a prototype, 12 Å³/atom."""
    from pymatgen.core import Lattice

    u = 0.375
    if name in ("rocksalt", "zincblende"):
        cell, frac, roles = _FCC, [[0, 0, 0], _FCC_FRAC[name]], [0, 1]
    elif name == "cscl":
        cell, frac, roles = np.eye(3), [[0, 0, 0], [0.5, 0.5, 0.5]], [0, 1]
    elif name == "wurtzite":
        cell = _hex(1.0, math.sqrt(8 / 3))
        frac = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]
        roles = [0, 0, 1, 1]
    elif name == "fluorite":
        cell, frac, roles = _FCC, [[0, 0, 0], [0.25] * 3, [0.75] * 3], [0, 1, 1]
    elif name == "antifluorite":
        cell, frac, roles = _FCC, [[0, 0, 0], [0.25] * 3, [0.75] * 3], [1, 0, 0]
    elif name == "perovskite":
        cell = np.eye(3)
        frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        roles = [0, 1, 2, 2, 2]
    elif name == "spinel":
        cell, frac, roles = _from_spacegroup(
            "Fd-3m", Lattice.cubic(8.0), 3, [[0, 0, 0], [5 / 8] * 3, [0.3875] * 3]
        )
    elif name == "rutile":
        cell, frac, roles = _from_spacegroup(
            "P4_2/mnm", Lattice.tetragonal(4.6, 0.644 * 4.6), 2, [[0, 0, 0], [0.305, 0.305, 0]]
        )
    elif name == "corundum":
        cell, frac, roles = _from_spacegroup(
            "R-3c", Lattice.hexagonal(4.8, 2.73 * 4.8), 2, [[0, 0, 0.3523], [0.3064, 0, 0.25]]
        )
    else:
        raise ValueError(f"unknown prototype {name!r}")
    cell = np.asarray(cell, float)
    frac = np.asarray(frac, float)
    cell = cell * (12.0 * len(frac) / abs(np.linalg.det(cell))) ** (1 / 3)
    return cell, frac, tuple(int(r) for r in roles)


def build_prototype(name: str, els: Sequence[str]) -> Atoms:
    """A prototype (12 Å³/atom) decorated with ``els`` = (cation(s)..., anion).

    Sites: rocksalt / cscl / zincblende / wurtzite (``A X``), fluorite
    (``A X2``), antifluorite (``A2 X``: anion on the fcc site), perovskite
    (``A B X3``, cubic Pm-3m, B at the body centre), spinel (``A B2 X4``,
    Fd-3m origin 1, A 8a, B 16d, X 32e x = 0.3875; 14-atom primitive cell),
    rutile (``A X2``, u = 0.305, c/a = 0.644), corundum (``A2 X3``, R-3c,
    z = 0.3523, x = 0.3064, c/a = 2.73; 10-atom primitive cell).
    """
    cell, frac, roles = _template(name)
    if len(els) != max(roles) + 1:
        raise ValueError(f"{name} needs {max(roles) + 1} elements, got {tuple(els)}")
    return _frac_atoms(cell, [els[r] for r in roles], frac)


def scale_to_bonds(atoms: Atoms, targets: dict[tuple[str, str], float]) -> Atoms:
    """Isotropically rescale so the nearest ``A``–``B`` distances match ``targets`` on average.

    For each pair ``(A, B)`` in ``targets`` the shortest A–B distance (with
    periodic images) is measured; the cell is scaled by the mean of
    ``target / measured`` over the pairs present.
    """
    atoms = atoms.copy()
    # at a normalised density of 12 Å³/atom nearest neighbours are well within 4.5 Å
    norm = (12.0 * len(atoms) / atoms.get_volume()) ** (1 / 3)
    atoms.set_cell(atoms.cell.array * norm, scale_atoms=True)
    i, j, d = neighbor_list("ijd", atoms, 4.5)
    syms = np.array(atoms.get_chemical_symbols())
    ratios = []
    for (a, b), target in targets.items():
        mask = ((syms[i] == a) & (syms[j] == b)) | ((syms[i] == b) & (syms[j] == a))
        if mask.any():
            ratios.append(target / float(d[mask].min()))
    if not ratios:
        raise ValueError(
            f"none of the pairs {list(targets)} found in {atoms.get_chemical_formula()}"
        )
    atoms.set_cell(atoms.cell.array * float(np.mean(ratios)), scale_atoms=True)
    return atoms


# Prototype catalogue: formula roles, allowed oxidation-state tuples (cations), anion
# set, radius model, plausibility window on radius ratios, and cap on the number of
# decorated parents chosen for it.
@dataclass(frozen=True)
class _Proto:
    name: str
    counts: tuple[int, ...]  # atoms per formula unit for each role (cations..., anion)
    ox: tuple[tuple[int, ...], ...]  # allowed cation oxidation-state tuples
    anions: tuple[str, ...]
    radius: str  # "ionic" or "covalent"
    cap: int


PROTOTYPES: tuple[_Proto, ...] = (
    _Proto("rocksalt", (1, 1), ((1,), (2,), (3,), (4,)),
           ("F", "Cl", "Br", "I", "H", "O", "S", "Se", "Te", "N", "P", "As", "C"), "ionic", 150),
    _Proto("cscl", (1, 1), ((1,),), ("Cl", "Br", "I"), "ionic", 19),
    _Proto("zincblende", (1, 1), ((1,), (2,), (3,), (4,)),
           ("Cl", "Br", "I", "O", "S", "Se", "Te", "N", "P", "As", "Sb", "C"), "covalent", 100),
    _Proto("wurtzite", (1, 1), ((1,), (2,), (3,)),
           ("I", "O", "S", "Se", "Te", "N", "P", "As"), "covalent", 70),
    _Proto("fluorite", (1, 2), ((2,), (4,)), ("F", "Cl", "O"), "ionic", 44),
    _Proto("antifluorite", (2, 1), ((1,),), ("O", "S", "Se", "Te"), "ionic", 40),
    _Proto("perovskite", (1, 1, 3), ((1, 5), (2, 4), (3, 3), (1, 2)),
           ("O", "S", "F", "Cl", "Br", "I"), "ionic", 250),
    _Proto("spinel", (1, 2, 4), ((2, 3),), ("O", "S", "Se"), "ionic", 120),
    _Proto("rutile", (1, 2), ((4,), (2,)), ("O", "F"), "ionic", 34),
    _Proto("corundum", (2, 3), ((3,),), ("O",), "ionic", 25),
)  # fmt: skip

#: the AB structure types: an AB composition chosen for one of them is also built in the
#: others (``prototype:<formula>-<type>``), as the metals get fcc/bcc/hcp/sc, so that no
#: element pair has a single parent; a held-out one would leave the pair unseen (CsAu in
#: the CsCl structure, 0.8 eV/atom off with Cs and Au together in one training perovskite)
AB_TYPES = ("rocksalt", "cscl", "zincblende", "wurtzite")

# Known B2 (CsCl-type) intermetallics, sized by metallic radii.
B2_INTERMETALLICS = (
    ("Ni", "Al"), ("Co", "Al"), ("Fe", "Al"), ("Ru", "Al"), ("Cu", "Zn"), ("Ag", "Zn"),
    ("Au", "Zn"), ("Ag", "Mg"), ("Au", "Cd"), ("Cu", "Pd"), ("Fe", "Co"), ("Ni", "Ti"),
    ("Co", "Ti"), ("Fe", "Ti"), ("Pd", "In"), ("Cu", "Be"), ("Li", "Tl"), ("Cs", "Au"),
)  # fmt: skip


def charge_of(els: Sequence[str], counts: Sequence[int], ox: Sequence[int]) -> int:
    """Total formal charge of a decorated prototype (anion = last role, ANIONS state)."""
    return sum(c * o for c, o in zip(counts[:-1], ox, strict=True)) + counts[-1] * ANIONS[els[-1]]


def _plausible(p: _Proto, els: Sequence[str], ox: Sequence[int]) -> bool:
    """Radius-ratio / tolerance-factor windows (crystal radii, CN6) for sensible decorations."""
    rx = ionic_radius(els[-1], ANIONS[els[-1]])
    rc = [ionic_radius(e, o) for e, o in zip(els[:-1], ox, strict=True)]
    ratio = rc[0] / rx
    if p.name == "rocksalt":
        return 0.3 <= ratio <= 1.6
    if p.name == "cscl":
        return ratio >= 0.7
    if p.name in ("zincblende", "wurtzite"):
        return ratio <= 0.75
    if p.name == "fluorite":
        return ratio >= 0.6
    if p.name == "antifluorite":
        return 0.3 <= ratio <= 1.5
    if p.name == "rutile":
        return 0.4 <= ratio <= 0.85
    if p.name == "corundum":
        return 0.4 <= ratio <= 0.8
    if p.name == "perovskite":
        t = (rc[0] + rx) / (math.sqrt(2) * (rc[1] + rx))
        return 0.78 <= t <= 1.05 and 0.35 <= rc[1] / rx <= 0.9 and rc[0] > rc[1]
    if p.name == "spinel":
        return 0.35 <= rc[0] / rx <= 0.9 and 0.35 <= rc[1] / rx <= 0.8
    raise ValueError(p.name)


def _candidates(p: _Proto, cations: Sequence[str], states: dict[str, tuple[int, ...]]):
    """All charge-balanced, plausible decorations of prototype ``p`` (sorted, deterministic)."""
    out = {}
    n_cat = len(p.counts) - 1
    for anion in p.anions:
        for ox in p.ox:
            pools = [[c for c in cations if o in states[c]] for o in ox]
            combos = [()]
            for pool in pools:
                combos = [c + (e,) for c in combos for e in pool if e not in c]
            for combo in combos:
                els = (*combo, anion)
                if len(set(els)) != n_cat + 1:
                    continue
                if charge_of(els, p.counts, ox) != 0 or not _plausible(p, els, ox):
                    continue
                out.setdefault(els, ox)  # first (lowest) oxidation-state tuple wins
    return sorted(out.items())


def _formula(els: Sequence[str], counts: Sequence[int]) -> str:
    return "".join(f"{e}{c if c > 1 else ''}" for e, c in zip(els, counts, strict=True))


def _bond_targets(p: _Proto, els: Sequence[str], ox: Sequence[int]) -> dict:
    anion = els[-1]
    if p.radius == "covalent":
        return {(c, anion): covalent_radius(c) + covalent_radius(anion) for c in els[:-1]}
    rx = ionic_radius(anion, ANIONS[anion])
    return {(c, anion): ionic_radius(c, o) + rx for c, o in zip(els[:-1], ox, strict=True)}


def prototype_parents(caps: dict[str, int] | None = None) -> list[Parent]:
    """Charge-balanced decorated binary / ternary prototypes covering H..Bi.

    For each prototype in :data:`PROTOTYPES` all decorations with allowed
    oxidation states (pymatgen common states ∪ :data:`EXTRA_STATES` for cations, fixed anion
    states) that are charge balanced and pass a radius-ratio / tolerance-factor
    window are candidates. Parents are then chosen greedily, one prototype at a
    time in round-robin, each time taking the candidate whose elements are the
    least covered so far (score Σ w_el / (1 + n_el), lanthanides weighted 0.25,
    ties broken by a fixed hash), until each prototype's cap. Plus the
    :data:`B2_INTERMETALLICS`. Every AB composition (ionic or intermetallic) is then also
    built in the other :data:`AB_TYPES`, with the same bond lengths. The result does not
    depend on any seed. Cells
    are scaled so cation–anion distances equal sums of Shannon crystal radii
    (``ionic``) or covalent radii (zincblende / wurtzite) and are refined by
    the teacher E(V) scan later (``prescale=True``). Ids:
    ``prototype:<formula>-<prototype>``, e.g. ``prototype:SrTiO3-perovskite``.
    """
    caps = {p.name: p.cap for p in PROTOTYPES} | dict(caps or {})
    elements = _usable_elements()
    index = {e: k for k, e in enumerate(elements)}
    weight = np.array([0.25 if e in LANTHANIDES else 1.0 for e in elements])
    cations = [e for e in elements if e not in NON_CATIONS]
    states = {c: cation_states(c) for c in cations}

    pools = []
    for p in PROTOTYPES:
        cands = _candidates(p, cations, states)
        idx = np.full((len(cands), 3), -1, dtype=np.int64)
        for k, (els, _) in enumerate(cands):
            idx[k, : len(els)] = [index[e] for e in els]
        tie = np.array([stable_hash(p.name, els) / 2**64 for els, _ in cands])
        pools.append({"p": p, "cands": cands, "idx": idx, "tie": tie,
                      "free": np.ones(len(cands), bool), "n": 0})  # fmt: skip

    counts = np.zeros(len(elements))
    chosen: list[tuple[_Proto, tuple[str, ...], tuple[int, ...]]] = []
    active = True
    while active:
        active = False
        for pool in pools:
            p = pool["p"]
            if pool["n"] >= caps.get(p.name, 0) or not pool["free"].any():
                continue
            idx = pool["idx"]
            gain = np.where(idx >= 0, weight[idx] / (1.0 + counts[idx]), 0.0).sum(axis=1)
            score = np.where(pool["free"], gain + 1e-6 * pool["tie"], -np.inf)
            k = int(np.argmax(score))
            pool["free"][k] = False
            pool["n"] += 1
            els, ox = pool["cands"][k]
            counts[[index[e] for e in set(els)]] += 1
            chosen.append((p, els, ox))
            active = True

    out = []
    ab: dict[tuple[str, ...], dict] = {}  # AB composition -> bond targets of its first type
    for p, els, ox in chosen:
        targets = _bond_targets(p, els, ox)
        atoms = scale_to_bonds(build_prototype(p.name, els), targets)
        out.append(
            Parent(f"prototype:{_formula(els, p.counts)}-{p.name}", "prototype", atoms, True)
        )
        if p.name in AB_TYPES:
            ab.setdefault(tuple(els), targets)
    for a, b in B2_INTERMETALLICS:
        targets = {(a, b): metallic_radius(a) + metallic_radius(b)}
        atoms = scale_to_bonds(build_prototype("cscl", (a, b)), targets)
        out.append(Parent(f"prototype:{a}{b}-cscl", "prototype", atoms, True))
        ab.setdefault((a, b), targets)
    have = {p.parent_id for p in out}
    for els, targets in ab.items():
        for name in AB_TYPES:
            pid = f"prototype:{_formula(els, (1, 1))}-{name}"
            if pid not in have:
                have.add(pid)
                out.append(Parent(pid, "prototype", scale_to_bonds(build_prototype(name, els), targets), True))
    return out


# ----------------------------------------------------------------------------- frames


def frame_plan(n_atoms: int, k: int) -> dict[str, int]:
    """How many frames of each kind a parent with ``n_atoms`` atoms gets, ``k`` in total.

    One ``parent``; one ``supercell`` if ``n_atoms <= 12`` (and k >= 4);
    ``k // 5`` ``md`` snapshots; of the rest 40 % (rounded) ``strain`` and the
    remainder ``rattle``. E.g. k = 10, 5 atoms: 1 / 4 / 2 / 1 / 2.
    """
    if k < 1:
        raise ValueError(f"frames per parent must be >= 1, got {k}")
    n_sc = 1 if (n_atoms <= 12 and k >= 4) else 0
    n_md = k // 5
    rest = k - 1 - n_sc - n_md
    n_strain = int(round(0.4 * rest))
    return {
        "parent": 1,
        "rattle": rest - n_strain,
        "strain": n_strain,
        "supercell": n_sc,
        "md": n_md,
    }


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def strain_tensor(
    rng: np.random.Generator, normal: float = 0.08, shear: float = 0.04
) -> np.ndarray:
    """Symmetric strain: diagonal in ±``normal``, off-diagonal (tensor shear) in ±``shear``."""
    eps = np.diag(rng.uniform(-normal, normal, 3))
    off = rng.uniform(-shear, shear, 3)
    eps[1, 2] = eps[2, 1] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[0, 1] = eps[1, 0] = off[2]
    return eps


def _rattled(atoms: Atoms, std: float, rng: np.random.Generator) -> Atoms:
    out = atoms.copy()
    if std > 0:
        out.positions += rng.normal(0.0, std, (len(out), 3))
    out.wrap()
    return out


def supercell_reps(atoms: Atoms) -> tuple[int, int, int]:
    """2×2×2 for <= 6 atoms, else 2×2×1 along the two shortest cell vectors."""
    if len(atoms) <= 6:
        return (2, 2, 2)
    longest = int(np.argmax(atoms.cell.lengths()))
    return tuple(1 if ax == longest else 2 for ax in range(3))  # type: ignore[return-value]


def make_static_frames(
    parent: Atoms, plan: dict[str, int], rng: np.random.Generator
) -> list[Frame]:
    """The non-MD frames of a parent (``rng`` = :func:`parent_rng` of the parent).

    * ``parent``: the structure itself.
    * ``rattle``: Gaussian displacements, std log-uniform in 0.01–0.3 Å
      (cells with < 4 atoms are first repeated to >= 8 atoms, since rattling
      one or two atoms is mostly a translation).
    * ``strain``: cell ``C (I + ε)`` with ε from :func:`strain_tensor`
      (±8 % normal, ±4 % tensor shear), atoms scaled; all but the first also
      rattled with std uniform in 0–0.05 Å.
    * ``supercell``: :func:`supercell_reps` repeat, rattled with std
      log-uniform in 0.01–0.2 Å.
    """
    frames = [Frame("parent", parent.copy(), {})]
    rattle_base = parent if len(parent) >= 4 else repeat_to(parent, 8)
    for _ in range(plan.get("rattle", 0)):
        std = _loguniform(rng, 0.01, 0.3)
        frames.append(Frame("rattle", _rattled(rattle_base, std, rng), {"rattle_std": std}))
    for k in range(plan.get("strain", 0)):
        eps = strain_tensor(rng)
        std = 0.0 if k == 0 else float(rng.uniform(0.0, 0.05))
        strained = parent.copy()
        strained.set_cell(parent.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        info = {"rattle_std": std, "strain_max": float(np.abs(eps).max())}
        frames.append(Frame("strain", _rattled(strained, std, rng), info))
    for _ in range(plan.get("supercell", 0)):
        std = _loguniform(rng, 0.01, 0.2)
        sc = parent.repeat(supercell_reps(parent))
        frames.append(Frame("supercell", _rattled(sc, std, rng), {"rattle_std": std}))
    return frames


def formula_elements(atoms_list: Iterable[Atoms]) -> set[str]:
    """Set of element symbols in a collection of structures."""
    out: set[str] = set()
    for a in atoms_list:
        out.update(a.get_chemical_symbols())
    return out


if __name__ == "__main__":  # pragma: no cover - quick look at the synthetic parents
    els = element_parents()
    protos = prototype_parents()
    print(f"{len(els)} element parents, {len(protos)} prototype parents")
    covered = formula_elements(p.atoms for p in els + protos)
    missing = [e for e in _usable_elements() if e not in covered]
    print(f"elements covered: {len(covered)}; missing: {missing}")
    sys.exit(0)
