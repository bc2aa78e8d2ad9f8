"""``sample_flow``: reproducibility, constraints and the shape of the raw samples."""

from __future__ import annotations

import pytest
import torch

from crystalgnn_plugins.generation import RepulsionTerm, SampledCrystals, sample_flow
from crystalgnn_plugins.generation.lattice import lattice_to_log

STEPS = 6


def draw(flow, seed, counts=(5, 5, 4, 2), conds=None, **kwargs) -> SampledCrystals:
    counts = torch.tensor(counts)
    if conds is None:
        conds = [flow.condition_index("perov") if c == 5 else flow.condition_index("carbon") for c in counts.tolist()]
    return sample_flow(flow, counts, torch.tensor(conds), steps=kwargs.pop("steps", STEPS),
                       generator=torch.Generator().manual_seed(seed), **kwargs)


def assert_valid_raw(out: SampledCrystals, counts):
    n = sum(counts)
    assert out.species.shape == (n,) and out.frac.shape == (n, 3) and out.lattice.shape == (len(counts), 3, 3)
    assert out.num_atoms.tolist() == list(counts)
    assert (out.frac >= 0).all() and (out.frac < 1).all()
    assert torch.isfinite(out.lattice).all()
    assert (torch.linalg.det(out.lattice.double()) > 0).all()  # canonical pose: positive volume
    # canonical pose: the lattice matrix is symmetric
    torch.testing.assert_close(out.lattice, out.lattice.transpose(-1, -2), atol=1e-4, rtol=1e-4)


def test_shapes_and_ranges(flow):
    out = draw(flow, 0)
    assert_valid_raw(out, (5, 5, 4, 2))
    assert out.species.dtype == torch.long and ((out.species >= 0) & (out.species < len(flow.elements))).all()


def test_same_seed_same_samples_different_seed_different(flow):
    a, b, c = draw(flow, 11), draw(flow, 11), draw(flow, 12)
    assert torch.equal(a.species, b.species) and torch.equal(a.frac, b.frac) and torch.equal(a.lattice, b.lattice)
    assert not torch.equal(a.frac, c.frac) and not torch.equal(a.lattice, c.lattice)


def test_seed_does_not_leak_into_global_rng(flow):
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    draw(flow, 5)
    assert torch.equal(torch.rand(3), before)


def test_fixed_species_are_kept(flow):
    el = flow.elements.index
    sto = [el("Sr"), el("Ti"), el("O"), el("O"), el("O")]
    species = torch.tensor(sto * 3)
    out = draw(flow, 0, counts=(5, 5, 5), species=species)
    assert torch.equal(out.species, species)
    assert_valid_raw(out, (5, 5, 5))


def test_allowed_species_are_respected(flow):
    el = flow.elements.index
    allowed = torch.zeros(3, len(flow.elements), dtype=torch.bool)
    allowed[0, [el("Ba"), el("Ti"), el("O")]] = True
    allowed[1, [el("Sr"), el("Zr")]] = True
    allowed[2, el("Ca")] = True
    out = draw(flow, 1, counts=(5, 5, 3), allowed=allowed)
    batch = torch.repeat_interleave(torch.arange(3), out.num_atoms)
    assert allowed[batch, out.species].all()
    assert (out.species[batch == 2] == el("Ca")).all()


def test_latent_code_and_options(flow):
    z = torch.zeros(2, flow.latent_dim)
    out = draw(flow, 2, counts=(5, 4), z=z, coord_speedup=2.0, steps=3)
    assert_valid_raw(out, (5, 4))
    z2 = draw(flow, 2, counts=(5, 4), z=z + 1.0, coord_speedup=2.0, steps=3)
    assert not torch.equal(out.frac, z2.frac)  # the latent code is used


def test_guidance_changes_samples_and_is_reproducible(flow):
    kwargs = dict(counts=(5, 4), guidance=[RepulsionTerm(weight=5.0)], guidance_start=0.0)
    a, b = draw(flow, 3, **kwargs), draw(flow, 3, **kwargs)
    plain = draw(flow, 3, counts=(5, 4))
    assert torch.equal(a.frac, b.frac) and torch.equal(a.lattice, b.lattice)
    assert not torch.equal(a.frac, plain.frac)
    assert_valid_raw(a, (5, 4))


def test_projection_steps_only_touch_crystals_with_close_pairs(flow):
    kwargs = dict(counts=(5, 5, 4, 2), guidance=[RepulsionTerm(weight=5.0)], guidance_start=1.0, coord_speedup=8.0)
    raw = draw(flow, 4, **kwargs)
    projected = draw(flow, 4, projection_steps=20, **kwargs)
    assert_valid_raw(projected, (5, 5, 4, 2))
    term, first, touched = RepulsionTerm(weight=5.0), 0, 0
    from crystalgnn_plugins.generation.guidance import GuidanceContext

    for b, n in enumerate(raw.num_atoms.tolist()):
        sl = slice(first, first + n)
        first += n
        ctx = GuidanceContext(flow.elements, torch.tensor([n]))
        probs = torch.nn.functional.one_hot(raw.species[sl], len(flow.elements)).to(raw.frac.dtype)
        before = term(probs, raw.frac[sl], raw.lattice[b : b + 1], ctx).item()
        after = term(probs, projected.frac[sl], projected.lattice[b : b + 1], ctx).item()
        if before == 0:
            assert torch.equal(raw.frac[sl], projected.frac[sl])
        else:
            assert after < before
            touched += 1
    assert touched  # the tiny flow with a large speed-up leaves close pairs to separate
    assert torch.equal(raw.lattice, projected.lattice) and torch.equal(raw.species, projected.species)


