"""Learning-rate tuning runs of the baselines: val k-NN against the rate, relative to the reference.

python benchmarks/tuning_curves.py   # tune_*_lr*.jsonl of docs/tables/screens -> docs/figures/tuning_lr.png

Joint CARP, joint DINO and lightly's SwAV (`swav`) got five 200-step val runs each, one learning rate per
run (docs/results.md §2); the rate is drawn as a multiple of the method's reference rate so that all
share one axis. Writes benchmarks/results/tuning_curves.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_LR = {"carp": 0.45, "dino": 1e-3, "swav": 0.6}  # the comparison's rates (train/compare.py)


def final_knn(path: Path) -> float:
    """Val k-NN at the last evaluation of one tuning run's metrics.jsonl."""
    evals = [r for r in map(json.loads, path.read_text().splitlines()) if "knn_top1" in r]
    return evals[-1]["knn_top1"]


def main() -> None:
    screens = ROOT / "docs" / "tables" / "screens"
    rows = {
        method: sorted(
            (float(p.stem.split("_lr")[1]), final_knn(p)) for p in screens.glob(f"tune_{method}_lr*.jsonl")
        )
        for method in REFERENCE_LR
    }
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, points in rows.items():
        ref = REFERENCE_LR[method]
        label = f"{method} (reference {ref:g})"
        ax.plot([lr / ref for lr, _ in points], [k for _, k in points], marker="o", label=label)
    ax.axvline(1.0, color="gray", linestyle=":", label="reference rate")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="learning rate / reference rate", ylabel="val k-NN top-1 at step 200")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Learning-rate tuning runs (Fashion-MNIST val split)")
    out = ROOT / "docs" / "figures" / "tuning_lr.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("| method | lr | val k-NN @200 |\n|---|---|---|")
    for method, points in rows.items():
        for lr, knn in points:
            print(f"| {method} | {lr:g} | {knn:.4f} |")
    (ROOT / "benchmarks" / "results" / "tuning_curves.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
