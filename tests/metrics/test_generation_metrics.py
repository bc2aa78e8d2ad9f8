"""Generation metrics (CDVAE conventions) on small hand-built crystals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from crystalgnn_plugins.metrics import generation as gm

FCC = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
FCC_SITES = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def rocksalt(a: float = 5.64, primitive: bool = True) -> Structure:
    if primitive:
        return Structure(Lattice(FCC * a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cl_sites = [[x + 0.5, y, z] for x, y, z in FCC_SITES]
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, FCC_SITES + cl_sites)


def cscl_type(a: float = 3.3) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def diamond(a: float = 5.43, element: str = "Si") -> Structure:
    return Structure(Lattice(FCC * a), [element] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])


def nacl2() -> Structure:
    return Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5] * 3, [0, 0.5, 0.5]])


def moved(s: Structure, seed: int = 0) -> Structure:
    """The same crystal rotated, translated and with the sites permuted."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    order = rng.permutation(len(s))
    lattice = Lattice(s.lattice.matrix @ rot.T)
    frac = (s.frac_coords[order] + rng.uniform(0, 1, 3)) % 1.0
    return Structure(lattice, [s.species[i] for i in order], frac)


# ----------------------------------------------------------------------------- validity


def test_structural_validity() -> None:
    assert gm.structural_validity(rocksalt())
    assert gm.structural_validity(Structure(Lattice.cubic(2.5), ["Cu"], [[0, 0, 0]]))  # one atom
    overlapping = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])  # 0.3 Å apart
    assert not gm.structural_validity(overlapping)
    assert gm.structural_validity(overlapping, cutoff=0.25)
    across_boundary = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.01, 0, 0], [0.97, 0, 0]])  # 0.2 Å by image
    assert not gm.structural_validity(across_boundary)
    assert not gm.structural_validity(Structure(Lattice.cubic(0.4), ["C"], [[0, 0, 0]]))  # 0.064 Å³
    assert not gm.structural_validity(None)


@pytest.mark.parametrize(
    ("formula", "valid"),
    [("NaCl", True), ("NaCl2", False), ("C", True), ("Cu3Au", True), ("SrTiO3", True), ("Na2Cl2", True)],
)
def test_compositional_validity(formula: str, valid: bool) -> None:
    pytest.importorskip("smact")
    assert gm.compositional_validity(Composition(formula)) is valid
    assert gm.compositional_validity(formula) is valid


def test_compositional_validity_of_structure() -> None:
    pytest.importorskip("smact")
    assert gm.compositional_validity(rocksalt(primitive=False))
    assert not gm.compositional_validity(nacl2())


def test_missing_extra_names_it() -> None:
    with pytest.raises(ImportError, match=r"crystalgnn-plugins\[generation\]"):
        gm._require("surely_not_an_installed_module")