def test_steps_must_be_positive(flow):
    with pytest.raises(ValueError, match="steps must be at least 1"):
        draw(flow, 0, steps=0)
    with pytest.raises(ValueError, match="time_power must be positive"):
        draw(flow, 0, time_power=0.0)


def test_time_power_shortens_the_last_steps(flow, monkeypatch):
    """Step times ``1 - (1 - k/steps)^p``: the flow is evaluated at those times and
    the last step still ends on the data side (valid crystals)."""
    times = []
    velocity = flow.velocity

    def spy(a, frac, log_l, num_atoms, t, *args):
        times.append(float(t[0]))
        return velocity(a, frac, log_l, num_atoms, t, *args)

    monkeypatch.setattr(flow, "velocity", spy)
    out = draw(flow, 0, steps=4, time_power=2.0)
    assert times == pytest.approx([0.0, 1 - 0.75**2, 1 - 0.5**2, 1 - 0.25**2])
    assert_valid_raw(out, (5, 5, 4, 2))
    times.clear()
    uniform = draw(flow, 0, steps=4)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert torch.equal(uniform.frac, draw(flow, 0, steps=4, time_power=1.0).frac)


class _HugeGradient:
    """A guidance term whose gradients are astronomically large (as an energy model
    gives for atoms on top of each other)."""

    weight = 1.0

    def __call__(self, probs, frac, lattice, ctx):
        return 1e12 * ((frac**2).sum(-1).sum() + (lattice**2).sum((-1, -2)))


def test_guidance_steps_are_bounded(flow):
    """One Euler step from the same prior: guided and plain samples differ by the
    clipped guidance only, at most ``max_guidance`` per atom and per lattice."""
    from crystalgnn_plugins.generation.lattice import lattice_to_log, wrap

    plain = draw(flow, 3, steps=1)
    for max_guidance in (1.0, 0.25):
        out = draw(flow, 3, steps=1, guidance=[_HugeGradient()], guidance_start=0.0, max_guidance=max_guidance)
        assert_valid_raw(out, (5, 5, 4, 2))
        moved = wrap(out.frac.double() - plain.frac.double()).norm(dim=-1)
        assert moved.max() <= max_guidance + 1e-5 and moved.max() > 0.5 * max_guidance
        d_log = lattice_to_log(out.lattice.double()) - lattice_to_log(plain.lattice.double())
        assert torch.linalg.matrix_norm(d_log).max() <= max_guidance + 1e-4


class _RecordContext:
    weight = 0.0

    def __init__(self):
        self.pressures = []

    def __call__(self, probs, frac, lattice, ctx):
        self.pressures.append(None if ctx.pressure is None else ctx.pressure.clone())
        return lattice.sum((-1, -2)) * 0


def test_guidance_sees_the_pressure_of_each_condition(tiny_flow):
    """``condition_pressures`` (GPa) reach the guidance terms per crystal, in eV/Å³."""
    from ase.units import GPa

    from crystalgnn_plugins.generation import CrystalFlow

    pressed = CrystalFlow.from_config({**tiny_flow.get_config(), "condition_pressures": {"carbon": 10.0}}).double()
    assert pressed.pressure_gpa("carbon") == 10.0 and pressed.pressure_gpa(pressed.condition_index("perov")) == 0.0
    record = _RecordContext()
    draw(pressed, 0, counts=(5, 4), conds=[pressed.condition_index("perov"), pressed.condition_index("carbon")],
         steps=2, guidance=[record], guidance_start=0.0)
    assert len(record.pressures) == 2
    torch.testing.assert_close(record.pressures[0], torch.tensor([0.0, 10.0 * GPa], dtype=torch.float64))
    record = _RecordContext()
    draw(tiny_flow, 0, counts=(5, 4), steps=1, guidance=[record], guidance_start=0.0)
    assert record.pressures == [None]  # no pressures: the plain energy
    with pytest.raises(ValueError, match="not conditions of this flow"):
        CrystalFlow.from_config({**tiny_flow.get_config(), "condition_pressures": {"mp_20": 1.0}})


