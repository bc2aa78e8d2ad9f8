"""Benchmark: wall time of ``import crystalgnn_plugins`` in a fresh interpreter
(median of several runs, interpreter start-up subtracted), and which heavy
modules it pulls in (it must pull in none).

    python benchmarks/import_time.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "lightning", "matgl", "dscribe", "ase", "pymatgen", "sklearn")


def _run(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main(repeats: int = 7) -> None:
    base = statistics.median(_run("pass") for _ in range(repeats))
    full = statistics.median(_run("import crystalgnn_plugins") for _ in range(repeats))
    heavy = subprocess.run(
        [sys.executable, "-c", f"import sys, crystalgnn_plugins; print([m for m in {HEAVY!r} if m in sys.modules])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    print(f"import crystalgnn_plugins: {1000 * (full - base):.1f} ms (interpreter start-up {1000 * base:.1f} ms excluded)")
    print(f"heavy modules imported: {heavy}")


if __name__ == "__main__":
    main()
