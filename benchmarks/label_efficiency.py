"""How many labels does pretraining save? Fashion-MNIST at 1 %, 10 % and 100 % of the training labels.

python benchmarks/label_efficiency.py           # the sized run (see Sizing), about 20 minutes
python benchmarks/label_efficiency.py --quick   # a smoke run: one seed, 5 steps

At each label fraction and seed, on the same class-stratified label subset (train.finetune.label_subset),
four classifiers are compared on the same test images:

- ``finetune``: the zoo ResNet (dp-resnet18-fmnist) fine-tuned end to end with the command
  ``python -m train.finetune`` and its recipe train/configs/finetune-dp-resnet18-fmnist.yaml;
- ``linear probe``: a linear classifier on the zoo ResNet's frozen features (protozoo.eval.linear_probe);
- ``scratch``: the same architecture with fresh weights, through the same command and schedule;
- ``pixels``: a logistic regression on the raw pixels (the same linear_probe, on 784 standardised pixels).

Each method's mean over seeds is reported with a 95 % t-interval over the seeds, and so are the paired
differences at each fraction (fine-tuned minus scratch, minus pixels, minus the linear probe).

Sizing. The machine has 2 CPU cores, where a full fine-tuning step of the ResNet on 32 images takes
0.2-0.6 s (bf16 autocast on an AVX512-BF16 CPU, other jobs alongside). So the two trained methods get a
fixed step budget per fraction rather than epochs (--steps, default 200 steps at 1 % and 100 at 10 % and
100 %, batch 32: about 12 epochs of the 550 images at 1 %, 0.6 epoch at 10 % and 0.06 at 100 %, where both
trained methods are far from converged; 100 steps at 1 % left the fine-tuned network 2.9 points over
pixels, 200 steps 5.4). Every method is scored on the same fixed 1 000 test images
(train.finetune.eval_subset; the val top-1 that the command also records uses 1 000 val images), and the
linear probe and the pixel regression train on cached inputs: the backbone's features of each training
image are extracted once, when a label subset first needs them. The fractions run in order, 1 % first, and
the JSON is rewritten after every seed, so an interrupted run still leaves its finished rows. The numbers
at 10 % and 100 % say what a short budget gives, not what full training reaches.
Writes benchmarks/results/label_efficiency.json and benchmarks/results/label_efficiency.png.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, ROOT, Run, table
from scipy import stats
from torch import Tensor
from torch.utils.data import DataLoader, Subset

import protozoo
from protozoo.card import weights_digest
from protozoo.data import build_dataset
from protozoo.eval import extract_features, linear_probe
from protozoo.registry import shipped_folder
from train.finetune import eval_subset, finetune, label_subset, load_finetune_config

MODEL = "dp-resnet18-fmnist"
RECIPE = ROOT / "train" / "configs" / f"finetune-{MODEL}.yaml"
METHODS = ("finetune", "linear probe", "scratch", "pixels")
PROBE_EPOCHS = {0.01: 100, 0.1: 30, 1.0: 10}  # passes of the linear probes over their cached inputs


def t_interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95 % t-interval over seeds (no interval from a single seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None, "values": values}
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "values": values}


class CachedInputs:
    """Pixels of the training split and of the scored test images, and the frozen backbone's features,
    extracted once per image and only for the images a label subset needs."""

    def __init__(self, test_size: int) -> None:
        self.model = protozoo.load(MODEL)
        self.train = build_dataset("fashion_mnist", "train", transform=self.model.transform)
        test = build_dataset("fashion_mnist", "test", transform=self.model.transform)
        test = Subset(test, eval_subset(len(test), test_size).tolist())
        self.y = self.train.targets  # type: ignore[attr-defined]
        self.pixels = self.train.images.flatten(1).float() / 255  # type: ignore[attr-defined]  # (N, 784)
        self.test_pixels = torch.stack([test.dataset.images[i].flatten() for i in test.indices]).float() / 255  # type: ignore[attr-defined]
        self.test_features, self.test_y = extract_features(self.model, DataLoader(test, batch_size=512))
        self.features = torch.zeros(len(self.y), self.test_features.shape[1])  # (N, F), filled on demand
        self.done = torch.zeros(len(self.y), dtype=torch.bool)

    def features_of(self, index: Tensor) -> Tensor:
        """(M, F) backbone features of the training images ``index``, extracting the missing ones."""
        missing = index[~self.done[index]]
        if len(missing):
            loader = DataLoader(Subset(self.train, missing.tolist()), batch_size=512)
            self.features[missing] = extract_features(self.model, loader)[0]
            self.done[missing] = True
        return self.features[index]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fraction: each method's mean and t-interval over seeds, and the paired differences."""
    results: dict[str, Any] = {}
    for fraction in dict.fromkeys(r["fraction"] for r in runs):
        rows = [r for r in runs if r["fraction"] == fraction]
        results[str(fraction)] = {
            "train_images": [r["train_images"] for r in rows],
            **{m: t_interval([r[m] for r in rows]) for m in METHODS},
            "differences": {
                f"finetune - {m}": t_interval([r["finetune"] - r[m] for r in rows]) for m in METHODS[1:]
            },
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 100, 100], help="steps per fraction")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-size", type=int, default=1000, help="test (and val) images scored")
    parser.add_argument("--quick", action="store_true", help="one seed, 1 %% only, 5 steps, 200 test images")
    parser.add_argument("--out", default=str(RESULTS / "label_efficiency.json"))
    args = parser.parse_args()
    if args.quick:
        args.fractions, args.steps, args.seeds, args.test_size = [0.01], [5], [0], 200
    if len(args.steps) != len(args.fractions):
        parser.error(f"give one --steps value per fraction ({len(args.fractions)}), got {args.steps}")
    run = Run("label_efficiency", args.quick)
    settings = {
        "model": MODEL, "weights_sha256": weights_digest(shipped_folder(MODEL) / "model.safetensors"),
        "recipe": str(RECIPE.relative_to(ROOT)), "fractions": args.fractions,
        "steps": args.steps, "seeds": args.seeds, "batch_size": args.batch_size,
        "test_size": args.test_size, "probe_epochs": PROBE_EPOCHS,
    }  # fmt: skip
    cached = CachedInputs(args.test_size)
    runs: list[dict[str, Any]] = []
    for fraction, steps in zip(args.fractions, args.steps, strict=True):  # 1 % first: the headline
        for seed in args.seeds:
            picked = label_subset(cached.y, fraction, seed)
            row = {"fraction": fraction, "seed": seed, "train_images": len(picked)}
            epochs = PROBE_EPOCHS.get(fraction, 10)
            for method, x, x_test in (
                ("linear probe", cached.features_of(picked), cached.test_features),
                ("pixels", cached.pixels[picked], cached.test_pixels),
            ):
                row[method] = linear_probe(
                    x, cached.y[picked], x_test, cached.test_y, epochs=epochs, seed=seed
                )
            for method, pretrained in (("finetune", True), ("scratch", False)):
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.perf_counter()
                    cfg = load_finetune_config(RECIPE, [
                        f"label_fraction={fraction}", f"seed={seed}", f"pretrained={str(pretrained).lower()}",
                        f"max_steps={steps}", f"eval_every={steps}", f"batch_size={args.batch_size}",
                        f"eval_size={args.test_size}", "onnx=false", f"output_dir={tmp}",
                    ])  # fmt: skip
                    row[method] = finetune(cfg)["test_top1"]
                    row[f"{method}_s"] = round(time.perf_counter() - t, 1)
            runs.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            record = run.write(args.out, settings, runs=runs, results=summarise(runs))  # after every row
    print(_table(record["results"]))
    _plot(record, Path(args.out).with_suffix(".png"))


