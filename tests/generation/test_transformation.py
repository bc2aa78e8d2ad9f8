"""``GenerateStructuresTransformation``: pymatgen's one-to-many transformation convention."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
from pymatgen.alchemy.materials import TransformedStructure
from pymatgen.core import Lattice, Structure
from pymatgen.transformations.transformation_abc import AbstractTransformation

from crystalgnn_plugins.generation import GenerateStructuresTransformation


@pytest.fixture
def sto() -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"], frac)


def make(model_dir, **kwargs) -> GenerateStructuresTransformation:
    kwargs.setdefault("relax", False)
    kwargs.setdefault("seed", 0)
    return GenerateStructuresTransformation(model_dir, physics=False, steps=4, **kwargs)


def test_is_a_one_to_many_transformation(model_dir):
    t = make(model_dir)
    assert isinstance(t, AbstractTransformation)
    assert t.is_one_to_many is True and t.inverse is None


def test_single_structure(model_dir, sto):
    out = make(model_dir).apply_transformation(sto)
    assert isinstance(out, Structure)
    assert out.composition == sto.composition


@pytest.mark.parametrize("k", [1, 3])
def test_ranked_list(model_dir, sto, k):
    ranked = make(model_dir).apply_transformation(sto, return_ranked_list=k)
    assert isinstance(ranked, list) and len(ranked) == k
    for item in ranked:
        assert set(item) == {"structure", "energy", "energy_per_atom"}
        assert isinstance(item["structure"], Structure)
        assert item["structure"].composition == sto.composition  # composition of the input, same Z
        assert item["energy"] is None and item["energy_per_atom"] is None  # not relaxed


def test_ranked_list_true_gives_five(model_dir, sto):
    assert len(make(model_dir).apply_transformation(sto, return_ranked_list=True)) == 5


def test_composition_with_two_formula_units(model_dir, sto):
    big = sto * (2, 1, 1)
    out = make(model_dir).apply_transformation(big, return_ranked_list=2)
    assert all(d["structure"].composition == big.composition for d in out)


def test_relaxed_candidates_are_sorted_by_energy_per_atom(model_dir, sto, tiny_energy_model, monkeypatch):
    """As pymatgen's ``EnumerateStructureTransformation``: ``"energy"`` is the total energy
    of the cell (eV), the ranking is by energy per atom (``"energy_per_atom"``, eV/atom)."""
    import crystalgnn_plugins.relaxation as relaxation

    monkeypatch.setattr(relaxation, "relax", functools.partial(relaxation.relax, steps=3))
    stiff = copy.deepcopy(tiny_energy_model)
    stiff.scale.fill_(300.0)
    ranked = make(model_dir, relax=True, energy_model=stiff).apply_transformation(sto, return_ranked_list=3)
    per_atom = [d["energy_per_atom"] for d in ranked]
    assert all(np.isfinite(per_atom)) and per_atom == sorted(per_atom)
    for d in ranked:
        relaxation_record = d["structure"].properties["generation"]["relaxation"]
        assert d["energy"] == relaxation_record["energy_eV"]
        assert d["energy_per_atom"] == relaxation_record["energy_per_atom_eV"]
        assert d["energy"] == pytest.approx(d["energy_per_atom"] * len(d["structure"]))


def test_unrelaxed_and_failed_candidates_rank_last(model_dir, sto, monkeypatch):
    t = make(model_dir)
    fake = [sto.copy() for _ in range(3)]
    for s, e in zip(fake, [float("nan"), -1.0, None]):
        s.properties["generation"] = {} if e is None else {
            "relaxation": {"energy_eV": 5 * e, "energy_per_atom_eV": e}}
    monkeypatch.setattr(type(t.source), "get_structures", lambda self, n, **kw: fake[:n])
    ranked = t.apply_transformation(sto, return_ranked_list=3)
    assert ranked[0]["energy"] == -5.0 and ranked[0]["energy_per_atom"] == -1.0
    assert np.isnan(ranked[1]["energy_per_atom"]) and ranked[2]["energy"] is None


def test_reproducible_and_serialisable(model_dir, sto):
    a = make(model_dir, seed=3).apply_transformation(sto, return_ranked_list=2)
    b = make(model_dir, seed=3).apply_transformation(sto, return_ranked_list=2)
    for x, y in zip(a, b):
        assert np.array_equal(x["structure"].frac_coords, y["structure"].frac_coords)
    t = make(model_dir, seed=3)
    d = t.as_dict()
    assert d["model"] == model_dir and d["seed"] == 3 and d["steps"] == 4 and d["physics"] is False
    again = GenerateStructuresTransformation.from_dict(d)
    assert again.source_kwargs == t.source_kwargs and again.relax is False


def test_transformed_structure_alternatives(model_dir, sto):
    """pymatgen's alchemy machinery takes the ranked list (first result + alternatives)."""
    ts = TransformedStructure(sto)
    alternatives = ts.append_transformation(make(model_dir), return_alternatives=True)
    assert len(alternatives) == 4  # 5 candidates: the first one continues ``ts``
    assert ts.final_structure.composition == sto.composition
    assert all(alt.final_structure.composition == sto.composition for alt in alternatives)
