"""Write the composition-fingerprint scaler of the COV metrics
(``crystalgnn_plugins/metrics/data/magpie_scaler.json``).

CDVAE standardises Magpie composition fingerprints with fixed means and
standard deviations fitted on its own training data, so that the COV cutoff
(4 for perov_5 and carbon_24) is a distance in units of a *broad* inorganic
chemistry, not of the reference set. Those constants are not part of this
project; instead this script fits the same kind of scaler on a fixed, broad,
dataset-independent set of compositions over H-Bi (noble gases, Tc and Pm
left out):

- every element;
- every ordered pair A, B in the ratios AB, AB2, AB3, A2B3;
- 20,000 ternaries A B C_k (k = 1..4) drawn with a fixed seed.

Deterministic; takes a few minutes (matminer's Magpie featuriser)::

    python benchmarks/generation/make_comp_scaler.py
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

from crystalgnn_plugins._atomic import atomic_write_json

OUT = Path(__file__).resolve().parents[2] / "crystalgnn_plugins" / "metrics" / "data" / "magpie_scaler.json"
SEED, NUM_TERNARY = 0, 20000


def compositions() -> list:
    from pymatgen.core import Composition, Element

    els = [Element.from_Z(z).symbol for z in range(1, 84) if not Element.from_Z(z).is_noble_gas and z not in (43, 61)]
    comps = [Composition(e) for e in els]
    for a, b in itertools.permutations(els, 2):
        for na, nb in ((1, 1), (1, 2), (1, 3), (2, 3)):
            comps.append(Composition({a: na, b: nb}))
    rng = np.random.default_rng(SEED)
    for _ in range(NUM_TERNARY):
        a, b, c = rng.choice(els, 3, replace=False)
        comps.append(Composition({a: 1, b: 1, c: int(rng.choice([1, 2, 3, 4]))}))
    return comps


def main() -> None:
    import matminer
    from matminer.featurizers.composition import ElementProperty

    magpie = ElementProperty.from_preset("magpie")
    comps = compositions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = np.array([magpie.featurize(c) for c in comps], dtype=float)
    mean, std = np.nanmean(x, 0), np.nanstd(x, 0)
    std[~(std > 1e-12)] = 1.0
    data = {
        "description": "means and standard deviations of matminer Magpie ElementProperty features over a broad "
        "synthetic composition set; written by benchmarks/generation/make_comp_scaler.py",
        "num_compositions": len(comps),
        "matminer_version": matminer.__version__,
        "features": magpie.feature_labels(),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    atomic_write_json(OUT, data, indent=0)
    print(f"{OUT}: {len(comps)} compositions, {x.shape[1]} features")


if __name__ == "__main__":
    main()
