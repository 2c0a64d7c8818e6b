"""Time of ``unique_prototypes`` (the paper's Definition 2.1) on a K = 65 536, d = 256 prototype matrix.

The greedy cover costs most when nothing is covered: every row becomes a representative and is
compared with every later row (about K² d / 2 multiply-adds). Three matrices bound the cases:

- ``all unique``: random unit vectors (in 256 dimensions no two of 65 536 come within eps), the
  worst case, and what a healthy decoupled GMM looks like;
- ``clustered``: 1024 random centres with 64 noisy copies each (1 − cos ≈ 0.002 inside a cluster),
  rows shuffled, as after partial collapse: 1024 unique;
- ``collapsed``: 65 536 noisy copies of one vector: 1 unique.

Each count is checked against the known answer. Target: <= 10 s at eps = 0.025 for every case,
the worst one included.

    python benchmarks/bench_collapse.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from common import RESULTS, Run, run_note, table, verdict
from torch import Tensor

from protozoo.collapse import unique_prototypes

COMMAND = "python benchmarks/bench_collapse.py"
TARGET_S = 10.0
EPS = 0.025


def clustered(num_prototypes: int, dim: int, clusters: int, noise: float, g: torch.Generator) -> Tensor:
    """``clusters`` random unit centres, each repeated K / clusters times with Gaussian noise, shuffled."""
    centres = F.normalize(torch.randn(clusters, dim, generator=g), dim=1)
    rows = centres.repeat_interleave(num_prototypes // clusters, dim=0)
    rows = rows + noise * torch.randn(rows.shape, generator=g)
    return rows[torch.randperm(num_prototypes, generator=g)]


def cases(num_prototypes: int, dim: int) -> dict[str, tuple[Tensor, int]]:
    """name -> (prototype matrix (K, d), its known number of unique prototypes at eps = 0.025)."""
    g = torch.Generator().manual_seed(0)
    noise = 0.003  # two copies differ by 1 - cos ≈ noise² d = 0.0023, well inside eps
    return {
        "all unique": (torch.randn(num_prototypes, dim, generator=g), num_prototypes),
        "clustered": (clustered(num_prototypes, dim, 1024, noise, g), 1024),
        "collapsed": (clustered(num_prototypes, dim, 1, noise, g), 1),
    }


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: one row per case with target and verdict."""
    s, rows = record["settings"], record["results"]["cases"]
    body = table(
        ["case", "unique / K", "seconds, median (min)", "target", ""],
        [
            [
                r["case"],
                f"{r['unique']} / {s['K']}",
                f"{r['median_s']:.2f} ({r['min_s']:.2f})",
                f"≤ {TARGET_S:.0f} s",
                verdict(r["median_s"] <= TARGET_S),
            ]
            for r in rows
        ],
    )
    return "\n\n".join(
        [
            body,
            f"K = {s['K']}, d = {s['d']}, eps = {s['eps']}, fp32, default chunk_size; the count of every "
            f"case equals its known answer. "
            + run_note(record, COMMAND + (" --quick" if record["quick"] else "")),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="K = 8192 and one repeat: a few seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 2, quick 1)")
    parser.add_argument("--out", default=str(RESULTS / "collapse.json"), help="where to write the JSON")
    args = parser.parse_args()
    num_prototypes, dim = (8192, 256) if args.quick else (65536, 256)
    repeats = args.repeats or (1 if args.quick else 2)
    run = Run("collapse", args.quick)
    unique_prototypes(torch.randn(2048, dim))  # warm-up: load the math libraries
    rows = []
    for name, (matrix, expected) in cases(num_prototypes, dim).items():
        times, count = [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            count = unique_prototypes(matrix, eps=EPS)
            times.append(time.perf_counter() - t)
        if count != expected:
            raise RuntimeError(f"{name}: unique_prototypes gave {count}, the known answer is {expected}")
        rows.append(
            {
                "case": name,
                "unique": count,
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "samples_s": [round(t, 3) for t in times],
            }
        )
        print(f"{name}: {count} unique, {statistics.median(times):.2f} s", flush=True)
    settings = {"K": num_prototypes, "d": dim, "eps": EPS, "repeats": repeats, "target_s": TARGET_S}
    record = run.write(args.out, settings, results={"cases": rows})
    print(markdown(record))


if __name__ == "__main__":
    main()
