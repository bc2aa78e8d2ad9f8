"""Batched FIRE: many structures relaxed together, one model call per step.

Every active structure keeps its own FIRE state (velocity, ``dt``, ``alpha``,
count of downhill steps) with ASE's ``FIRE`` parameters, and its own
``FrechetCellFilter`` degrees of freedom, so that each structure follows the
same path as ``FIRE(FrechetCellFilter(atoms))`` would take one by one (up to
round-off). The FIRE update is vectorised over the batch; only the neighbour
lists are built per structure (vesin, every step). Finished structures leave
the batch and queued ones take their place.

Degrees of freedom of structure ``b`` with ``n`` atoms (as in ASE's
``FrechetCellFilter`` with its default ``exp_cell_factor = n``):

* positions in the reference frame ``x_i = r_i F^{-T}``;
* cell: ``X = n * logm(F)``, ``F`` the deformation gradient of the cell from
  the input cell ``C0`` (rows are lattice vectors): ``C = C0 F^T``, ``r = x F^T``.

Generalised forces: ``f_i F`` for the atoms and ``D^*(L)[virial F^{-T}] / n``
for the cell, ``L = logm(F)``, ``virial = -V sigma`` and ``D^*`` the adjoint of
the Fréchet derivative of the matrix exponential (computed from the exponential
of a 6x6 block matrix). Convergence: the largest row norm of these ``n + 3``
rows below ``fmax``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa

from crystalgnn_plugins.graph import CrystalGraph, GraphError
from crystalgnn_plugins.models.base import evaluating
from crystalgnn_plugins.models.energy import EnergyModel
from crystalgnn_plugins.relaxation._outcome import Outcome, failed

__all__ = ["BatchedFIRE", "expm_frechet_adjoint"]

_STATE = torch.float64  # optimizer state is kept in double precision, as ASE's numpy arrays


def expm_frechet_adjoint(L: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``A[b]_{mn} = sum_{kl} (d expm(L[b]) / d L[b]_{mn})_{kl} G[b]_{kl}`` for ``(B, 3, 3)`` inputs.

    The adjoint (Frobenius inner product) of the Fréchet derivative of ``expm``
    at ``L`` applied to ``G`` equals the Fréchet derivative at ``L^T`` in the
    direction ``G``: the upper-right block of ``expm([[L^T, G], [0, L^T]])``.
    """
    B = L.shape[0]
    M = torch.zeros((B, 6, 6), dtype=L.dtype, device=L.device)
    Lt = L.transpose(1, 2)
    M[:, :3, :3] = Lt
    M[:, 3:, 3:] = Lt
    M[:, :3, 3:] = G
    return torch.linalg.matrix_exp(M)[:, :3, 3:]


