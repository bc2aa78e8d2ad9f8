"""Benchmark: energy + forces + stress of ``EnergyModel(<encoder>)`` on rattled cubic
SrTiO3 perovskite supercells (eval, float32, default hyper-parameters, one model object
reused; median of ``--repeats`` calls after a warm-up). Graph construction is timed
separately. Each encoder runs in a fresh process (sizes ascending), so the reported peak
RSS (``resource.getrusage``) is that of the largest size.

    python benchmarks/encoder_speed.py --threads 2
    python benchmarks/encoder_speed.py --threads 2 --thp on --omp-wait passive   # shared machine
    python benchmarks/encoder_speed.py --threads 2 --sizes 320 2560 --encoders painn \\
        --kwargs painn='{"atom_features": 48}'
    python benchmarks/encoder_speed.py --threads 2 --profile painn --sizes 2560

Reference on the development machine (2 cores): CHGNet 0.3.0 takes about 1.3 s at 320
atoms and 9.9 s at 2,560 atoms; the target for the default potential is <= 0.25x that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

#: atoms -> supercell repeats of the 5-atom cubic cell
SUPERCELLS = {
    100: (5, 2, 2),
    320: (4, 4, 4),
    1000: (5, 5, 8),
    2560: (8, 8, 8),
    5000: (10, 10, 10),
    10000: (10, 10, 20),
}
REFERENCE_S = {320: 1.3, 2560: 9.9}  # CHGNet 0.3.0 on the development machine


def perovskite(num_atoms: int, seed: int = 0, a: float = 3.905, rattle: float = 0.05):
    import numpy as np
    from ase import Atoms

    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cell = Atoms("SrTiO3", scaled_positions=frac, cell=np.eye(3) * a, pbc=True)
    atoms = cell.repeat(SUPERCELLS[num_atoms])
    atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


def run_child(encoder: str, kwargs: dict, sizes: list[int], repeats: int, threads: int) -> list[dict]:
    import torch

    from crystalgnn_plugins.models import EnergyModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EnergyModel(encoder, kwargs).float().eval()
    rows = []
    for n in sorted(sizes):
        atoms = perovskite(n)
        times = []
        for _ in range(max(2, repeats // 2)):
            t0 = time.perf_counter()
            graph = model.graph(atoms)
            times.append(time.perf_counter() - t0)
        t_graph = statistics.median(times)
        rss_before = _current_rss_mb()
        model(graph)  # warm-up
        times, cpu = [], []
        for _ in range(repeats if n < 5000 else max(2, repeats // 2)):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(graph)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            del out
        t = statistics.median(times)
        rows.append({
            "encoder": encoder, "atoms": n, "edges": graph.num_edges,
            "graph_ms": 1e3 * t_graph, "model_ms": 1e3 * t, "model_min_ms": 1e3 * min(times), "cpu_ms": 1e3 * statistics.median(cpu),
            "us_per_atom": 1e6 * t / n,
            "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb(),
            "params": model.num_parameters,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def profile(encoder: str, kwargs: dict, n: int, threads: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from crystalgnn_plugins.graph.crystal_graph import CrystalGraph
    from crystalgnn_plugins.graph.neighbors import neighbor_list
    from crystalgnn_plugins.models import EnergyModel

    torch.set_num_threads(threads)
    model = EnergyModel(encoder, kwargs).float().eval()
    atoms = perovskite(n)

    def best(fn, k=3):
        ts = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * min(ts)

    print(f"graph construction split, {n} atoms (ms, best of 3):")
    print(f"  vesin neighbour list + sort: {best(lambda: neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)):.1f}")
    print(f"  CrystalGraph.from_atoms:     {best(lambda: CrystalGraph.from_atoms(atoms, model.cutoff)):.1f}")
    print(f"  model.graph (+element check, .to): {best(lambda: model.graph(atoms)):.1f}")
    graph = model.graph(atoms)
    model(graph)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        model(graph)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encoders", nargs="+", default=["painn", "smooth_cgcnn"])
    p.add_argument("--sizes", nargs="+", type=int, default=sorted(SUPERCELLS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kwargs", nargs="*", default=[], metavar="ENCODER=JSON",
                   help="encoder kwargs, e.g. painn='{\"atom_features\": 32}'")
    p.add_argument("--thp", choices=["off", "on", "both"], default="both",
                   help="THP_MEM_ALLOC_ENABLE for the child processes: torch then backs large "
                        "tensors with transparent huge pages (far fewer page faults)")
    p.add_argument("--omp-wait", choices=["default", "passive"], default="default",
                   help="OMP_WAIT_POLICY for the child processes; 'passive' stops idle OpenMP "
                        "threads spinning, which matters a lot when other jobs share the cores")
    p.add_argument("--profile", metavar="ENCODER", help="profile one call (torch.profiler) instead")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for size in args.sizes:
        if size not in SUPERCELLS:
            p.error(f"size {size} not one of {sorted(SUPERCELLS)}")
    enc_kwargs = {}
    for item in args.kwargs:
        name, _, text = item.partition("=")
        enc_kwargs[name] = json.loads(text)
    if args.profile:
        for n in args.sizes:
            profile(args.profile, enc_kwargs.get(args.profile, {}), n, args.threads)
        return
    if args.child:
        rows = run_child(args.child, enc_kwargs.get(args.child, {}), args.sizes, args.repeats, args.threads)
        print(json.dumps(rows))
        return

    rows = []
    for thp in (["off", "on"] if args.thp == "both" else [args.thp]):
        env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY")}
        if thp == "on":
            env["THP_MEM_ALLOC_ENABLE"] = "1"
        if args.omp_wait == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        for enc in args.encoders:
            cmd = [sys.executable, __file__, "--child", enc, "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--sizes", *map(str, args.sizes)]
            if enc in enc_kwargs:
                cmd += ["--kwargs", f"{enc}={json.dumps(enc_kwargs[enc])}"]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
            for row in json.loads(res.stdout.strip().splitlines()[-1]):
                rows.append({**row, "thp": thp})

    load = " ".join(open("/proc/loadavg").read().split()[:3]) if sys.platform == "linux" else "?"
    print(f"threads={args.threads}, OMP_WAIT_POLICY={args.omp_wait}, float32, eval, energy+forces+stress, "
          f"median of {args.repeats} (min and process CPU time also shown; load average {load})")
    head = f"{'thp':<5}{'encoder':<14}{'atoms':>7}{'edges':>10}{'graph ms':>10}{'model ms':>10}{'(min)':>8}{'CPU ms':>9}{'µs/atom':>9}{'vs CHGNet':>10}{'peak RSS MB':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = REFERENCE_S.get(r["atoms"])
        ratio = f"{r['model_ms'] / 1e3 / ref:.2f}x" if ref else ""
        print(f"{r['thp']:<5}{r['encoder']:<14}{r['atoms']:>7}{r['edges']:>10}{r['graph_ms']:>10.1f}{r['model_ms']:>10.1f}"
              f"{r['model_min_ms']:>8.0f}{r['cpu_ms']:>9.0f}{r['us_per_atom']:>9.1f}{ratio:>10}{r['peak_rss_mb']:>12.0f}")
    for enc in args.encoders:
        mine = [r for r in rows if r["encoder"] == enc]
        print(f"{enc}: {mine[0]['params']} parameters")


if __name__ == "__main__":
    main()
