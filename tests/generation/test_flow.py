"""``CrystalFlow``: data handling, statistics, loss and gradients, latent encoder, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crystalgnn_plugins.generation import CrystalFlow, resolve_generator, sample_flow
from crystalgnn_plugins.generation.flow import (
    MAX_ATOMS,
    CrystalBatch,
    ot_alignment,
    ot_assignment,
    wrapped_noise_mean,
)
from crystalgnn_plugins.generation.lattice import lattice_to_log, log_to_lattice
from crystalgnn_plugins.models.io import ModelFileError, load_model, read_model_metadata, save_model

PEROV, CARBON = "perov", "carbon"



def small_batch(flow, dataset, k=12) -> CrystalBatch:
    structures, conditions = dataset
    picks = list(range(0, 40, 40 // (k // 2))) + list(range(40, 60, 20 // (k - k // 2)))
    return flow.batch_from_structures([structures[i] for i in picks], [conditions[i] for i in picks]).to(dtype=torch.float64)


# ------------------------------------------------------------------ data
def test_batch_from_structures(tiny_flow, dataset):
    structures, conditions = dataset
    batch = tiny_flow.batch_from_structures(structures[:3] + structures[40:42], conditions[:3] + conditions[40:42])
    assert batch.num_atoms.tolist() == [len(s) for s in structures[:3] + structures[40:42]]
    assert batch.frac.shape == (int(batch.num_atoms.sum()), 3) and batch.lattice.shape == (5, 3, 3)
    assert (batch.frac >= 0).all() and (batch.frac <= 1).all()
    assert batch.condition.tolist() == [0, 0, 0, 1, 1]  # conditions as given to CrystalFlow: perov, carbon
    # species in the vocabulary, composition kept
    elements = [tiny_flow.elements[i] for i in batch.species[:5]]
    assert sorted(elements) == sorted(sp.symbol for sp in structures[0].species)
    # Niggli reduction keeps volume and the Gram-invariant shape (lengths)
    for k, s in enumerate(structures[:3] + structures[40:42]):
        vol = torch.linalg.det(batch.lattice[k].double()).abs()
        assert vol.item() == pytest.approx(s.volume, rel=1e-5)


def test_batch_from_structures_errors(tiny_flow):
    li = Structure(Lattice.cubic(3.0), ["Li"], [[0, 0, 0]])
    with pytest.raises(ValueError, match=r"structure x: elements \['Li'\] are not in the generator's vocabulary"):
        tiny_flow.batch_from_structures([li], ids=["x"])
    big = Structure(Lattice.cubic(20.0), ["C"] * (MAX_ATOMS + 1), np.random.default_rng(0).uniform(0, 1, (MAX_ATOMS + 1, 3)))
    with pytest.raises(ValueError, match=f"at most {MAX_ATOMS}"):
        tiny_flow.batch_from_structures([big])
    with pytest.raises(ValueError, match="unknown condition 'mp_20'"):
        tiny_flow.batch_from_structures([Structure(Lattice.cubic(3.0), ["C"], [[0, 0, 0]])], "mp_20")
    with pytest.raises(ValueError, match="non-empty element vocabulary"):
        CrystalFlow([])


def test_config_round_trip(tiny_flow):
    clone = CrystalFlow.from_config(tiny_flow.get_config())
    assert clone.get_config() == tiny_flow.get_config()
    assert clone.num_parameters == tiny_flow.num_parameters


@pytest.mark.parametrize("extra", [{"image_rbf": 6, "image_cutoff": 3.5}, {"edge_vectors": True},
                                   {"image_rbf": 6, "edge_vectors": True}], ids=["images", "vectors", "both"])
def test_warm_start_with_image_features_or_edge_vectors(tiny_flow, dataset, extra):
    """A flow with image-summed features or free edge displacements started from one
    without computes the same loss (new weights at zero) and then trains every parameter,
    the new ones included."""
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    wide = tiny_flow.extended(**extra)
    assert wide is not tiny_flow and wide.extended(**extra) is wide
    assert wide.get_config() == CrystalFlow.from_config({**tiny_flow.get_config(), **extra}).get_config()
    assert next(wide.parameters()).dtype == next(tiny_flow.parameters()).dtype
    assert wide.num_parameters > tiny_flow.num_parameters
    tiny_flow.eval(), wide.eval()
    torch.manual_seed(3)
    before = tiny_flow.loss(batch)
    torch.manual_seed(3)
    after = wide.loss(batch)
    for k in before:
        torch.testing.assert_close(after[k], before[k])
    after["loss"].backward()
    new_rows = wide.net.edge_head[2].weight.grad[wide.disp_freqs + 1 :]
    assert new_rows.abs().sum() > 0  # the image directions receive gradient
    with pytest.raises(ValueError, match="has shape"):
        tiny_flow.load_compatible_state(wide)  # not the other way round


def test_ot_assignment_pairs_atoms_within_each_crystal():
    """A permutation inside each crystal, optimal: no pair swap lowers the cost, and a
    data crystal that is the prior shifted slightly is paired atom by atom with it."""
    from itertools import permutations

    rng = np.random.default_rng(0)
    num_atoms = torch.tensor([1, 4, 3])
    lattice = torch.tensor(np.stack([np.eye(3) * 3 + rng.normal(0, 0.3, (3, 3)) for _ in range(3)]))
    f0, f1 = torch.tensor(rng.uniform(0, 1, (8, 3))), torch.tensor(rng.uniform(0, 1, (8, 3)))
    order = ot_assignment(f0, f1, lattice, num_atoms)
    crystal = torch.repeat_interleave(torch.arange(3), num_atoms)
    assert sorted(order.tolist()) == list(range(8)) and torch.equal(crystal[order], crystal)

    def cost(idx, k):
        d = f1[idx] - f0[crystal == k]
        d = d - torch.round(d)
        return float(((d @ lattice[k]) ** 2).sum())

    for k, (lo, n) in enumerate([(0, 1), (1, 4), (5, 3)]):
        best = min(cost(torch.tensor(p) + lo, k) for p in permutations(range(n)))
        assert cost(order[lo : lo + n], k) == pytest.approx(best)
    shuffled = torch.tensor([0, 3, 1, 4, 2, 7, 5, 6])
    near = torch.remainder(f0 + 0.01, 1.0)
    assert torch.equal(ot_assignment(f0, near[shuffled], lattice, num_atoms)[shuffled], torch.arange(8))



def test_ot_alignment_finds_the_translation_and_never_lengthens_the_paths():
    """A data crystal that is the prior re-ordered and translated rigidly is paired atom
    by atom with a shift undoing the translation; on random crystals the centred paths
    are never longer than with the pairing alone."""
    rng = np.random.default_rng(1)
    num_atoms = torch.tensor([1, 5, 4])
    lattice = torch.tensor(np.stack([np.eye(3) * 4 + rng.normal(0, 0.3, (3, 3)) for _ in range(3)]))
    crystal = torch.repeat_interleave(torch.arange(3), num_atoms)
    f0 = torch.tensor(rng.uniform(0, 1, (10, 3)))
    tau = torch.tensor(rng.uniform(0, 1, (3, 3)))
    shuffled = torch.tensor([0, 3, 1, 5, 4, 2, 8, 6, 9, 7])
    data = torch.remainder(f0 + tau[crystal], 1.0)[shuffled]
    order, shift = ot_alignment(f0, data, lattice, num_atoms, starts=4)
    assert sorted(order.tolist()) == list(range(10)) and torch.equal(crystal[order], crystal)
    moved = torch.remainder(data[order] + shift[crystal], 1.0)
    gap = moved - f0
    gap = gap - torch.round(gap)
    assert torch.allclose(gap[1:], torch.zeros_like(gap[1:]), atol=1e-6)  # a single atom needs no shift

    def centred_length(paths, k):
        d = paths[crystal == k] - f0[crystal == k]
        d = d - torch.round(d)
        d = d - d.mean(0)
        return float(((d @ lattice[k]) ** 2).sum())

    for seed in range(5):
        f1 = torch.tensor(np.random.default_rng(seed).uniform(0, 1, (10, 3)))
        pairs = f1[ot_assignment(f0, f1, lattice, num_atoms)]
        order, shift = ot_alignment(f0, f1, lattice, num_atoms)
        aligned = torch.remainder(f1[order] + shift[crystal], 1.0)
        for k in range(3):
            assert centred_length(aligned, k) <= centred_length(pairs, k) + 1e-9


# ------------------------------------------------------------------ statistics
def test_fit_statistics(tiny_flow, dataset):
    structures, conditions = dataset
    batch = tiny_flow.batch_from_structures(structures, conditions)
    tiny_flow.fit_statistics(batch)
    probs = tiny_flow.num_atoms_probs
    assert probs.shape == (2, MAX_ATOMS + 1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, dtype=probs.dtype))
    perov, carbon = tiny_flow.condition_index(PEROV), tiny_flow.condition_index(CARBON)
    assert probs[perov, 5] == 1.0
    n_carbon = [len(s) for s, c in zip(structures, conditions) if c == CARBON]
    for n in (2, 4, 8):
        assert probs[carbon, n].item() == pytest.approx(n_carbon.count(n) / len(n_carbon))
    assert set(torch.nonzero(probs[carbon]).flatten().tolist()) == {2, 4, 8}

    sp = tiny_flow.species_probs
    torch.testing.assert_close(sp.sum(-1), torch.ones(2, dtype=sp.dtype))
    el = tiny_flow.elements.index
    assert sp[carbon, el("C")] == 1.0
    assert sp[perov, el("C")] == 0.0 and sp[perov, el("O")].item() == pytest.approx(0.6)
    assert sp[perov, el("Ti")].item() == pytest.approx(0.1)  # Ti on half of the B sites

    # lattice prior: volume per atom (geometric mean) and shape with zero trace
    for cond, idx in ((PEROV, perov), (CARBON, carbon)):
        vpa = [s.volume / len(s) for s, c in zip(structures, conditions) if c == cond]
        assert tiny_flow.log_volume_per_atom[idx].item() == pytest.approx(np.mean(np.log(vpa)), abs=1e-5)
        assert torch.trace(tiny_flow.lattice_mean[idx]).item() == pytest.approx(0.0, abs=1e-5)
        assert 0.02 - 1e-6 <= tiny_flow.lattice_std[idx].item() < 0.5  # clamped at 0.02 (float32)
    # the prior mean lattice of a 5-atom perovskite: a ~4 Å near-cubic cell
    mean, std = tiny_flow.lattice_prior(torch.tensor([perov]), torch.tensor([5]))
    cell = log_to_lattice(mean)[0]
    assert torch.det(cell).item() == pytest.approx(5 * np.exp(np.mean(np.log(
        [s.volume / 5 for s, c in zip(structures, conditions) if c == PEROV]))), rel=1e-4)
    lengths = torch.linalg.norm(cell, dim=-1)
    assert torch.allclose(lengths, torch.full((3,), 4.05, dtype=lengths.dtype), atol=0.15)


def test_fit_statistics_of_the_trained_model(flow):
    torch.testing.assert_close(flow.num_atoms_probs.sum(-1), torch.ones(len(flow.conditions)))
    torch.testing.assert_close(flow.species_probs.sum(-1), torch.ones(len(flow.conditions)))
    assert flow.conditions == [CARBON, PEROV] and flow.elements == ["Ba", "C", "Ca", "O", "Sr", "Ti", "Zr"]


# ------------------------------------------------------------------ loss
def test_loss_is_finite_with_gradients(tiny_flow, dataset):
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    tiny_flow.train()
    torch.manual_seed(0)
    terms = tiny_flow.loss(batch, repulsion_weight=1.0)
    assert {"coords", "lattice", "species", "kl", "repulsion", "loss"} <= set(terms)
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value >= 0, name
    total = 10 * terms["coords"] + terms["lattice"] + terms["species"] + 1e-3 * terms["kl"] + terms["repulsion"]
    torch.testing.assert_close(terms["loss"], total)
    terms["loss"].backward()
    assert not any(".species_head." in n for n, _ in tiny_flow.encoder.named_parameters())  # features only
    for name, p in tiny_flow.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_loss_modes(tiny_flow, dataset):
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    torch.manual_seed(1)
    # every crystal composition-given: no species loss; no latent: no KL, encoder unused
    terms = tiny_flow.loss(batch, csp_fraction=1.0, latent_dropout=1.0)
    assert terms["species"] == 0 and terms["kl"] == 0 and "repulsion" not in terms
    terms["loss"].backward()
    assert all(p.grad is None for name, p in tiny_flow.named_parameters() if name.startswith("encoder."))
    assert tiny_flow.net.species_head[-1].weight.grad is None or tiny_flow.net.species_head[-1].weight.grad.abs().sum() == 0
    # prior and data atoms paired by least distance (species follow their atoms)
    paired = tiny_flow.loss(batch, csp_fraction=0.0, repulsion_weight=1.0, ot_coupling=True)
    assert all(torch.isfinite(v) for v in paired.values())
    aligned = tiny_flow.loss(batch, csp_fraction=0.0, repulsion_weight=1.0, ot_translation=True)
    assert all(torch.isfinite(v) for v in aligned.values())


def test_energy_term_in_training_acts_on_late_crystals_of_its_conditions(tiny_flow, dataset):
    """``loss(energy_term=...)``: the term sees only crystals of the conditions it is active
    for, at times from ``energy_min_time`` on; its mean enters the loss with its weight and
    its gradient reaches the network."""
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    tiny_flow.train()
    seen = []

    class Term:
        def active(self, conditions):
            return conditions == {CARBON}

        def __call__(self, probs, frac, lattice, ctx):
            seen.append((list(ctx.conditions), ctx.num_atoms.tolist(), frac.shape[0], lattice.shape[0]))
            batch_of = torch.repeat_interleave(torch.arange(len(ctx.num_atoms)), ctx.num_atoms)
            return torch.zeros(len(ctx.num_atoms), dtype=frac.dtype).index_add(0, batch_of, (frac**2).sum(-1))

    torch.manual_seed(0)
    terms = tiny_flow.loss(batch, energy_term=Term(), energy_weight=0.5, energy_min_time=0.0)
    assert len(seen) == 1
    conditions, counts, n_atoms, n_cells = seen[0]
    assert conditions and set(conditions) == {CARBON}
    assert sum(counts) == n_atoms and len(counts) == n_cells == (batch.condition == tiny_flow.condition_index(CARBON)).sum()
    total = 10 * terms["coords"] + terms["lattice"] + terms["species"] + 1e-3 * terms["kl"] + 0.5 * terms["energy"]
    torch.testing.assert_close(terms["loss"], total)
    tiny_flow.zero_grad()
    terms["energy"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_flow.net.parameters())
    # no crystal late enough: the term is not called and adds nothing
    seen.clear()
    late = tiny_flow.loss(batch, energy_term=Term(), energy_weight=0.5, energy_min_time=1.5)
    assert not seen and late["energy"] == 0


def test_energy_term_in_training_with_an_energy_model(tiny_flow, dataset, energy_model_dir):
    """The training energy term built by ``train_generator(energy_loss=...)``: a real
    energy model, frozen, acting on the named conditions only; bad settings are refused."""
    from crystalgnn_plugins.generation.training import _energy_kwargs

    kwargs = _energy_kwargs({"model": str(energy_model_dir), "weight": 0.2, "conditions": [CARBON]},
                            tiny_flow.conditions)
    assert kwargs["energy_weight"] == 0.2 and kwargs["energy_min_time"] == 0.5
    term = kwargs["energy_term"]
    assert term.active({CARBON}) and not term.active({PEROV})
    assert not any(p.requires_grad for p in term.model.parameters())
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    torch.manual_seed(2)
    terms = tiny_flow.loss(batch, **{**kwargs, "energy_min_time": 0.0})
    assert torch.isfinite(terms["energy"]) and terms["energy"] != 0
    terms["loss"].backward()
    assert all(p.grad is None for p in term.model.parameters())
    with pytest.raises(ValueError, match="not conditions"):
        _energy_kwargs({"model": str(energy_model_dir), "conditions": ["mp_20"]}, tiny_flow.conditions)
    with pytest.raises(ValueError, match="energy_loss takes"):
        _energy_kwargs({"model": str(energy_model_dir), "wieght": 1.0}, tiny_flow.conditions)


def test_train_generator_with_an_energy_term(dataset, energy_model_dir, tmp_path):
    """One epoch with ``energy_loss``: the energy is logged, the settings record it (a
    resume with other energy settings is refused), the model is saved."""
    import csv
    import json

    from crystalgnn_plugins.generation import train_generator

    structures, conditions = dataset
    picks = list(range(0, 60, 4))
    kwargs = dict(flow_kwargs={"hidden": 16, "num_layers": 1, "encoder_layers": 1, "latent_dim": 2, "cond_features": 4},
                  epochs=1, batch_size=8, lr=1e-3, seed=0, out_dir=tmp_path)
    energy = {"model": str(energy_model_dir), "weight": 0.1, "conditions": [CARBON], "min_time": 0.0}
    with torch.random.fork_rng():
        train_generator([structures[i] for i in picks], [conditions[i] for i in picks],
                        [structures[i] for i in picks[:4]], [conditions[i] for i in picks[:4]],
                        energy_loss=energy, **kwargs)
    stamp = json.loads((tmp_path / "checkpoints" / "settings.json").read_text())
    assert stamp["settings"]["energy_loss"] == energy
    with open(next((tmp_path / "logs").rglob("metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert any(r.get("train_energy") not in (None, "") for r in rows)
    assert (tmp_path / "model" / "model.pt").exists()
    with pytest.raises(ValueError, match="settings differ"), torch.random.fork_rng():
        train_generator([structures[i] for i in picks], [conditions[i] for i in picks],
                        [structures[i] for i in picks[:4]], [conditions[i] for i in picks[:4]],
                        energy_loss={**energy, "weight": 0.2}, resume=True, **kwargs)


def test_loss_is_invariant_to_pose_and_images(tiny_flow, dataset):
    """The same crystals rotated, translated and with other periodic images give the
    same loss for the same noise (the flow works on S = ½ log(L Lᵀ) and on the torus)."""
    from scipy.spatial.transform import Rotation

    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    rot = torch.tensor(Rotation.random(random_state=4).as_matrix())
    rng = np.random.default_rng(4)
    images = torch.tensor(rng.integers(-2, 3, batch.frac.shape), dtype=torch.float64)
    moved = CrystalBatch(batch.species, batch.frac + images, batch.lattice @ rot.T, batch.num_atoms, batch.condition)
    torch.manual_seed(5)
    ref = tiny_flow.loss(batch, repulsion_weight=1.0)
    torch.manual_seed(5)
    other = tiny_flow.loss(moved, repulsion_weight=1.0)
    for k in ref:
        torch.testing.assert_close(other[k], ref[k], atol=1e-9, rtol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


# ------------------------------------------------------------------ latent
def test_encoder_is_invariant(tiny_flow, dataset):
    from scipy.spatial.transform import Rotation

    structures, conditions = dataset
    picks = [0, 7, 41, 45]
    batch = tiny_flow.batch_from_structures([structures[i] for i in picks], [conditions[i] for i in picks]).to(dtype=torch.float64)
    tiny_flow.eval()
    with torch.no_grad():
        mu, logvar = tiny_flow.encode(batch)
        assert mu.shape == (4, tiny_flow.latent_dim) and logvar.shape == (4, tiny_flow.latent_dim)
        rot = torch.tensor(Rotation.random(random_state=1).as_matrix())
        rng = np.random.default_rng(0)
        moved = CrystalBatch(
            batch.species, torch.remainder(batch.frac + torch.tensor(rng.uniform(0, 1, 3)), 1.0) + torch.tensor(rng.integers(-2, 3, batch.frac.shape)),
            batch.lattice @ rot.T, batch.num_atoms, batch.condition,
        )
        torch.testing.assert_close(tiny_flow.encode(moved)[0], mu, atol=1e-10, rtol=1e-9)
        # permute the atoms of the first crystal
        perm = torch.cat([torch.tensor([4, 2, 0, 3, 1]), torch.arange(5, len(batch.species))])
        permuted = CrystalBatch(batch.species[perm], batch.frac[perm], batch.lattice, batch.num_atoms, batch.condition)
        torch.testing.assert_close(tiny_flow.encode(permuted)[0], mu, atol=1e-10, rtol=1e-9)
        # the latent distinguishes crystals
        assert (mu[0] - mu[2]).abs().max() > 1e-4


def test_velocity_depends_only_on_the_log_lattice(tiny_flow):
    """The flow runs in the rotation-free representation: a lattice and any rotation of
    it give the same ``S`` and therefore the same velocities."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    lat = torch.tensor(4.0 * np.eye(3) + rng.normal(0, 0.3, (3, 3))).unsqueeze(0)
    rot = torch.tensor(Rotation.random(random_state=2).as_matrix())
    s, s_rot = lattice_to_log(lat), lattice_to_log(lat @ rot.T)
    args = (torch.softmax(torch.tensor(rng.normal(size=(3, 7))), -1), torch.tensor(rng.uniform(size=(3, 3))))
    rest = (torch.tensor([3]), torch.tensor([0.4], dtype=torch.float64), torch.tensor([0]))
    with torch.no_grad():
        a = tiny_flow.velocity(*args, s, *rest)
        b = tiny_flow.velocity(*args, s_rot, *rest)
    for k in ("frac_velocity", "lattice_action", "species_logits"):
        torch.testing.assert_close(a[k], b[k], atol=1e-10, rtol=1e-9)


