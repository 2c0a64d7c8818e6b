"""Usage perplexity/K of two runs on the same val images, with a paired bootstrap interval of the difference.

python benchmarks/usage_interval.py RUN_A RUN_B [--out JSON]   # e.g. runs/zoo_v10 runs/zoo_joint

Each run's teacher at its last checkpoint assigns the val images (the evaluation's split and transform,
its autocast) to their argmax prototype; the perplexity/K of those assignments is the one the run's
evaluation at that step logged. The difference A − B gets a 95 % percentile interval from 2000
resamples of the val images, the same resample for both runs. It covers which val images were drawn,
not which seed trained the runs: retraining moves the perplexity too.

Writes benchmarks/results/usage_interval.json (or --out). About 10 s for two zoo ResNet runs on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import RESULTS, table, write_json
from dead_on_val import last_teacher
from torch import Tensor

from protozoo.collapse import usage
from train.engine import gather_outputs

RESAMPLES = 2000


def val_argmax(run: Path) -> tuple[Tensor, int, int]:
    """(N,) argmax prototype of each val image under the run's last teacher, K, and the checkpoint's step."""
    trainer, model, step = last_teacher(run, "usage_interval")
    _, assignments, _ = gather_outputs(trainer.accelerator, model, trainer.val_set)
    return assignments.argmax(1), assignments.shape[1], step


def perplexities(winners: Tensor, k: int, rows: Tensor) -> Tensor:
    """Perplexity/K (:func:`protozoo.collapse.usage`) of each resample (one row of image indices each)."""
    return torch.tensor([usage(winners[row], k)["perplexity"] for row in rows], dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "usage_interval.json")
    args = parser.parse_args()
    (a, k, step_a), (b, k_b, step_b) = (val_argmax(run) for run in args.runs)
    if k != k_b or len(a) != len(b):
        raise SystemExit(f"K ({k}, {k_b}) or val images ({len(a)}, {len(b)}) differ: compare like runs")
    rows = torch.randint(len(a), (RESAMPLES, len(a)), generator=torch.Generator().manual_seed(0))
    diff = perplexities(a, k, rows) - perplexities(b, k, rows)
    low, high = torch.quantile(diff, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    pa, pb = usage(a, k)["perplexity"], usage(b, k)["perplexity"]
    result = {
        "runs": [str(run) for run in args.runs],
        "steps": [step_a, step_b],
        "val_images": len(a),
        "perplexity": [pa, pb],
        "difference": pa - pb,
        "interval_95": [low, high],
        "resamples": RESAMPLES,
    }
    runs = zip(args.runs, result["steps"], result["perplexity"], strict=True)
    print(table(["run", "step", "perplexity/K"], [[str(run), step, f"{p:.3f}"] for run, step, p in runs]))
    print(f"A − B: {pa - pb:+.3f} [{low:+.3f}, {high:+.3f}] (95 %, {RESAMPLES} paired resamples)")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
