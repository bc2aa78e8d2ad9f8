"""Guidance terms: repulsion, learned energy and property targets (float64)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.data import atomic_numbers, covalent_radii
from pymatgen.core import Lattice, Structure

from crystalgnn_plugins.generation import (
    EnergyTerm,
    PropertyTerm,
    RepulsionTerm,
    repulsion_energy,
    sample_flow,
)
from crystalgnn_plugins.generation.guidance import GuidanceContext

F64 = torch.float64
VOCAB = ["O", "Sr", "Ti"]


def one_hot(symbols, vocab=VOCAB) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor([vocab.index(s) for s in symbols]), len(vocab)).to(F64)


def pair(distance: float, box: float = 10.0, species=("Ti", "O")):
    """Two atoms ``distance`` Å apart along a skewed direction in a cubic box."""
    direction = np.array([1.0, 0.5, 0.25]) / np.linalg.norm([1.0, 0.5, 0.25])
    frac = np.array([[0.3, 0.4, 0.5], [0.3, 0.4, 0.5] + distance * direction / box])
    probs = one_hot(species)
    return probs, torch.tensor(frac, dtype=F64), box * torch.eye(3, dtype=F64).unsqueeze(0), GuidanceContext(VOCAB, torch.tensor([2]))


def cart_distance(frac, lattice) -> float:
    d = frac[1] - frac[0]
    d = d - torch.round(d)
    return float(torch.linalg.norm(d @ lattice[0]))


def d_min(a: str, b: str, factor: float = 0.7) -> float:
    return factor * (covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


# ------------------------------------------------------------------ repulsion
def test_repulsion_value_is_the_documented_penalty():
    probs, frac, lattice, ctx = pair(1.0)
    value = RepulsionTerm()(probs, frac, lattice, ctx)
    assert value.shape == (1,)
    # one unordered pair below d_min = 0.7 (r_Ti + r_O); no self-image penalty in a 10 Å box
    assert value.item() == pytest.approx((d_min("Ti", "O") - 1.0) ** 2, rel=1e-9)
    # factor changes the threshold
    assert RepulsionTerm(factor=0.5)(probs, frac, lattice, ctx).item() == pytest.approx((d_min("Ti", "O", 0.5) - 1.0) ** 2, rel=1e-9)


@pytest.mark.parametrize("distance", [0.3, 0.8, 1.3])
def test_repulsion_gradient_pushes_close_atoms_apart(distance):
    probs, frac, lattice, ctx = pair(distance)
    frac.requires_grad_(True)
    lattice.requires_grad_(True)
    energy = RepulsionTerm()(probs, frac, lattice, ctx).sum()
    g_frac, g_lat = torch.autograd.grad(energy, [frac, lattice])
    assert g_frac.abs().sum() > 0 and g_lat.abs().sum() > 0
    # equal and opposite "forces" on the two atoms (translation invariance)
    torch.testing.assert_close(g_frac[0], -g_frac[1])
    step = 1e-3
    with torch.no_grad():
        before = cart_distance(frac, lattice)
        assert cart_distance(frac - step * g_frac, lattice) > before
        assert cart_distance(frac, lattice - step * g_lat) > before  # the cell expands too
        assert RepulsionTerm()(probs, frac - step * g_frac, lattice, ctx).item() < energy.item()


def test_repulsion_is_zero_for_far_atoms():
    probs, frac, lattice, ctx = pair(3.5)
    assert cart_distance(frac, lattice) > d_min("Ti", "O")
    frac.requires_grad_(True)
    lattice.requires_grad_(True)
    energy = RepulsionTerm()(probs, frac, lattice, ctx).sum()
    assert energy.item() == 0.0
    g_frac, g_lat = torch.autograd.grad(energy, [frac, lattice])
    assert torch.equal(g_frac, torch.zeros_like(g_frac)) and torch.equal(g_lat, torch.zeros_like(g_lat))


def test_repulsion_uses_the_nearest_periodic_image():
    # atoms at x = 0.02 and 0.98 of a 10 Å box are 0.4 Å apart through the boundary
    probs, _, lattice, ctx = pair(1.0)
    frac = torch.tensor([[0.02, 0.5, 0.5], [0.98, 0.5, 0.5]], dtype=F64)
    value = RepulsionTerm()(probs, frac, lattice, ctx).item()
    assert value == pytest.approx((d_min("Ti", "O") - 0.4) ** 2, rel=1e-9)
    shifted = RepulsionTerm()(probs, frac + torch.tensor([[3.0, -1, 0], [0, 2, 0]], dtype=F64), lattice, ctx).item()
    assert shifted == pytest.approx(value, rel=1e-9)


def test_repulsion_penalises_short_lattice_vectors():
    # one Ti atom in a cell with a = 2 Å: its own image is closer than 0.7 (2 r_Ti)
    lattice = torch.diag(torch.tensor([2.0, 8.0, 8.0], dtype=F64)).unsqueeze(0)
    ctx = GuidanceContext(VOCAB, torch.tensor([1]))
    value = RepulsionTerm()(one_hot(["Ti"]), torch.zeros(1, 3, dtype=F64), lattice, ctx).item()
    assert value == pytest.approx((d_min("Ti", "Ti") - 2.0) ** 2, rel=1e-9)


def test_repulsion_energy_per_crystal_in_a_batch():
    radii = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    frac = torch.tensor([[0, 0, 0], [0.05, 0, 0], [0.5, 0.5, 0.5]], dtype=F64)
    lattice = torch.stack([10 * torch.eye(3, dtype=F64), 10 * torch.eye(3, dtype=F64)])
    out = repulsion_energy(frac, lattice, torch.tensor([2, 1]), radii, factor=1.0)
    torch.testing.assert_close(out, torch.tensor([(2.0 - 0.5) ** 2, 0.0], dtype=F64))


def test_soft_species_use_the_expected_radius():
    probs, frac, lattice, ctx = pair(1.0)
    mixed = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=F64)  # half Sr, half Ti; O
    r = 0.5 * (covalent_radii[atomic_numbers["Sr"]] + covalent_radii[atomic_numbers["Ti"]]) + covalent_radii[8]
    assert RepulsionTerm()(mixed, frac, lattice, ctx).item() == pytest.approx((0.7 * r - 1.0) ** 2, rel=1e-9)


# ------------------------------------------------------------------ property targets
class VolumePerAtom(torch.nn.Module):
    """A deterministic 'property model': volume per atom (Å³) from the graph's cell."""

    target = "volume_per_atom"
    cutoff = 4.0
    max_neighbors = None

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, graph):
        return {self.target: torch.linalg.det(graph.cell) / graph.num_atoms.to(graph.cell.dtype)}


