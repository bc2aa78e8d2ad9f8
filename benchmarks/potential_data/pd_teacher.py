"""CHGNet 0.3.0 teacher: batched energy / forces / stress labels, ASE calculator,
E(V) pre-scaling of synthetic parents, Langevin MD snapshots, stress check.

Units of every label returned here: energy eV (total, not per atom), forces
eV/Å, stress eV/Å³ as an ASE Voigt 6-vector ``xx, yy, zz, yz, xz, xy`` with the
ASE sign convention ``σ = (1/V) ∂E/∂ε`` (positive = tensile, i.e. a cell that
wants to shrink), magmoms μB (CHGNet's site-wise magnetic moment magnitudes).

CHGNet itself reports ``predict_structure(...)["e"]`` in eV/atom and ``["s"]``
in GPa with the same sign as ASE; its ``CHGNetCalculator`` multiplies by
``ase.units.GPa`` to give eV/Å³. :func:`check_stress` compares all three with
a central finite difference of the energy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

__all__ = [
    "TEACHER_NAME",
    "Teacher",
    "TeacherCalculator",
    "check_stress",
    "md_snapshots",
    "prescale_many",
]

TEACHER_NAME = "chgnet-0.3.0"
EV_PER_A3_PER_GPA = units.GPa  # 1 GPa = 0.00624151 eV/Å³ (CHGNet uses 1/160.21766208)


def _voigt(s: np.ndarray) -> np.ndarray:
    s = 0.5 * (s + s.T)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], dtype=float)


class Teacher:
    """Batched CHGNet labeller.

    ``label(atoms_list)`` converts the frames to CHGNet graphs and evaluates
    them in batches of at most ``batch_size`` frames / ``max_batch_atoms``
    atoms. The default ``fast`` path runs CHGNet's forward pass
    (``CHGNet._compute`` with the composition model added as in
    ``CHGNet.forward``) and takes forces and stress in ONE
    ``torch.autograd.grad`` call without ``create_graph``; CHGNet's own
    ``predict_graph`` does two backward passes with ``create_graph=True``
    (needed for training) and is ~2x slower on CPU. At construction the fast
    path is checked against ``predict_graph`` on two small cells; on any
    mismatch (> 1e-4 eV/atom, 1e-3 eV/Å, 0.01 GPa) or error the slow path is
    used with a warning.
    """

    def __init__(
        self,
        model_name: str = "0.3.0",
        batch_size: int = 16,
        max_batch_atoms: int = 400,
        threads: int | None = None,
        fast: bool = True,
    ) -> None:
        import torch
        from chgnet.model import CHGNet

        if threads:
            torch.set_num_threads(int(threads))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
        self.model.eval()
        self.model.requires_grad_(False)
        self.batch_size = int(batch_size)
        self.max_batch_atoms = int(max_batch_atoms)
        self.fast = bool(fast) and self._fast_path_ok()

    # -- conversion -------------------------------------------------------------------
    def graph(self, atoms: Atoms):
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(atoms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.graph_converter(structure)

    def _graphs(self, atoms_list: Sequence[Atoms]) -> list[tuple[int, Any]]:
        """``(index, CHGNet graph)`` of the frames whose graph can be built."""
        graphs = []
        for k, a in enumerate(atoms_list):
            try:
                graphs.append((k, self.graph(a)))
            except Exception:  # noqa: BLE001 - graph conversion errors -> no label
                continue
        return graphs

    # -- evaluation -------------------------------------------------------------------
    def _readout(self, graphs: list, compute_stress: bool) -> tuple[Any, dict, list]:
        """CHGNet's batched graph and raw prediction of ``graphs`` (magnetic moments, and
        per-site readouts if the model has them), and each frame's site energies (eV:
        readout + the element's composition-model reference; ``None`` without)."""
        from chgnet.model.model import BatchedGraph

        m = self.model
        bg = BatchedGraph.from_graphs(
            graphs,
            bond_basis_expansion=m.bond_basis_expansion,
            angle_basis_expansion=m.angle_basis_expansion,
            compute_stress=compute_stress,
        )
        pred = m._compute(
            bg, compute_force=False, compute_stress=False, compute_magmom=True, return_site_energies=m.mlp_first
        )
        if not m.mlp_first:
            return bg, pred, [None] * len(graphs)
        shifts = m.composition_model.get_site_energies(graphs) if m.composition_model is not None else [0.0] * len(graphs)
        sites = [(s + t).detach().numpy().astype(float).reshape(-1) for s, t in zip(pred["site_energies"], shifts, strict=True)]
        return bg, pred, sites

    def _fast_batch(self, graphs: list) -> list[dict]:
        import torch

        m = self.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = m.composition_model(graphs) if m.composition_model is not None else 0.0
            bg, pred, sites = self._readout(graphs, compute_stress=True)
            n_atoms = torch.tensor([len(g.atomic_number) for g in graphs], dtype=pred["e"].dtype)
            # as in CHGNet.forward: prediction["e"] += composition energy (per atom if intensive)
            energy = (pred["e"] + comp) * n_atoms if m.is_intensive else pred["e"] + comp
            grads = torch.autograd.grad(energy.sum(), [*bg.atom_positions, *bg.strains])
        n = len(graphs)
        out = []
        for k in range(n):
            stress = (grads[n + k] / bg.volumes[k]).detach().numpy().astype(float)
            out.append(
                {
                    "energy": float(energy[k].detach()),
                    "forces": -grads[k].detach().numpy().astype(float),
                    "stress": _voigt(stress),
                    "magmoms": pred["m"][k].detach().numpy().astype(float).reshape(-1),
                    **({} if sites[k] is None else {"energies": sites[k]}),
                }
            )
        return out

    def _slow_batch(self, graphs: list) -> list[dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds = self.model.predict_graph(graphs, task="efsm", batch_size=len(graphs))
        if isinstance(preds, dict):
            preds = [preds]
        out = []
        for g, p in zip(graphs, preds, strict=True):
            n = len(g.atomic_number)
            out.append(
                {
                    "energy": float(p["e"]) * n,
                    "forces": np.asarray(p["f"], float),
                    "stress": _voigt(np.asarray(p["s"], float) * EV_PER_A3_PER_GPA),
                    "magmoms": np.asarray(p["m"], float).reshape(-1),
                }
            )
        return out

    def _batch(self, graphs: list) -> list[dict]:
        return self._fast_batch(graphs) if self.fast else self._slow_batch(graphs)

    def _fast_path_ok(self) -> bool:
        from ase.build import bulk

        a = bulk("Si", "diamond", a=5.43).repeat((1, 1, 2))
        a.rattle(0.05, seed=1)
        b = Atoms("SrTiO3", scaled_positions=[[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
                  cell=np.diag([3.9, 3.95, 3.92]), pbc=True)  # fmt: skip
        b.rattle(0.05, seed=2)
        try:
            graphs = [self.graph(a), self.graph(b)]
            fast, slow = self._fast_batch(graphs), self._slow_batch(graphs)
        except Exception as exc:  # noqa: BLE001 - any CHGNet-internals change
            warnings.warn(
                f"CHGNet fast path unavailable ({exc!r}); using predict_graph", stacklevel=2
            )
            return False
        for f, s, g in zip(fast, slow, graphs, strict=True):
            n = len(g.atomic_number)
            ok = (
                abs(f["energy"] - s["energy"]) / n < 1e-4
                and np.abs(f["forces"] - s["forces"]).max() < 1e-3
                and np.abs(f["stress"] - s["stress"]).max() < 0.01 * EV_PER_A3_PER_GPA
            )
            if not ok:
                warnings.warn(
                    "CHGNet fast path disagrees with predict_graph; using predict_graph",
                    stacklevel=2,
                )
                return False
        return True

    def site_energies(self, atoms_list: Sequence[Atoms]) -> list[np.ndarray | None]:
        """The teacher's per-atom energies (eV) of each frame, ``None`` where CHGNet fails.

        CHGNet 0.3.0 reads its energy out per atom (``mlp_first``) and averages; a site's
        energy is that readout plus the element's composition-model reference, so the
        sites of a frame sum to its total energy (eV).
        """
        import torch

        if not self.model.mlp_first:
            raise RuntimeError("this CHGNet model has no per-site energy readout (mlp_first=False)")
        out: list[np.ndarray | None] = [None] * len(atoms_list)
        todo = self._graphs(atoms_list)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, _, sites = self._readout([g for _, g in chunk], compute_stress=False)
            for (k, _), site in zip(chunk, sites, strict=True):
                out[k] = site
        return out

    def label(self, atoms_list: Sequence[Atoms]) -> list[dict | None]:
        """Labels for each frame (``None`` where CHGNet fails, e.g. isolated atoms)."""
        out: list[dict | None] = [None] * len(atoms_list)
        graphs = self._graphs(atoms_list)
        batch: list = []
        n_batch_atoms = 0

        def flush() -> None:
            if not batch:
                return
            try:
                results = self._batch([g for _, g in batch])
            except Exception:  # noqa: BLE001 - fall back to one frame at a time
                results = []
                for _, g in batch:
                    try:
                        results.append(self._batch([g])[0])
                    except Exception:  # noqa: BLE001
                        results.append(None)
            for (k, _), r in zip(batch, results, strict=True):
                out[k] = r
            batch.clear()

        for k, g in graphs:
            n = len(g.atomic_number)
            if batch and (
                len(batch) >= self.batch_size or n_batch_atoms + n > self.max_batch_atoms
            ):
                flush()
                n_batch_atoms = 0
            batch.append((k, g))
            n_batch_atoms += n
        flush()
        return out


class TeacherCalculator(Calculator):
    """ASE calculator around :class:`Teacher` (energy, free_energy, forces, stress, magmoms and,
    on the fast path, the per-atom ``energies``)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "magmoms", "energies"]

    def __init__(self, teacher: Teacher, **kwargs) -> None:
        super().__init__(**kwargs)
        self.teacher = teacher

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        res = self.teacher.label([self.atoms])[0]
        if res is None:
            raise RuntimeError("CHGNet failed on this structure")
        self.results = {**res, "free_energy": res["energy"]}


# ----------------------------------------------------------------------------- E(V) scan


def prescale_many(
    teacher: Teacher,
    structures: Sequence[Atoms],
    span: float = 0.12,
    points: int = 7,
    max_rounds: int = 3,
) -> list[tuple[Atoms, float]]:
    """Isotropically rescale each structure to the teacher's energy minimum.

    Lattice scale factors ``c (1 + linspace(-span, span, points))`` are
    evaluated (all structures batched together); if the lowest energy is
    interior, a parabola through it and its two neighbours gives the scale,
    else the scan is re-centred on the edge point (at most ``max_rounds``
    rounds). Returns ``(rescaled atoms, scale factor)`` per structure; scale
    1.0 if the teacher fails.
    """
    grid = 1.0 + np.linspace(-span, span, points)
    centre = [1.0] * len(structures)
    result: list[tuple[Atoms, float] | None] = [None] * len(structures)
    for rnd in range(max_rounds):
        todo = [k for k in range(len(structures)) if result[k] is None]
        if not todo:
            break
        frames = []
        for k in todo:
            for f in centre[k] * grid:
                a = structures[k].copy()
                a.set_cell(a.cell.array * f, scale_atoms=True)
                frames.append(a)
        labels = teacher.label(frames)
        for j, k in enumerate(todo):
            es = np.array(
                [
                    lab["energy"] if lab is not None and math.isfinite(lab["energy"]) else np.inf
                    for lab in labels[j * points : (j + 1) * points]
                ]
            )
            fs = centre[k] * grid
            if not np.isfinite(es).any():
                result[k] = (structures[k].copy(), 1.0)
                continue
            i = int(np.argmin(es))
            if 0 < i < points - 1 and np.isfinite(es[i - 1 : i + 2]).all():
                x, y = fs[i - 1 : i + 2], es[i - 1 : i + 2]
                c2, c1, _ = np.polyfit(x, y, 2)
                best = float(np.clip(-c1 / (2 * c2), x[0], x[2])) if c2 > 0 else float(fs[i])
            elif rnd == max_rounds - 1:
                best = float(fs[i])
            else:
                centre[k] = float(fs[i])
                continue
            a = structures[k].copy()
            a.set_cell(a.cell.array * best, scale_atoms=True)
            result[k] = (a, best)
    return [r if r is not None else (structures[k].copy(), 1.0) for k, r in enumerate(result)]


# ----------------------------------------------------------------------------- MD


def md_snapshots(
    teacher: Teacher,
    atoms: Atoms,
    n_snapshots: int,
    interval: int,
    temperature_K: float,
    rng: np.random.Generator,
    timestep_fs: float | None = None,
    friction_per_fs: float = 0.02,
) -> list[tuple[Atoms, dict, int]]:
    """Langevin NVT MD with the teacher; a snapshot every ``interval`` steps.

    Velocities start Maxwell-Boltzmann at ``temperature_K`` (centre of mass at
    rest, kept there by ``FixCom``); time step 1 fs if the cell contains H,
    else 2 fs (unless given); ASE ``Langevin`` with ``friction_per_fs`` and
    ``rng`` (so the run is reproducible). Returns ``(wrapped atoms, labels, step)`` per snapshot; the
    labels are those of the force call at that step (no extra evaluation).
    Stops early (fewer snapshots) if the teacher fails.
    """
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    if n_snapshots <= 0:
        return []
    if timestep_fs is None:
        timestep_fs = 1.0 if 1 in atoms.numbers else 2.0
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    a.calc = TeacherCalculator(teacher)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.28
        vd.thermalize_momenta(a, temperature_K=temperature_K, rng=rng)
    else:  # pragma: no cover
        vd.MaxwellBoltzmannDistribution(a, temperature_K=temperature_K, rng=rng)
    vd.Stationary(a)
    a.set_constraint(FixCom())  # ASE's recommended replacement for Langevin(fixcm=True)
    dyn = Langevin(
        a,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    out = []
    for k in range(1, n_snapshots + 1):
        try:
            dyn.run(interval)
            a.calc.get_property("energy", a)  # cached unless the positions moved since
            res = a.calc.results  # raw teacher labels (no FixCom projection of the forces)
            labels = {
                "energy": float(res["energy"]),
                "forces": np.array(res["forces"], float),
                "stress": np.array(res["stress"], float),
                "magmoms": np.array(res["magmoms"], float),
                **({"energies": np.array(res["energies"], float)} if "energies" in res else {}),
            }
        except RuntimeError:
            break
        snap = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=True)
        snap.wrap()
        out.append((snap, labels, k * interval))
    return out


# ----------------------------------------------------------------------------- stress check


def check_stress(teacher: Teacher, atoms: Atoms, h: float = 1e-3) -> dict:
    """Compare the teacher stress with ``(1/V) ∂E/∂ε`` by central differences.

    Applies symmetric strains ``±h`` to each Voigt component (cell ``C (I+ε)``,
    atoms scaled), so the finite difference is the ASE stress definition.
    Also reports CHGNet's own ``predict_structure`` stress (GPa) converted
    with ``ase.units.GPa`` and ``CHGNetCalculator.get_stress`` (eV/Å³).
    Returns a dict of Voigt vectors (eV/Å³) and the max deviations.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    lab = teacher.label([atoms])[0]
    assert lab is not None
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    frames = []
    for i, j in pairs:
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            if i == j:
                eps[i, i] = sign * h
            else:  # symmetric shear: ε_ij = ε_ji = h/2 (engineering strain h)
                eps[i, j] = eps[j, i] = sign * h / 2
            a = atoms.copy()
            a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            frames.append(a)
    es = [x["energy"] for x in teacher.label(frames)]
    vol = atoms.get_volume()
    # dE = V Σ σ_ij ε_ij = ±V σ_k h for every Voigt component k
    fd = np.array([(es[2 * k] - es[2 * k + 1]) / (2 * h * vol) for k in range(6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from chgnet.model.dynamics import CHGNetCalculator

        p = teacher.model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="efs")
        calc = CHGNetCalculator(model=teacher.model, use_device="cpu")
        b = atoms.copy()
        b.calc = calc
        ase_stress = np.array(b.get_stress(voigt=True), float)
    chgnet_gpa = _voigt(np.asarray(p["s"], float))
    return {
        "teacher_eV_A3": lab["stress"],
        "finite_difference_eV_A3": fd,
        "predict_structure_GPa": chgnet_gpa,
        "predict_structure_times_units_GPa": chgnet_gpa * EV_PER_A3_PER_GPA,
        "CHGNetCalculator_eV_A3": ase_stress,
        "max_abs_teacher_minus_fd": float(np.abs(lab["stress"] - fd).max()),
        "max_abs_teacher_minus_CHGNetCalculator": float(np.abs(lab["stress"] - ase_stress).max()),
        "volume_A3": vol,
        "h": h,
    }
