"""The GMM relocation screens: live prototypes, usage and k-NN over steps.

python benchmarks/gmm_live.py                 # the default recipe's 360-step screens (tables/gmm_default)
python benchmarks/gmm_live.py --screen 600    # the 600-step screens (tables/gmm_live)

Each screen is the default recipe (train/configs/default.yaml) with one GMM or DINO setting; joint CARP
is the same recipe with ``method=carp``. The command of every run is in ``SCREENS``. Writes a markdown
table (last val evaluation and final test metrics), the figure docs/figures/<folder>.png (live fraction
= prototypes that are some val image's argmax, val k-NN and unique@0.025 among the live over steps) and
benchmarks/results/<folder>.json. A run whose file stops early was stopped there; its row says so.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, ROOT, evaluations, table, write_json

# screen -> (folder under docs/tables, the base command, {run: (overrides, label)})
SCREENS = {
    "default": (
        "gmm_default",
        "python -m train --config default output_dir=runs/gmm_default/<run>",
        {
            "split10": ("gmm_split_min_mass=1 koleo_weight=0", "split every 10 steps, dead below 1 unit"),
            "s50": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_split_every=50",
                "split every 50 steps, dead below 1 unit",
            ),
            "kpp50": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_split_every=50 gmm_init=kmeans++",
                "k-means++ seeding, split every 50 steps",
            ),
            "shared": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_covariance=shared",
                "split10 with one shared variance",
            ),
            "min01": ("koleo_weight=0", "split every 10 steps, dead below 0.1 unit"),
            "min01ko": ("", "the same + KoLeo 0.1 on the embeddings (default)"),
            "min01ko5": (
                "koleo_weight=0.5",
                "default with KoLeo 0.5 on the embeddings",
            ),
            "dinopost": (
                "method=dino_dec centering=posterior gmm_split_min_mass=1 koleo_weight=0",
                "DINO + decoupling, GMM posteriors as targets",
            ),
        },
    ),
    "600": (
        "gmm_live",
        "python -m train --config default max_steps=600 eval_every=150 save_every=150 "
        "gmm_split_min_mass=1 koleo_weight=0 output_dir=runs/gmm_live/<run>",
        {
            "old_gmm": ("gmm_init=random gmm_split_every=0", "GMM, random init, no relocation (the paper's)"),
            "split10": ("", "GMM, first-batch init, split every 10 steps"),
            "carp": ("method=carp", "joint CARP (learnable prototypes)"),
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screen", choices=list(SCREENS), default="default")
    name_of_folder, base, runs_of = SCREENS[parser.parse_args().screen]
    folder = ROOT / "docs" / "tables" / name_of_folder
    runs = {
        name: evaluations(folder / f"{name}.jsonl") for name in runs_of if (folder / f"{name}.jsonl").exists()
    }
    rows, summary = [], {}
    for name, (evals, final) in runs.items():
        last = evals[-1]
        live = last.get("live") or round((1 - last["dead"]) * 1024)
        unique_live = last.get("unique_live") or {}
        summary[name] = {
            "command": f"{base} {runs_of[name][0]}".strip(),
            "step": last["step"],
            "val_knn": last["knn_top1"],
            "test_knn": final.get("knn_top1"),
            "test_live": final.get("live"),
            "live": live,
            "carrying": last.get("carrying"),
            "dead": last["dead"],
            "perplexity": last["perplexity"],
            "unique": last["unique"],
            "unique_live": unique_live,
        }
        test = f"{final['knn_top1']:.4f}" if final else "(stopped)"
        rows.append(
            [runs_of[name][1], str(last["step"]), f"{last['knn_top1']:.4f}", test, f"{live}",
             str(last.get("carrying", "")), f"{last['perplexity']:.3f}",
             " / ".join(f"{unique_live[k]:.3f}" for k in ("0.025", "0.1")) if unique_live else ""]
        )  # fmt: skip
    header = [
        "run",
        "step",
        "val k-NN",
        "test k-NN",
        "live (val)",
        "carrying",
        "perplexity/K",
        "unique@0.025/0.1 live",
    ]
    print(table(header, rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for name, (evals, _) in runs.items():
        steps = [r["step"] for r in evals]
        live = [(r.get("live") or round((1 - r["dead"]) * 1024)) / 1024 for r in evals]
        axes[0].plot(steps, live, marker="o", label=runs_of[name][1])
        axes[1].plot(steps, [r["knn_top1"] for r in evals], marker="o")
        among = [(r.get("unique_live") or r["unique"])["0.025"] for r in evals]
        axes[2].plot(steps, among, marker="o")
    titles = ("live prototypes / K (val argmax)", "val k-NN", "unique@0.025 among the live")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    out = ROOT / "docs" / "figures" / f"{name_of_folder}.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    write_json(RESULTS / f"{name_of_folder}.json", summary)
    print(f"wrote {out} and {RESULTS / f'{name_of_folder}.json'}")


if __name__ == "__main__":
    main()