def cubic_crystal(a: float):
    probs = one_hot(["Sr", "Ti", "O", "O", "O"])
    frac = torch.tensor([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=F64)
    return probs, frac, a * torch.eye(3, dtype=F64).unsqueeze(0), GuidanceContext(VOCAB, torch.tensor([5]))


def test_property_term_needs_exactly_one_target():
    with pytest.raises(ValueError, match="exactly one of below=, above= or near="):
        PropertyTerm(VolumePerAtom())
    with pytest.raises(ValueError, match="exactly one"):
        PropertyTerm(VolumePerAtom(), below=1.0, above=0.0)


@pytest.mark.parametrize(
    ("kwargs", "a", "expected"),
    [
        ({"below": 10.0}, 4.0, 64 / 5 - 10.0),  # y = 12.8 Å³/atom above the bound: penalty y - below
        ({"below": 15.0}, 4.0, 0.0),  # satisfied
        ({"above": 15.0}, 4.0, 15.0 - 64 / 5),  # too small: penalty above - y
        ({"above": 10.0}, 4.0, 0.0),
        ({"near": 12.0}, 4.0, (64 / 5 - 12.0) ** 2),
    ],
)
def test_property_term_values(kwargs, a, expected):
    probs, frac, lattice, ctx = cubic_crystal(a)
    term = PropertyTerm(VolumePerAtom(), **kwargs)
    assert term.predict(probs, frac, lattice, ctx).item() == pytest.approx(a**3 / 5)
    assert term(probs, frac, lattice, ctx).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "sign"), [({"below": 10.0}, -1), ({"above": 15.0}, +1), ({"near": 14.0}, +1), ({"near": 11.0}, -1)])
