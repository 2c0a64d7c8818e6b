"""Joint CARP, CARP + KoLeo-proto and CARP + decoupling in the collapse regime, two seeds each.

python benchmarks/collapse_study.py --run   # train the runs not yet done, one at a time; copy their records
python benchmarks/collapse_study.py         # tables, paired k-NN intervals, figure (docs/tables/collapse)

The regime is train/configs/collapse.yaml (plain SGD at a constant lr of 0.45 with a constant EMA of 0.99,
in which joint CARP's learnable prototypes collapse partially); each run is ``COMMAND`` with its method
and seed, and then joint CARP and CARP + KoLeo-proto run twice as long (``LONG_COMMAND``, seed 0) to see
whether the collapse reaches finer eps. ``--run`` copies every finished run's metrics.jsonl and the test
predictions of its final evaluation (predictions.json) into docs/tables/collapse/ as <run>.jsonl and
<run>_predictions.json.
Without it, the script reads those files and prints, per run, the collapse measures over steps (unique
fractions at the four eps of the student's learnable matrix for joint methods, of the GMM's means for
carp_dec, and of the teacher's EMA copy; live and dead prototypes on the val split; usage perplexity),
the final test k-NN and linear probe, and the test k-NN (and linear-probe, where saved) differences
between methods of the same seed with their paired 95 % intervals (benchmarks/knn_pixels.py's method).
Writes docs/figures/collapse_unique.png (unique@eps over steps, one line per method and seed) and
benchmarks/results/collapse_study.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from itertools import combinations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, ROOT, evaluations, table, write_json
from knn_pixels import correct, paired_differences

COMMAND = (
    "python -m train --config train/configs/collapse.yaml method={method} seed={seed} "
    "output_dir=runs/collapse/{method}_s{seed} resume=true"
)
METHODS = ("carp", "carp_kp", "carp_dec")
SEEDS = (0, 1)
ORDER = [(m, s) for s in SEEDS for m in ("carp", "carp_dec", "carp_kp")]  # the order --run trains them in
LONGER = ("carp", "carp_kp")  # then these, seed 0, twice as long: does the collapse reach eps 0.25?
LONG_COMMAND = (
    "python -m train --config train/configs/collapse.yaml method={method} seed=0 max_steps=4000 "
    "output_dir=runs/collapse/{method}_s0_4000 resume=true"
)
EPS = ("0.025", "0.1", "0.25", "0.5")
K = 1024
TABLES = ROOT / "docs" / "tables" / "collapse"


def name(method: str, seed: int) -> str:
    return f"{method}_s{seed}"


def train_missing() -> None:
    """Train each run that has no final predictions yet (resuming from its checkpoints), then copy its
    record into docs/tables/collapse/."""
    TABLES.mkdir(parents=True, exist_ok=True)
    runs = [(name(m, s), COMMAND.format(method=m, seed=s)) for m, s in ORDER]
    runs += [(f"{m}_s0_4000", LONG_COMMAND.format(method=m)) for m in LONGER]
    for run, command in runs:
        out = ROOT / "runs" / "collapse" / run
        if not (out / "predictions.json").exists():
            subprocess.run([sys.executable, *command.split()[1:]], cwd=ROOT, check=True)
        for source, target in (("metrics.jsonl", ".jsonl"), ("predictions.json", "_predictions.json")):
            shutil.copyfile(out / source, TABLES / f"{run}{target}")


def measured(r: dict) -> dict[str, float]:
    """The unique fractions of the prototypes the SSL step moves: the student's learnable matrix for a
    joint method, the GMM's means (shared by student and teacher) for a decoupled one."""
    return r.get("student_unique", r["unique"])


def fractions(values: dict[str, float]) -> str:
    return " / ".join(f"{values[e]:.3f}" for e in EPS)


def first_below(evals: list[dict], eps: str, level: float = 0.5) -> int | None:
    """The first evaluation step at which the measured unique fraction at ``eps`` is at most ``level``."""
    return next((r["step"] for r in evals if measured(r)[eps] <= level), None)


