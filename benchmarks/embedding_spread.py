"""How distinct can prototypes that follow the data be? The unique fractions of the embeddings themselves.

python benchmarks/embedding_spread.py [MODEL ...]   # default: dp-resnet18-fmnist

Prototypes fitted to a model's embeddings (the GMM's means) can only be as far apart as the embeddings
they summarise. For each model this encodes 20 000 training and the 10 000 test images of
Fashion-MNIST and reports, at the paper's four eps, the unique fractions (Definition 2.1) of

- 1024 test embeddings drawn at random (what the data alone gives), and
- K = 1024 spherical k-means centroids fitted to the training embeddings (30 Lloyd iterations from
  random training embeddings; every centroid live), counted among the centroids that are the
  nearest of at least one test embedding.

Writes benchmarks/results/embedding_spread.json. Seeded; about a minute per model on 2 cores.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import RESULTS, table, write_json

import protozoo
from protozoo.collapse import EPS_GRID, collapse_report
from protozoo.data import build_dataset


@torch.no_grad()
def embeddings(model: protozoo.ProtoModel, split: str, n: int) -> torch.Tensor:
    """(n, D) normalised head embeddings of n images of the split drawn with a fixed seed."""
    ds = build_dataset("fashion_mnist", split, transform=model.transform)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
    x = torch.stack([ds[int(i)][0] for i in idx])
    return torch.cat([model(b).embeddings.float() for b in x.split(500)])


def spherical_kmeans(x: torch.Tensor, k: int, iterations: int = 30) -> torch.Tensor:
    """(k, D) unit centroids by Lloyd's algorithm on cosine similarity; empty clusters keep their centroid."""
    c = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:k]].clone()
    for _ in range(iterations):
        winners = (x @ c.T).argmax(1)
        sums = torch.zeros_like(c).index_add_(0, winners, x)
        filled = torch.bincount(winners, minlength=k)[:, None] > 0
        c = torch.where(filled, F.normalize(sums, dim=1), c)
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["dp-resnet18-fmnist"])
    parser.add_argument("--k", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    summary, rows = {}, []
    for name in args.models:
        model = protozoo.load(name).eval()
        train, test = embeddings(model, "train", 20_000), embeddings(model, "test", 10_000)
        sample = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[: args.k]]
        centroids = spherical_kmeans(train, args.k)
        report = collapse_report(centroids, assignments=(test @ centroids.T).argmax(1))
        random_unique = collapse_report(sample).unique
        summary[name] = {
            "random_test_embeddings": random_unique,
            "kmeans_live": report.live,
            "kmeans_unique_live": report.unique_live,
        }
        for label, fractions in (
            ("random test embeddings", random_unique),
            ("k-means, among live", report.unique_live),
        ):
            rows.append([name, label, *(f"{fractions[str(e)]:.3f}" for e in EPS_GRID)])
        print(f"{name}: k-means centroids live on test: {report.live} of {args.k}", flush=True)
    print(table(["model", f"{args.k} points", *(f"unique@{e}" for e in EPS_GRID)], rows))
    out = RESULTS / "embedding_spread.json"
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