def test_property_gradient_moves_towards_the_target(kwargs, sign):
    probs, frac, lattice, ctx = cubic_crystal(4.0)
    term = PropertyTerm(VolumePerAtom(), **kwargs)
    lattice.requires_grad_(True)
    (grad,) = torch.autograd.grad(term(probs, frac, lattice, ctx).sum(), [lattice])
    with torch.no_grad():
        before = term.predict(probs, frac, lattice, ctx).item()
        after = term.predict(probs, frac, lattice - 1e-3 * grad, ctx).item()
        assert np.sign(after - before) == sign
        assert term(probs, frac, lattice - 1e-3 * grad, ctx).item() < term(probs, frac, lattice, ctx).item()


def test_property_guidance_steers_sampling(flow):
    """Sampling towards a small vs. a large volume per atom gives smaller vs. larger cells."""
    counts, cond = torch.tensor([5] * 4), torch.full((4,), flow.condition_index("perov"))

    def mean_vpa(**target):
        terms = [PropertyTerm(VolumePerAtom(), weight=0.05, **target)] if target else []
        out = sample_flow(flow, counts, cond, steps=6, guidance=terms, generator=torch.Generator().manual_seed(0))
        return (torch.linalg.det(out.lattice.double()) / 5).mean().item()

    plain, small, large = mean_vpa(), mean_vpa(below=8.0), mean_vpa(above=25.0)
    assert small < plain < large


@pytest.fixture(scope="module")
def tiny_property_model():
    from crystalgnn_plugins.models import PropertyModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PropertyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0},
                              elements=VOCAB, target="gap", hidden=8)
    return model.double().eval()


def test_property_term_with_a_property_model_is_differentiable_in_species(tiny_property_model):
    probs, frac, lattice, ctx = cubic_crystal(3.9)
    soft = (0.8 * probs + 0.2 / len(VOCAB)).requires_grad_(True)
    term = PropertyTerm(tiny_property_model, near=1.0)
    y = term.predict(soft.detach(), frac, lattice, ctx)
    # soft species change the prediction
    assert (term.predict(probs, frac, lattice, ctx) - y).abs().item() > 1e-8
    frac_g = frac.clone().requires_grad_(True)
    (g_species, g_frac) = torch.autograd.grad(term(soft, frac_g, lattice, ctx).sum(), [soft, frac_g])
    assert torch.isfinite(g_species).all() and g_species.abs().sum() > 0
    assert torch.isfinite(g_frac).all()
    with torch.no_grad():
        assert term(soft - 1e-2 * g_species, frac, lattice, ctx).item() < term(soft, frac, lattice, ctx).item()
    # without soft species the species get no gradient
    hard = PropertyTerm(tiny_property_model, near=1.0, soft_species=False)
    (g_hard,) = torch.autograd.grad(hard(soft, frac_g, lattice, ctx).sum(), [soft], allow_unused=True)
    assert g_hard is None or g_hard.abs().sum() == 0


# ------------------------------------------------------------------ energy
def test_energy_term_is_the_energy_per_atom(tiny_energy_model):
    probs, frac, lattice, ctx = cubic_crystal(3.95)
    frac = frac + 0.01 * torch.tensor(np.random.default_rng(0).normal(size=(5, 3)))
    value = EnergyTerm(tiny_energy_model)(probs, frac, lattice, ctx)
    structure = Structure(Lattice(lattice[0].numpy()), ["Sr", "Ti", "O", "O", "O"], frac.numpy())
    expected = tiny_energy_model(tiny_energy_model.graph(structure), compute_forces=False, compute_stress=False)["energy"] / 5
    assert value.item() == pytest.approx(expected.item(), rel=1e-9)
    # its gradient is minus the forces (per atom) in fractional coordinates
    frac_g = frac.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(EnergyTerm(tiny_energy_model)(probs, frac_g, lattice, ctx).sum(), [frac_g])
    forces = tiny_energy_model(tiny_energy_model.graph(structure), compute_stress=False)["forces"]
    torch.testing.assert_close(grad, -(forces @ lattice[0].T) / 5, atol=1e-10, rtol=1e-7)