@dataclass
class _Batch:
    """State of the structures currently being relaxed (``B`` structures, ``N`` atoms)."""

    index: list[int]  # position in the input list
    counts: list[int]  # atoms per structure
    pbc_np: np.ndarray  # (B, 3) bool
    numbers: torch.Tensor  # (N,)
    batch: torch.Tensor  # (N,)
    n: torch.Tensor  # (B,) number of atoms (float64): the cell factor
    pbc: torch.Tensor  # (B, 3)
    x: torch.Tensor  # (N, 3) positions in the reference frame
    v: torch.Tensor  # (N, 3) velocities of the atoms
    cell0: torch.Tensor  # (B, 3, 3) input cells
    X: torch.Tensor  # (B, 3, 3) n * logm(F)
    vc: torch.Tensor  # (B, 3, 3) velocities of the cell DOFs
    dt: torch.Tensor  # (B,)
    a: torch.Tensor  # (B,)
    ndown: torch.Tensor  # (B,) long: consecutive downhill steps (ASE's Nsteps)
    nsteps: torch.Tensor  # (B,) long: optimizer steps taken
    started: torch.Tensor  # (B,) bool: FIRE has taken a first step (ASE: vel is not None)
    e0: torch.Tensor  # (B,) energy of the input structure
    traj: list[list[float]] | None = None
    _per_atom: tuple[str, ...] = field(default=("numbers", "x", "v"), repr=False)
    _per_structure: tuple[str, ...] = field(
        default=("n", "pbc", "cell0", "X", "vc", "dt", "a", "ndown", "nsteps", "started", "e0"), repr=False
    )

    @property
    def size(self) -> int:
        return len(self.index)

    def _rebatch(self) -> None:
        counts = torch.tensor(self.counts, dtype=torch.long, device=self.numbers.device)
        self.batch = torch.repeat_interleave(torch.arange(len(self.counts), device=counts.device), counts)

    def select(self, keep: torch.Tensor) -> None:
        """Keep the structures where ``keep`` (``(B,)`` bool) is true."""
        keep_list = keep.tolist()
        atom_keep = keep[self.batch]
        for name in self._per_atom:
            setattr(self, name, getattr(self, name)[atom_keep])
        for name in self._per_structure:
            setattr(self, name, getattr(self, name)[keep])
        self.index = [i for i, k in zip(self.index, keep_list, strict=True) if k]
        self.counts = [c for c, k in zip(self.counts, keep_list, strict=True) if k]
        self.pbc_np = self.pbc_np[np.asarray(keep_list, dtype=bool)]
        if self.traj is not None:
            self.traj = [t for t, k in zip(self.traj, keep_list, strict=True) if k]
        self._rebatch()

    def extend(self, other: _Batch) -> None:
        for name in (*self._per_atom, *self._per_structure):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.index += other.index
        self.counts += other.counts
        self.pbc_np = np.concatenate([self.pbc_np, other.pbc_np])
        if self.traj is not None:
            self.traj += other.traj or []
        self._rebatch()


