import json

import pytest
import torch
from ase.build import bulk

from crystalgnn_plugins.models import (
    EnergyModel,
    ModelFileError,
    PropertyModel,
    load_model,
    save_model,
)


def _models():
    torch.manual_seed(0)
    yield EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1}, elements=["Cu"], hidden=8)
    yield PropertyModel("cgcnn", {"atom_features": 8, "num_conv": 1}, target="gap", target_units="eV", extensive=False)


@pytest.mark.parametrize("model", list(_models()), ids=["energy", "property"])
def test_round_trip(model, tmp_path):
    model.eval()
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["model_type"] == model.model_type and meta["class"].endswith(type(model).__qualname__)
    assert meta["units"] and meta["package_version"]
    loaded = load_model(tmp_path / "m")
    atoms = bulk("Cu", "fcc", a=3.6)
    out_a = model(model.graph(atoms))
    out_b = loaded(loaded.graph(atoms))
    for key in out_a:
        assert torch.allclose(out_a[key], out_b[key])
    assert loaded.elements == model.elements


def test_float64_round_trip_keeps_precision(tmp_path):
    model = next(_models()).double()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert next(loaded.parameters()).dtype == torch.float64
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_clear_errors_for_bad_files(tmp_path):
    model = next(_models())
    path = save_model(model, tmp_path / "m")
    with pytest.raises(ModelFileError, match="no saved model"):
        load_model(tmp_path / "missing")
    (path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="corrupt weights"):
        load_model(path)
    save_model(model, path)
    meta = json.loads((path / "model.json").read_text())
    meta["config"]["hidden"] = 99
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)
    meta["format_version"] = 99
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="format version"):
        load_model(path)
    (path / "model.json").write_text("{")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)
    meta["format_version"] = 1
    meta["model_type"] = "nonexistent"
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="unknown model 'nonexistent'"):
        load_model(path)


def test_weights_loaded_with_weights_only(tmp_path, monkeypatch):
    model = next(_models())
    save_model(model, tmp_path / "m")
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(tmp_path / "m")
    assert seen.get("weights_only") is True


def test_extensive_property_scales_with_supercell():
    torch.manual_seed(0)
    model = PropertyModel("cgcnn", {"atom_features": 8, "num_conv": 1}, extensive=True).eval()
    atoms = bulk("Cu", "fcc", a=3.6)
    y1 = model(model.graph(atoms))["y"]
    y8 = model(model.graph(atoms.repeat(2)))["y"]
    assert torch.allclose(y8, 8 * y1, rtol=1e-5)


def test_reference_energies_fit_by_least_squares():
    model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1})
    numbers = [[29, 29], [79], [29, 79, 79], [29]]
    energies = [2 * -3.0, -4.0, -3.0 - 8.0, -3.0]
    residual = model.fit_normalisation(numbers, energies)
    assert model.reference_energies[29].item() == pytest.approx(-3.0, abs=1e-4)
    assert model.reference_energies[79].item() == pytest.approx(-4.0, abs=1e-4)
    assert abs(residual).max() < 1e-4


def test_saved_files_get_the_permissions_of_open(tmp_path):
    """Atomic writes go through mkstemp (0o600); the saved model must still be
    readable by the group, as a file written with open() would be."""
    import os
    import stat

    from crystalgnn_plugins._atomic import atomic_write_json

    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "sub" / "report.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().strip().startswith("{") and not list(path.parent.glob(".*.tmp"))


def test_atomic_json_gzipped_and_a_failed_write_leaves_the_old_file(tmp_path):
    import gzip
    import json

    from crystalgnn_plugins._atomic import atomic_write_json

    path = atomic_write_json(tmp_path / "s.json.gz", {"b": [1, 2], "a": None}, compress=True, sort_keys=True)
    with gzip.open(path, "rt") as fh:
        assert fh.read() == '{\n  "a": null,\n  "b": [\n    1,\n    2\n  ]\n}'
    with pytest.raises(TypeError):  # not serialisable: the old file stays whole, no temporary is left
        atomic_write_json(path, {"x": object()}, compress=True)
    with gzip.open(path, "rt") as fh:
        assert json.load(fh) == {"a": None, "b": [1, 2]}
    assert not list(tmp_path.glob(".*.tmp"))