def test_lattice_guidance_can_be_switched_off(flow):
    """A term with ``guides_lattice = False`` moves the atoms only: after one guided
    step the lattices are the plain step's (later steps differ through the
    coordinates the flow sees); terms without the attribute move the lattice."""

    class AtomsOnly(_HugeGradient):
        guides_lattice = False

    plain = draw(flow, 4, steps=1)
    guided = draw(flow, 4, steps=1, guidance=[AtomsOnly()], guidance_start=0.0)
    torch.testing.assert_close(guided.lattice, plain.lattice)
    assert not torch.allclose(guided.frac, plain.frac)
    both = draw(flow, 4, steps=1, guidance=[AtomsOnly(), _HugeGradient()], guidance_start=0.0)
    moved = draw(flow, 4, steps=1, guidance=[_HugeGradient()], guidance_start=0.0)
    assert not torch.allclose(moved.lattice, plain.lattice)
    torch.testing.assert_close(both.lattice, moved.lattice)


def test_wrapped_normal_predictor_corrector(flow):
    wn = flow.with_coord_path("wrapped_normal").eval()
    a, b, c = draw(wn, 5), draw(wn, 5), draw(wn, 6)
    assert_valid_raw(a, (5, 5, 4, 2))
    assert torch.equal(a.frac, b.frac) and torch.equal(a.lattice, b.lattice)
    assert not torch.equal(a.frac, c.frac)
    predictor_only = draw(wn, 5, langevin_step=0.0)
    assert_valid_raw(predictor_only, (5, 5, 4, 2))
    assert not torch.equal(a.frac, predictor_only.frac)
    guided = draw(wn, 5, guidance=[RepulsionTerm(weight=5.0)], guidance_start=0.0)
    assert_valid_raw(guided, (5, 5, 4, 2))
    assert torch.equal(guided.frac, draw(wn, 5, guidance=[RepulsionTerm(weight=5.0)],
                                          guidance_start=0.0).frac)
    with pytest.raises(ValueError, match="coord_speedup applies to the geodesic"):
        draw(wn, 5, coord_speedup=3.0)
    with pytest.raises(ValueError, match="langevin_step must be >= 0"):
        draw(wn, 5, langevin_step=-1.0)


@pytest.mark.parametrize("coord_path", ["geodesic", "wrapped_normal"])
def test_given_lattice_or_coordinate_paths_replace_the_integration(flow, coord_path):
    """``lattice_path`` / ``frac_path`` (diagnostics) give that part of the crystal at
    every step: the samples end on them, and the other part is still integrated."""
    f = flow.with_coord_path(coord_path).eval()
    counts = (5, 4)
    conds = [f.condition_index("perov"), f.condition_index("carbon")]
    free = draw(f, 3, counts=counts, conds=conds)
    torch.manual_seed(0)
    lattice = torch.diag_embed(torch.tensor([[4.0, 4.1, 3.9], [2.5, 2.6, 6.0]]))
    start = lattice_to_log(lattice) + 0.3
    frac0, frac1 = torch.rand(9, 3), torch.rand(9, 3)
    seen = []

    def lattice_path(t):
        seen.append(t)
        return (1 - t) * start + t * lattice_to_log(lattice)

    given_l = draw(f, 3, counts=counts, conds=conds, lattice_path=lattice_path)
    torch.testing.assert_close(given_l.lattice, lattice, atol=1e-4, rtol=1e-4)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == STEPS + 1
    assert not torch.equal(given_l.frac, free.frac)  # the atoms saw another lattice
    given_f = draw(f, 3, counts=counts, conds=conds, frac_path=lambda t: (1 - t) * frac0 + t * frac1)
    torch.testing.assert_close(given_f.frac, frac1)
    assert not torch.equal(given_f.lattice, free.lattice)


class _CountCalls(RepulsionTerm):
    """The repulsion term, counting its evaluations."""

    def __init__(self):
        super().__init__(weight=5.0)
        self.calls = 0

    def __call__(self, probs, frac, lattice, ctx):
        self.calls += 1
        return super().__call__(probs, frac, lattice, ctx)


@pytest.mark.parametrize("every", [1, 2, 3])
def test_guidance_every_k_steps_evaluates_the_terms_less_and_reuses_their_gradients(flow, every):
    """``guidance_every=k``: the terms are evaluated on guided steps 0, k, 2k, ...; in
    between their last gradients still steer (the samples differ from unguided ones)."""
    term = _CountCalls()
    guided = draw(flow, 3, steps=STEPS, guidance=[term], guidance_start=0.0, guidance_every=every)
    assert term.calls == -(-STEPS // every)
    assert_valid_raw(guided, (5, 5, 4, 2))
    if every > 1:
        once = _CountCalls()
        stale = draw(flow, 3, steps=STEPS, guidance=[once], guidance_start=0.0, guidance_every=STEPS)
        assert once.calls == 1
        fresh = draw(flow, 3, steps=STEPS, guidance=[_CountCalls()], guidance_start=0.0)
        plain = draw(flow, 3, steps=STEPS)
        assert not torch.equal(stale.frac, plain.frac)  # the one gradient steered all steps
        assert not torch.equal(guided.frac, fresh.frac)  # reused gradients are not fresh ones
    with pytest.raises(ValueError, match="guidance_every"):
        draw(flow, 3, guidance=[term], guidance_every=0)
