"""The floor every zoo model must clear: weighted k-NN (k = 20, T = 0.07) on raw Fashion-MNIST pixels.

python benchmarks/knn_pixels.py   # prints the accuracy, writes benchmarks/results/knn_pixels.json
"""

from __future__ import annotations

import json
from pathlib import Path

from protozoo.eval import knn_accuracy
from protozoo.fashion_mnist import load_fashion_mnist


def main() -> None:
    """k-NN of flattened pixels in [0, 1], as they are and mean-centred: 60 000 train images as bank."""
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist("train"), load_fashion_mnist("test")
    train_f, test_f = train_x.flatten(1) / 255.0, test_x.flatten(1) / 255.0
    mean = train_f.mean(0)
    rows = {
        "raw pixels": knn_accuracy(train_f, train_y, test_f, test_y),
        "raw pixels, mean-centred": knn_accuracy(train_f - mean, train_y, test_f - mean, test_y),
    }
    print("| features | k-NN top-1 (Fashion-MNIST test) |\n|---|---|")
    for name, acc in rows.items():
        print(f"| {name} | {acc:.4f} |")
    out = Path(__file__).parent / "results" / "knn_pixels.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
