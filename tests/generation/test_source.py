"""``CrystalStructureSource`` on the tiny trained generator."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from pymatgen.core import Composition, Structure
from pymatgen.core.operations import SymmOp

from crystalgnn_plugins._version import __version__
from crystalgnn_plugins.generation import CrystalStructureSource

ELEMENTS = ["Ba", "C", "Ca", "O", "Sr", "Ti", "Zr"]


def assert_valid(structure: Structure) -> None:
    """The documented validity criterion: distances > 0.5 Å, volume > 0.1 Å³."""
    assert structure.volume > 0.1
    assert min(structure.lattice.abc) > 0.5  # an atom and its own image
    if len(structure) > 1:
        dm = structure.distance_matrix + 1e9 * np.eye(len(structure))
        assert dm.min() > 0.5
    assert np.all(structure.frac_coords >= 0) and np.all(structure.frac_coords < 1)


def same_structures(a: list[Structure], b: list[Structure]) -> bool:
    return len(a) == len(b) and all(
        x.species == y.species and np.array_equal(x.frac_coords, y.frac_coords)
        and np.array_equal(x.lattice.matrix, y.lattice.matrix)
        for x, y in zip(a, b)
    )


def test_metadata(source):
    with source as s:
        assert s.conditions == ["carbon", "perov"]
        assert s.elements == ELEMENTS


def test_composition(source):
    out = source.get_structures(4, composition="SrTiO3", condition="perov", seed=0)
    assert len(out) == 4
    for s in out:
        assert isinstance(s, Structure)
        assert s.composition.reduced_formula == "SrTiO3" and len(s) == 5
        assert_valid(s)


def test_composition_object_and_multiple_formula_units(source):
    out = source.get_structures(2, composition=Composition("Sr2Ti2O6"), seed=0)
    assert [s.composition.formula for s in out] == ["Sr2 Ti2 O6"] * 2
    out = source.get_structures(1, composition="BaZrO3", num_atoms=10, seed=0)
    assert out[0].composition.formula == "Ba2 Zr2 O6"


def test_chemsys_restricts_elements(source):
    for chemsys in ("Ba-Ti-O", ["Ba", "Ti", "O"]):
        out = source.get_structures(4, chemsys=chemsys, condition="perov", seed=1)
        assert len(out) == 4
        for s in out:
            assert {el.symbol for el in s.composition.elements} <= {"Ba", "Ti", "O"}
            assert_valid(s)
        assert out[0].properties["generation"]["chemsys"] == "Ba-Ti-O"


def test_num_atoms(source):
    out = source.get_structures(3, num_atoms=4, condition="carbon", seed=2)
    assert [len(s) for s in out] == [4, 4, 4]
    # default: drawn from the training distribution of the condition
    sizes = {len(s) for s in source.get_structures(6, condition="carbon", seed=3)}
    assert sizes <= {2, 4, 8}
    assert {len(s) for s in source.get_structures(3, condition="perov", seed=3)} == {5}


def test_provenance(source):
    out = source.get_structures(2, composition="SrTiO3", seed=7, condition="perov")
    for s in out:
        gen = s.properties["generation"]
        assert gen["generator"] == "crystal_flow" and gen["package_version"] == __version__
        assert gen["seed"] == 7 and gen["condition"] == "perov" and gen["steps"] == 8
        assert gen["composition"] == "SrTiO3" and gen["chemsys"] is None
        assert gen["guidance"] == ["RepulsionTerm", "EnergyTerm", "ChargeBalanceTerm"]
        assert gen["seconds_per_structure"] > 0
        assert "relaxation" not in gen


def test_same_seed_same_structures(source, model_dir, tiny_energy_model):
    a = source.get_structures(3, seed=5, condition="perov")
    b = source.get_structures(3, seed=5, condition="perov")
    fresh = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=8)
    c = fresh.get_structures(3, seed=5, condition="perov")
    d = source.get_structures(3, seed=6, condition="perov")
    assert same_structures(a, b) and same_structures(a, c)
    assert not same_structures(a, d)


def test_atom_budget_chunks_keep_compositions_and_chemsys(model_dir, tiny_energy_model, monkeypatch):
    import crystalgnn_plugins.generation.sampling as sampling

    sizes = []
    real = sampling.sample_flow
    monkeypatch.setattr(sampling, "sample_flow", lambda flow, counts, *a, **k: sizes.append(int(counts.sum())) or real(flow, counts, *a, **k))
    small = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=8, max_batch_atoms=12)
    out = small.get_structures(5, composition="SrTiO3", condition="perov", seed=0)
    assert sizes == [10, 10, 5]  # 5-atom crystals, at most 12 atoms per integration
    assert [s.composition.reduced_formula for s in out] == ["SrTiO3"] * 5
    out = small.get_structures(4, chemsys="Ba-Ti-O", condition="perov", seed=1)
    assert all({el.symbol for el in s.composition.elements} <= {"Ba", "Ti", "O"} for s in out)
    sizes.clear()
    small.get_structures(2, num_atoms=8, condition="carbon", seed=0, valid_only=False)
    assert sizes == [8, 8]  # a crystal alone may exceed the budget
    with pytest.raises(ValueError, match="max_batch_atoms"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, max_batch_atoms=0)


def test_without_physics_and_with_a_target(model_dir):
    import torch

    class VolumePerAtom(torch.nn.Module):
        target, cutoff, max_neighbors = "v", 4.0, None

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, graph):
            return {"v": torch.linalg.det(graph.cell) / graph.num_atoms}

    src = CrystalStructureSource(model_dir, physics=False, steps=8)
    plain = src.get_structures(2, condition="perov", seed=0)
    assert plain[0].properties["generation"]["guidance"] == []
    steered = src.get_structures(2, condition="perov", seed=0, target={"model": VolumePerAtom(), "above": 30.0, "weight": 0.05})
    assert steered[0].properties["generation"]["guidance"] == ["PropertyTerm"]
    assert min(s.volume for s in steered) > max(s.volume for s in plain)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"composition": "Li2O"}, r"elements \['Li'\] are unknown to this generator"),
        ({"chemsys": "Sr-Li-O"}, r"chemsys 'Sr-Li-O': elements \['Li'\] are unknown"),
        ({"condition": "mp_20"}, r"unknown condition 'mp_20'; this generator knows \['carbon', 'perov'\]"),
        ({"composition": "SrTiO3", "num_atoms": 7}, "num_atoms=7 is not a multiple of the 5 atoms"),
        ({"composition": "SrTiO3", "num_atoms": 0}, r"num_atoms=0 is out of range for this generator \(1 to 64\)"),
        ({"composition": "SrTiO3", "num_atoms": 500}, "num_atoms=500 is out of range"),
        ({"composition": "SrTiO3", "chemsys": "Ba-Ti-O"}, "has elements outside chemsys 'Ba-Ti-O'"),
        ({"composition": "Sr0.5TiO3"}, "amounts must be whole numbers"),
        ({"num_atoms": 0}, "num_atoms=0 is out of range"),
        ({"num_atoms": 1000}, "num_atoms=1000 is out of range"),
    ],
)
def test_bad_input_raises_value_error(source, kwargs, message):
    with pytest.raises(ValueError, match=message):
        source.get_structures(2, seed=0, **kwargs)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n(source, n):
    with pytest.raises(ValueError, match=f"n must be a positive whole number of structures, got {n!r}"):
        source.get_structures(n)


def test_condition_follows_the_composition(source):
    """Without ``condition`` a composition is generated under the dataset whose
    training species make it most likely (not simply the first condition)."""
    assert source.conditions[0] == "carbon"
    for s in source.get_structures(2, composition="SrTiO3", seed=0):
        assert s.properties["generation"]["condition"] == "perov"
    assert source.get_structures(1, composition="C4", seed=0)[0].properties["generation"]["condition"] == "carbon"


def test_invalid_samples_are_replaced(model_dir, monkeypatch):
    """With ``valid_only`` the rejected samples are drawn again until ``n`` are valid."""
    import crystalgnn_plugins.generation.source as source_mod

    calls = []

    def every_other(structure, min_distance=0.5):
        calls.append(structure)
        return len(calls) % 2 == 0

    monkeypatch.setattr(source_mod, "_is_valid", every_other)
    src = CrystalStructureSource(model_dir, physics=False, steps=4, batch_size=2)
    out = src.get_structures(5, condition="perov", seed=0)
    assert len(out) == 5 and len(calls) >= 10
    assert all(any(s is c for c in calls[1::2]) for s in out)  # only accepted ones are returned
    # valid_only=False keeps everything in one round
    calls.clear()
    assert len(src.get_structures(3, condition="perov", seed=0, valid_only=False)) == 3 and not calls


def test_warns_when_too_few_samples_are_valid(model_dir, monkeypatch):
    import crystalgnn_plugins.generation.source as source_mod

    monkeypatch.setattr(source_mod, "_is_valid", lambda s, min_distance=0.5: False)
    src = CrystalStructureSource(model_dir, physics=False, steps=2)
    with pytest.warns(UserWarning, match="only 0 of 2 samples were valid after 10 rounds"):
        assert src.get_structures(2, seed=0) == []


def test_relax(model_dir, tiny_energy_model):
    max_steps = 4
    stiff = copy.deepcopy(tiny_energy_model)
    stiff.scale.fill_(300.0)  # forces of ~0.1 eV/Å: the relaxation has something to do
    src = CrystalStructureSource(model_dir, energy_model=stiff, steps=6, relax_kwargs={"steps": max_steps})
    unrelaxed = src.get_structures(2, composition="SrTiO3", condition="perov", seed=0)
    out = src.get_structures(2, composition="SrTiO3", condition="perov", seed=0, relax=True)
    assert len(out) == 2
    for s, s0 in zip(out, unrelaxed):
        assert s.composition.reduced_formula == "SrTiO3"
        rel = s.properties["generation"]["relaxation"]
        assert set(rel) == {"converged", "steps", "pressure_GPa", "energy_eV", "energy_per_atom_eV", "error"}
        assert rel["pressure_GPa"] == 0.0  # the tiny generator has no condition pressures
        assert rel["error"] is None and isinstance(rel["converged"], bool)
        assert 1 <= rel["steps"] <= max_steps
        assert rel["energy_per_atom_eV"] == pytest.approx(rel["energy_eV"] / len(s))
        # the recorded energy is the model's energy of the returned structure
        energy = stiff(stiff.graph(s), compute_forces=False, compute_stress=False)["energy"].item()
        assert rel["energy_eV"] == pytest.approx(energy, abs=1e-6)
        assert not np.allclose(s.cart_coords, s0.cart_coords)  # it moved
        assert s.properties["generation"]["seed"] == 0  # provenance kept


def test_relax_at_the_pressure_of_the_condition(model_dir, tiny_energy_model, monkeypatch):
    """Samples of a condition made at pressure relax at that pressure (FIRE on E + PV),
    unless ``relax_kwargs`` sets one; both recorded in the provenance."""
    import crystalgnn_plugins.relaxation as relaxation

    seen = []
    real = relaxation.relax

    def spy(structures, *args, **kwargs):
        seen.append((len(structures), kwargs["pressure"]))
        return real(structures, *args, **kwargs)

    monkeypatch.setattr(relaxation, "relax", spy)
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4, relax_kwargs={"steps": 2})
    src.flow.condition_pressures = {"carbon": 10.0}
    out = src.get_structures(2, condition="carbon", seed=0, relax=True)
    out += src.get_structures(1, condition="perov", seed=0, relax=True)
    assert seen == [(2, 10.0), (1, 0.0)]
    assert [s.properties["generation"]["relaxation"]["pressure_GPa"] for s in out] == [10.0, 10.0, 0.0]
    assert [s.properties["generation"]["pressure_GPa"] for s in out] == [10.0, 10.0, 0.0]
    src.relax_kwargs["pressure"] = 1.5
    out = src.get_structures(1, condition="carbon", seed=0, relax=True)
    assert seen[-1] == (1, 1.5) and out[0].properties["generation"]["relaxation"]["pressure_GPa"] == 1.5


def test_energy_weights_per_condition(model_dir, tiny_energy_model):
    from crystalgnn_plugins.generation.guidance import EnergyTerm
    from crystalgnn_plugins.generation.source import DEFAULT_ENERGY_WEIGHT

    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4)
    assert src.energy_weights == {"carbon": DEFAULT_ENERGY_WEIGHT, "perov": DEFAULT_ENERGY_WEIGHT}
    (term,) = [t for t in src._guidance(None) if isinstance(t, EnergyTerm)]
    assert term.weight == 1.0 and term.condition_weights == src.energy_weights
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4, energy_weight={"carbon": 0.3})
    assert src.energy_weights == {"carbon": 0.3, "perov": DEFAULT_ENERGY_WEIGHT}
    (term,) = [t for t in src._guidance(None) if isinstance(t, EnergyTerm)]
    assert term.weight == 1.0 and term.condition_weights == {"carbon": 0.3, "perov": DEFAULT_ENERGY_WEIGHT}
    assert len(src.get_structures(2, condition="carbon", seed=0)) == 2
    assert all(not t.guides_lattice for t in src._guidance(None))  # physics moves atoms only by default
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, energy_weight=0, guide_lattice=True)
    assert not [t for t in src._guidance(None) if isinstance(t, EnergyTerm)]
    # the geometric terms move the lattice too (the charge-balance term acts on species only)
    assert all(t.guides_lattice for t in src._guidance(None) if type(t).__name__ != "ChargeBalanceTerm")
    with pytest.raises(ValueError, match=r"energy_weight: \['mp_20'\] are not conditions"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, energy_weight={"mp_20": 0.3})


def test_zero_energy_weight_skips_the_energy_model(model_dir, tiny_energy_model, monkeypatch):
    """A condition whose energy weight is 0 is sampled without evaluating the potential
    (the cost of the guidance), and its provenance lists only the terms that acted."""
    calls = []
    original = type(tiny_energy_model).atomic_energies

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_energy_model), "atomic_energies", counting)
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4,
                                 energy_weight={"carbon": 0.3, "perov": 0.0})
    out = src.get_structures(2, condition="perov", seed=0)
    assert not calls
    assert out[0].properties["generation"]["guidance"] == ["RepulsionTerm", "ChargeBalanceTerm"]
    out = src.get_structures(2, condition="carbon", seed=0)
    assert calls
    assert out[0].properties["generation"]["guidance"] == ["RepulsionTerm", "EnergyTerm", "ChargeBalanceTerm"]


def test_sampler_settings_per_condition(model_dir, tiny_energy_model, monkeypatch):
    """``coord_speedup``/``time_power``: measured defaults per condition, one number for
    all, or a dict; each batch is integrated with its condition's settings, which the
    provenance records."""
    import crystalgnn_plugins.generation.sampling as sampling
    from crystalgnn_plugins.generation import source as source_module

    monkeypatch.setattr(source_module, "DEFAULT_COORD_SPEEDUPS", {"carbon": 3.0})
    monkeypatch.setattr(source_module, "DEFAULT_TIME_POWERS", {"carbon": 2.0})
    monkeypatch.setattr(source_module, "DEFAULT_DIRECTED_TIME_POWERS", {"carbon": 1.5})
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=3, physics=False)
    assert src.coord_speedups == {"carbon": 3.0, "perov": 0.0} and src.time_powers == {"carbon": 2.0, "perov": 1.0}
    seen = []
    real = sampling.sample_flow

    def spy(*args, **kwargs):
        seen.append((kwargs["coord_speedup"], kwargs["time_power"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_flow", spy)
    carbon = src.get_structures(2, condition="carbon", seed=0)
    perov = src.get_structures(2, condition="perov", seed=0)
    assert seen == [(3.0, 2.0), (0.0, 1.0)]
    assert carbon[0].properties["generation"]["coord_speedup"] == 3.0
    assert perov[0].properties["generation"]["time_power"] == 1.0
    # directed sampling (a given composition, or a property target) keeps plain uniform steps by default
    csp = src.get_structures(1, composition="C6", condition="carbon", seed=0)
    assert seen[-1] == (0.0, 1.5) and csp[0].properties["generation"]["coord_speedup"] == 0.0
    from crystalgnn_plugins.generation import RepulsionTerm

    targeted = src.get_structures(1, condition="carbon", seed=0, target=RepulsionTerm())
    assert seen[-1] == (0.0, 1.5) and targeted[0].properties["generation"]["time_power"] == 1.5
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, coord_speedup=1.0, time_power={"perov": 1.5})
    # a dict sets the conditions it lists; the others keep their measured defaults
    assert src.coord_speedups == {"carbon": 1.0, "perov": 1.0} and src.time_powers == {"carbon": 2.0, "perov": 1.5}
    # asked for: used in every mode (the unlisted carbon keeps its directed default)
    assert src.directed_coord_speedups == src.coord_speedups
    assert src.directed_time_powers == {"carbon": 1.5, "perov": 1.5}
    with pytest.raises(ValueError, match="time_power must be positive"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, time_power=0)
    with pytest.raises(ValueError, match=r"coord_speedup: \['mp_20'\] are not conditions"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, coord_speedup={"mp_20": 3.0})



def test_guidance_every_per_condition(model_dir, tiny_energy_model, monkeypatch):
    """``guidance_every``: measured defaults per condition, one number or a dict; each
    batch is guided with its condition's setting, which the provenance records."""
    import crystalgnn_plugins.generation.sampling as sampling
    from crystalgnn_plugins.generation import source as source_module

    monkeypatch.setattr(source_module, "DEFAULT_GUIDANCE_EVERY", {"carbon": 4})
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=3)
    assert src.guidance_every == {"carbon": 4, "perov": 1}
    # measured on the geodesic path: a wrapped-normal generator evaluates on every step
    wn = CrystalStructureSource(src.flow.with_coord_path("wrapped_normal"), energy_model=tiny_energy_model)
    assert wn.guidance_every == {"carbon": 1, "perov": 1}
    # without guidance terms there is nothing to reuse: not recorded
    plain = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=3, physics=False)
    assert "guidance_every" not in plain.get_structures(1, condition="carbon", seed=0, valid_only=False)[0].properties["generation"]
    seen = []
    real = sampling.sample_flow

    def spy(*args, **kwargs):
        seen.append(kwargs["guidance_every"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_flow", spy)
    carbon = src.get_structures(1, condition="carbon", seed=0, valid_only=False)
    perov = src.get_structures(1, condition="perov", seed=0, valid_only=False)
    assert seen == [4, 1]
    assert carbon[0].properties["generation"]["guidance_every"] == 4
    assert perov[0].properties["generation"]["guidance_every"] == 1
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, guidance_every={"perov": 2})
    assert src.guidance_every == {"carbon": 4, "perov": 2}  # unlisted: the default
    for bad in (0, 1.5, {"carbon": -1}):
        with pytest.raises(ValueError, match="guidance_every must be a whole number >= 1"):
            CrystalStructureSource(model_dir, energy_model=tiny_energy_model, guidance_every=bad)
    with pytest.raises(ValueError, match=r"guidance_every: \['mp_20'\] are not conditions"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, guidance_every={"mp_20": 2})

# ------------------------------------------------------------------ latent space
def test_encode_decode_interpolate(source, dataset):
    structures, _ = dataset
    latent_dim = source.flow.latent_dim
    z = source.encode(structures[:3], condition="perov")
    assert z.shape == (3, latent_dim) and np.isfinite(z).all()
    # invariant to the setting: the same crystal translated and rotated gives the same code
    moved = structures[0].copy()
    moved.translate_sites(range(len(moved)), [0.31, -0.2, 0.77])
    moved.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 40))
    np.testing.assert_allclose(source.encode([moved], condition="perov")[0], z[0], atol=1e-4)

    decoded = source.decode(z, 5, condition="perov")
    assert len(decoded) == 3 and all(len(s) == 5 for s in decoded)
    assert decoded[0].properties["generation"]["guidance"] == ["latent"]
    assert "projection_steps" not in decoded[0].properties["generation"]  # no guidance: nothing projected
    again = source.decode(z, 5, condition="perov")
    assert same_structures(decoded, again)  # same seed, same codes: same crystals
    sto = source.decode(z[:2], 5, condition="perov", composition="SrTiO3")
    assert [s.composition.reduced_formula for s in sto] == ["SrTiO3"] * 2

    path = source.interpolate(structures[0], structures[1], num=4, condition="perov")
    assert len(path) == 4 and all(len(s) == 5 for s in path)
    with pytest.raises(ValueError, match="the end points need the same number"):
        source.interpolate(structures[0], structures[45])
    with pytest.raises(ValueError, match="share one num_atoms"):
        source.decode(z[:2], [5, 4])


