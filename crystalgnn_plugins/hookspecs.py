"""Hook specifications of the ``crystalgnn_plugins`` plugin system.

Every hook is a *collecting* hook: it receives a single argument ``register``
and calls it once per object it contributes to a registry::

    register(name: str, obj: object, *, description: str | None = None) -> None

``name`` must be a non-empty string of lower-case letters, digits, ``_`` and
``-`` (starting with a letter or digit) and must be unique within the registry.
Hook implementations return nothing. Do heavy imports (torch, ase, pymatgen,
optional dependencies) *inside* the hook function so that loading a plugin stays
cheap. See ``docs/plugins.md`` for the full guide.

This module imports only :mod:`pluggy` and the standard library.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

#: pluggy project name; also the entry-point group external plugins use.
PROJECT_NAME = "crystalgnn_plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """Type of the ``register`` callable passed to every hook."""

    def __call__(self, name: str, obj: object, *, description: str | None = None) -> None:
        """Add ``obj`` to the registry under ``name``."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder classes.

    An encoder is a subclass of ``crystalgnn_plugins.encoders.Encoder`` (a
    ``torch.nn.Module``) turning a crystal graph into per-atom features, with
    attributes ``cutoff`` (Å), ``max_neighbors`` (``int | None``) and
    ``out_features``, ``forward(graph, edge_vectors)`` returning an
    ``(N, out_features)`` tensor and ``get_config()`` returning JSON-able init
    keyword arguments.

    Example::

        @hookimpl
        def register_encoders(register):
            from myplugin.encoders import MyEncoder

            register("my_encoder", MyEncoder, description="Toy message passing")
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register loss classes (or factory functions).

    The registered object is called with the user's keyword options to make the
    loss, which is then called as ``loss(pred: dict, target: dict)`` and returns
    a scalar tensor.

    Example::

        @hookimpl
        def register_losses(register):
            from myplugin.losses import HuberEnergyLoss

            register("huber_energy", HuberEnergyLoss, description="Huber loss on energy")
    """


@hookspec
def register_explainers(register: Register) -> None:
    """Register explainers (attribution of predictions to atoms or edges).

    Example::

        @hookimpl
        def register_explainers(register):
            from myplugin.explain import GradientExplainer

            register("my_gradients", GradientExplainer)
    """


@hookspec
def register_generators(register: Register) -> None:
    """Register crystal generators / structure sources.

    Example::

        @hookimpl
        def register_generators(register):
            from myplugin.generate import RandomPacker

            register("random_packer", RandomPacker, description="Random packings")
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model classes (energy/property models and baselines).

    A model class provides ``from_config(config: dict)`` rebuilding an instance
    from the configuration it was saved with; register it under its
    ``model_type`` (the name saved model files refer to).

    Example::

        @hookimpl
        def register_models(register):
            from myplugin.models import MyModel

            register("my_model", MyModel, description="Energy model with a twist")
    """


@hookspec
def register_pretrained(register: Register) -> None:
    """Register named trained models (weights a plugin ships or knows where to find).

    The object is a saved-model directory (``str`` or ``Path``, as written by
    ``crystalgnn_plugins.models.save_model``) or a zero-argument callable
    returning one; ``GNNCalculator(model="name")``, ``resolve_model("name")`` and
    ``CrystalStructureSource("name")`` then load it. It must not download
    anything unless the user asked for it. The shipped ``default`` potential and
    ``generator`` register through this hook.

    Example::

        @hookimpl
        def register_pretrained(register):
            from importlib.resources import files

            register("my-potential", files("myplugin") / "weights" / "potential",
                     description="my potential, trained on ...")
    """


@hookspec
def register_readers(register: Register) -> None:
    """Register data readers.

    A reader is a callable ``reader(path, **options)`` returning an iterable of
    ``crystalgnn_plugins.data.records.Record`` (structures with their targets).

    Example::

        @hookimpl
        def register_readers(register):
            from myplugin.io import read_my_format

            register("my_format", read_my_format, description="*.myf files")
    """
