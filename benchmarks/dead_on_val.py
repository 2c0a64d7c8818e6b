"""Why a decoupled run leaves prototypes dead on the val split: sampling, and the views the GMM fits.

python benchmarks/dead_on_val.py RUN [RUN ...] [--relocate busiest] [--updates N] [--points P] [--out JSON]

For each run, its teacher at the last checkpoint encodes the 5 000 val images, the 55 000 training
images (the evaluation transform) and the two augmented global views of every other training image
(the views the GMM is fitted to in training), and this prints

- the prototypes dead on val (never the argmax of a val image), and the number that sampling alone
  predicts from the training images' argmax shares p_k: Σ_k (1 − p_k)^5000;
- the prototypes dead on all 55 000 training images;
- how many of the val-dead have a GMM mean of norm above 0.9: a component still on the one embedding
  a relocation placed it on (benchmarks/stuck_means.py);
- the share of training images, of view 1 and of view 2 whose argmax is a val-dead prototype;
- the val dead left after continuing the run's GMM (its relocation included) for 1300 updates
  (``--updates``) of 128 fixed embeddings (``--points``), drawn with a fixed seed from the clean training
  images, from the augmented views or from each image's two views' mean direction (the encoder held
  still): what the GMM settles to on each kind of data (``gmm_fit`` clean, views, mean); ``--relocate``
  continues it with another placement.

Writes benchmarks/results/dead_on_val.json (or --out). About 4 minutes per run on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, table, write_json
from safetensors.torch import load_file
from stuck_means import STUCK
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from protozoo.prototypes import RELOCATIONS
from train.config import load_config
from train.engine import Trainer


@torch.no_grad()
def encode(model: torch.nn.Module, dataset: torch.utils.data.Dataset) -> list[Tensor]:
    """The normalised embeddings of every view a dataset yields: one (N, D) tensor per view."""
    parts: list[list[Tensor]] = []
    for x, _ in DataLoader(dataset, batch_size=500):
        views = x if isinstance(x, list) else [x]
        parts.append([model(v).embeddings.float() for v in views[:2]])
    return [torch.cat(column) for column in zip(*parts, strict=True)]


def counts(h: Tensor, prototypes: Tensor) -> Tensor:
    """(K,) how many rows of h have each prototype as their argmax."""
    return torch.bincount((h @ prototypes.T).argmax(1), minlength=len(prototypes))


def continued(
    gmm: torch.nn.Module, data: Tensor, val: Tensor, relocate: str | None, updates: int, points: int
) -> int:
    """Val dead after ``updates`` more online EM steps of the run's GMM on batches of ``points`` fixed
    embeddings, placing moved components by ``relocate`` (None: as the run did)."""
    gmm = copy.deepcopy(gmm)
    gmm.relocate = relocate or gmm.relocate
    draws = torch.Generator().manual_seed(0)
    for _ in range(updates):
        gmm.update(data[torch.randint(len(data), (points,), generator=draws)])
    return int((counts(val, gmm.prototypes) == 0).sum())


def last_teacher(run: Path, folder: str) -> tuple[Trainer, torch.nn.Module, int]:
    """A run's trainer (its datasets; outputs under run/folder), its teacher at the last checkpoint, in
    eval mode, and that checkpoint's step."""
    trainer = Trainer(load_config(run / "config.yaml", [f"output_dir={run / folder}"]))
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    trainer.teacher.load_state_dict(load_file(last / "teacher.safetensors"))
    return trainer, trainer.teacher.eval(), int(last.name.split("_")[1])


def diagnose(run: Path, relocate: str | None, updates: int, points: int) -> dict[str, float]:
    trainer, model, step = last_teacher(run, "dead_on_val")
    gmm, prototypes = model.prototype_source, model.prototypes.float()
    (val,) = encode(model, trainer.val_set)
    (train,) = encode(model, trainer.bank_set.dataset)  # every training image, the evaluation transform
    view1, view2 = encode(model, Subset(trainer.train_set, range(0, len(trainer.train_set), 2)))
    dead = counts(val, prototypes) == 0
    share = counts(train, prototypes).double() / len(train)
    return {
        "step": step,
        "dead_val": int(dead.sum()),
        "predicted_dead_val": float((1 - share).pow(len(val)).sum()),
        "dead_train": int((share == 0).sum()),
        "dead_val_stuck": int((dead & (gmm.means.norm(dim=1) > STUCK)).sum()),
        "to_val_dead_train": float(share[dead].sum()),
        "to_val_dead_view1": float(counts(view1, prototypes)[dead].sum() / len(view1)),
        "to_val_dead_view2": float(counts(view2, prototypes)[dead].sum() / len(view2)),
        **{
            f"continued_on_{kind}": continued(gmm, data, val, relocate, updates, points)
            for kind, data in [
                ("train", train),
                ("views", torch.cat([view1, view2])),
                ("mean", F.normalize(view1 + view2, dim=1)),
            ]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument(
        "--relocate",
        choices=RELOCATIONS,
        help="place the continued GMM's moved components so (default: as each run did)",
    )
    parser.add_argument("--updates", type=int, default=1300, help="online EM steps of the continued GMM")
    parser.add_argument("--points", type=int, default=128, help="fixed embeddings per continued step")
    parser.add_argument("--out", type=Path, default=RESULTS / "dead_on_val.json")
    args = parser.parse_args()
    summary = {str(run): diagnose(run, args.relocate, args.updates, args.points) for run in args.runs}
    keys = list(next(iter(summary.values())))
    rows = []
    for run, result in summary.items():
        rows.append([run, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in result.values())])
    print(table(["run", *keys], rows))
    write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