def test_context_manager_and_no_warnings(model_dir, tiny_energy_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4) as src:
            assert len(src.get_structures(2, seed=0, condition="perov")) == 2


def test_charge_weight(model_dir, tiny_energy_model):
    """``charge_weight``: the charge-balance term joins the physics guidance with that
    weight; 0 leaves it out; a negative weight is refused."""
    from crystalgnn_plugins.generation import ChargeBalanceTerm

    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4, charge_weight=1.5)
    (term,) = [t for t in src._guidance(None) if isinstance(t, ChargeBalanceTerm)]
    assert term.weight == 1.5
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=4, charge_weight=0)
    assert not [t for t in src._guidance(None) if isinstance(t, ChargeBalanceTerm)]
    assert src.get_structures(1, condition="perov", seed=0)[0].properties["generation"]["guidance"] == [
        "RepulsionTerm", "EnergyTerm"]
    with pytest.raises(ValueError, match="charge_weight must be >= 0"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, charge_weight=-1)


def test_wrapped_normal_generator_uses_its_own_sampler_defaults(flow, tiny_energy_model):
    """The measured speed-ups and step powers belong to the geodesic path; a wrapped-normal
    generator samples with uniform steps and no speed-up, guided or not."""
    from crystalgnn_plugins.generation import CrystalStructureSource

    wn = flow.with_coord_path("wrapped_normal")
    src = CrystalStructureSource(wn, energy_model=tiny_energy_model, steps=6)
    assert set(src.coord_speedups.values()) == {0.0} and set(src.time_powers.values()) == {1.0}
    out = src.get_structures(3, condition="carbon", seed=0)
    assert len(out) == 3 and all(s.properties["generation"]["condition"] == "carbon" for s in out)
    assert [s.frac_coords.tolist() for s in out] == [
        s.frac_coords.tolist() for s in src.get_structures(3, condition="carbon", seed=0)]
    with pytest.raises(ValueError, match="coord_speedup applies to the geodesic"):
        CrystalStructureSource(wn, physics=False, steps=4, coord_speedup=2.0).get_structures(1, seed=0)


