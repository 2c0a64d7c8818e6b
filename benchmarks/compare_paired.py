"""Paired k-NN and linear-probe differences between the methods of one comparison, with 95 % intervals.

python benchmarks/compare_paired.py cmp360 --collect runs/cmp360   # copy each run's test predictions
python benchmarks/compare_paired.py cmp360                         # the table from the copies

A comparison (``python -m train.compare ... --out runs/<name>``) trains each method on the same data
with the same seed and scores the same test images, so two methods' k-NN accuracies are compared
image by image (benchmarks/knn_pixels.py's ``paired_difference``), and so are their linear probes
where both runs saved the probe's predictions. The predictions of each run's final evaluation (its
predictions.json) are kept in docs/tables/<name>_predictions/<method>.json; the differences go to
benchmarks/results/<name>_paired.json ("a - b" for the k-NN, "a - b linear" for the probe).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import RESULTS, ROOT, table, write_json
from knn_pixels import correct, paired_differences

PAIRS = [
    ("carp_dec", "carp"),
    ("carp_dec", "carp_kp"),
    ("carp_kp", "carp"),
    ("dino_dec", "dino"),
    ("carp_dec_diag", "carp"),  # the diagonal-variance default against joint CARP (results.md §3)
    ("carp_dec", "carp_dec_diag"),  # the default's shared GMM variance against diagonal ones (results.md §1)
    ("carp_dec_diag", "carp_dec_split10"),  # the GMM relocation against the earlier one (results.md §1)
    ("carp_dec", "carp_dec_split10"),  # the default against it (cmp360_reloc: diagonal variances then, §2)
    ("dino_dec", "dino_dec_split10"),  # ... for DINO + decoupling (results.md §2)
    ("carp_dec_diag", "carp_dec_koleo01"),  # ... and with KoLeo 0.1 on the embeddings (results.md §1)
    ("carp_dec_koleo01", "carp_koleo01"),  # the two methods with KoLeo 0.1
    ("carp", "carp_koleo01"),  # joint CARP: KoLeo 0.5 against 0.1
]

SUFFIXES = {"knn_top1": "", "linear_top1": " linear"}  # classifier: its key's suffix in the JSON


def _points(d: dict[str, float] | None) -> str:
    """A table cell: the difference and its interval in points, or nothing."""
    if d is None:
        return ""
    return f"{100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the comparison's name (its --out folder's name)")
    parser.add_argument("--collect", type=Path, help="the comparison's run folder to copy predictions from")
    args = parser.parse_args()
    folder = ROOT / "docs" / "tables" / f"{args.name}_predictions"
    if args.collect:
        folder.mkdir(parents=True, exist_ok=True)
        for run in sorted(args.collect.glob("*/predictions.json")):
            shutil.copyfile(run, folder / f"{run.parent.name}.json")
    runs = {p.stem: correct(p) for p in sorted(folder.glob("*.json"))}
    if not runs:
        raise SystemExit(f"no predictions in {folder}; run with --collect runs/{args.name} first")
    summary, rows = {}, []
    for a, b in PAIRS:
        if a not in runs or b not in runs:
            continue
        diffs = paired_differences(runs[a], runs[b])
        summary |= {f"{a} - {b}{SUFFIXES[k]}": d for k, d in diffs.items()}
        rows.append([f"{a} − {b}", *(_points(diffs.get(k)) for k in SUFFIXES)])
    print(table(["pair", "k-NN difference, points [95 %]", "linear probe, points [95 %]"], rows))
    out = RESULTS / f"{args.name}_paired.json"
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
