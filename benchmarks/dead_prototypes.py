"""Where the dead prototypes are: the embedding subspace against the prototypes inside and outside it.

python benchmarks/dead_prototypes.py --models dp-resnet18-fmnist dp-vit-tiny-fmnist

For each model: the embeddings (unit-norm head outputs) of the first 3 000 Fashion-MNIST test images,
how many principal directions hold 90 / 99 / 99.9 % of their variance, and for the prototypes that are
some image's best match ("used") and the rest ("dead") the mean norm of their part inside the
embeddings' 99 % subspace (a random unit vector keeps sqrt(r / D) of its norm in an r-dimensional
subspace of D dimensions). Writes benchmarks/results/dead_prototypes.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

import protozoo
from protozoo.data import build_dataset

ENERGY = (0.9, 0.99, 0.999)


@torch.no_grad()
def diagnose(name: str, num_images: int = 3000) -> dict[str, float]:
    """Subspace dimensions of a zoo model's embeddings and where its used and dead prototypes lie."""
    model = protozoo.load(name).float().eval()
    images = Subset(build_dataset("fashion_mnist", "test", transform=model.transform), range(num_images))
    emb = torch.cat([model(x).embeddings for x, _ in DataLoader(images, batch_size=500)])
    _, s, vh = torch.linalg.svd(emb - emb.mean(0), full_matrices=False)
    cum = (s**2).cumsum(0) / (s**2).sum()
    dims = {f"dims_{e}": int((cum < e).sum()) + 1 for e in ENERGY}
    protos = model.prototypes.float()
    used = torch.zeros(len(protos), dtype=torch.bool)
    used[(emb @ protos.T).argmax(1).unique()] = True
    inside = (protos @ vh[: dims["dims_0.99"]].T).norm(dim=1)
    return {
        **dims,
        "embed_dim": emb.shape[1],
        "mean_norm": emb.mean(0).norm().item(),
        "used": int(used.sum()),
        "inside_used": inside[used].mean().item(),
        "inside_dead": inside[~used].mean().item(),
        "inside_random": (dims["dims_0.99"] / emb.shape[1]) ** 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["dp-resnet18-fmnist", "dp-vit-tiny-fmnist"])
    args = parser.parse_args()
    rows = {name: diagnose(name) for name in args.models}
    print("| model | dims 90 / 99 / 99.9 % of D | used of K | norm inside 99 %: used / dead / random |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        dims = " / ".join(str(r[f"dims_{e}"]) for e in ENERGY)
        print(
            f"| {name} | {dims} of {r['embed_dim']} | {r['used']} | "
            f"{r['inside_used']:.3f} / {r['inside_dead']:.3f} / {r['inside_random']:.3f} |"
        )
    out = Path(__file__).parent / "results" / "dead_prototypes.json"
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