class BatchedFIRE:
    """Relax many structures at once with a vectorised FIRE.

    Args:
        model: an :class:`EnergyModel` (its dtype and device are used for the model
            calls; the optimizer state is float64 on the same device).
        fmax: convergence threshold on the generalised forces, eV/Å.
        steps: maximum optimizer steps per structure.
        relax_cell: relax the cell too (``FrechetCellFilter`` parametrisation);
            else only positions move.
        pressure: external hydrostatic pressure, GPa (``FrechetCellFilter``'s
            ``scalar_pressure``): the cell relaxes on the enthalpy ``E + PV``.
        batch_size: maximum number of structures relaxed together.
        trajectory: record each structure's energy at every evaluation.
        on_error: ``"raise"`` (a :class:`GraphError`/``FloatingPointError`` naming
            the structure, raised from :meth:`run` via ``error_handler``) or
            ``"skip"`` (the structure leaves the batch with ``error`` set).
        dt, maxstep, dtmax, Nmin, finc, fdec, astart, fa: FIRE parameters (ASE's
            defaults); ``maxstep`` caps the norm of each structure's whole step.
    """

    def __init__(
        self,
        model: EnergyModel,
        *,
        fmax: float = 0.05,
        steps: int = 500,
        relax_cell: bool = True,
        pressure: float = 0.0,
        batch_size: int = 64,
        trajectory: bool = False,
        on_error: str = "raise",
        reuse_memory: bool = True,
        dt: float = 0.1,
        maxstep: float = 0.2,
        dtmax: float = 1.0,
        Nmin: int = 5,
        finc: float = 1.1,
        fdec: float = 0.5,
        astart: float = 0.1,
        fa: float = 0.99,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.model = model
        self.fmax = float(fmax)
        self.steps = int(steps)
        self.relax_cell = bool(relax_cell)
        self.pressure = float(pressure) * GPa  # eV/Å³
        self.batch_size = int(batch_size)
        self.trajectory = bool(trajectory)
        self.on_error = on_error
        self.dt0, self.maxstep, self.dtmax = float(dt), float(maxstep), float(dtmax)
        self.Nmin, self.finc, self.fdec = int(Nmin), float(finc), float(fdec)
        self.astart, self.fa = float(astart), float(fa)
        param = next(model.parameters())
        self.device, self.model_dtype = param.device, param.dtype
        if reuse_memory and self.device.type == "cpu":
            from crystalgnn_plugins.calculators.host_memory import reuse_host_memory

            reuse_host_memory()
        #: wall time (s) spent per phase in the last :meth:`run`
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ state
    def _new_batch(self, atoms_list: Sequence, indices: list[int]) -> _Batch:
        dev = self.device
        frames = [atoms_list[i] for i in indices]
        counts = [len(a) for a in frames]
        B = len(frames)
        opts = {"dtype": _STATE, "device": dev}
        numbers = torch.as_tensor(np.concatenate([np.asarray(a.numbers) for a in frames]), device=dev)
        x = torch.as_tensor(np.concatenate([np.asarray(a.positions, dtype=float) for a in frames]), **opts)
        pbc_np = np.array([np.asarray(a.pbc, dtype=bool) for a in frames]).reshape(B, 3)
        cell0 = np.stack([np.asarray(a.cell.array, dtype=float) for a in frames])
        cell0[~pbc_np.any(1)] = 0.0
        b = _Batch(
            index=list(indices),
            counts=counts,
            pbc_np=pbc_np,
            numbers=numbers.long(),
            batch=torch.empty(0, dtype=torch.long, device=dev),
            n=torch.tensor(counts, **opts),
            pbc=torch.as_tensor(pbc_np, device=dev),
            x=x,
            v=torch.zeros_like(x),
            cell0=torch.as_tensor(cell0, **opts),
            X=torch.zeros((B, 3, 3), **opts),
            vc=torch.zeros((B, 3, 3), **opts),
            dt=torch.full((B,), self.dt0, **opts),
            a=torch.full((B,), self.astart, **opts),
            ndown=torch.zeros(B, dtype=torch.long, device=dev),
            nsteps=torch.zeros(B, dtype=torch.long, device=dev),
            started=torch.zeros(B, dtype=torch.bool, device=dev),
            e0=torch.full((B,), float("nan"), **opts),
            traj=[[] for _ in range(B)] if self.trajectory else None,
        )
        b._rebatch()
        return b

    def _segment_sum(self, values: torch.Tensor, b: _Batch) -> torch.Tensor:
        return torch.zeros(b.size, dtype=values.dtype, device=values.device).index_add_(0, b.batch, values)

    # ------------------------------------------------------------ graph
    def _graph(self, b: _Batch, pos: torch.Tensor, cell: torch.Tensor) -> tuple[CrystalGraph | None, dict[int, str]]:
        """The batched graph at ``pos``/``cell``; or the structures (batch rows) that failed."""
        dt = self.model_dtype
        try:
            graph = CrystalGraph.from_batch(
                b.numbers, pos.to(dt), cell.to(dt), b.pbc, b.counts, self.model.cutoff, self.model.max_neighbors,
                ids=[str(i) for i in b.index],
            )
        except GraphError as exc:
            return None, exc.failures
        return graph, {}

    # ------------------------------------------------------------ run
    def run(
        self,
        atoms_list: Sequence,
        error_handler: Callable[[int, str], None] | None = None,
    ) -> list[Outcome]:
        """Relax every ``Atoms`` of ``atoms_list`` (not modified); outcomes in input order.

        ``error_handler(index, message)`` is called when a structure fails; with
        ``on_error="raise"`` it is expected to raise (the default raises a
        ``ValueError`` naming the index). The model runs in eval mode and is left in
        the mode it had.
        """
        with evaluating(self.model):
            return self._run(atoms_list, error_handler)

    def _run(self, atoms_list: Sequence, error_handler: Callable[[int, str], None] | None) -> list[Outcome]:

        def default_handler(index: int, message: str) -> None:
            raise ValueError(f"structure {index}: {message}")

        handler = error_handler or default_handler
        clock = {"graph": 0.0, "model": 0.0, "fire": 0.0, "bookkeeping": 0.0}
        outcomes: list[Outcome | None] = [None] * len(atoms_list)
        queue = deque(range(len(atoms_list)))
        b: _Batch | None = None
        model = self.model

        while queue or (b is not None and b.size):
            t0 = time.perf_counter()
            # -- refill the batch from the queue
            free = self.batch_size - (b.size if b is not None else 0)
            if queue and free > 0:
                new = self._new_batch(atoms_list, [queue.popleft() for _ in range(min(free, len(queue)))])
                if b is None or b.size == 0:
                    b = new
                else:
                    b.extend(new)
            assert b is not None
            # -- current positions and cells from the degrees of freedom
            if self.relax_cell:
                L = b.X / b.n.view(-1, 1, 1)
                F = torch.linalg.matrix_exp(L)
                Ft = F.transpose(1, 2)
                cell = torch.bmm(b.cell0, Ft)
                pos = torch.einsum("ni,nij->nj", b.x, Ft[b.batch])
            else:
                cell, pos = b.cell0, b.x
            t1 = time.perf_counter()
            clock["bookkeeping"] += t1 - t0
            graph, failures = self._graph(b, pos, cell)
            t2 = time.perf_counter()
            clock["graph"] += t2 - t1
            if failures:
                self._fail(b, failures, atoms_list, outcomes, handler)
                continue
            # -- one model call for the whole batch
            out = model(graph, compute_forces=True, compute_stress=bool(b.pbc_np.all(1).any()))
            e = out["energy"].detach().to(_STATE)
            f = out["forces"].detach().to(_STATE)
            s = out["stress"].detach().to(_STATE) if "stress" in out else None
            t3 = time.perf_counter()
            clock["model"] += t3 - t2
            finite = torch.isfinite(e) & ~self._segment_sum((~torch.isfinite(f)).any(1).to(_STATE), b).bool()
            if self.relax_cell:
                finite &= torch.isfinite(s).flatten(1).all(1)
            if not bool(finite.all()):
                bad = torch.nonzero(~finite).flatten().tolist()
                steps = b.nsteps.tolist()
                self._fail(b, {k: f"non-finite energy, forces or stress after {steps[k]} steps" for k in bad},
                           atoms_list, outcomes, handler)
                continue
            b.e0 = torch.where(b.nsteps == 0, e, b.e0)
            if b.traj is not None:
                for t, value in zip(b.traj, e.tolist(), strict=True):
                    t.append(value)
            # -- generalised forces (FrechetCellFilter) and convergence
            if self.relax_cell:
                g = torch.einsum("ni,nij->nj", f, F[b.batch])
                vol = torch.linalg.det(cell).abs()
                virial = -vol.view(-1, 1, 1) * (s + self.pressure * torch.eye(3, dtype=s.dtype, device=s.device))
                Finv_t = torch.linalg.matrix_exp(-L).transpose(1, 2)
                gc = expm_frechet_adjoint(L, torch.bmm(virial, Finv_t)) / b.n.view(-1, 1, 1)
                cell_res = torch.linalg.norm(gc, dim=2).amax(1)
            else:
                g = f
                gc = torch.zeros_like(b.vc)
                cell_res = torch.zeros(b.size, dtype=_STATE, device=self.device)
            atom_res = torch.zeros(b.size, dtype=_STATE, device=self.device).scatter_reduce_(
                0, b.batch, torch.linalg.norm(g, dim=1), reduce="amax", include_self=True
            )
            residual = torch.maximum(atom_res, cell_res)
            converged = residual < self.fmax
            done = converged | (b.nsteps >= self.steps)
            t4 = time.perf_counter()
            if bool(done.any()):
                self._finish(b, done, converged, residual, pos, cell, e, f, s, outcomes)
                keep = ~done
                g, gc = g[keep[b.batch]], gc[keep]
                b.select(keep)
            if b.size:
                self._fire_step(b, g, gc)
            clock["fire"] += time.perf_counter() - t4
            clock["bookkeeping"] += t4 - t3
        self.timings = clock
        return outcomes  # type: ignore[return-value]

    def _fire_step(self, b: _Batch, g: torch.Tensor, gc: torch.Tensor) -> None:
        """One FIRE step for every structure of the batch (ASE's ``FIRE.step``, vectorised)."""
        seg = self._segment_sum
        vf = seg((g * b.v).sum(1), b) + (gc * b.vc).sum((1, 2))
        g2 = seg((g * g).sum(1), b) + (gc * gc).sum((1, 2))
        vv = seg((b.v * b.v).sum(1), b) + (b.vc * b.vc).sum((1, 2))
        up = b.started & (vf > 0.0)
        down = b.started & ~(vf > 0.0)
        # velocity mixing (up), reset (down), untouched before the first step
        c1 = torch.where(up, 1.0 - b.a, torch.where(down, torch.zeros_like(b.a), torch.ones_like(b.a)))
        c2 = torch.where(up, b.a * vv.sqrt() / g2.sqrt().clamp_min(1e-300), torch.zeros_like(b.a))
        grow = up & (b.ndown > self.Nmin)
        b.dt = torch.where(grow, (b.dt * self.finc).clamp(max=self.dtmax), b.dt)
        b.a = torch.where(grow, b.a * self.fa, b.a)
        b.ndown = torch.where(up, b.ndown + 1, b.ndown)
        b.a = torch.where(down, torch.full_like(b.a, self.astart), b.a)
        b.dt = torch.where(down, b.dt * self.fdec, b.dt)
        b.ndown = torch.where(down, torch.zeros_like(b.ndown), b.ndown)
        # Euler step, then cap the norm of each structure's whole displacement
        dt_atoms = b.dt[b.batch].unsqueeze(1)
        b.v = c1[b.batch].unsqueeze(1) * b.v + c2[b.batch].unsqueeze(1) * g + dt_atoms * g
        b.vc = c1.view(-1, 1, 1) * b.vc + c2.view(-1, 1, 1) * gc + b.dt.view(-1, 1, 1) * gc
        dr = dt_atoms * b.v
        drc = b.dt.view(-1, 1, 1) * b.vc
        norm = (seg((dr * dr).sum(1), b) + (drc * drc).sum((1, 2))).sqrt()
        scale = torch.where(norm > self.maxstep, self.maxstep / norm.clamp_min(1e-300), torch.ones_like(norm))
        b.x = b.x + scale[b.batch].unsqueeze(1) * dr
        b.X = b.X + scale.view(-1, 1, 1) * drc
        b.nsteps = b.nsteps + 1
        b.started = torch.ones_like(b.started)

    # ------------------------------------------------------------ outcomes
    def _finish(self, b, done, converged, residual, pos, cell, e, f, s, outcomes) -> None:
        rows = torch.nonzero(done).flatten().tolist()
        pos_np, f_np = pos.detach().cpu().numpy(), f.cpu().numpy()
        cell_np = cell.detach().cpu().numpy()
        s_np = s.cpu().numpy() if s is not None else None
        e_l, e0_l = e.tolist(), b.e0.tolist()
        conv_l, res_l, steps_l = converged.tolist(), residual.tolist(), b.nsteps.tolist()
        starts = np.concatenate([[0], np.cumsum(b.counts)])
        for k in rows:
            sl = slice(starts[k], starts[k + 1])
            periodic = bool(b.pbc_np[k].all())
            outcomes[b.index[k]] = Outcome(
                positions=pos_np[sl].copy(),
                cell=cell_np[k].copy(),
                energy=float(e_l[k]),
                forces=f_np[sl].copy(),
                stress=full_3x3_to_voigt_6_stress(s_np[k]) if (periodic and s_np is not None) else np.full(6, np.nan),
                converged=bool(conv_l[k]),
                steps=int(steps_l[k]),
                residual=float(res_l[k]),
                initial_energy=float(e0_l[k]),
                trajectory=list(b.traj[k]) if b.traj is not None else None,
            )

    def _fail(self, b, failures: dict[int, str], atoms_list, outcomes, handler) -> None:
        for k, message in failures.items():
            index = b.index[k]
            if self.on_error == "raise":
                handler(index, message)
            outcomes[index] = failed(atoms_list[index], message)
        keep = torch.ones(b.size, dtype=torch.bool, device=self.device)
        keep[list(failures)] = False
        b.select(keep)