def test_package_import_stays_light() -> None:
    code = (
        "import sys, crystalgnn_plugins, crystalgnn_plugins.metrics.generation; "
        "assert 'matminer' not in sys.modules and 'smact' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- coverage


#: the hand-made composition fingerprints below are 4-dimensional: standardise them on the reference
SCALER = "reference"


def _fps(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated fingerprints: structure rows 7 apart, composition rows on a line."""
    return np.eye(n) * 5.0, np.arange(n)[:, None] * np.full((1, 4), 50.0)


def test_coverage_identical_sets() -> None:
    ref = _fps()
    out = gm.coverage(ref, ref, struc_cutoff=0.2, comp_cutoff=4.0, comp_scaler=SCALER)
    assert out["cov_recall"] == out["cov_precision"] == 1.0
    assert out["cov_recall_joint"] == out["cov_precision_joint"] == 1.0
    assert out["amsd_recall"] == pytest.approx(0.0) and out["amcd_precision"] == pytest.approx(0.0)


def test_coverage_invalid_rows_lower_precision() -> None:
    ref = _fps()
    gen = tuple(a.copy() for a in ref)
    gen[0][:2] = np.nan  # two generated crystals without fingerprints (invalid)
    out = gm.coverage(gen, ref, 0.2, 4.0, comp_scaler=SCALER)
    assert out["num_fingerprinted"] == 4
    assert out["cov_precision"] == pytest.approx(4 / 6)
    assert out["cov_recall"] == pytest.approx(4 / 6)  # their reference partners are not covered
    gen[1][2, 0] = np.nan  # a gap in the Magpie features is not a missing fingerprint
    assert gm.coverage(gen, ref, 0.2, 4.0, comp_scaler=SCALER)["num_fingerprinted"] == 4
    only_valid = gm.coverage(tuple(a[2:] for a in gen), ref, 0.2, 4.0, num_generated=6, comp_scaler=SCALER)
    assert only_valid["cov_precision"] == pytest.approx(4 / 6)


def test_fingerprint_distances_per_crystal() -> None:
    """The distance matrices behind COV: NaN for crystals without fingerprints, and the
    per-reference minima decide recall as in ``coverage``."""
    ref = _fps()
    gen = tuple(a.copy() for a in ref)
    gen[0][:2] = np.nan
    gen[0][2, 0] += 0.5  # generated crystal 2 moves away from reference 2
    d_struc, d_comp = gm.fingerprint_distances(gen, ref, comp_scaler=SCALER)
    assert d_struc.shape == d_comp.shape == (6, 6)
    assert np.isnan(d_struc[:2]).all() and np.isnan(d_comp[:2]).all()
    assert d_struc[2, 2] == pytest.approx(0.5) and d_comp[2, 2] == pytest.approx(0.0)
    recalled = (np.nanmin(d_struc, axis=0) <= 0.2) & (np.nanmin(d_comp, axis=0) <= 4.0)
    assert recalled.mean() == pytest.approx(gm.coverage(gen, ref, 0.2, 4.0, comp_scaler=SCALER)["cov_recall"])


def test_coverage_cutoffs() -> None:
    ref = _fps()
    gen = tuple(a.copy() for a in ref)
    gen[0][0, 0] += 0.15  # within the structure cutoff
    gen[0][1, 1] += 0.25  # beyond it
    across = np.array([1.0, -1.0, 1.0, -1.0]) / 2 * ref[1].std(axis=0)  # one std, off the line
    gen[1][2] += 3.0 * across  # 3 standardised units: within the composition cutoff 4
    gen[1][3] += 5.0 * across  # beyond it
    out = gm.coverage(gen, ref, 0.2, 4.0, comp_scaler=SCALER)
    assert out["cov_precision"] == out["cov_precision_joint"] == pytest.approx(4 / 6)
    assert out["cov_recall_joint"] == pytest.approx(4 / 6)
    # CDVAE: reference 3 has its structure in generated 3 and a composition within 4 in generated 2
    assert out["cov_recall"] == pytest.approx(5 / 6)
    loose = gm.coverage(gen, ref, 0.3, 6.0, comp_scaler=SCALER)
    assert loose["cov_recall"] == loose["cov_precision"] == 1.0


def test_coverage_recall_follows_cdvae_not_joint() -> None:
    """CDVAE takes the nearest structure and the nearest composition separately."""
    ref = _fps(2)
    far_struc, far_comp = np.full(2, 100.0), np.full(4, 1e4)
    gen = (np.stack([ref[0][0], far_struc]), np.stack([far_comp, ref[1][0]]))
    out = gm.coverage(gen, ref, 0.2, 4.0, comp_scaler=SCALER)
    assert out["cov_recall"] == 0.5
    assert out["cov_recall_joint"] == 0.0
    assert out["cov_precision"] == out["cov_precision_joint"] == 0.0


# ----------------------------------------------------------------------------- EMDs


def test_emds() -> None:
    crystals = [rocksalt(), diamond(), cscl_type()]
    assert gm.density_emd(crystals, crystals) == 0.0
    assert gm.num_elements_emd(crystals, crystals) == 0.0
    assert gm.num_elements_emd([diamond()], [rocksalt()]) == pytest.approx(1.0)
    denser = [rocksalt(5.0)]
    assert gm.density_emd(denser, [rocksalt()]) == pytest.approx(denser[0].density - rocksalt().density)


def test_emd_spread_over_subsets_and_all_valid() -> None:
    samples = [rocksalt(a) for a in np.linspace(5.0, 6.4, 30)] + [diamond()] * 10
    reference = [rocksalt(5.64), diamond()]
    out = gm._emd_spread(samples, reference, emd_samples=10, seed=0, draws=20)
    assert out["density_emd_all_valid"] == pytest.approx(gm.density_emd(samples, reference))
    assert out["num_elements_emd_all_valid"] == pytest.approx(gm.num_elements_emd(samples, reference))
    assert out["density_emd_subset_sd"] > 0 and out["emd_subset_draws"] == 20
    assert out == gm._emd_spread(samples, reference, emd_samples=10, seed=0, draws=20)  # seeded
    few = gm._emd_spread(samples[:5], reference, emd_samples=10, seed=0)
    assert "density_emd_subset_mean" not in few and "density_emd_all_valid" in few  # no subsets of fewer
    assert gm._emd_spread([], reference, 10, 0) == {}


# ----------------------------------------------------------------------------- uniqueness / novelty


def test_uniqueness() -> None:
    nacl = rocksalt()
    samples = [nacl, moved(nacl), rocksalt(primitive=False), cscl_type(), diamond()]
    assert gm.uniqueness(samples) == pytest.approx(3 / 5)
    assert gm.uniqueness([nacl, cscl_type(), diamond()]) == 1.0
    assert gm.uniqueness([nacl] * 4, max_samples=2) == 0.5


def test_novelty() -> None:
    training = [rocksalt(primitive=False), diamond()]
    strained = rocksalt(5.64 * 1.03 ** (1 / 3))  # +3 % volume: not novel
    samples = [strained, moved(diamond(), seed=3), cscl_type(), diamond(5.43, "Ge")]
    assert gm.novelty(samples, training) == pytest.approx(2 / 4)
    assert gm.novelty(samples, training, max_samples=2, seed=1) in (0.0, 0.5, 1.0)


def test_uniqueness_and_novelty_in_processes_agree() -> None:
    """``n_jobs=2`` splits the matching over spawned processes and counts the same."""
    nacl, dia = rocksalt(), diamond()
    samples = [nacl, moved(nacl), rocksalt(primitive=False), cscl_type(), dia, moved(dia, seed=2),
               diamond(5.43, "Ge"), rocksalt(5.64 * 1.03 ** (1 / 3))]
    training = [rocksalt(primitive=False), diamond()]
    assert gm.uniqueness(samples, n_jobs=2) == gm.uniqueness(samples) == pytest.approx(4 / 8)
    assert gm.novelty(samples, training, n_jobs=2) == gm.novelty(samples, training) == pytest.approx(2 / 8)


def test_buckets_agree_with_structure_matcher() -> None:
    """Crystals in different buckets (primitive sizes) never match with the defaults."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    small, large = cscl_type(), cscl_type()
    large.make_supercell([2, 1, 1])
    large.translate_sites([0], [0.4, 0.0, 0.0], frac_coords=False)  # no longer a 2-site cell
    keys = list(gm._buckets([small, large]))
    assert len(keys) == 2
    assert not StructureMatcher().fit(small, large)


# ----------------------------------------------------------------------------- CSP


def test_csp_match() -> None:
    refs = [rocksalt(), diamond(), cscl_type()]
    exact = gm.csp_match([moved(s, seed=k) for k, s in enumerate(refs)], refs)
    assert exact["match_rate"] == 1.0 and exact["num"] == 3
    assert exact["rmse"] == pytest.approx(0.0, abs=1e-6)
    overlapping = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    partial = gm.csp_match([refs[0], None, overlapping], refs)
    assert partial["match_rate"] == pytest.approx(1 / 3) and partial["num_matched"] == 1
    assert np.isnan(gm.csp_match([None], refs[:1])["rmse"])
    with pytest.raises(ValueError):
        gm.csp_match([None], refs)


# ----------------------------------------------------------------------------- end to end


def test_evaluate_generation_end_to_end() -> None:
    pytest.importorskip("matminer")
    pytest.importorskip("smact")
    reference = [rocksalt(), cscl_type(), diamond(), diamond(5.66, "Ge")]
    overlapping = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    generated = [moved(s, seed=k) for k, s in enumerate(reference)]
    generated += [rocksalt(5.5), diamond(5.5), overlapping, nacl2(), None, cscl_type(3.4)]
    ref_fps = gm.fingerprints(reference)
    assert ref_fps[0].shape == (4, 61) and ref_fps[1].shape == (4, 132)
    out = gm.evaluate_generation(generated, reference, training=reference[:2], dataset="perov_5",
                                 emd_samples=5, reference_fps=ref_fps)
    assert out["num_samples"] == 10 and out["num_valid"] == 7
    assert out["struct_validity"] == pytest.approx(0.8)  # overlapping and None
    assert out["comp_validity"] == pytest.approx(0.8)  # NaCl2 and None
    assert out["validity"] == pytest.approx(0.7)
    assert out["num_fingerprinted"] == 7
    assert out["cov_recall"] == 1.0
    assert 0.4 <= out["cov_precision"] <= 0.7
    assert out["emd_num_samples"] == 5
    assert out["density_emd"] >= 0.0 and out["num_elements_emd"] >= 0.0
    assert out["uniqueness"] == pytest.approx(4 / 7)  # rescaled NaCl/CsCl/Si duplicate their copies
    assert out["novelty"] == pytest.approx(3 / 7)  # Si, Ge and the rescaled Si are not in training[:2]
    with pytest.raises(ValueError, match="unknown dataset"):
        gm.evaluate_generation(generated, reference, dataset="qm9", reference_fps=ref_fps)


def test_fingerprints_nan_rows() -> None:
    pytest.importorskip("matminer")
    struct_fps, comp_fps = gm.fingerprints([None, cscl_type()])
    assert np.isnan(struct_fps[0]).all() and np.isnan(comp_fps[0]).all()
    assert np.isfinite(struct_fps[1]).all() and np.isfinite(comp_fps[1]).all()


def test_broad_comp_scaler_is_shipped_and_used_by_default() -> None:
    """The default composition scaler: Magpie means/stds of a broad composition set."""
    mean, std = gm.broad_comp_scaler()
    assert mean.shape == std.shape == (132,) and np.isfinite(mean).all() and (std > 0).all()
    ref = (np.zeros((2, 3)), np.stack([mean, mean + 2 * std]))  # two compositions 2*sqrt(132) apart
    gen = (np.zeros((1, 3)), (mean + 0.1 * std)[None])
    broad = gm.coverage(gen, ref, 0.2, 4.0)
    assert broad["cov_precision"] == 1.0 and broad["cov_recall"] == 0.5
    with pytest.raises(ValueError, match="comp_scaler 'nope'"):
        gm.coverage(gen, ref, 0.2, 4.0, comp_scaler="nope")