# ------------------------------------------------------------------ save / load
def test_training_report(trained_generator):
    flow, model_dir, report = trained_generator
    assert report["model_type"] == "crystal_flow" and report["epochs_run"] == 5
    assert np.isfinite(report["best_val_loss"]) and report["num_parameters"] == flow.num_parameters
    meta = read_model_metadata(model_dir)
    assert meta["model_type"] == "crystal_flow" and meta["config"] == flow.get_config()
    assert (model_dir.parent / "report.json").is_file()


def test_save_load_round_trip(flow, model_dir, tmp_path, dataset):
    loaded = load_model(model_dir)  # looked up in the models registry as "crystal_flow"
    assert isinstance(loaded, CrystalFlow) and not loaded.training
    state, state2 = flow.state_dict(), loaded.state_dict()
    assert state.keys() == state2.keys()
    for k in state:
        assert torch.equal(state[k], state2[k]), k
    # again through save_model/resolve_generator from a fresh directory
    again = resolve_generator(save_model(loaded, tmp_path / "copy"))
    structures, conditions = dataset
    batch = flow.batch_from_structures(structures[::10], conditions[::10])
    with torch.no_grad():
        mu = flow.encode(batch)[0]
        for other in (loaded, again):
            assert torch.equal(other.encode(batch)[0], mu)
    samples = []
    for model in (flow, loaded, again):
        samples.append(sample_flow(model, torch.tensor([5, 4]), torch.tensor([1, 0]), steps=5,
                                   generator=torch.Generator().manual_seed(3)))
    for other in samples[1:]:
        assert torch.equal(other.species, samples[0].species)
        assert torch.equal(other.frac, samples[0].frac) and torch.equal(other.lattice, samples[0].lattice)