def report_longer() -> dict[str, dict]:
    """Print unique@0.25 / 0.5 over the 4000-step runs (student's matrix, teacher's in brackets) and their
    test k-NN and linear probe; return their summaries."""
    longer = {m: TABLES / f"{m}_s0_4000.jsonl" for m in LONGER}
    longer = {m: evaluations(path) for m, path in longer.items() if path.exists()}
    if not longer:
        return {}

    def cell(r: dict) -> str:
        moved, teacher = measured(r), r["unique"]
        return f"{moved['0.25']:.3f} / {moved['0.5']:.3f} ({teacher['0.25']:.3f} / {teacher['0.5']:.3f})"

    at = {m: {r["step"]: r for r in evals} for m, (evals, _) in longer.items()}
    steps = sorted(step for step in set.intersection(*(set(a) for a in at.values())) if step % 400 == 0)
    rows = [[step, *(cell(at[m][step]) for m in longer)] for step in steps]
    rows.append(
        ["test k-NN / linear", *(f"{f['knn_top1']:.4f} / {f['linear_top1']:.4f}" for _, f in longer.values())]
    )
    print("\n4000 steps, seed 0: unique@0.25 / 0.5 of the student's matrix (the teacher's copy in brackets):")
    print(table(["step", *(f"{m}_s0_4000" for m in longer)], rows))
    return {
        f"{m}_s0_4000": {
            "command": LONG_COMMAND.format(method=m),
            "first_step_unique_at_most_0.5": {e: first_below(evals, e) for e in EPS},
            "last": {k: evals[-1].get(k) for k in ("unique", "student_unique", "live", "perplexity")},
            "test_knn": final["knn_top1"],
            "test_linear": final.get("linear_top1"),
        }
        for m, (evals, final) in longer.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="train the runs not yet done first")
    args = parser.parse_args()
    if args.run:
        train_missing()
    done = [(m, s) for m in METHODS for s in SEEDS if (TABLES / f"{name(m, s)}.jsonl").exists()]
    runs = {(m, s): evaluations(TABLES / f"{name(m, s)}.jsonl") for m, s in done}
    summary: dict[str, dict] = {}
    for (method, seed), (evals, final) in runs.items():
        rows = [
            [r["step"], fractions(measured(r)), fractions(r["unique"]),
             f"{r.get('student_nn_cosine_mean', r['nn_cosine_mean']):.3f}", r["live"], K - r["live"],
             f"{r['perplexity']:.3f}", f"{r['knn_top1']:.4f}"]
            for r in evals
        ]  # fmt: skip
        print(f"\n{name(method, seed)}: `{COMMAND.format(method=method, seed=seed)}`")
        print(
            table(
                ["step", "unique@0.025/0.1/0.25/0.5 (moved)", "unique (teacher)", "NN cosine (moved)", "live",
                 "dead", "perplexity/K", "val k-NN"],
                rows,
            )
        )  # fmt: skip
        summary[name(method, seed)] = {
            "command": COMMAND.format(method=method, seed=seed),
            "steps": evals[-1]["step"],
            "first_step_unique_at_most_0.5": {e: first_below(evals, e) for e in EPS},
            "last": {k: evals[-1].get(k) for k in ("unique", "student_unique", "live", "perplexity")},
            "test_knn": final["knn_top1"],
            "test_linear": final.get("linear_top1"),
        }
    steps = sorted({r["step"] for evals, _ in runs.values() for r in evals})
    for title, cell in (
        ("unique@0.5, moved (teacher's)", lambda r: f"{measured(r)['0.5']:.3f} ({r['unique']['0.5']:.3f})"),
        ("live prototypes of 1024 / usage perplexity of K", lambda r: f"{r['live']} / {r['perplexity']:.2f}"),
    ):
        print(f"\n{title}, over steps:")
        at = {key: {r["step"]: r for r in evals} for key, (evals, _) in runs.items()}
        rows = [[step, *(cell(at[key][step]) if step in at[key] else "" for key in runs)] for step in steps]
        print(table(["step", *(name(*key) for key in runs)], rows))
    print("\nAt the end (test split; unique and live at the last val evaluation):")
    print(
        table(
            ["run", "unique@0.025/0.1/0.25/0.5 (moved)", "unique (teacher)", "live", "first step ≤ 0.5 @0.5",
             "test k-NN", "test linear"],
            [[n, fractions(measured(evals[-1])), fractions(evals[-1]["unique"]), evals[-1]["live"],
              summary[n]["first_step_unique_at_most_0.5"]["0.5"] or "never", f"{final['knn_top1']:.4f}",
              f"{final.get('linear_top1', float('nan')):.4f}"]
             for (n, (evals, final)) in ((name(*key), value) for key, value in runs.items())],
        )
    )  # fmt: skip
    pairs = []
    for seed in SEEDS:
        right = {}
        for method in METHODS:
            path = TABLES / f"{name(method, seed)}_predictions.json"
            if path.exists():
                right[method] = correct(path)
        for a, b in combinations([m for m in ("carp_dec", "carp_kp", "carp") if m in right], 2):
            for classifier, d in paired_differences(right[a], right[b]).items():
                label = classifier.removesuffix("_top1")  # knn | linear
                pairs.append([f"{a} − {b}", seed, label, f"{d['difference']:+.2%}",
                              f"[{d['low']:+.2%}, {d['high']:+.2%}]"])  # fmt: skip
                summary.setdefault(f"{label}_differences", {})[f"{a}-{b}_s{seed}"] = d
    print("\nTest differences on the same 10 000 images (paired 95 % Wald interval; the linear probe's where")
    print("both runs saved its predictions):")
    print(table(["difference", "seed", "classifier", "accuracy", "95 % interval"], pairs))
    summary |= report_longer()
    fig, axes = plt.subplots(2, len(EPS), figsize=(14, 6.4), sharex=True, sharey=True, layout="constrained")
    colors = dict(zip(METHODS, ("tab:red", "tab:orange", "tab:blue"), strict=True))
    for (method, seed), (evals, _) in runs.items():
        steps = [r["step"] for r in evals]
        for row, pick in enumerate((measured, lambda r: r["unique"])):
            for ax, eps in zip(axes[row], EPS, strict=True):
                style = {"color": colors[method], "linestyle": "-" if seed == 0 else "--", "marker": "."}
                ax.plot(steps, [pick(r)[eps] for r in evals], **style, label=f"{method} seed {seed}")
    for ax, eps in zip(axes[0], EPS, strict=True):
        ax.set_title(f"unique@{eps}")
    axes[0][0].set_ylabel("student's learnable / GMM")
    axes[1][0].set_ylabel("teacher's EMA copy / GMM")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=6, fontsize=8)
    out = ROOT / "docs" / "figures" / "collapse_unique.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "collapse_study.json", summary)
    print(f"wrote {out} and {RESULTS / 'collapse_study.json'}")


if __name__ == "__main__":
    main()
