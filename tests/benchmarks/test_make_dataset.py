"""Fast tests of benchmarks/potential_data (teacher data generation).

Pure functions (parents, perturbations, split by parent) plus the chunk /
database / resume machinery driven by a fake teacher; one small CHGNet
stress check (skipped when chgnet is not installed). No ../shared data.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "potential_data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

S = importlib.import_module("pd_structures")
M = importlib.import_module("make_dataset")


@pytest.fixture(scope="module")
def synthetic():
    return S.element_parents(), S.prototype_parents()


# ----------------------------------------------------------------------------- split / rng


def test_split_is_a_function_of_parent_and_seed():
    ids = [f"perov5:{k}" for k in range(20000)]
    splits = [S.assign_split(i, 0) for i in ids]
    assert splits == [S.assign_split(i, 0) for i in ids]  # deterministic
    n = Counter(splits)
    assert set(n) == {"train", "val", "test"}
    # 90/5/5 up to binomial noise (sd ~ 31 for val/test at n = 20000)
    assert abs(n["train"] - 18000) < 200
    assert abs(n["val"] - 1000) < 150 and abs(n["test"] - 1000) < 150
    other = [S.assign_split(i, 1) for i in ids]
    assert other != splits  # the seed matters
    # independent of the other parents: a subset gets the same labels
    assert [S.assign_split(i, 0) for i in ids[::7]] == splits[::7]


def test_split_fractions_validated():
    assert S.assign_split("x", 0, (1.0, 0.0, 0.0)) == "train"
    assert S.assign_split("x", 0, (0.0, 0.0, 1.0)) == "test"
    with pytest.raises(ValueError):
        S.assign_split("x", 0, (0.5, 0.2, 0.2))


def test_parent_rng_reproducible_and_independent():
    a = S.parent_rng(0, "carbon24:abc").normal(size=5)
    assert np.array_equal(a, S.parent_rng(0, "carbon24:abc").normal(size=5))
    assert not np.array_equal(a, S.parent_rng(1, "carbon24:abc").normal(size=5))
    assert not np.array_equal(a, S.parent_rng(0, "carbon24:abd").normal(size=5))
    assert not np.array_equal(a, S.parent_rng(0, "carbon24:abc", "md").normal(size=5))
    assert S.stable_hash("a", 1) == S.stable_hash("a", 1) != S.stable_hash("a", 2)


def _parent(pid: str, source: str, atoms: Atoms, prescale: bool = False) -> S.Parent:
    return S.Parent(pid, source, atoms, prescale)


def test_select_parents_caps_per_source_and_extends():
    ps = [
        _parent(f"{src}:{k}", src, bulk("Cu")) for src in ("perov5", "element") for k in range(10)
    ]
    two = S.select_parents(ps, 2, seed=0)
    three = S.select_parents(ps, 3, seed=0)
    assert Counter(p.source for p in two) == {"perov5": 2, "element": 2}
    assert {p.parent_id for p in two} <= {p.parent_id for p in three}  # larger run extends
    capped = S.select_parents(ps, {"perov5": 3}, seed=0)
    assert Counter(p.source for p in capped) == {"perov5": 3, "element": 10}
    assert M.parse_max_parents("4") == 4
    assert M.parse_max_parents("carbon24=10, perov5=2") == {"carbon24": 10, "perov5": 2}
    with pytest.raises(argparse.ArgumentTypeError):
        M.parse_max_parents("nope=3")
    assert [p.parent_id for p in S.select_parents(ps, None, 0)] == [
        p.parent_id for p in S.select_parents(list(reversed(ps)), None, 0)
    ]  # order does not depend on the input order


# ----------------------------------------------------------------------------- geometry helpers


def test_too_close_and_min_distance():
    si = bulk("Si", "diamond", a=5.43)
    assert not S.too_close(si)
    assert S.min_distance(si) == pytest.approx(5.43 * np.sqrt(3) / 4, rel=1e-6)
    pair = Atoms("H2", positions=[[0, 0, 0], [0.5, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    assert S.too_close(pair)
    tiny = Atoms("H", positions=[[0, 0, 0]], cell=np.diag([0.5, 5, 5]), pbc=True)  # periodic image
    assert S.too_close(tiny)


def test_repeat_to_and_supercell_reps():
    cu = bulk("Cu")  # 1 atom
    assert len(S.repeat_to(cu, 8)) == 8
    assert len(S.repeat_to(cu, 1)) == 1
    assert S.supercell_reps(Atoms("X5", cell=np.eye(3) * 4, pbc=True)) == (2, 2, 2)
    c8 = Atoms("C8", positions=np.random.default_rng(0).random((8, 3)) * 3,
               cell=np.diag([3.0, 3.1, 9.0]), pbc=True)  # fmt: skip
    assert S.supercell_reps(c8) == (2, 2, 1)  # longest axis (c) not repeated


# ----------------------------------------------------------------------------- frames


@pytest.mark.parametrize("n_atoms,k", [(5, 10), (2, 10), (24, 10), (5, 1), (5, 3), (8, 16)])
def test_frame_plan(n_atoms, k):
    plan = S.frame_plan(n_atoms, k)
    assert sum(plan.values()) == k
    assert set(plan) == set(S.KINDS) and min(plan.values()) >= 0
    assert plan["parent"] == 1
    assert plan["supercell"] == (1 if n_atoms <= 12 and k >= 4 else 0)
    assert plan["md"] == k // 5
    with pytest.raises(ValueError):
        S.frame_plan(5, 0)


def test_strain_tensor_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    for _ in range(200):
        eps = S.strain_tensor(rng)
        assert np.allclose(eps, eps.T)
        assert np.abs(np.diag(eps)).max() <= 0.08
        assert np.abs(eps[np.triu_indices(3, 1)]).max() <= 0.04


def _perovskite() -> Atoms:
    return S.scale_to_bonds(
        S.build_prototype("perovskite", ("Sr", "Ti", "O")), {("Sr", "O"): 2.76, ("Ti", "O"): 1.95}
    )


def test_make_static_frames_kinds_sizes_and_reproducibility():
    parent = _perovskite()
    plan = S.frame_plan(len(parent), 10)
    frames = S.make_static_frames(parent, plan, S.parent_rng(0, "p"))
    kinds = Counter(f.kind for f in frames)
    assert kinds == {k: v for k, v in plan.items() if k != "md" and v}
    first = frames[0]
    assert first.kind == "parent" and np.allclose(first.atoms.positions, parent.positions)
    for f in frames:
        if f.kind == "rattle":
            assert len(f.atoms) == 5 and 0.01 <= f.info["rattle_std"] <= 0.3
            assert np.allclose(f.atoms.cell.array, parent.cell.array)
            assert not np.allclose(f.atoms.get_scaled_positions(), parent.get_scaled_positions())
        if f.kind == "strain":
            eps = np.linalg.solve(parent.cell.array, f.atoms.cell.array) - np.eye(3)
            assert np.allclose(eps, eps.T, atol=1e-10)
            assert np.abs(eps).max() <= 0.08 + 1e-12
        if f.kind == "supercell":
            assert len(f.atoms) == 40
            assert f.atoms.get_volume() == pytest.approx(8 * parent.get_volume())
    again = S.make_static_frames(parent, plan, S.parent_rng(0, "p"))
    assert all(
        np.array_equal(a.atoms.positions, b.atoms.positions)
        for a, b in zip(frames, again, strict=True)
    )
    other = S.make_static_frames(parent, plan, S.parent_rng(1, "p"))
    assert not np.array_equal(frames[1].atoms.positions, other[1].atoms.positions)


def test_rattle_of_tiny_cells_uses_a_supercell():
    frames = S.make_static_frames(bulk("Cu"), {"parent": 1, "rattle": 2}, S.parent_rng(0, "cu"))
    assert [len(f.atoms) for f in frames] == [1, 8, 8]


# ----------------------------------------------------------------------------- parents


def test_scale_to_bonds_rocksalt():
    nacl = S.scale_to_bonds(S.build_prototype("rocksalt", ("Na", "Cl")), {("Na", "Cl"): 2.8})
    assert S.min_distance(nacl) == pytest.approx(2.8)
    assert nacl.get_volume() == pytest.approx(5.6**3 / 4)


@pytest.mark.parametrize(
    "name,els,formula",
    [
        ("rocksalt", ("Mg", "O"), "MgO"), ("cscl", ("Cs", "Cl"), "ClCs"),
        ("zincblende", ("Ga", "As"), "AsGa"), ("wurtzite", ("Zn", "O"), "O2Zn2"),
        ("fluorite", ("Ca", "F"), "CaF2"), ("antifluorite", ("Li", "O"), "Li2O"),
        ("perovskite", ("Sr", "Ti", "O"), "O3SrTi"), ("spinel", ("Mg", "Al", "O"), "Al4Mg2O8"),
        ("rutile", ("Ti", "O"), "O4Ti2"), ("corundum", ("Al", "O"), "Al4O6"),
    ],
)  # fmt: skip
def test_prototype_stoichiometry(name, els, formula):
    atoms = S.build_prototype(name, els)
    assert atoms.get_chemical_formula() == formula
    assert S.min_distance(atoms) > 1.0  # at 12 Å^3/atom nothing overlaps


def test_candidates_are_charge_balanced():
    cations = ["Li", "Na", "Mg", "Ca", "Sr", "Ti", "Al", "Fe", "Zn", "La"]
    states = {c: S.cation_states(c) for c in cations}
    for proto in S.PROTOTYPES:
        for els, ox in S._candidates(proto, cations, states):
            assert S.charge_of(els, proto.counts, ox) == 0
            assert all(o in states[e] for e, o in zip(els[:-1], ox, strict=True))


def test_element_parents(synthetic):
    elements, _ = synthetic
    ids = [p.parent_id for p in elements]
    assert len(ids) == len(set(ids)) and 150 <= len(ids) <= 400
    assert {"element:Cu-fcc", "element:Fe-bcc", "element:Mg-hcp", "element:Si-diamond"} <= set(ids)
    assert "element:Cu-bcc" in ids  # metal polymorphs
    # every element with an elemental parent has several, so a held-out one never leaves it unseen
    per_element: dict[str, int] = {}
    for i in ids:
        symbol = i.split(":")[1].split("-")[0]
        per_element[symbol] = per_element.get(symbol, 0) + 1
    assert min(per_element.values()) >= 4 and {"element:Si-fcc", "element:C-sc"} <= set(ids)
    symbols = {s for p in elements for s in p.atoms.get_chemical_symbols()}
    assert not symbols & {"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Pm"}
    assert all(p.source == "element" and p.prescale for p in elements)


def test_prototype_parents(synthetic):
    elements, prototypes = synthetic
    ids = [p.parent_id for p in prototypes]
    assert len(ids) == len(set(ids)) and 1000 <= len(ids) <= 1600
    # every AB composition in all four AB structure types: no element pair with a single parent
    ab = {}
    for i in ids:
        formula, kind = i.split(":")[1].rsplit("-", 1)
        if kind in S.AB_TYPES:
            ab.setdefault(formula, set()).add(kind)
    assert ab and all(kinds == set(S.AB_TYPES) for kinds in ab.values())
    assert {"prototype:CsAu-rocksalt", "prototype:GaAs-wurtzite"} <= set(ids)
    for known in ("TiO2-rutile", "Al2O3-corundum", "GaAs-zincblende", "CaF2-fluorite",
                  "LiH-rocksalt", "NiAl-cscl"):  # fmt: skip
        assert f"prototype:{known}" in ids
    assert all(p.source == "prototype" and p.prescale for p in prototypes)
    assert min(S.min_distance(p.atoms) for p in prototypes) > 1.2
    # periodic table coverage: every element H..Bi except noble gases and Pm
    covered = {s for p in elements + prototypes for s in p.atoms.get_chemical_symbols()}
    wanted = {s for s in S._usable_elements()}
    assert wanted == covered
    lanthanide_share = np.mean([bool(set(p.atoms.get_chemical_symbols()) & S.LANTHANIDES)
                                for p in prototypes])  # fmt: skip
    assert lanthanide_share < 0.15  # sparingly
    assert [p.parent_id for p in S.prototype_parents()] == ids  # no seed, deterministic


def test_dataset_parents_from_small_csv(tmp_path):
    from pymatgen.io.ase import AseAtomsAdaptor

    path = tmp_path / "mini.csv"
    rows = []
    for mid, atoms in (
        ("m-1", bulk("NaCl", "rocksalt", a=5.6)),
        ("m-2", bulk("Si", "diamond", a=5.43)),
    ):
        cif = AseAtomsAdaptor.get_structure(atoms).to(fmt="cif").replace('"', '""')
        rows.append(f'{len(rows)},{mid},"{cif}",1.0')
    path.write_text(",material_id,cif,energy_per_atom\n" + "\n".join(rows) + "\n")
    parents = S.dataset_parents(path, "carbon24")
    assert [p.parent_id for p in parents] == ["carbon24:m-1", "carbon24:m-2"]
    assert [len(p.atoms) for p in parents] == [2, 2]
    assert all(type(p.atoms) is Atoms and not p.prescale for p in parents)
    with pytest.raises(FileNotFoundError):
        S.dataset_parents(tmp_path / "nope.csv", "perov5")


def test_generated_parents_file(tmp_path):
    import gzip
    import json

    from pymatgen.io.ase import AseAtomsAdaptor

    rows = [{"id": "generated:perov_5-s1-0", "condition": "perov_5",
             "structure": AseAtomsAdaptor.get_structure(_perovskite()).as_dict()}]
    path = tmp_path / "gen.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(rows, fh)
    (parent,) = S.generated_parents(path)
    assert parent.parent_id == "generated:perov_5-s1-0" and parent.source == "generated"
    assert type(parent.atoms) is Atoms and len(parent.atoms) == 5 and not parent.prescale
    with gzip.open(path, "wt") as fh:
        json.dump([{"id": "perov5:1", "structure": rows[0]["structure"]}], fh)
    with pytest.raises(ValueError, match="entry 0"):
        S.generated_parents(path)
    with pytest.raises(FileNotFoundError):
        S.generated_parents(tmp_path / "nope.json.gz")


def test_generated_parents_leak_filter():
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    gp = importlib.import_module("generated_parents")
    to_s = AseAtomsAdaptor.get_structure
    held_out = {"SrTiO3": [to_s(_perovskite())], "C": [to_s(bulk("C", "diamond", a=3.57))]}
    matcher = StructureMatcher()
    other = _perovskite()
    other.positions[0] += 0.3  # another SrTiO3 structure: the formula alone counts
    assert gp.leaks(to_s(other), held_out, matcher)
    assert gp.leaks(to_s(bulk("C", "diamond", a=3.6)), held_out, matcher)  # same crystal, scaled
    assert not gp.leaks(to_s(bulk("C", "fcc", a=3.6)), held_out, matcher)  # another carbon crystal
    assert not gp.leaks(to_s(bulk("NaCl", "rocksalt", a=5.6)), held_out, matcher)
    assert gp.parse_counts("perov_5=3,carbon_24=1") == {"perov_5": 3, "carbon_24": 1}
    with pytest.raises(argparse.ArgumentTypeError):
        gp.parse_counts("perov_5")


# ----------------------------------------------------------------------------- pipeline with a fake teacher


class FakeTeacher:
    """Pair-repulsion energy (no CHGNet): E = Σ exp(-d), enough to drive the pipeline."""

    def label(self, atoms_list):
        from ase.neighborlist import neighbor_list

        out = []
        for a in atoms_list:
            i, j, d, D = neighbor_list("ijdD", a, 3.0)
            e = 0.5 * np.exp(-d).sum()
            f = np.zeros((len(a), 3))
            np.add.at(f, i, -(np.exp(-d) / d)[:, None] * D)  # -dE/dr_i (pair counted twice)
            out.append({"energy": float(e) - len(a), "forces": f, "stress": np.zeros(6),
                        "magmoms": np.zeros(len(a))})  # fmt: skip
        return out


def _args(tmp_path, **kw):
    args = M.parse_args(["--out", str(tmp_path / "out"), "--sources", "element,prototype"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_process_chunk_rows_and_split_by_parent():
    cfg = M.frame_config(argparse.Namespace(seed=3, frames_per_parent=10, md_interval=2,
                                            md_temperature=(300, 600), md_friction=0.02,
                                            max_force=50.0))  # fmt: skip
    parents = [
        _parent("prototype:SrTiO3-perovskite", "prototype", _perovskite()),
        _parent("perov5:x", "perov5", _perovskite()),
        _parent("element:Cu-fcc", "element", bulk("Cu")),
    ]
    rows, stats, cpu = M.process_chunk(FakeTeacher(), parents, cfg)
    assert cpu >= 0
    by_parent = {}
    for r in rows:
        kv = r["kvp"]
        by_parent.setdefault(kv["parent_id"], []).append(kv)
        assert kv["teacher"] == "chgnet-0.3.0" and kv["kind"] in S.KINDS
        assert r["labels"]["forces"].shape == (len(r["atoms"]), 3)
    for p in parents:
        kvs = by_parent[p.parent_id]
        assert len(kvs) == 10 == stats[p.parent_id]["frames"]
        assert {kv["split"] for kv in kvs} == {S.assign_split(p.parent_id, 3)}
        assert [kv["frame"] for kv in kvs] == list(range(10))
        assert Counter(kv["kind"] for kv in kvs)["md"] == 2
    md = [r for r in rows if r["kvp"]["kind"] == "md"]
    assert all(300 <= r["kvp"]["temperature_K"] <= 600 for r in md)
    # generated parents are training parents only, whatever their hash says
    held = [i for i in (f"generated:perov_5-s0-{k}" for k in range(200)) if S.assign_split(i, 3) != "train"][:2]
    assert len(held) == 2  # ids that the hash alone would put in val/test
    rows, _, _ = M.process_chunk(FakeTeacher(), [_parent(i, "generated", _perovskite()) for i in held], cfg)
    assert {r["kvp"]["parent_id"] for r in rows} == set(held) and {r["kvp"]["split"] for r in rows} == {"train"}


def test_run_resume_and_summary(tmp_path, monkeypatch, synthetic):
    import ase.db

    pd_teacher = importlib.import_module("pd_teacher")
    monkeypatch.setattr(pd_teacher, "Teacher", lambda **kw: FakeTeacher())
    monkeypatch.setattr(pd_teacher, "prescale_many", lambda t, s: [(a.copy(), 1.0) for a in s])
    monkeypatch.setattr(S, "element_parents", lambda: synthetic[0])
    monkeypatch.setattr(S, "prototype_parents", lambda: synthetic[1])

    args = _args(tmp_path, max_parents=2, frames_per_parent=5, chunk_size=1)
    assert M.run(args) == 0
    out = tmp_path / "out"
    db = ase.db.connect(out / "frames.db")
    first = {r.parent_id for r in db.select()}
    assert len(first) == 4 and db.count() == 20
    with pytest.raises(SystemExit):  # refuses to overwrite without --resume
        M.run(args)
    # resume with more parents: only the new ones are added, nothing duplicated
    assert M.run(_args(tmp_path, max_parents=3, frames_per_parent=5, resume=True)) == 0
    ids = Counter(r.parent_id for r in db.select())
    assert len(ids) == 6 and set(ids.values()) == {5} and first <= set(ids)
    with pytest.raises(SystemExit):  # frame settings must match on resume
        M.run(_args(tmp_path, max_parents=3, frames_per_parent=6, resume=True))
    row = next(db.select(kind="strain"))
    assert row.stress.shape == (6,) and row.forces.shape == (row.natoms, 3)
    summary = M.summarize(out)
    assert summary["frames"] == 30 and summary["parents"] == 6
    assert sum(summary["frames_by_split"].values()) == 30
    assert (out / "summary.json").exists() and (out / "progress.json").exists()


# ----------------------------------------------------------------------------- real teacher (tiny)


def test_chgnet_stress_matches_finite_differences():
    pytest.importorskip("chgnet")
    pd_teacher = importlib.import_module("pd_teacher")
    teacher = pd_teacher.Teacher(threads=1)
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.05, seed=1)
    si.set_cell(si.cell.array @ (np.eye(3) + S.strain_tensor(np.random.default_rng(0), 0.02, 0.01)),
                scale_atoms=True)  # fmt: skip
    r = pd_teacher.check_stress(teacher, si)
    # eV/Å^3, ASE sign; float32 model -> FD noise ~1e-5
    assert r["max_abs_teacher_minus_fd"] < 2e-4
    assert r["max_abs_teacher_minus_CHGNetCalculator"] < 1e-6
    assert np.allclose(r["predict_structure_times_units_GPa"], r["teacher_eV_A3"], atol=1e-6)