def test_energy_term_at_pressure_is_the_enthalpy_per_atom(tiny_energy_model):
    """(E + PV) / N, with P given or from the context; its lattice gradient gains P V L^-T / N."""
    from ase.units import GPa

    probs, frac, lattice, ctx = cubic_crystal(3.95)
    lattice = lattice + 0.05 * torch.tensor(np.random.default_rng(2).normal(size=(1, 3, 3)))
    volume = float(torch.linalg.det(lattice[0]).abs())
    plain, pressed = EnergyTerm(tiny_energy_model), EnergyTerm(tiny_energy_model, pressure=10.0)
    e0, h = plain(probs, frac, lattice, ctx), pressed(probs, frac, lattice, ctx)
    assert (h - e0).item() == pytest.approx(10.0 * GPa * volume / 5, rel=1e-9)
    ctx_p = GuidanceContext(VOCAB, torch.tensor([5]), torch.tensor([10.0 * GPa], dtype=F64))
    torch.testing.assert_close(plain(probs, frac, lattice, ctx_p), h)
    assert pressed.pressure == 10.0 and EnergyTerm(tiny_energy_model, pressure=0.0)(probs, frac, lattice, ctx_p) == e0

    lat = lattice.clone().requires_grad_(True)
    (g_h,) = torch.autograd.grad(pressed(probs, frac, lat, ctx).sum(), [lat])
    (g_e,) = torch.autograd.grad(plain(probs, frac, lat, ctx).sum(), [lat])
    expected = 10.0 * GPa * volume * torch.linalg.inv(lattice[0]).T / 5
    torch.testing.assert_close(g_h[0] - g_e[0], expected, atol=1e-12, rtol=1e-7)


def test_energy_term_condition_weights_scale_each_crystal(tiny_energy_model):
    probs, frac, lattice, _ = cubic_crystal(3.95)
    two = (torch.cat([probs, probs]), torch.cat([frac, frac]), torch.cat([lattice, lattice]))
    ctx = GuidanceContext(VOCAB, torch.tensor([5, 5]), conditions=["perov", "carbon"])
    plain = EnergyTerm(tiny_energy_model)(*two, ctx)
    weighted = EnergyTerm(tiny_energy_model, condition_weights={"carbon": 6.0})(*two, ctx)
    torch.testing.assert_close(weighted, plain * torch.tensor([1.0, 6.0], dtype=F64))
    # without condition names in the context the factors cannot apply
    torch.testing.assert_close(
        EnergyTerm(tiny_energy_model, condition_weights={"carbon": 6.0})(*two, GuidanceContext(VOCAB, torch.tensor([5, 5]))),
        plain,
    )


def test_energy_term_ignores_crystals_with_unknown_elements(tiny_energy_model):
    vocab = ["Li", "O", "Sr", "Ti"]
    probs = torch.nn.functional.one_hot(torch.tensor([2, 3, 1, 1, 1, 0, 1]), 4).to(F64)  # SrTiO3 + LiO
    frac = torch.tensor(np.random.default_rng(1).uniform(size=(7, 3)))
    lattice = torch.stack([4.0 * torch.eye(3, dtype=F64), 3.0 * torch.eye(3, dtype=F64)])
    value = EnergyTerm(tiny_energy_model)(probs, frac, lattice, GuidanceContext(vocab, torch.tensor([5, 2])))
    assert value[0] != 0 and value[1] == 0


def test_energy_term_with_a_model_for_any_element(tiny_energy_model):
    """``elements=None`` means the model takes any element: its energy must count."""
    model = copy.deepcopy(tiny_energy_model)
    model.set_elements(None)
    probs, frac, lattice, ctx = cubic_crystal(3.95)
    ref = EnergyTerm(tiny_energy_model)(probs, frac, lattice, ctx)
    assert ref.item() != 0
    torch.testing.assert_close(EnergyTerm(model)(probs, frac, lattice, ctx), ref)


# ------------------------------------------------------------------ final projection
def test_projection_separates_a_collapsed_pair_and_leaves_far_atoms_alone():
    from crystalgnn_plugins.generation.sampling import _project

    term = RepulsionTerm(weight=5.0)
    probs, frac, lattice, ctx = pair(0.2)
    batch = torch.zeros(2, dtype=torch.long)
    out = _project([term], frac, lattice, probs, ctx, 10, 0.02, batch, 1)
    assert cart_distance(out, lattice) > 0.2 + 1.0  # moved apart by more than 1 Å in 10 steps of <= 0.2 Å each
    assert cart_distance(out, lattice) <= d_min("Ti", "O") + 1e-6 + 0.4  # stops near the penalty's range
    torch.testing.assert_close(out.mean(0), frac.mean(0))  # the pair's centre stays
    probs, frac, lattice, ctx = pair(2.5)
    assert torch.equal(_project([term], frac, lattice, probs, ctx, 10, 0.02, batch, 1), frac)


