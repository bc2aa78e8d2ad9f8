"""``CrystalStructureSource`` arguments: the condition follows a chemsys or a target, a
target restricts the species to its model's elements, a formula with the digit zero for
O is refused, coordinates are wrapped into [0, 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalgnn_plugins.generation import CrystalStructureSource, PropertyTerm


def make_property_model(elements):
    """A tiny untrained property model that knows ``elements``."""
    from crystalgnn_plugins.models import PropertyModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PropertyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0},
                              elements=elements, target="gap", hidden=8)
    return model.double().eval()


def plan(source, chemsys=None, condition=None, known=None, composition=None):
    """(condition name, allowed elements or None) that ``_plan`` chooses (no sampling)."""
    _, _, allowed, cond = source._plan(2, composition, chemsys, None, condition, np.random.default_rng(0), known)
    names = None if allowed is None else {source.elements[k] for k in torch.nonzero(allowed[0]).flatten().tolist()}
    return source.conditions[int(cond[0])], names


@pytest.fixture(scope="module")
def shipped():
    """The shipped generator (carbon_24 first, then perov_5)."""
    return CrystalStructureSource()


# ------------------------------------------------------------------ the condition of a chemsys
def test_chemsys_without_condition_takes_the_condition_of_its_elements(source):
    assert source.conditions[0] == "carbon"
    out = source.get_structures(2, chemsys="Ba-Ti-O", seed=1)
    assert [s.properties["generation"]["condition"] for s in out] == ["perov", "perov"]
    assert all({el.symbol for el in s.composition.elements} <= {"Ba", "Ti", "O"} for s in out)
    assert plan(source, chemsys=["C"]) == ("carbon", {"C"})
    assert plan(source, chemsys="Sr-C") == ("carbon", {"Sr", "C"})  # C: all of carbon's species, Sr 1/15 of perov's
    assert plan(source, chemsys="Ba-Ti-O", condition="carbon")[0] == "carbon"  # a given condition is kept
    assert plan(source) == ("carbon", None)  # nothing given: the first condition


def test_chemsys_in_no_condition_raises(source):
    c = source.elements.index("C")
    source.flow.species_probs[:, c] = 0.0  # (the fixture loads its own flow)
    with pytest.raises(ValueError, match=r"chemsys 'C': no condition of this generator \(\['carbon', 'perov'\]\) has any"):
        source.get_structures(1, chemsys="C", seed=0)


def test_shipped_generator_samples_a_chemsys_under_its_condition(shipped):
    """Ba-Ti-Zr-O once went to carbon_24 (O16 and Ti cells at 10 GPa)."""
    assert shipped.conditions[0] == "carbon_24"
    assert plan(shipped, chemsys="Ba-Ti-Zr-O") == ("perov_5", {"Ba", "Ti", "Zr", "O"})
    assert plan(shipped, chemsys="C")[0] == "carbon_24"
    out = shipped.get_structures(2, chemsys="Ba-Ti-Zr-O", seed=1)
    for s in out:
        gen = s.properties["generation"]
        assert gen["condition"] == "perov_5" and gen["pressure_GPa"] == 0.0 and "energy_guide" not in gen
        assert len(s) == 5 and {el.symbol for el in s.composition.elements} <= {"Ba", "Ti", "Zr", "O"}
    assert plan(shipped) == ("carbon_24", None)


def test_shipped_generator_takes_a_target_alone_to_its_models_condition(shipped):
    assert plan(shipped, known={"Sr", "Ti", "O"}) == ("perov_5", {"Sr", "Ti", "O"})
    assert plan(shipped, known={"C"}) == ("carbon_24", {"C"})
    assert plan(shipped, known=set(shipped.elements) | {"Li"}) == ("carbon_24", None)  # knows all: no restriction


# ------------------------------------------------------------------ targets and their elements
def test_target_restricts_species_to_the_models_elements(source):
    model = make_property_model(["Sr", "Ti", "O", "Li"])
    out = source.get_structures(3, seed=0, target={"model": model, "below": 0.0, "weight": 0.1})
    for s in out:
        assert s.properties["generation"]["condition"] == "perov"  # from the model's elements
        assert {el.symbol for el in s.composition.elements} <= {"Sr", "Ti", "O"}
        assert s.properties["generation"]["guidance"][-1] == "PropertyTerm"
    # with a chemsys: the elements of both
    assert plan(source, chemsys="Ba-Ti-O", known={"Sr", "Ti", "O"}) == ("perov", {"Ti", "O"})
    # a target term without a model, or a model that takes any element: no restriction
    assert plan(source, known=None) == ("carbon", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"composition": "BaZrO3"}, r"composition 'Ba1 Zr1 O3': elements \['Ba', 'Zr'\] are unknown to the target's"),
        ({"chemsys": "Ba-Zr"}, r"target: its property model knows none of the elements of chemsys 'Ba-Zr' "
                               r"\(it knows \['O', 'Sr', 'Ti'\]\)"),
        ({"condition": "carbon"}, r"target: none of the elements the property model knows \(\['O', 'Sr', 'Ti'\]\) "
                                  r"occurs in condition 'carbon'; nothing to sample"),
        ({"chemsys": "Ba-Ti-O", "condition": "carbon"}, r"target with chemsys 'Ba-Ti-O': none of the elements"),
    ],
)
def test_target_with_elements_its_model_does_not_know_raises(source, kwargs, message):
    model = make_property_model(["Sr", "Ti", "O"])
    with pytest.raises(ValueError, match=message):
        source.get_structures(1, seed=0, target={"model": model, "near": 1.0}, **kwargs)


def test_target_model_knowing_no_generator_element_raises(source):
    with pytest.raises(ValueError, match=r"its property model knows none of the elements of this generator "
                                         r"\(it knows \['Li'\]\)"):
        source.get_structures(1, seed=0, target={"model": make_property_model(["Li"]), "near": 1.0})


def test_property_term_refuses_an_energy_model(tiny_energy_model, energy_model_dir, source):
    with pytest.raises(ValueError, match=r"needs a property model \(trained with `crystalgnn train --target"
                                         r" \.\.\.`\), whose output it steers; got EnergyModel, an energy model"):
        PropertyTerm(tiny_energy_model, below=0.44)
    with pytest.raises(ValueError, match=f"got '{energy_model_dir}': EnergyModel, an energy model"):
        source.get_structures(1, seed=0, target={"model": str(energy_model_dir), "below": 0.44})
    PropertyTerm(make_property_model(["C"]), below=0.44)  # a property model is fine


# ------------------------------------------------------------------ formulas
@pytest.mark.parametrize("formula", ["SrTi03", "Sr2Ti2O06"])
def test_digit_zero_for_the_letter_o_raises(source, formula):
    with pytest.raises(ValueError, match=rf"composition '{formula}': the number '0\d' starts with the digit zero; "
                                         r"did you mean the letter O"):
        source.get_structures(1, composition=formula, seed=0)


def test_numbers_with_a_zero_that_are_not_a_typo(source):
    from crystalgnn_plugins.generation.source import _check_formula

    for formula in ("SrTiO3", "C60", "Ba10Ti10O30", "Fe1.05O", "Sr0.5TiO3"):
        _check_formula(formula)
    out = source.get_structures(1, composition="Ba10Ti10O30", condition="perov", num_atoms=50, seed=0, valid_only=False)
    assert out[0].composition.reduced_formula == "BaTiO3"


# ------------------------------------------------------------------ wrapped coordinates
def test_sampled_coordinates_are_wrapped(source):
    from crystalgnn_plugins.generation.sampling import SampledCrystals
    from crystalgnn_plugins.generation.source import _wrapped

    frac = np.array([[-0.27, 1.11, 0.5], [-1e-17, 0.999, 2.0], [0.2, 0.3, 0.4]])
    got = _wrapped(frac)
    assert np.all(got >= 0) and np.all(got < 1)
    np.testing.assert_allclose(got, [[0.73, 0.11, 0.5], [0.0, 0.999, 0.0], [0.2, 0.3, 0.4]], atol=1e-12)
    raw = SampledCrystals(torch.tensor([4, 3, 3]), torch.tensor(frac), torch.eye(3).unsqueeze(0) * 4.0,
                          torch.tensor([3]))
    (s,) = source._to_structures(raw, torch.tensor([1]), 0, "SrO2", None, [])
    assert np.all(s.frac_coords >= 0) and np.all(s.frac_coords < 1)
    np.testing.assert_allclose(s.frac_coords, got)


def test_relaxed_coordinates_are_wrapped(model_dir, tiny_energy_model, monkeypatch):
    """A relaxation returns positions outside the cell; the structures handed back are
    the same crystals with fractional coordinates in [0, 1)."""
    import crystalgnn_plugins.relaxation as relaxation

    real, moved = relaxation.relax, []

    def outside(structures, *args, **kwargs):
        results = real(structures, *args, **kwargs)
        for res in results:
            res.structure.translate_sites(range(len(res.structure)), [-1.0, 1.0, 0.0], to_unit_cell=False)
            res.structure.translate_sites([0], [-0.3, 0.0, 2.0], to_unit_cell=False)
            moved.append(res.structure.copy())
        return results

    monkeypatch.setattr(relaxation, "relax", outside)
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4, relax_kwargs={"steps": 2})
    out = src.get_structures(2, composition="SrTiO3", condition="perov", seed=0, relax=True)
    assert len(out) == len(moved) == 2
    for s, before in zip(out, moved):
        assert np.any(before.frac_coords < 0) or np.any(before.frac_coords >= 1)
        assert np.all(s.frac_coords >= 0) and np.all(s.frac_coords < 1)
        shift = before.frac_coords - s.frac_coords
        np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)  # whole lattice vectors
        np.testing.assert_allclose(s.lattice.matrix, before.lattice.matrix)
        assert s.properties["generation"]["relaxation"]["error"] is None


def test_a_target_model_keeps_its_training_mode(source):
    model = make_property_model(["Ba", "Ti", "O"]).train()
    source.get_structures(1, composition="BaTiO3", target=PropertyTerm(model, below=0.0), seed=0)
    assert model.training
