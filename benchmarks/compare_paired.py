"""Paired k-NN and linear-probe differences between the methods of one comparison, with 95 % intervals.

python benchmarks/compare_paired.py cmp360 --collect runs/cmp360   # copy each run's test predictions
python benchmarks/compare_paired.py cmp360                         # the table from the copies
python benchmarks/compare_paired.py zoo9600 zoo9600_s1 zoo9600_s2  # one comparison per seed, pooled

A comparison (``python -m train.compare ... --out runs/<name>``) trains each method on the same data
with the same seed and scores the same test images, so two methods' k-NN accuracies are compared
image by image (benchmarks/knn_pixels.py's ``paired_difference``), and so are their linear probes
where both runs saved the probe's predictions. The predictions of each run's final evaluation (its
predictions.json) are kept in docs/tables/<name>_predictions/<method>.json; the differences go to
benchmarks/results/<name>_paired.json ("a - b" for the k-NN, "a - b linear" for the probe). Given
several comparisons (the same methods, one seed each), each pair found in all of them is scored by the
mean of its differences over the seeds, with the interval from the same test images (written to
<first name>_pooled_paired.json); like any interval over one test set, it covers which images were
drawn, not which seeds trained the runs.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from common import RESULTS, ROOT, table, write_json
from knn_pixels import correct, paired_differences
from torch import Tensor

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
    ("carp_dec_fresh", "carp_dec"),  # the zoo ResNet's recipe (movers start from one unit) against v10's
    ("carp_dec_fresh", "carp"),  # ... and against joint CARP
]

SUFFIXES = {"knn_top1": "", "linear_top1": " linear"}  # classifier: its key's suffix in the JSON


def _points(d: dict[str, float] | None) -> str:
    """A table cell: the difference and its interval in points, or nothing."""
    if d is None:
        return ""
    return f"{100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def stacked(seeds: list[dict[str, dict[str, Tensor]]], method: str) -> dict[str, Tensor]:
    """(S, N) right-or-wrong on the test images, one row per seed, for each classifier that every
    seed's run of ``method`` saved."""
    kinds = set.intersection(*(set(seed[method]) for seed in seeds))
    return {k: torch.stack([seed[method][k] for seed in seeds]) for k in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="comparison names (--out folders), one per seed")
    parser.add_argument("--collect", type=Path, help="the comparison's run folder to copy predictions from")
    args = parser.parse_args()
    if args.collect and len(args.names) > 1:
        parser.error("--collect copies one comparison's predictions: give one name with it")
    folders = [ROOT / "docs" / "tables" / f"{name}_predictions" for name in args.names]
    if args.collect:
        folders[0].mkdir(parents=True, exist_ok=True)
        for run in sorted(args.collect.glob("*/predictions.json")):
            shutil.copyfile(run, folders[0] / f"{run.parent.name}.json")
    seeds = [{p.stem: correct(p) for p in sorted(folder.glob("*.json"))} for folder in folders]
    for name, seed in zip(args.names, seeds, strict=True):
        if not seed:
            raise SystemExit(f"no predictions for {name}; run with --collect runs/{name} first")
    runs = {m: stacked(seeds, m) for m in set.intersection(*(set(s) for s in seeds))}
    summary, rows = {}, []
    for a, b in PAIRS:
        if a not in runs or b not in runs:
            continue
        diffs = paired_differences(runs[a], runs[b])
        summary |= {f"{a} - {b}{SUFFIXES[k]}": d for k, d in diffs.items()}
        rows.append([f"{a} − {b}", *(_points(diffs.get(k)) for k in SUFFIXES)])
    print(table(["pair", "k-NN difference, points [95 %]", "linear probe, points [95 %]"], rows))
    out = RESULTS / f"{args.names[0]}_{'pooled_' if len(seeds) > 1 else ''}paired.json"
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