def test_charge_balanced_is_compositional_validity():
    """The fast ``{symbol: count}`` check used while sampling is the metric's check."""
    pytest.importorskip("smact")
    from pymatgen.core import Composition

    from crystalgnn_plugins.metrics.generation import charge_balanced, compositional_validity

    for formula in ("SrTiO3", "KLiO3", "BaZrO3", "KTiO3", "Sr2Ti2O6", "C6", "CuZn", "NaCl", "NaCl2", "LaAlO2N",
                    "CsPbI3", "KMgF3", "TiO", "Ba4O"):
        counts = {el.symbol: int(n) for el, n in Composition(formula).items()}
        assert charge_balanced(counts) == compositional_validity(formula), formula


def test_charge_balance_term_gradient_names_the_balancing_changes():
    """For KLiO3 (unbalanced) the gradient is -1 exactly on the single-atom changes
    among each atom's candidates that balance it (Li or K -> Ti gives KTiO3 / LiTiO3...),
    and 0 for a balanced crystal (SrTiO3)."""
    pytest.importorskip("smact")
    from crystalgnn_plugins.generation import ChargeBalanceTerm
    from crystalgnn_plugins.generation.guidance import GuidanceContext
    from crystalgnn_plugins.metrics.generation import charge_balanced

    elements = ["K", "Li", "O", "Ti", "Sr"]
    species = [[0, 1, 2, 2, 2], [4, 3, 2, 2, 2]]  # KLiO3, SrTiO3
    probs = torch.full((10, 5), 0.02, dtype=torch.float64)
    for i, e in enumerate(sum(species, [])):
        probs[i, e] = 0.92
    probs.requires_grad_(True)
    ctx = GuidanceContext(elements, torch.tensor([5, 5]))
    term = ChargeBalanceTerm(weight=1.0, candidates=5)
    value = term(probs, torch.zeros(10, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64).expand(2, 3, 3), ctx)
    assert value.shape == (2,) and value[1] == 0 and value[0] < 0
    (grad,) = torch.autograd.grad(value.sum(), [probs])
    assert (grad[5:] == 0).all()
    for i in range(5):
        for e in range(5):
            counts = {"K": 1, "Li": 1, "O": 3}
            old = elements[species[0][i]]
            counts[old] -= 1
            counts[elements[e]] = counts.get(elements[e], 0) + 1
            fixes = elements[e] != old and charge_balanced(counts)
            assert grad[i, e] == (-1.0 if fixes else 0.0), (i, elements[e])
    assert grad[1, 3] == -1.0  # Li -> Ti: KTiO3
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        ChargeBalanceTerm(candidates=0)


def test_charge_balance_guidance_balances_samples(tiny_flow, monkeypatch):
    """A flow whose species logits say Ba2O3 (unbalanced), with Ti the runner-up on
    the second Ba site: plain sampling gives Ba2O3, guided sampling BaTiO3 (the
    balancing change the flow likes best)."""
    pytest.importorskip("smact")
    from crystalgnn_plugins.generation import ChargeBalanceTerm, sample_flow

    el = tiny_flow.elements.index
    logits = torch.zeros(5, len(tiny_flow.elements), dtype=torch.float64)
    logits[0, el("Ba")] = logits[1, el("Ba")] = 5.0
    logits[1, el("Ti")] = 4.0
    logits[2:, el("O")] = 5.0
    velocity = tiny_flow.velocity

    def fixed_species(a, *args):
        out = dict(velocity(a, *args))
        out["species_logits"] = logits.repeat(a.shape[0] // 5, 1)
        return out

    monkeypatch.setattr(tiny_flow, "velocity", fixed_species)

    def formulas(out):
        species = [tiny_flow.elements[s] for s in out.species.tolist()]
        return {"".join(species[k : k + 5]) for k in range(0, len(species), 5)}

    counts, cond = torch.full((4,), 5), torch.zeros(4, dtype=torch.long)
    plain = sample_flow(tiny_flow, counts, cond, steps=6, generator=torch.Generator().manual_seed(0))
    guided = sample_flow(tiny_flow, counts, cond, steps=6, guidance=[ChargeBalanceTerm(weight=2.0)],
                         guidance_start=0.0, generator=torch.Generator().manual_seed(0))
    assert formulas(plain) == {"BaBaOOO"} and formulas(guided) == {"BaTiOOO"}
