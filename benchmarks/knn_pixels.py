"""The floor every zoo model must clear: weighted k-NN (k = 20, T = 0.07) on raw Fashion-MNIST pixels.

python benchmarks/knn_pixels.py                               # pixels only
python benchmarks/knn_pixels.py --models dp-resnet18-fmnist   # and zoo models' features beside them

Each row is scored as it is and mean-centred (the bank's mean subtracted before the cosine), since
centring helps pixels by 1.5 points and a fair comparison gives features the same treatment. Writes
benchmarks/results/knn_pixels.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch import Tensor
from torch.utils.data import DataLoader

import protozoo
from protozoo.data import build_dataset
from protozoo.eval import extract_features, knn_accuracy
from protozoo.fashion_mnist import load_fashion_mnist


def _scores(bank: Tensor, bank_y: Tensor, test: Tensor, test_y: Tensor) -> tuple[float, float]:
    mean = bank.mean(0)
    return knn_accuracy(bank, bank_y, test, test_y), knn_accuracy(bank - mean, bank_y, test - mean, test_y)


def _model_features(name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backbone features of the 60 000 training images (bank) and the 10 000 test images, with the
    bank and queries of protozoo.eval.evaluate_model (the protocol of the zoo's numbers)."""
    model = protozoo.load(name)
    (bank_f, bank_y), (test_f, test_y) = (
        extract_features(
            model, DataLoader(build_dataset("fashion_mnist", split, transform=model.transform), 512)
        )
        for split in ("trainval", "test")
    )
    return bank_f, bank_y, test_f, test_y


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="*", default=[], help="zoo names or model folders to score beside pixels"
    )
    args = parser.parse_args()
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist("train"), load_fashion_mnist("test")
    rows = {"raw pixels": _scores(train_x.flatten(1) / 255.0, train_y, test_x.flatten(1) / 255.0, test_y)}
    for name in args.models:
        rows[name] = _scores(*_model_features(name))
    print("| features | k-NN top-1 | k-NN top-1, mean-centred |\n|---|---|---|")
    for name, (plain, centred) in rows.items():
        print(f"| {name} | {plain:.4f} | {centred:.4f} |")
    out = Path(__file__).parent / "results" / "knn_pixels.json"
    out.parent.mkdir(exist_ok=True)
    results = {
        name: {"knn_top1": plain, "knn_top1_centred": centred} for name, (plain, centred) in rows.items()
    }
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
