"""A comparison's val evaluations, for runs whose final test evaluation is missing.

python benchmarks/compare_val.py [docs/tables/cmp1200_gpu]   # one <method>.jsonl per method

Reads each method's metrics.jsonl (as ``python -m train.compare`` writes them in runs/<out>/<method>)
and writes, from the evaluations during training alone (val split as queries, a bank of 10 000
training images): a markdown table at the last evaluation (unique prototypes at the four eps, usage
perplexity, dead share, mean nearest-neighbour cosine, val k-NN, and the best val k-NN with its
step), the figure docs/figures/<name>_unique.png (unique fraction over steps, one line per method),
docs/figures/<name>_knn.png (val k-NN over steps) and benchmarks/results/<name>.json (each method's
last evaluation and its best val k-NN).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, ROOT, evaluations, table

from protozoo.collapse import EPS_GRID, plot_unique_over_steps


def summary_table(last: dict[str, dict], best: dict[str, dict]) -> str:
    """Markdown: each method's last evaluation, and its best val k-NN."""
    header = ["method", "step", *(f"unique@{e}" for e in EPS_GRID), "perplexity/K", "dead", "NN cosine"]
    header += ["val k-NN", "best val k-NN (step)"]
    rows = []
    for method, r in last.items():
        cells = [method, r["step"], *(f"{r['unique'][str(e)]:.3f}" for e in EPS_GRID)]
        cells += [f"{r['perplexity']:.3f}", f"{r['dead']:.3f}", f"{r['nn_cosine_mean']:.3f}"]
        cells += [f"{r['knn_top1']:.4f}", f"{best[method]['knn_top1']:.4f} ({best[method]['step']})"]
        rows.append(cells)
    return table(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folder", nargs="?", default="docs/tables/cmp1200_gpu", help="one <method>.jsonl each"
    )
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    paths = sorted(folder.glob("*.jsonl"))
    if not paths:
        parser.error(f"no <method>.jsonl files in {folder}; copy runs/<out>/<method>/metrics.jsonl there")
    runs = {p.stem: evaluations(p)[0] for p in paths}
    figures = ROOT / "docs" / "figures"
    curves = {m: ([r["step"] for r in ev], [r["unique"] for r in ev]) for m, ev in runs.items()}
    plot_unique_over_steps(
        curves, figures / f"{folder.name}_unique.png", title=f"Unique prototypes (val), {folder.name}"
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, ev in runs.items():
        ax.plot([r["step"] for r in ev], [r["knn_top1"] for r in ev], marker="o", markersize=3, label=method)
    ax.set(
        xlabel="training step", ylabel="val k-NN top-1 (10 000-image bank)", title=f"Val k-NN, {folder.name}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(figures / f"{folder.name}_knn.png", dpi=120)
    last = {m: ev[-1] for m, ev in runs.items()}
    best = {m: max(ev, key=lambda r: r["knn_top1"]) for m, ev in runs.items()}
    print(summary_table(last, best))
    out = RESULTS / f"{folder.name}.json"
    out.write_text(json.dumps({"source": str(folder), "last": last, "best_knn": best}, indent=1) + "\n")
    print(f"wrote {figures / f'{folder.name}_unique.png'}, {figures / f'{folder.name}_knn.png'}, {out}")


if __name__ == "__main__":
    main()