def _counted(model, calls: list, name: str):
    """Record a call of this model instance's ``atomic_energies`` under ``name``."""
    original = model.atomic_energies

    def counting(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    model.atomic_energies = counting
    return model


def test_guidance_model_per_condition(model_dir, tiny_energy_model, monkeypatch):
    """A condition's learned-energy guidance uses its guidance model (and only it), the
    other conditions the energy model; relaxation always uses the energy model; the
    provenance names the guide."""
    from crystalgnn_plugins.generation.guidance import EnergyTerm

    calls: list = []
    energy = _counted(copy.deepcopy(tiny_energy_model), calls, "energy")
    guide = _counted(copy.deepcopy(tiny_energy_model), calls, "guide")
    src = CrystalStructureSource(model_dir, energy_model=energy, guidance_model={"carbon": guide}, steps=4,
                                 energy_weight=0.3, relax_kwargs={"steps": 1})
    terms = [t for t in src._guidance(None) if isinstance(t, EnergyTerm)]
    assert {id(t.model): t.condition_weights for t in terms} == {
        id(guide): {"carbon": 0.3, "perov": 0.0}, id(energy): {"carbon": 0.0, "perov": 0.3}}
    out = src.get_structures(2, condition="carbon", seed=0)
    assert calls and set(calls) == {"guide"}
    assert out[0].properties["generation"]["energy_guide"] == "EnergyModel"
    calls.clear()
    out = src.get_structures(2, condition="perov", seed=0)
    assert calls and set(calls) == {"energy"}
    assert out[0].properties["generation"]["energy_guide"] == "EnergyModel"

    import crystalgnn_plugins.relaxation as relaxation

    used = []
    original = relaxation.relax
    monkeypatch.setattr(relaxation, "relax", lambda s, model, **kw: used.append(model) or original(s, model, **kw))
    src.get_structures(1, condition="carbon", seed=0, relax=True)
    assert used == [energy]

    # one model for all conditions: a single energy term
    src = CrystalStructureSource(model_dir, energy_model=energy, guidance_model=guide, energy_weight=0.3)
    (term,) = [t for t in src._guidance(None) if isinstance(t, EnergyTerm)]
    assert term.model is guide and term.condition_weights == {"carbon": 0.3, "perov": 0.3}
    # without guidance, no guide is named
    out = CrystalStructureSource(model_dir, energy_model=energy, guidance_model=guide, physics=False,
                                 steps=2).get_structures(1, seed=0)
    assert "energy_guide" not in out[0].properties["generation"]
    with pytest.raises(ValueError, match=r"guidance_model: \['mp_20'\] are not conditions"):
        CrystalStructureSource(model_dir, energy_model=energy, guidance_model={"mp_20": guide})


def test_default_guidance_models(model_dir, tiny_energy_model, monkeypatch):
    """``DEFAULT_GUIDANCE_MODELS`` guide their conditions when no energy model is given
    and the guide is registered; an explicit energy model guides everything; a dict
    keeps the defaults of the conditions it does not name."""
    from crystalgnn_plugins.generation import source as source_module

    monkeypatch.setattr(source_module, "DEFAULT_GUIDANCE_MODELS", {"carbon": "default"})
    src = CrystalStructureSource(model_dir)
    assert src.guidance_models == {"carbon": "default", "perov": None}
    assert src.guidance_label("carbon") == "default" and src.guidance_label("perov") == "default"
    src = CrystalStructureSource(model_dir, guidance_model={"perov": tiny_energy_model})
    assert src.guidance_models == {"carbon": "default", "perov": tiny_energy_model}
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model)
    assert src.guidance_models == {"carbon": None, "perov": None}
    assert src.guidance_label("carbon") == "EnergyModel"
    # a checkout without the guide's weights guides with the energy model
    monkeypatch.setattr(source_module, "DEFAULT_GUIDANCE_MODELS", {"carbon": "no-such-guide"})
    assert CrystalStructureSource(model_dir).guidance_models == {"carbon": None, "perov": None}
