"""Per-element coverage and accuracy of the default potential, as a Markdown table
for the model card (docs/default_potential.md).

Reads the ``by_element`` errors of a ``compare_chgnet.py --sections accuracy`` report
(energy MAE of the held-out frames containing the element, meV/atom; force MAE on
the element's atoms, meV/Å) and, with ``--db``, counts the *training* frames
containing each element in the teacher database::

    python benchmarks/element_table.py REPORT.json --db DIR/frames.db [--columns 3]

Elements are in periodic-table order; an element with training frames but no
held-out frame shows ``-`` for its errors.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def training_counts(db: Path, exclude_sources: tuple[str, ...] = ()) -> Counter:
    """Number of ``split=train`` frames containing each element (without the frames of
    ``exclude_sources``, e.g. those a model was not trained on)."""
    import ase.db

    counts: Counter = Counter()
    selection = "split=train" + "".join(f",source!={s}" for s in exclude_sources)
    with ase.db.connect(db, use_lock_file=False) as conn:
        for row in conn.select(selection, columns=["numbers"]):
            counts.update({str(s) for s in row.symbols})
    return counts


def rows(by_element: dict, train: Counter | None) -> list[list[str]]:
    """One row per element: symbol, training frames, test frames, energy MAE, force MAE."""
    from ase.data import atomic_numbers

    elements = sorted(set(by_element) | set(train or {}), key=lambda el: atomic_numbers[el])
    out = []
    for el in elements:
        acc = by_element.get(el)
        out.append([
            el,
            f"{train.get(el, 0):,}" if train is not None else "",
            str(acc["frames"]) if acc else "0",
            f"{acc['energy_mae_mev_per_atom']:.0f}" if acc else "-",
            f"{acc['force_mae_mev_per_A']:.0f}" if acc else "-",
        ])
    return out


def markdown(table: list[list[str]], columns: int, with_train: bool) -> str:
    """The rows laid out in ``columns`` side-by-side blocks (a long table reads badly)."""
    head = ["el.", "train", "test", "E", "F"] if with_train else ["el.", "test", "E", "F"]
    body = [r if with_train else [r[0], *r[2:]] for r in table]
    per = -(-len(body) // columns)
    blocks = [body[k * per : (k + 1) * per] for k in range(columns)]
    width = len(head)
    lines = ["| " + " | ".join(head * columns) + " |", "|" + "---|" * (width * columns)]
    for i in range(per):
        cells: list[str] = []
        for block in blocks:
            cells += block[i] if i < len(block) else [""] * width
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="JSON written by compare_chgnet.py --sections accuracy --out")
    ap.add_argument("--db", default=None, help="teacher database, to count the training frames per element")
    ap.add_argument("--exclude-source", action="append", default=[], metavar="SOURCE",
                    help="do not count the training frames of this source (as train_default.py --exclude-source)")
    ap.add_argument("--columns", type=int, default=3)
    args = ap.parse_args()
    report = json.loads(Path(args.report).read_text())
    by_element = report.get("accuracy", report).get("by_element")
    if not by_element:
        raise SystemExit(f"{args.report}: no accuracy.by_element (run compare_chgnet.py --sections accuracy)")
    train = training_counts(Path(args.db), tuple(args.exclude_source)) if args.db else None
    print(markdown(rows(by_element, train), args.columns, train is not None))
    print("\nE: energy MAE of the held-out frames containing the element (meV/atom); "
          "F: force MAE on its atoms (meV/Å); train/test: frames containing it.")


if __name__ == "__main__":
    main()