def test_resolve_generator_errors(tmp_path, energy_model_dir, flow):
    assert resolve_generator(flow) is flow
    with pytest.raises(ModelFileError, match="missing"):  # names what was asked for
        resolve_generator(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="holds a EnergyModel, not a crystal generator"):
        resolve_generator(energy_model_dir)


def wrapped_normal_copy(flow):
    """``flow`` with wrapped-normal coordinates and the same weights."""
    wn = flow.with_coord_path("wrapped_normal")
    assert wn is not flow and wn.with_coord_path("wrapped_normal") is wn
    assert next(wn.parameters()).dtype == next(flow.parameters()).dtype
    return wn


def test_wrapped_normal_path(tiny_flow, dataset):
    wn = wrapped_normal_copy(tiny_flow)
    assert wn.get_config()["coord_path"] == "wrapped_normal"
    assert CrystalFlow.from_config(wn.get_config()).coord_path == "wrapped_normal"
    sig = wn.coord_sigma(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(sig, torch.tensor([0.5, 0.05, 0.005], dtype=torch.float64))  # geometric
    batch = small_batch(wn, dataset)
    wn.fit_statistics(batch)
    torch.manual_seed(0)
    terms = wn.loss(batch, repulsion_weight=1.0)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    # the target is at most unit noise: an untrained network's coordinate loss is of order 1-3 per atom
    assert 0.5 < terms["coords"] < 20
    # coordinate weight 1 by default on this path (10 on the geodesic one)
    total = terms["coords"] + terms["lattice"] + terms["species"] + 1e-3 * terms["kl"] + terms["repulsion"]
    torch.testing.assert_close(terms["loss"], total)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in wn.parameters() if p.grad is not None)
    assert wn.net.edge_head[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="wrapped-normal path has no prior atoms"):
        wn.loss(batch, ot_coupling=True)
    with pytest.raises(ValueError, match="coord_path must be one of"):
        CrystalFlow(["C"], coord_path="gaussian")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        CrystalFlow(["C"], coord_path="wrapped_normal", sigma_min=0.5, sigma_max=0.1)


