"""Smoke test of benchmarks/generation/evaluate_generator.py (no ../shared data).

Two tiny CDVAE-format CSVs (perovskites and carbon built with pymatgen by the
session fixtures of ``tests/conftest.py``), a tiny generator trained for one epoch
with the script's condition names (``perov_5``, ``carbon_24``), the tiny energy
model and an untrained ``heat_ref`` property model; every section runs once, a
second run must come from the caches, and a changed ``--n`` must ask for ``--fresh``.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "generation"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

EG = importlib.import_module("evaluate_generator")

RENAME = {"perov": "perov_5", "carbon": "carbon_24"}
N_PEROV, N_CARBON = 20, 10  # 80/10/10: 16/2/2 and 8/1/1


def _write_csv(path: Path, structures: list, targets: dict[str, list[float]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "material_id", "cif", *targets])
        for k, s in enumerate(structures):
            writer.writerow([k, f"{path.stem}-{k}", s.to(fmt="cif"), *(v[k] for v in targets.values())])
    return path


@pytest.fixture(scope="module")
def csvs(generator_dataset, tmp_path_factory):
    """(perov_5 CSV, carbon_24 CSV) with made-up target values."""
    structures, conditions = generator_dataset
    perov = [s for s, c in zip(structures, conditions) if c == "perov"][:N_PEROV]
    carbon = [s for s, c in zip(structures, conditions) if c == "carbon"][:N_CARBON]
    assert len(perov) == N_PEROV and len(carbon) == N_CARBON
    root = tmp_path_factory.mktemp("cdvae_csv")
    heat = [0.2 + 0.05 * k for k in range(N_PEROV)]
    return (
        _write_csv(root / "perov_5.csv", perov, {"heat_ref": heat, "heat_all": [h - 1.0 for h in heat]}),
        _write_csv(root / "carbon_24.csv", carbon, {"energy_per_atom": [-154.0 + 0.01 * k for k in range(N_CARBON)]}),
    )


@pytest.fixture(scope="module")
def named_generator(generator_dataset, tmp_path_factory):
    """A tiny generator (one epoch) whose conditions are the script's dataset names."""
    from crystalgnn_plugins.generation import train_generator

    structures, conditions = generator_dataset
    conditions = [RENAME[c] for c in conditions]
    val = list(range(0, len(structures), 6))  # a few of each kind
    out = tmp_path_factory.mktemp("generator_named")
    with torch.random.fork_rng():
        flow, _ = train_generator(
            structures, conditions, [structures[i] for i in val], [conditions[i] for i in val],
            flow_kwargs={"hidden": 32, "num_layers": 2, "encoder_layers": 1, "latent_dim": 4, "cond_features": 8},
            epochs=1, batch_size=30, lr=3e-3, seed=0, out_dir=out,
        )
    assert sorted(flow.conditions) == ["carbon_24", "perov_5"]
    return out / "model"


@pytest.fixture(scope="module")
def property_model_dir(tiny_energy_model, tmp_path_factory):
    """An untrained smooth-CGCNN ``heat_ref`` model saved as a model directory."""
    from crystalgnn_plugins.models import PropertyModel
    from crystalgnn_plugins.models.io import save_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PropertyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0},
                              elements=list(tiny_energy_model.elements), target="heat_ref", target_units="eV",
                              hidden=8, mean=0.5, std=0.3)
    return save_model(model.double().eval(), tmp_path_factory.mktemp("heat_ref") / "model")


def _run(monkeypatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["evaluate_generator.py", *argv])
    threads = torch.get_num_threads()
    try:
        EG.main()
    finally:
        torch.set_num_threads(threads)  # main() sets the process-wide thread count


def _cache_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "report.json"}


