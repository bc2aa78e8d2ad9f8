"""``LatentBank``: latent codes of training crystals, and free sampling from them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from crystalgnn_plugins.generation import CrystalStructureSource, LatentBank
from crystalgnn_plugins.generation.latent_bank import LATENT_BANK_FILE


@pytest.fixture(scope="module")
def bank(flow, dataset) -> LatentBank:
    structures, conditions = dataset
    per = [
        LatentBank.from_structures(flow, [s for s, c in zip(structures, conditions) if c == name], name)
        for name in ("perov", "carbon")
    ]
    return LatentBank.concat(per)


def test_bank_holds_the_encoder_latents(bank, flow, dataset, tmp_path):
    structures, conditions = dataset
    carbon = [s for s, c in zip(structures, conditions) if c == "carbon"]
    assert len(bank) == len(structures) and bank.latent_dim == flow.latent_dim
    assert sorted(set(bank.conditions)) == ["carbon", "perov"]
    with torch.no_grad():
        mu, logvar = flow.encode(flow.batch_from_structures(carbon, "carbon"))
    rows = bank.conditions == "carbon"
    assert np.allclose(bank.mu[rows], mu.numpy(), atol=1e-5)
    assert np.allclose(bank.std[rows], (0.5 * logvar).exp().numpy(), atol=1e-5)
    assert list(bank.num_atoms[rows]) == [len(s) for s in carbon]

    path = bank.save(tmp_path)
    assert path.name == LATENT_BANK_FILE and not list(tmp_path.glob(".*"))  # atomic, no leftovers
    again = LatentBank.load(tmp_path)
    for field in ("conditions", "num_atoms", "mu", "std"):
        assert np.array_equal(getattr(again, field), getattr(bank, field)), field


def test_bad_banks_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="inconsistent shapes"):
        LatentBank(["a", "b"], [5], np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        LatentBank(["a"], [5], np.full((1, 4), np.nan), np.ones((1, 4)))
    np.savez(tmp_path / LATENT_BANK_FILE, mu=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="not a latent bank"):
        LatentBank.load(tmp_path)


def test_sample_draws_entries_of_the_condition(bank):
    rng = np.random.default_rng(0)
    counts, z = bank.sample("carbon", 50, rng, torch.Generator().manual_seed(0))
    assert z.shape == (50, bank.latent_dim) and z.dtype == torch.float64
    assert set(counts.tolist()) <= set(bank.num_atoms[bank.conditions == "carbon"].tolist())
    # every code lies within a few posterior widths of a carbon entry with that atom count
    rows = np.flatnonzero(bank.conditions == "carbon")
    for n, code in zip(counts.tolist(), z.numpy()):
        cand = rows[bank.num_atoms[rows] == n]
        dist = np.abs((code - bank.mu[cand]) / np.maximum(bank.std[cand], 1e-6)).max(axis=1)
        assert dist.min() < 6
    again = bank.sample("carbon", 50, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert torch.equal(again[0], counts) and torch.equal(again[1], z)
    size = int(bank.num_atoms[rows[0]])
    counts, _ = bank.sample("carbon", 10, rng, num_atoms=size)
    assert set(counts.tolist()) == {size}
    with pytest.raises(ValueError, match="no crystals of condition 'mp_20'"):
        bank.sample("mp_20", 1, rng)
    with pytest.raises(ValueError, match="with 97 atoms"):
        bank.sample("carbon", 1, rng, num_atoms=97)


def _spy_z(monkeypatch) -> list:
    import crystalgnn_plugins.generation.sampling as sampling

    seen = []
    original = sampling.sample_flow

    def spy(flow, num_atoms, condition, **kwargs):
        seen.append(kwargs.get("z"))
        return original(flow, num_atoms, condition, **kwargs)

    monkeypatch.setattr(sampling, "sample_flow", spy)
    return seen


def test_free_samples_draw_latent_codes_from_the_bank(model_dir, tiny_energy_model, bank, monkeypatch):
    seen = _spy_z(monkeypatch)
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent={"carbon": True},
                                 latent_bank=bank, steps=3)
    assert src.latent == {"carbon": True, "perov": False} and src.uses_latent("carbon")
    out = src.get_structures(4, condition="carbon", seed=0)
    assert seen and all(z is not None for z in seen)
    sizes = set(bank.num_atoms[bank.conditions == "carbon"].tolist())
    assert all(len(s) in sizes and s.properties["generation"]["latent"] == "bank" for s in out)
    again = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent={"carbon": True},
                                   latent_bank=bank, steps=3).get_structures(4, condition="carbon", seed=0)
    assert [s.frac_coords.tolist() for s in again] == [s.frac_coords.tolist() for s in out]

    # a given atom count picks entries with that many atoms
    size = int(bank.num_atoms[bank.conditions == "carbon"][0])
    seen.clear()
    out = src.get_structures(2, condition="carbon", num_atoms=size, seed=0)
    assert all(z is not None for z in seen) and {len(s) for s in out} == {size}
    # ... and without such entries the flow runs unconditionally
    missing = next(k for k in range(1, 40) if k not in sizes)
    seen.clear()
    out = src.get_structures(1, condition="carbon", num_atoms=missing, seed=0, valid_only=False)
    assert seen == [None] and "latent" not in out[0].properties["generation"]
    # conditions without latent sampling, and directed or restricted sampling, are unconditional
    for kwargs in ({"condition": "perov"}, {"composition": "SrTiO3"}, {"condition": "carbon", "chemsys": "C"}):
        seen.clear()
        out = src.get_structures(1, seed=0, valid_only=False, **kwargs)
        assert seen == [None], kwargs
        assert "latent" not in out[0].properties["generation"]


def test_latent_settings_and_errors(model_dir, tiny_energy_model, bank, tmp_path, monkeypatch):
    from crystalgnn_plugins.generation import source as source_module

    # the tiny generator has no bank: nothing uses it, and asking for it is an error
    assert CrystalStructureSource(model_dir, energy_model=tiny_energy_model).latent == {"carbon": False, "perov": False}
    with pytest.raises(ValueError, match="no bank"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent=True)
    with pytest.raises(ValueError, match=r"latent: \['mp_20'\] are not conditions"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent={"mp_20": True}, latent_bank=bank)
    small = LatentBank(bank.conditions, bank.num_atoms, bank.mu[:, :2], bank.std[:, :2])
    with pytest.raises(ValueError, match="dimension 2"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent_bank=small)
    # a bank saved next to the weights is found; DEFAULT_LATENT switches conditions on
    copy = tmp_path / "generator"
    shutil.copytree(model_dir, copy)
    bank.save(copy)
    monkeypatch.setattr(source_module, "DEFAULT_LATENT", {"carbon": True})
    src = CrystalStructureSource(str(copy), energy_model=tiny_energy_model)
    assert src.latent == {"carbon": True, "perov": False} and len(src.latent_bank) == len(bank)
    assert CrystalStructureSource(str(copy), energy_model=tiny_energy_model, latent=False).latent == {
        "carbon": False, "perov": False}
    # a default for a condition the bank does not hold is quietly off
    carbon_only = LatentBank(*(getattr(bank, f)[bank.conditions == "carbon"] for f in ("conditions", "num_atoms", "mu", "std")))
    monkeypatch.setattr(source_module, "DEFAULT_LATENT", {"carbon": True, "perov": True})
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent_bank=carbon_only)
    assert src.latent == {"carbon": True, "perov": False}
    with pytest.raises(ValueError, match=r"asked for \['perov'\]"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent_bank=carbon_only, latent={"perov": True})


def test_latent_noise_widens_the_codes(bank, model_dir, tiny_energy_model, monkeypatch):
    narrow = bank.sample("carbon", 400, np.random.default_rng(1), torch.Generator().manual_seed(1))[1]
    wide = bank.sample("carbon", 400, np.random.default_rng(1), torch.Generator().manual_seed(1), noise=0.5)[1]
    # the same entries and draws eps: the codes move by 0.5 eps (eps standard normal)
    assert float((wide - narrow).abs().mean()) == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.15)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        bank.sample("carbon", 1, np.random.default_rng(0), noise=-0.1)

    seen = _spy_z(monkeypatch)
    src = CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent={"carbon": True},
                                 latent_bank=bank, latent_noise={"carbon": 0.3}, steps=2)
    assert src.latent_noise == {"carbon": 0.3, "perov": 0.0}
    out = src.get_structures(2, condition="carbon", seed=0, valid_only=False)
    assert seen[0] is not None and out[0].properties["generation"]["latent_noise"] == 0.3
    with pytest.raises(ValueError, match="latent_noise must be >= 0"):
        CrystalStructureSource(model_dir, energy_model=tiny_energy_model, latent_bank=bank, latent_noise=-1)


def test_entries_repeat_only_after_all_were_drawn():
    bank = LatentBank(["a"] * 5 + ["b"], [4] * 6, np.arange(6, dtype=float)[:, None], np.zeros((6, 1)))
    _, z = bank.sample("a", 12, np.random.default_rng(0))
    first, second = sorted(z[:5, 0].tolist()), sorted(z[5:10, 0].tolist())
    assert first == second == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert set(z[10:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
