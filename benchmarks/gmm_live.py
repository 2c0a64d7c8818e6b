"""The GMM relocation screens at the default recipe: live prototypes, usage and k-NN over steps.

python benchmarks/gmm_live.py [docs/tables/gmm_live]   # one <run>.jsonl per screen

Each screen is the default recipe (train/configs/default.yaml) run for 600 steps of 64 images with one GMM
setting; joint CARP is the same recipe with ``method=carp``. The command of every run is in
``RUNS``. Writes a markdown table (last val evaluation and final test k-NN), the figure
docs/figures/gmm_live.png (live fraction = prototypes that are some val image's argmax, val k-NN and
unique@0.025 over steps) and benchmarks/results/gmm_live.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, ROOT, table

BASE = (
    "python -m train --config default max_steps=600 eval_every=150 save_every=150 "
    "output_dir=runs/gmm_live/<run>"
)
RUNS = {  # run -> the overrides of its command (BASE + overrides)
    "old_gmm": "gmm_init=random gmm_split_every=0",
    "split10": "",
    "carp": "method=carp",
}
LABELS = {
    "old_gmm": "GMM, random init, no relocation (the paper's GMM)",
    "split10": "GMM, first-batch init, split every 10 steps (default)",
    "carp": "joint CARP (learnable prototypes)",
}


def evaluations(path: Path) -> tuple[list[dict], dict]:
    """(val evaluation lines in step order, the final test line or {})."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    evals = [r for r in lines if "unique" in r and not r.get("final")]
    final = next((r for r in lines if r.get("final")), {})
    return evals, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "docs" / "tables" / "gmm_live"))
    folder = Path(parser.parse_args().folder)
    runs = {
        name: evaluations(folder / f"{name}.jsonl") for name in RUNS if (folder / f"{name}.jsonl").exists()
    }
    rows, summary = [], {}
    for name, (evals, final) in runs.items():
        last = evals[-1]
        live = last.get("live") or round((1 - last["dead"]) * 1024)
        summary[name] = {
            "command": f"{BASE} {RUNS[name]}".strip(),
            "step": last["step"],
            "val_knn": last["knn_top1"],
            "test_knn": final.get("knn_top1"),
            "live": live,
            "dead": last["dead"],
            "perplexity": last["perplexity"],
            "unique": last["unique"],
        }
        rows.append(
            [LABELS[name], f"{last['knn_top1']:.4f}", f"{final.get('knn_top1', float('nan')):.4f}",
             f"{live}", f"{last['perplexity']:.3f}", " / ".join(f"{v:.3f}" for v in last["unique"].values())]
        )  # fmt: skip
    print(
        table(
            ["run", "val k-NN", "test k-NN", "live of 1024", "perplexity/K", "unique@0.025/0.1/0.25/0.5"],
            rows,
        )
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for name, (evals, _) in runs.items():
        steps = [r["step"] for r in evals]
        live = [(r.get("live") or round((1 - r["dead"]) * 1024)) / 1024 for r in evals]
        axes[0].plot(steps, live, marker="o", label=LABELS[name])
        axes[1].plot(steps, [r["knn_top1"] for r in evals], marker="o")
        axes[2].plot(steps, [r["unique"]["0.025"] for r in evals], marker="o")
    for ax, title in zip(
        axes, ("live prototypes / K (val argmax)", "val k-NN", "unique@0.025 / K"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    out = ROOT / "docs" / "figures" / "gmm_live.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gmm_live.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out} and {RESULTS / 'gmm_live.json'}")


if __name__ == "__main__":
    main()
