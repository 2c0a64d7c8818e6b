"""The method comparison: same backbone, data, budget and seed; one table and one figure.

    python -m train.compare --steps 1200 [--out runs/lt100] [--jobs 2] [key=value ...] [--methods carp ...]

The shared base recipe (``--recipe``) is train/configs/resnet18-360.yaml: full-width ResNet-18, AdamW;
key=value overrides (the default's GMM relocation, say) apply to every method. REGIMES below are
written against an AdamW base like it.

Each method runs as ``python -m train`` in ``runs/compare/<method>`` (a finished run is reused, an
interrupted one resumes), in its reference optimiser regime (REGIMES below); ``--jobs N`` trains N
methods at once (on a GPU, whose small steps leave it mostly idle), each with its share of the CPU
cores as torch threads (OMP_NUM_THREADS, unless set). The table (unique
prototypes at the four eps, usage perplexity, k-NN and linear-probe top-1 on the test split) and
the unique-fraction-over-steps figure go to docs/tables/<out name>.md and
docs/figures/<out name>_unique.png (docs/results.md discusses them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from protozoo.collapse import EPS_GRID, plot_unique_over_steps

# CARP's reference regime: LARS, lr 0.45 x batch/256 (the Trainer scales lr by batch/256), wd 1e-6.
CARP_REGIME = ["optimizer=lars", "lr=0.45", "momentum=0.9", "weight_decay=1e-6", "weight_decay_end=1e-6"]

# Each baseline in its reference regime (method.md §4-§6); a decoupled method trains in the regime
# of its joint counterpart, so that the prototype step is the only difference.
REGIMES: dict[str, list[str]] = {
    "carp": CARP_REGIME,
    "carp_kp": CARP_REGIME,
    "carp_dec": CARP_REGIME,
    "dino": [
        "weight_decay=0.04",
        "weight_decay_end=0.4",
        "freeze_last_layer_steps=100",
        "teacher_temp_warmup_steps=300",
    ],
    # DINO + decoupling: the GMM's posteriors as the teacher's targets (centred ones go uniform).
    "dino_dec": [
        "weight_decay=0.04",
        "weight_decay_end=0.4",
        "teacher_temp_warmup_steps=300",
        "centering=posterior",
    ],
    # Outside anchors (train/anchors.py). lightly's DINO in our dino's AdamW regime. lightly's SwAV in
    # SwAV's own: LARS (trust 0.001), momentum 0.9, weight decay 1e-6, no gradient clipping, lr 0.6 per
    # 256 images to 6e-4 (its small-batch setting, as in lightly's ImageNet benchmark; the Trainer
    # scales lr linearly with batch_size), prototypes frozen early (its first epoch; 100 steps as dino).
    "lightly_dino": [
        "weight_decay=0.04",
        "weight_decay_end=0.4",
        "freeze_last_layer_steps=100",
        "teacher_temp_warmup_steps=300",
    ],
    "lightly_swav": [
        "optimizer=lars",
        "lr=0.6",
        "min_lr=6e-4",
        "momentum=0.9",
        "weight_decay=1e-6",
        "weight_decay_end=1e-6",
        "clip_grad=null",
        "freeze_last_layer_steps=100",
    ],
}


def job_env(jobs: int, cores: int, environ: dict[str, str]) -> dict[str, str]:
    """The environment of one of ``jobs`` concurrent runs: its share of the cores as torch threads.

    Without it every run starts one thread per core, and N runs oversubscribe the cores N times over
    (the CPU then spends its time spinning in OpenMP barriers). An OMP_NUM_THREADS already set wins.
    """
    if jobs == 1 or "OMP_NUM_THREADS" in environ:
        return dict(environ)
    return {**environ, "OMP_NUM_THREADS": str(max(1, cores // jobs))}


def run(method: str, steps: int, out: Path, recipe: str, extra: list[str], env: dict[str, str]) -> dict:
    """Train one method (or reuse a finished run) and return its metrics lines."""
    folder = out / method
    metrics = folder / "metrics.jsonl"
    last = metrics.read_text().splitlines()[-1:] if metrics.exists() else []
    if not (last and json.loads(last[0]).get("final")):  # finished once the final test line is logged
        resume = ["resume=true"] if (folder / "checkpoints").exists() else []
        # -m train from a checkout, -m protozoo.train from a wheel
        cmd = [sys.executable, "-m", __package__, "--config", recipe, f"method={method}",
               f"max_steps={steps}", f"output_dir={folder}", "linear_probe=true", *REGIMES[method], *extra,
               *resume]  # fmt: skip
        subprocess.run(cmd, check=True, env=env)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    return {"evals": [r for r in lines if "unique" in r and not r.get("final")], "final": lines[-1]}


def main(argv: list[str] | None = None) -> None:
    """Run the comparison; write its table, its figure and every evaluation as JSON beside the table."""
    parser = argparse.ArgumentParser(prog="python -m train.compare", description=__doc__)
    parser.add_argument("--methods", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--steps", type=int, default=1200, help="training steps per method (same for all)")
    parser.add_argument(
        "--recipe",
        default="train/configs/resnet18-360.yaml",
        help="shared base recipe: an AdamW one, whose optimiser REGIMES override for the CARPs and SwAV",
    )
    parser.add_argument("--out", default="runs/compare", help="parent folder of the runs")
    parser.add_argument("--jobs", type=int, default=1, help="methods trained at the same time")
    parser.add_argument("--docs", default="docs", help="where results.md and figures/ go")
    parser.add_argument(
        "extra", nargs="*", help="key=value overrides for every method (e.g. num_prototypes=4096)"
    )
    args = parser.parse_args(argv)
    out, docs = Path(args.out), Path(args.docs)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive number of methods trained at once, got {args.jobs}")
    env = job_env(args.jobs, len(os.sched_getaffinity(0)), dict(os.environ))
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = pool.map(lambda m: run(m, args.steps, out, args.recipe, args.extra, env), args.methods)
        results = dict(zip(args.methods, runs, strict=True))

    curves = {
        m: ([r["step"] for r in res["evals"]], [r["unique"] for r in res["evals"]])
        for m, res in results.items()
    }
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    title = f"Unique prototypes (val), {out.name}"
    plot_unique_over_steps(curves, docs / "figures" / f"{out.name}_unique.png", title=title)
    table = results_table({m: r["final"] for m, r in results.items()})
    # overrides before --methods, which would otherwise take them for method names
    cmd = " ".join(["python -m train.compare", "--recipe", args.recipe, "--steps", str(args.steps),
                    "--out", str(out), *args.extra, "--methods", *args.methods])  # fmt: skip
    print(table)
    (docs / "tables").mkdir(exist_ok=True)
    (docs / "tables" / f"{out.name}.md").write_text(f"<!-- written by `{cmd}` -->\n{table}\n")
    (docs / "tables" / f"{out.name}.json").write_text(json.dumps({"command": cmd, "runs": results}, indent=1))


def results_table(finals: dict[str, dict]) -> str:
    """Markdown table of the final test metrics, with k-NN per class group for long-tailed runs."""
    groups = next((list(f["knn_groups"]) for f in finals.values() if "knn_groups" in f), [])
    header = ["method", *(f"unique@{e}" for e in EPS_GRID), "perplexity/K", "dead", "k-NN top-1"]
    header += [f"k-NN {g}" for g in groups] + ["linear top-1"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m, f in finals.items():
        cells = [m, *(f"{f['unique'][str(e)]:.3f}" for e in EPS_GRID), f"{f['perplexity']:.3f}"]
        cells += [f"{f['dead']:.3f}", f"{f['knn_top1']:.4f}"]
        cells += [f"{f['knn_groups'][g]:.4f}" for g in groups] + [f"{f.get('linear_top1', float('nan')):.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