def test_wrapped_normal_target_is_what_the_loss_regresses(tiny_flow, dataset, monkeypatch):
    """A network that returns the image-averaged noise of the ``f_t`` it is given has zero
    coordinate loss: the target is ``wrapped_noise_mean(f_t - f_1, σ(t))`` (centred)."""
    wn = wrapped_normal_copy(tiny_flow)
    batch = small_batch(wn, dataset)
    wn.fit_statistics(batch)
    real_net = wn.net.forward

    def net(species, frac, lattice, num_atoms, t, cond=None):
        out = dict(real_net(species, frac, lattice, num_atoms, t, cond))
        sigma = wn.coord_sigma(t)[batch.batch].unsqueeze(-1)
        out["frac_velocity"] = wrapped_noise_mean(frac - batch.frac, sigma) + 0.3  # a shift is centred away
        return out

    monkeypatch.setattr(wn.net, "forward", net)
    terms = wn.loss(batch, csp_fraction=1.0, latent_dropout=1.0)
    assert float(terms["coords"]) < 1e-10


def test_wrapped_noise_mean_is_the_conditional_mean_of_the_noise():
    torch.manual_seed(0)
    eps = torch.randn(5, 3, dtype=torch.float64)
    # small sigma: the noise itself, whatever image the difference is given in
    torch.testing.assert_close(wrapped_noise_mean(0.01 * eps + 2.0, 0.01), eps)
    # large sigma: the wrapped normal is uniform, nothing is left to predict
    assert wrapped_noise_mean(torch.tensor([0.1, 0.3, 0.45]), 1.5).abs().max() < 1e-6
    # in between: E[eps | wrapped difference], estimated by binning many draws
    sigma = 0.3
    eps = torch.randn(400_000, dtype=torch.float64)
    delta = torch.remainder(sigma * eps + 0.5, 1.0) - 0.5
    target = wrapped_noise_mean(delta, sigma)
    bins = torch.bucketize(delta, torch.linspace(-0.5, 0.5, 21))
    for b in (3, 8, 12, 17):
        inside = bins == b
        assert abs(float(eps[inside].mean() - target[inside].mean())) < 0.02


