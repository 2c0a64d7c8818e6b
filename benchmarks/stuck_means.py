"""How many of a run's GMM components still sit on the single embedding a relocation moved them onto.

python benchmarks/stuck_means.py RUN [RUN ...] [--out JSON]   # run folders, e.g. runs/zoo_v7

Every embedding is a unit vector and the mean of a component that owns a spread of them lies inside the
sphere (|μ| about 0.75-0.8 on the default's), so a mean of norm near 1 belongs to a component whose
data is one point: in practice one that a relocation placed onto an embedding and that has hardly
moved since (with ``gmm_relocate_mass=shared`` it starts with half its owner's mass, worth tens of
embeddings it never saw). From the last checkpoint's teacher alone, this prints, per run, the
components with |μ| > 0.9 and > 0.99, the median |μ|, the median and least mass and how many hold
the least (a check moves its movers at one mass with ``least`` or ``fresh``). Writes
benchmarks/results/stuck_means.json (or --out). A few seconds per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, table, write_json
from safetensors import safe_open

STUCK = 0.9  # a mean this close to the unit sphere: its component's data is one point


def stuck(run: Path) -> dict[str, float]:
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    with safe_open(last / "teacher.safetensors", framework="pt") as f:  # the means alone, not the weights
        norms = f.get_tensor("prototype_source.means").float().norm(dim=1)
        mass = f.get_tensor("prototype_source.mass").float()
    return {
        "step": int(last.name.split("_")[1]),
        "above_0.9": int((norms > STUCK).sum()),
        "above_0.99": int((norms > 0.99).sum()),
        "median_norm": float(norms.median()),
        "median_mass": float(mass.median()),
        "least_mass": float(mass.min()),
        "at_least_mass": int((mass == mass.min()).sum()),  # with least / fresh: those moved at the last check
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "stuck_means.json")
    args = parser.parse_args()
    summary = {str(run): stuck(run) for run in args.runs}
    rows = [
        [run, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())]
        for run, r in summary.items()
    ]
    print(table(["run", *next(iter(summary.values()))], rows))
    write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
