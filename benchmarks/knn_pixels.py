"""The floor every zoo model must clear: weighted k-NN (k = 20, T = 0.07) on raw Fashion-MNIST pixels.

python benchmarks/knn_pixels.py                               # pixels only
python benchmarks/knn_pixels.py --models dp-resnet18-fmnist   # and zoo models' features beside them
python benchmarks/knn_pixels.py --models runs/<run>/model --against dp-resnet18-fmnist   # a candidate
python benchmarks/knn_pixels.py --linear ...                  # the linear probe beside the k-NN

Each row is scored as it is and mean-centred (the bank's mean subtracted before the cosine), since
centring helps pixels by 1.5 points and a fair comparison gives features the same treatment. Each
model is also compared with pixels image by image on the same 10 000 test images: the difference in
accuracy with its paired 95 % interval (Wald, from the images only one of the two gets right, as in
McNemar's test), so "beats pixels" can be told from the noise of one test set; ``--against`` compares
each model with another one the same way (a candidate against the zoo model it would replace).
``--linear`` adds the linear probe of protozoo.eval.linear_predict (the one of a run's final evaluation)
on the same bank and test images, compared image by image the same way. Writes
benchmarks/results/knn_pixels.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import RESULTS, write_json
from torch import Tensor
from torch.utils.data import DataLoader

import protozoo
from protozoo.data import build_dataset
from protozoo.eval import extract_features, knn_predict, linear_predict
from protozoo.fashion_mnist import load_fashion_mnist


def _correct(bank: Tensor, bank_y: Tensor, test: Tensor, test_y: Tensor, linear: bool) -> dict[str, Tensor]:
    """(M,) booleans per classifier: is each test image classified right by the k-NN, plain and
    mean-centred, and (``linear``) by the linear probe."""
    mean = bank.mean(0)
    right = {
        "knn_top1": knn_predict(bank, bank_y, test) == test_y,
        "knn_top1_centred": knn_predict(bank - mean, bank_y, test - mean) == test_y,
    }
    if linear:
        right["linear_top1"] = linear_predict(bank, bank_y, test) == test_y
    return right


def correct(path: Path) -> dict[str, Tensor]:
    """(N,) booleans per classifier from a run's predictions.json: which test images its final
    evaluation classifies right, by the k-NN ("knn_top1") and, where it saved them, the linear probe's
    predictions ("linear_top1")."""
    record = json.loads(path.read_text())
    labels = torch.tensor(record["labels"])
    keys = {"knn_top1": "preds", "linear_top1": "linear_preds"}
    return {name: torch.tensor(record[key]) == labels for name, key in keys.items() if key in record}


def paired_differences(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """:func:`paired_difference` for each classifier that both ``a`` and ``b`` (as :func:`correct`
    returns them) hold, keyed by classifier."""
    return {k: paired_difference(a[k], b[k]) for k in a if k in b}


def paired_difference(a: Tensor, b: Tensor) -> dict[str, float]:
    """Accuracy of ``a`` minus that of ``b`` on the same images, with its 95 % Wald interval.

    ``a`` and ``b`` are (n,) booleans, or (S, n) for S pairs of runs (one per seed) scored on the same
    n images, whose differences are averaged. With x_i the mean over pairs of a_i - b_i, d = mean(x)
    and se = std(x) / sqrt(n). For one pair only the images one of them gets right and the other wrong
    move it: with n_ab and n_ba of those, se = sqrt(n_ab + n_ba - n d²) / n, as in McNemar's test.
    """
    x = (a.double() - b.double()).reshape(-1, a.shape[-1]).mean(0)
    d = x.mean().item()
    half = 1.96 * x.std(correction=0).item() / len(x) ** 0.5
    return {"difference": d, "low": d - half, "high": d + half}


# each classifier's paired differences: the key they take against pixels and the suffix against --against
_VS = {
    "knn_top1": ("vs_pixels", ""),
    "knn_top1_centred": ("vs_pixels_centred", ", centred"),
    "linear_top1": ("vs_pixels_linear", ", linear"),
}


def _accuracies(right: dict[str, Tensor]) -> dict[str, float]:
    return {k: v.float().mean().item() for k, v in right.items()}


def _show(d: dict[str, float] | None) -> str:
    return "" if d is None else f"{d['difference']:+.2%} [{d['low']:+.2%}, {d['high']:+.2%}]"


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
    parser.add_argument(
        "--against", help="a zoo name or model folder that each model is also compared with, image by image"
    )
    parser.add_argument("--linear", action="store_true", help="also the linear probe, compared the same way")
    parser.add_argument("--out", type=Path, default=RESULTS / "knn_pixels.json")
    args = parser.parse_args()
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist("train"), load_fashion_mnist("test")
    pixels = _correct(train_x.flatten(1) / 255.0, train_y, test_x.flatten(1) / 255.0, test_y, args.linear)
    reference = _correct(*_model_features(args.against), args.linear) if args.against else None
    rows = {"raw pixels": pixels} | ({args.against: reference} if reference is not None else {})
    results: dict[str, dict] = {name: _accuracies(right) for name, right in rows.items()}
    for name in args.models:
        right = _correct(*_model_features(name), args.linear)
        results[name] = _accuracies(right)
        for k, (key, suffix) in _VS.items():
            if k in right:
                results[name][key] = paired_difference(right[k], pixels[k])
                if reference is not None:
                    results[name][f"vs {args.against}{suffix}"] = paired_difference(right[k], reference[k])
    header = "| features | k-NN top-1 | minus pixels [95 % CI] | mean-centred | minus pixels, both centred |"
    print(header + " linear probe | minus pixels |" * args.linear)
    print("|---|---|---|---|---|" + "---|---|" * args.linear)
    for name, r in results.items():
        cells = [f"{r[k]:.4f} | {_show(r.get(key))}" for k, (key, _) in _VS.items() if k in r]
        print(f"| {name} | {' | '.join(cells)} |")
    if reference is not None:
        for name in args.models:
            diffs = [
                f"{k}: {_show(results[name][f'vs {args.against}{suffix}'])}"
                for k, (_, suffix) in _VS.items()
                if k in results[name]
            ]
            print(f"{name} minus {args.against}: " + "; ".join(diffs))
    write_json(args.out, results)


if __name__ == "__main__":
    main()
