"""How many GMM components each relocation setting moves per check, on a run's fixed embeddings.

python benchmarks/relocation_churn.py RUN [--out JSON]   # e.g. runs/budget/fresh_s0 (a run folder)

The run's teacher at its last checkpoint encodes the val images and the two augmented global views of
every other training image, once. Its GMM is then continued for 2000 updates of 128 of those views
(drawn with a fixed seed, the encoder held still) under each setting in ``SETTINGS``: the run's own
relocation with one or two of ``OnlineGMM``'s relocation attributes changed. Per setting this prints
the components a check moves (dead or merged; mean over the last ten checks), how many components
moved at least once and at least three times, and at the end the components carrying ≥ 2 units of
mass, the prototypes dead on val and unique@0.1 among the live ones. A component that a check moves
and that wins under one unit before the next is moved again; this measures that churn. Writes
benchmarks/results/relocation_churn.json (or --out). About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from common import RESULTS, table, write_json
from dead_on_val import counts, encode, last_teacher
from torch import Tensor
from torch.utils.data import Subset

from protozoo.collapse import unique_prototypes

UPDATES, BATCH = 2000, 128
# setting -> OnlineGMM attributes that differ from the run's
SETTINGS = {
    "shared mass, every 50 updates": {"relocate_mass": "shared"},
    "fresh, every 50 updates": {"relocate_mass": "fresh"},
    "fresh, every 50, dead below 0.5 unit": {"relocate_mass": "fresh", "split_min_mass": 0.5},
    "fresh, every 50, onto sampled embeddings": {"relocate_mass": "fresh", "relocate": "sampled"},
    "fresh, every 50, into the busiest region": {"relocate_mass": "fresh", "relocate": "busiest"},
    "shared mass, every 100 updates": {"relocate_mass": "shared", "split_every": 100},
    "fresh, every 100 updates": {"relocate_mass": "fresh", "split_every": 100},
    "fresh, every 100, dead below 2 units": {
        "relocate_mass": "fresh",
        "split_every": 100,
        "split_min_mass": 2.0,
    },
    "fresh, every 200 updates": {"relocate_mass": "fresh", "split_every": 200},
}


def churn(gmm: torch.nn.Module, views: Tensor, val: Tensor, setting: dict[str, object]) -> dict[str, float]:
    """Continue a copy of ``gmm`` with ``setting`` on batches of ``views``: its movers, then its state."""
    gmm = copy.deepcopy(gmm)
    for name, value in setting.items():
        setattr(gmm, name, value)
    gmm.recent_mass.zero_()
    gmm.num_updates.zero_()
    moves: list[Tensor] = []
    movers = gmm._movers

    def recorded() -> Tensor:  # the movers each check picks, as the check uses them
        moves.append(movers())
        return moves[-1]

    gmm._movers = recorded
    draws = torch.Generator().manual_seed(0)
    for _ in range(UPDATES):
        gmm.update(views[torch.randint(len(views), (BATCH,), generator=draws)])
    moved = torch.stack(moves)  # (checks, K)
    times = moved.sum(0)  # (K,) how often each component moved
    live = counts(val, gmm.prototypes) > 0
    return {
        "movers_per_check": float(moved[-10:].sum(1).float().mean()),
        "moved_once": int((times >= 1).sum()),
        "moved_3_times": int((times >= 3).sum()),
        "carrying": int((gmm.mass >= 2).sum()),
        "dead_val": int((~live).sum()),
        "unique_0.1_live": unique_prototypes(gmm.prototypes[live], 0.1) / int(live.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "relocation_churn.json")
    args = parser.parse_args()
    trainer, model, step = last_teacher(args.run, "relocation_churn")
    (val,) = encode(model, trainer.val_set)
    views = torch.cat(encode(model, Subset(trainer.train_set, range(0, len(trainer.train_set), 2))))
    summary = {name: churn(model.prototype_source, views, val, s) for name, s in SETTINGS.items()}
    keys = list(next(iter(summary.values())))
    rows = [
        [name, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())]
        for name, r in summary.items()
    ]
    print(table(["setting", *keys], rows))
    write_json(args.out, {"run": str(args.run), "step": step, "settings": summary})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
