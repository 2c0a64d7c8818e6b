"""Usage perplexity/K of two runs on the same val images, with a paired bootstrap interval of the difference.

python benchmarks/usage_interval.py RUN_A RUN_B [RUN_A RUN_B ...] [--out JSON]
    # e.g. runs/zoo_v10 runs/zoo_joint, or one pair per seed to pool them

Each run's teacher at its last checkpoint assigns the val images (the evaluation's split and transform,
its autocast) to their argmax prototype; the perplexity/K of those assignments is the one the run's
evaluation at that step logged. The difference A − B gets a 95 % percentile interval from 2000
resamples of the val images, the same resample for both runs. With several pairs (one per seed), the
mean of their differences gets its interval from the same resamples, each drawing the same images for
every run. It covers which val images were drawn, not which seeds trained the runs: three seeds say how
far retraining moves the difference, not a sampling distribution of it.

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


def interval(values: Tensor) -> list[float]:
    """The 95 % percentile interval of resampled values."""
    return torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="pairs RUN_A RUN_B, one per seed")
    parser.add_argument("--out", type=Path, default=RESULTS / "usage_interval.json")
    args = parser.parse_args()
    if len(args.runs) % 2:
        parser.error(f"give runs in pairs RUN_A RUN_B, got {len(args.runs)} runs")
    argmaxes = [val_argmax(run) for run in args.runs]  # (winners, K, step) per run
    ks, sizes = {k for _, k, _ in argmaxes}, {len(w) for w, _, _ in argmaxes}
    if len(ks) > 1 or len(sizes) > 1:
        raise SystemExit(f"K ({sorted(ks)}) or val images ({sorted(sizes)}) differ: compare like runs")
    (k,), (n,) = ks, sizes
    rows = torch.randint(n, (RESAMPLES, n), generator=torch.Generator().manual_seed(0))
    points = [usage(w, k)["perplexity"] for w, _, _ in argmaxes]
    print(
        table(
            ["run", "step", "perplexity/K"],
            [[str(r), s, f"{p:.3f}"] for r, (_, _, s), p in zip(args.runs, argmaxes, points, strict=True)],
        )
    )
    pairs, diffs = [], []
    for i in range(0, len(args.runs), 2):
        diffs.append(perplexities(argmaxes[i][0], k, rows) - perplexities(argmaxes[i + 1][0], k, rows))
        low, high = interval(diffs[-1])
        pair = {
            "runs": [str(args.runs[i]), str(args.runs[i + 1])],
            "steps": [argmaxes[i][2], argmaxes[i + 1][2]],
            "perplexity": points[i : i + 2],
            "difference": points[i] - points[i + 1],
            "interval_95": [low, high],
        }
        pairs.append(pair)
        print(f"{args.runs[i]} − {args.runs[i + 1]}: {pair['difference']:+.3f} [{low:+.3f}, {high:+.3f}]")
    result = {"val_images": n, "resamples": RESAMPLES, **(pairs[0] if len(pairs) == 1 else {"pairs": pairs})}
    if len(pairs) > 1:
        low, high = interval(torch.stack(diffs).mean(0))
        result["mean_difference"] = sum(p["difference"] for p in pairs) / len(pairs)
        result["mean_interval_95"] = [low, high]
        print(f"mean over the {len(pairs)} pairs: {result['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}]")
    print(f"(95 %, {RESAMPLES} paired resamples of the val images)")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
