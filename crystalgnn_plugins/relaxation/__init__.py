"""Structure relaxation with learned energy models.

:func:`relax` relaxes ASE ``Atoms`` / pymatgen ``Structure`` objects one by one
with ASE's ``FIRE`` + ``FrechetCellFilter`` or many at once with
:class:`BatchedFIRE` (same algorithm, one model call per step for the whole
batch). :class:`RelaxTransformation` wraps it as a pymatgen transformation.
See ``docs/relaxation.md``.
"""

from crystalgnn_plugins.relaxation.api import relax
from crystalgnn_plugins.relaxation.batched_fire import BatchedFIRE
from crystalgnn_plugins.relaxation.result import (
    NotConvergedWarning,
    RelaxationError,
    RelaxResult,
    SkippedStructureWarning,
)

__all__ = [
    "BatchedFIRE",
    "NotConvergedWarning",
    "RelaxResult",
    "RelaxTransformation",
    "RelaxationError",
    "SkippedStructureWarning",
    "relax",
]


def __getattr__(name: str):
    # pymatgen's transformation machinery is imported only when asked for
    if name == "RelaxTransformation":
        from crystalgnn_plugins.relaxation.transformation import RelaxTransformation

        return RelaxTransformation
    raise AttributeError(f"module 'crystalgnn_plugins.relaxation' has no attribute {name!r}")
