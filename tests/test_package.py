"""Package-level promises: cheap import, no side effects, small public API."""

import subprocess
import sys

HEAVY = ("torch", "lightning", "pytorch_lightning", "matgl", "dscribe", "ase", "pymatgen", "sklearn", "dgl",
         "matminer", "smact")


def test_import_pulls_no_heavy_dependency():
    code = (
        "import sys, crystalgnn_plugins; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at package import: {out.stdout}"


def test_import_has_no_side_effects():
    code = (
        "import os; before = dict(os.environ); import crystalgnn_plugins as c; "
        "c.GNNCalculator; import torch; "
        "assert dict(os.environ) == before, 'environment changed'; "
        "assert torch.get_default_dtype() == torch.float32"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_public_names_resolve():
    import crystalgnn_plugins as c

    for name in c.__all__:
        assert getattr(c, name) is not None
