"""The models shipped inside the package, registered through the same hook as
third-party plugins (``register_pretrained``)."""

from __future__ import annotations

from crystalgnn_plugins.hookspecs import hookimpl

#: Shipped models and what they are (a directory under ``crystalgnn_plugins/pretrained/``).
SHIPPED = {
    "default": "default interatomic potential (energy, forces, stress), distilled from CHGNet 0.3.0; "
    "see docs/default_potential.md",
    "generator": "default crystal generator (perov_5 and carbon_24 conditions); see docs/generation.md",
    "carbon-guide": "small carbon-only potential that guides the generator's carbon_24 sampling (not for "
    "relaxations); see docs/generation.md",
}


@hookimpl
def register_pretrained(register):
    from crystalgnn_plugins.models.io import CONFIG_FILE
    from crystalgnn_plugins.models.pretrained import PRETRAINED_DIR

    for name, description in SHIPPED.items():
        path = PRETRAINED_DIR / name
        if (path / CONFIG_FILE).is_file():  # a source checkout may not have the weights yet
            register(name, path, description=description)