def _same(a, b) -> bool:
    """Equal JSON values, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _fraction(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_evaluate_generator_end_to_end(csvs, named_generator, energy_model_dir, property_model_dir, tmp_path,
                                       monkeypatch, capsys):
    perov_csv, carbon_csv = csvs
    out = tmp_path / "eval"
    argv = [
        "--perov", str(perov_csv), "--carbon", str(carbon_csv), "--model", str(named_generator),
        "--energy-model", str(energy_model_dir), "--property-model", str(property_model_dir),
        "--n", "6", "--relax-n", "2", "--steps", "3", "--threads", "1", "--n-jobs", "1",
        "--match-samples", "0", "--target-n", "3", "--speed-n", "4",
        "--sections", "memorisation,metrics,relax,csp,targeting,speed", "--out", str(out),
    ]
    _run(monkeypatch, argv)
    assert f"report: {out / 'report.json'}" in capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    assert report["args"]["n"] == 6 and report["args"]["steps"] == 3
    results = report["results"]
    assert set(results) == {"perov_5", "carbon_24"}
    for dataset, res in results.items():
        mem = res["memorisation"]
        assert mem["num_samples"] == {"perov_5": 16, "carbon_24": 8}[dataset]
        for key in ("plain_steps3", "physics_steps3"):
            m = res[key]
            assert m["num_samples"] == 6 and m["sampling"]["n"] == 6 and m["sampling"]["seed"] == 0
            assert (out / dataset / key / "samples.json.gz").is_file()
            assert 0 <= m["num_valid"] <= 6
        for m in (mem, res["plain_steps3"], res["physics_steps3"]):
            for name in ("struct_validity", "comp_validity", "validity"):
                assert _fraction(m[name]), (dataset, name, m[name])
            assert {"cov_recall", "cov_precision"} <= m.keys()
            assert {"density_emd", "num_elements_emd", "uniqueness"} <= m.keys()
        assert "novelty" in res["plain_steps3"] and "novelty" not in mem
        for key in ("plain_steps3", "physics_steps3"):
            relaxation = res[key]["relaxation"]
            assert set(relaxation) >= {"num_relaxed", "converged_fraction", "median_displacement_A",
                                       "median_volume_change", "errors", "seconds"}
            assert 0 <= relaxation["num_relaxed"] <= 2
            assert (out / dataset / key / "relax.json").is_file()
        for config in ("plain", "physics"):  # the speed of each configuration
            speed = res[f"speed_{config}_steps3_threads1"]
            assert speed["samples"] == 4 and 0 <= speed["valid"] <= 4 and speed["threads"] == 1
    csp = results["perov_5"]["csp_steps3"]
    assert {"match_rate", "rmse", "num", "num_matched"} <= csp.keys()
    assert csp["num"] == 2 and _fraction(csp["match_rate"])
    assert "csp_steps3" not in results["carbon_24"] and "targeting" not in results["carbon_24"]
    targeting = results["perov_5"]["targeting"]
    for name in ("unguided", "guided"):
        assert {"num_valid", "num_predicted", "fraction_below"} <= targeting[name].keys()
        assert targeting[name]["num_predicted"] <= targeting[name]["num_valid"] <= 3

    # the same arguments again: everything but the speed comes from the caches
    before = _cache_files(out)
    assert any(name.endswith("samples.json.gz") for name in before)
    assert "perov_5/csp_steps3_predictions.json.gz" in before
    _run(monkeypatch, argv)
    assert _cache_files(out) == before
    again = json.loads((out / "report.json").read_text())["results"]
    for dataset, res in results.items():
        for key, value in res.items():
            if not key.startswith("speed"):
                assert _same(again[dataset][key], value), (dataset, key)

    # other relaxation / CSP settings are computed again, not taken from the caches
    base = argv[: argv.index("--n")] + ["--n", "6", "--threads", "1", "--n-jobs", "1", "--out", str(out)]
    _run(monkeypatch, [*base, "--steps", "3", "--relax-n", "1", "--sections", "relax", "--datasets", "carbon_24",
                       "--configs", "plain"])
    relaxation = json.loads((out / "report.json").read_text())["results"]["carbon_24"]["plain_steps3"]["relaxation"]
    assert relaxation["settings"]["relax_n"] == 1 and relaxation["num_relaxed"] <= 1
    _run(monkeypatch, [*base, "--steps", "4", "--sections", "csp", "--datasets", "perov_5", "--configs", ""])
    preds, extra = EG._load_structures(out / "perov_5" / "csp_steps4_predictions.json.gz")
    assert extra["seed"] == 0 and [s.properties["generation"]["steps"] for s in preds] == [4, 4]
    assert "csp_steps4" in json.loads((out / "report.json").read_text())["results"]["perov_5"]
    fresh = [*base[: base.index("--out")], "--out", str(out.parent / "csp_only")]  # no sampling configuration ran there
    _run(monkeypatch, [*fresh, "--steps", "4", "--sections", "csp", "--datasets", "perov_5", "--configs", ""])
    assert "csp_steps4" in json.loads((out.parent / "csp_only" / "report.json").read_text())["results"]["perov_5"]
    # a coordinate speed-up is a sampler setting of its own: own samples, own report keys
    _run(monkeypatch, [*base, "--steps", "3", "--coord-speedup", "5", "--sections", "metrics,csp",
                       "--datasets", "perov_5", "--configs", "plain"])
    res = json.loads((out / "report.json").read_text())["results"]["perov_5"]
    assert res["plain_steps3_speedup5"]["num_samples"] == 6 and "csp_steps3_speedup5" in res
    assert (out / "perov_5" / "plain_steps3_speedup5" / "samples.json.gz").is_file()
    assert _same(res["plain_steps3"], results["perov_5"]["plain_steps3"])

    # a changed sampler default is not passed off as the cached samples: refused
    from crystalgnn_plugins.generation import source as source_module

    with monkeypatch.context() as m:
        m.setattr(source_module, "DEFAULT_TIME_POWERS", {"perov_5": 3.0})
        with pytest.raises(SystemExit, match="time_power"):
            _run(m, [*base, "--steps", "3", "--sections", "metrics", "--datasets", "perov_5", "--configs", "plain"])
    # so is another energy guide of the guided samples
    with pytest.raises(SystemExit, match="energy_guide"):
        _run(monkeypatch, [*base, "--steps", "3", "--guidance-model", "default", "--sections", "metrics",
                           "--datasets", "carbon_24", "--configs", "physics"])

    # another --n with the same --out: refused, pointing at --fresh
    argv[argv.index("--n") + 1] = "7"
    with pytest.raises(SystemExit, match="--fresh"):
        _run(monkeypatch, argv)


def test_fingerprint_chunks_without_any_valid_structure(generator_dataset, tmp_path, monkeypatch):
    """A chunk of only invalid samples (no fingerprint, 0 columns) joins the others."""
    s = generator_dataset[0][0]
    monkeypatch.setattr(EG, "FP_CHUNK", 2)
    struc, comp = EG._fingerprints([s, s, None, None, s], tmp_path / "fps", n_jobs=1)
    assert struc.shape[0] == comp.shape[0] == 5 and struc.shape[1] > 0 and comp.shape[1] > 0
    assert np.isnan(struc[2:4]).all() and np.isfinite(struc[[0, 1, 4]]).all()
    assert len(list((tmp_path / "fps").glob("chunk_*.npz"))) == 3


def test_cache_keys_name_the_physics_settings():
    from argparse import Namespace

    args = Namespace(steps=50, coord_speedup=None, time_power=None, energy_weight=0.3, guidance_start=0.8,
                     guidance_every=None, charge_weight=None, projection_steps=None)
    assert EG._tag(args, "physics") == "steps50_energy0.3_start0.8"
    assert EG._tag(args, "plain") == "steps50"  # no guidance: the guidance settings do not matter
    args.charge_weight = 0.0
    assert EG._tag(args, "physics") == "steps50_energy0.3_start0.8_charge0"
    sharp = Namespace(steps=50, coord_speedup=3.0, time_power=2.0, energy_weight=None, guidance_start=None,
                      guidance_every=None, charge_weight=None, projection_steps=0)
    assert EG._tag(sharp, "physics") == "steps50_speedup3_pow2_proj0"
    every = Namespace(**{**vars(sharp), "guidance_every": 4})
    assert EG._tag(every, "physics") == "steps50_speedup3_pow2_every4_proj0"
    assert EG._tag(every, "plain") == "steps50_speedup3_pow2"
    assert EG._tag(sharp, "plain") == "steps50_speedup3_pow2"


def test_latent_bank_is_built_and_keys_the_sample_cache(csvs, named_generator, energy_model_dir, tmp_path,
                                                       monkeypatch):
    """``build_latent_bank.py`` encodes the training split next to a generator; its
    free carbon_24 samples then use it (default), and the cache records that."""
    import shutil

    from crystalgnn_plugins.generation import LatentBank

    builder = importlib.import_module("build_latent_bank")
    perov_csv, carbon_csv = csvs
    model = tmp_path / "generator"
    shutil.copytree(named_generator, model)
    assert builder.main(["--model", str(model), "--perov", str(perov_csv), "--carbon", str(carbon_csv)]) == 0
    bank = LatentBank.load(model)
    assert sorted(set(bank.conditions)) == ["carbon_24", "perov_5"]
    assert (bank.conditions == "carbon_24").sum() == 8 and (bank.conditions == "perov_5").sum() == 16  # the training splits

    out = tmp_path / "eval"
    argv = ["--perov", str(perov_csv), "--carbon", str(carbon_csv), "--model", str(model),
            "--energy-model", str(energy_model_dir), "--n", "3", "--steps", "2", "--threads", "1", "--n-jobs", "1",
            "--match-samples", "0", "--sections", "metrics", "--datasets", "carbon_24", "--configs", "plain",
            "--out", str(out)]
    _run(monkeypatch, argv)
    structures, extra = EG._load_structures(out / "carbon_24" / "plain_steps2" / "samples.json.gz")
    assert extra["sampler"]["latent"] is True
    assert all(s.properties["generation"]["latent"] == "bank" for s in structures if s is not None)
    # the same generator without its bank: other samples, refused against the cache
    (model / "latent_bank.npz").unlink()
    with pytest.raises(SystemExit, match="latent"):
        _run(monkeypatch, argv)


def test_energy_and_size_diagnostics_read_the_evaluation_cache(csvs, named_generator, energy_model_dir, tmp_path, monkeypatch):
    """``coverage_by_energy.py`` splits the cached samples' COV-P by their learned energy:
    thresholds rise, so the kept fractions do; with no threshold it is the evaluation's COV-P.
    ``uniqueness_by_size.py`` splits uniqueness by atom count; ``missed_recall.py`` lists the
    test crystals COV-R misses."""
    cbe = importlib.import_module("coverage_by_energy")
    perov_csv, carbon_csv = csvs
    out = tmp_path / "eval"
    _run(monkeypatch, ["--perov", str(perov_csv), "--carbon", str(carbon_csv), "--model", str(named_generator),
                       "--energy-model", str(energy_model_dir), "--n", "6", "--steps", "3", "--threads", "1",
                       "--n-jobs", "1", "--match-samples", "0", "--sections", "metrics", "--datasets", "carbon_24",
                       "--configs", "plain", "--out", str(out)])
    metrics = json.loads((out / "report.json").read_text())["results"]["carbon_24"]["plain_steps3"]
    samples = out / "carbon_24" / "plain_steps3"
    assert cbe.main(["--csv", str(carbon_csv), "--dataset", "carbon_24", "--samples", str(samples),
                     "--model", str(energy_model_dir), "--match"]) == 0
    report = json.loads((samples / "coverage_by_energy.json").read_text())
    rows = report["rows"]
    assert rows and rows[-1]["threshold"] == "all" and rows[-1]["kept_fraction"] == 1.0
    kept = [r["kept_fraction"] for r in rows]
    assert kept == sorted(kept)
    assert report["num_samples"] == metrics["num_fingerprinted"]
    assert rows[-1]["cov_precision"] * report["num_samples"] == pytest.approx(
        metrics["cov_precision"] * metrics["num_generated"])
    assert all(_fraction(r["uniqueness"]) and _fraction(r["novelty"]) for r in rows)
    with pytest.raises(SystemExit, match="samples.json.gz"):
        cbe.main(["--csv", str(carbon_csv), "--dataset", "carbon_24", "--samples", str(tmp_path / "nowhere")])

    # uniqueness_by_size.py on the same cache: counts per atom count add up to the valid samples
    ubs = importlib.import_module("uniqueness_by_size")
    assert ubs.main(["--csv", str(carbon_csv), "--dataset", "carbon_24", "--samples", str(samples),
                     "--max-samples", "4"]) == 0
    sizes = json.loads((samples / "uniqueness_by_size.json").read_text())
    assert sizes["num_samples"] == min(4, metrics["num_valid"])
    assert sum(v["count"] for v in sizes["samples"].values()) == sizes["num_samples"]
    assert sum(v["count"] for v in sizes["training"].values()) == 8  # carbon_24 training split
    assert all(_fraction(v["uniqueness"]) for part in ("samples", "training") for v in sizes[part].values())

    # missed_recall.py on the same cache: the crystals it lists are exactly the ones COV-R misses
    mr = importlib.import_module("missed_recall")
    assert mr.main(["--csv", str(carbon_csv), "--dataset", "carbon_24", "--samples", str(samples),
                    "--csp", "2", "--model", str(named_generator)]) == 0
    missed = json.loads((samples / "missed_recall.json").read_text())
    assert missed["recall"] == pytest.approx(metrics["cov_recall"])
    assert len(missed["missed"]) == round((1 - metrics["cov_recall"]) * missed["num_reference"])
    cut = missed["cutoffs"]
    for row in missed["missed"]:
        assert row["nearest_structure_distance"] > cut["struc"] or row["nearest_composition_distance"] > cut["comp"]
        assert row["nearest_sample"]["structure_distance"] == pytest.approx(row["nearest_structure_distance"], abs=1e-4)
        assert "nearest_training" not in row  # the memorisation section did not run
        assert row["csp"]["num"] == len(row["csp"]["distances"]) == 2 and 0 <= row["csp"]["within_cutoff"] <= 2
    with pytest.raises(SystemExit, match="missing"):
        mr.main(["--csv", str(carbon_csv), "--dataset", "carbon_24", "--samples", str(tmp_path / "nowhere")])
