"""Zoo runs side by side on val: the notebook's per-step tables (docs/notebook.md §4).

python benchmarks/zoo_table.py zoo_v9 zoo_v8 zoo_v7 --labels v9 v8 v7
python benchmarks/zoo_table.py zoo_v9_s1 zoo_v9 zoo_v7 --labels "seed 1" "seed 0" v7
python benchmarks/zoo_table.py zoo_vit_v6 zoo_vit_v5 --labels v6 v5

Each name is a metrics file in docs/tables/screens; each row is a step that every run evaluated
(after step 0): val k-NN, live prototypes (dead %), carrying, unique@0.1 among the live and usage
perplexity/K, one value per run in the order given. Prints a markdown table.
"""

from __future__ import annotations

import argparse

from common import ROOT, evaluations, table

SCREENS = ROOT / "docs" / "tables" / "screens"


def _join(fmt: str, values: list) -> str:
    """One cell: the runs' values, formatted, in order ("–" where a run has none, as joint methods'
    carrying count)."""
    return " / ".join("–" if v is None else fmt.format(v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="metrics files in docs/tables/screens, without .jsonl")
    parser.add_argument("--labels", nargs="+", help="one column label per run (default: the names)")
    args = parser.parse_args()
    labels = args.labels or args.runs
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(labels)} labels: give one label per run")
    runs = [{r["step"]: r for r in evaluations(SCREENS / f"{name}.jsonl")[0]} for name in args.runs]
    names = " / ".join(labels)
    header = ["step", f"val k-NN {names}", f"live {names} (dead %)", f"carrying {names}"]
    header += [f"unique@0.1 among the live {names}", f"perplexity/K {names}"]
    rows = []
    for step in sorted(set.intersection(*(set(run) for run in runs)) - {0}):
        at = [run[step] for run in runs]
        live, dead = _join("{}", [r["live"] for r in at]), _join("{:.1f}", [100 * r["dead"] for r in at])
        rows.append([
            step, _join("{:.4f}", [r["knn_top1"] for r in at]), f"{live} ({dead})",
            _join("{}", [r["carrying"] for r in at]), _join("{:.3f}", [r["unique_live"]["0.1"] for r in at]),
            _join("{:.3f}", [r["perplexity"] for r in at]),
        ])  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
