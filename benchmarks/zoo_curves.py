"""The zoo runs' val k-NN against the images they have seen, with raw pixels on the same protocol.

python benchmarks/zoo_curves.py   # reads docs/tables/screens/*.jsonl, writes docs/figures/zoo_knn.png

The runs' evaluations during training use the held-out val split as queries and a bank of 10 000
training images (train/engine.py, eval_bank_size with seed 0); raw pixels are scored here on the
same bank and queries, so the dashed line is the floor each curve has to clear. Writes
benchmarks/results/zoo_curves.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, write_json
from torch.utils.data import DataLoader

from protozoo.data import build_dataset, random_subset
from protozoo.eval import knn_accuracy

ROOT = Path(__file__).resolve().parent.parent
TRAIN_IMAGES = 55_000  # the "train" split (Fashion-MNIST's 60 000 less the 5 000 val images)
RUNS = {  # label: metrics file in docs/tables/screens
    "ResNet-18, batch 256 (zoo v2)": "zoo_v2.jsonl",
    "ResNet-18, batch 64 (zoo v3, AdamW, the paper's GMM)": "zoo_v3.jsonl",
    "ResNet-18, batch 64, distinct reseeding at cos 0.75": "zoo_v3_reseed_c075.jsonl",
    "ResNet-18, batch 64, 3600 steps (fp32, an hour here)": "zoo_v4_3600.jsonl",
    "ResNet-18, batch 32, 7200 steps (fp32, 80 minutes here)": "zoo_v4_3600_bs32.jsonl",
    "ResNet-18, batch 64, 3600 steps, crops (0.85, 1)": "zoo_v4_gs085.jsonl",
    "ResNet-18, the default's recipe and GMM, diagonal variances (zoo v5)": "zoo_v5.jsonl",
    "ResNet-18, the default's recipe and GMM, one shared variance (zoo v6)": "zoo_v6.jsonl",
    "ResNet-18, zoo v6 + merged within 0.1, lightest movers first (zoo v7)": "zoo_v7.jsonl",
    "ResNet-18, zoo v7 + movers start with one unit of mass (zoo v8)": "zoo_v8.jsonl",
    "ResNet-18, zoo v8 + relocation every 100 steps (zoo v9)": "zoo_v9.jsonl",
    "ResNet-18, zoo v9's recipe, seed 1": "zoo_v9_s1.jsonl",
    "ResNet-18, zoo v9's recipe, seed 2": "zoo_v9_s2.jsonl",
    "ResNet-18, zoo v7's recipe, seed 2": "zoo_v7_s2.jsonl",
    "ResNet-18, zoo v7 + relocation every 100 steps (zoo v10)": "zoo_v10.jsonl",
    "ResNet-18, zoo v9's recipe, seed 0 run again (shipped)": "zoo_v9_rerun.jsonl",
    "ResNet-18, zoo v9's recipe, seed 1 run again": "zoo_v9_s1_rerun.jsonl",
    "ResNet-18, joint CARP on zoo v10's recipe": "zoo_joint.jsonl",
    "ViT-Tiny, batch 256 (vit v1)": "zoo_vit.jsonl",
    "ViT-Tiny, batch 64 (vit v2, the paper's GMM)": "zoo_vit_v2.jsonl",
    "ViT-Tiny, batch 64, the default's relocation (vit v3)": "zoo_vit_v3.jsonl",
    "ViT-Tiny, batch 64, + one shared variance, KoLeo 0.5 (vit v4)": "zoo_vit_v4.jsonl",
    "ViT-Tiny, + crops 0.85-1, merged within 0.1, lightest first (vit v5)": "zoo_vit_v5.jsonl",
    "ViT-Tiny, vit v5 + zoo v9's relocation (vit v6)": "zoo_vit_v6.jsonl",
    "ViT-Tiny, clean-image fit, busiest region every 200 steps, 9000 steps (vit v10)": "zoo_vit_v10.jsonl",
    "ViT-Tiny, vit v10's recipe, seed 1 (shipped)": "zoo_vit_v10_s1.jsonl",
    "ViT-Tiny, vit v10's recipe, seed 2": "zoo_vit_v10_s2.jsonl",
    "ViT-Tiny, vit v10's recipe on 12000 steps (vit v12)": "zoo_vit_v12.jsonl",
}


def pixel_floor(bank_size: int = 10_000, seed: int = 0) -> float:
    """k-NN on raw pixels with the training runs' val protocol (the same random_subset bank)."""
    bank, val = build_dataset("fashion_mnist", "train"), build_dataset("fashion_mnist", "val")
    (bank_x, bank_y), (val_x, val_y) = (
        next(iter(DataLoader(ds, batch_size=len(ds))))  # type: ignore[arg-type]
        for ds in (random_subset(bank, bank_size, seed), val)
    )
    return knn_accuracy(bank_x.flatten(1), bank_y, val_x.flatten(1), val_y)


def curve(path: Path) -> tuple[list[int], list[float]]:
    """(images seen, val k-NN) of one run's metrics.jsonl; the batch size is read off its epoch counter."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    train = next(r for r in lines if "epoch" in r)
    batch = round(train["epoch"] * TRAIN_IMAGES / train["step"])
    evals = [r for r in lines if "knn_top1" in r and r.get("split") != "test"]
    return [r["step"] * batch for r in evals], [r["knn_top1"] for r in evals]


def main() -> None:
    screens = ROOT / "docs" / "tables" / "screens"
    curves = {label: curve(screens / name) for label, name in RUNS.items() if (screens / name).exists()}
    floor = pixel_floor()
    fig, ax = plt.subplots(figsize=(12, 5))
    colors = plt.get_cmap("tab20").colors
    for n, (label, (images, knn)) in enumerate(curves.items()):
        style = "--" if label.startswith("ViT") else "-"
        color = colors[n % len(colors)]
        ax.plot([i / 1e6 for i in images], knn, style, color=color, marker="o", markersize=3, label=label)
    ax.axhline(floor, color="black", linestyle=":", label=f"raw pixels ({floor:.4f})")
    ax.set(xlabel="training images seen (millions)", ylabel="val k-NN top-1 (10 000-image bank)")
    ax.set_ylim(0.5, 0.9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Zoo runs against the pixel floor, Fashion-MNIST val split")
    out = ROOT / "docs" / "figures" / "zoo_knn.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"| run | last val k-NN | images seen |\n|---|---|---|\n| raw pixels | {floor:.4f} | |")
    for label, (images, knn) in curves.items():
        print(f"| {label} | {knn[-1]:.4f} | {images[-1]:,} |")
    results = {"pixels_val_knn": floor, "runs": {k: {"images": v[0], "knn": v[1]} for k, v in curves.items()}}
    write_json(RESULTS / "zoo_curves.json", results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