def test_mid_time_fraction_moves_training_times_into_the_range(tiny_flow, dataset, monkeypatch):
    batch = small_batch(tiny_flow, dataset)
    tiny_flow.fit_statistics(batch)
    seen = []
    real_net = tiny_flow.net.forward

    def net(species, frac, lattice, num_atoms, t, cond=None):
        seen.append(t.detach().clone())
        return real_net(species, frac, lattice, num_atoms, t, cond)

    monkeypatch.setattr(tiny_flow.net, "forward", net)
    torch.manual_seed(0)
    for _ in range(10):
        tiny_flow.loss(batch, mid_time_fraction=1.0, mid_time_range=(0.3, 0.5), latent_dropout=1.0)
    times = torch.cat(seen)
    assert ((times >= 0.3) & (times < 0.5)).all()
    seen.clear()
    for _ in range(10):
        tiny_flow.loss(batch, mid_time_fraction=0.5, latent_dropout=1.0)
    times = torch.cat(seen)
    inside = ((times >= 0.25) & (times < 0.65)).double().mean()
    assert 0.55 < inside < 0.9  # half from the range, half uniform (0.4 of those inside too): 0.7
    with pytest.raises(ValueError, match="mid_time_fraction must be in"):
        tiny_flow.loss(batch, mid_time_fraction=1.5)
    with pytest.raises(ValueError, match="mid_time_range"):
        tiny_flow.loss(batch, mid_time_fraction=0.5, mid_time_range=(0.7, 0.2))