def _fmt(r: dict[str, Any]) -> str:
    if r["low"] is None:
        return f"{100 * r['mean']:.1f}"
    return f"{100 * r['mean']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def _table(results: dict[str, Any]) -> str:
    """Markdown: test top-1 (%) per method and fraction, mean [95 % t-interval over seeds]."""
    header = ["labels", *METHODS, "finetune - scratch", "finetune - pixels"]
    rows = [
        [f"{100 * float(f):g} %", *(_fmt(r[m]) for m in METHODS),
         *(_fmt(r["differences"][f"finetune - {m}"]) for m in ("scratch", "pixels"))]
        for f, r in results.items()
    ]  # fmt: skip
    return table(header, rows)


def _plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = record["results"]
    fractions = [100 * float(f) for f in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(METHODS):
        rs = [results[f][method] for f in results]
        means = [100 * r["mean"] for r in rs]
        err = [[100 * (r["mean"] - (r["low"] or r["mean"])) for r in rs],
               [100 * ((r["high"] or r["mean"]) - r["mean"]) for r in rs]]  # fmt: skip
        xs = [x * (1 + 0.04 * (i - 1.5)) for x in fractions]  # a small dodge so the bars do not overlap
        ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images (%)")
    ax.set_ylabel("test top-1 (%)")
    s = record["settings"]
    ax.set_title(f"Fashion-MNIST, {MODEL}: {len(s['seeds'])} seeds, 95 % t-intervals", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
