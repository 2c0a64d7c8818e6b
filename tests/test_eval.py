import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from protozoo.eval import (
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_predict,
    linear_probe,
    per_group_accuracy,
)


def blobs(n: int, d: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, d, generator=torch.Generator().manual_seed(123))
    labels = torch.randint(classes, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g), labels


def loader(n: int = 10, batch: int = 4):
    x = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 3
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


class Net(nn.Module):
    def __init__(self, wrap: bool):
        super().__init__()
        self.wrap = wrap
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 6), nn.Dropout(0.5))

    def forward(self, x):
        assert not self.training and not torch.is_grad_enabled()
        f = self.body(x)
        return SimpleNamespace(features=f, embeddings=f[:, :2]) if self.wrap else f


@pytest.mark.parametrize(
    "wrap, field, dim", [(False, "features", 6), (True, "features", 6), (True, "embeddings", 2)]
)
def test_extract_features(wrap, field, dim):
    model = Net(wrap)
    model.body[2].eval()  # a submodule in eval mode must stay so
    features, labels = extract_features(model, loader(), field=field)
    assert features.shape == (10, dim) and features.dtype == torch.float32
    torch.testing.assert_close(labels, torch.arange(10) % 3)
    assert model.training and model.body[1].training and not model.body[2].training


def test_extract_features_errors():
    model = Net(wrap=True)
    with pytest.raises(TypeError, match="SimpleNamespace has no tensor attribute 'assignments'"):
        extract_features(model, loader(), field="assignments")
    assert model.training  # restored after the error too
    with pytest.raises(ValueError, match="yielded no batches"):
        extract_features(model, [])
    with pytest.raises(ValueError, match="4 feature rows but 3 labels"):
        extract_features(model, [(torch.randn(4, 3, 4, 4), torch.arange(3))])


def test_knn_hand_example():
    deg60 = math.radians(60)
    train = torch.tensor(
        [[1.0, 0.0], [math.cos(deg60), math.sin(deg60)], [math.cos(deg60), -math.sin(deg60)], [-1.0, 0]]
    )
    labels = torch.tensor([0, 1, 1, 1])
    test = torch.tensor([[2.0, 0.0]])  # cos 1 to class 0, cos 0.5 to two of class 1, -1 to the last
    # T = 0.07: exp(1/0.07) > 2 exp(0.5/0.07), the single close neighbour wins
    assert knn_predict(train, labels, test, k=3, temperature=0.07).tolist() == [0]
    # T = 10: exp(0.1) < 2 exp(0.05), the majority wins
    assert knn_predict(train, labels, test, k=3, temperature=10.0).tolist() == [1]
    # k = 1: nearest only
    assert knn_predict(train, labels, -test, k=1).tolist() == [1]


def naive_knn(train, labels, test, k, temperature):
    preds = []
    for t in test.tolist():
        sims = []
        for f, y in zip(train.tolist(), labels.tolist(), strict=True):
            dot = sum(a * b for a, b in zip(t, f, strict=True))
            sims.append((dot / math.sqrt(sum(a * a for a in t) * sum(b * b for b in f)), y))
        votes = {}
        for sim, y in sorted(sims, reverse=True)[:k]:
            votes[y] = votes.get(y, 0.0) + math.exp(sim / temperature)
        preds.append(max(votes, key=votes.get))
    return preds


@pytest.mark.parametrize("k, temperature, chunk_size", [(1, 0.07, 7), (5, 0.07, 1024), (20, 0.5, 3)])
def test_knn_matches_naive_loop(k, temperature, chunk_size):
    train, labels = blobs(60, 5, 4, spread=3.0, seed=0)
    test, _ = blobs(25, 5, 4, spread=3.0, seed=1)
    preds = knn_predict(train, labels, test, k=k, temperature=temperature, chunk_size=chunk_size)
    assert preds.tolist() == naive_knn(train, labels, test, k, temperature)


def test_knn_accuracy_on_separable_data():
    train, train_y = blobs(200, 8, 5, spread=0.3, seed=0)
    test, test_y = blobs(50, 8, 5, spread=0.3, seed=1)
    assert knn_accuracy(train, train_y, test, test_y, k=10) == 1.0
    assert knn_predict(train, train_y, test, num_classes=9).max() < 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_labels": torch.arange(5)}, "has 6 rows but its labels have 5"),
        ({"k": 7}, r"k must be an int in \[1, 6\].*got 7"),
        ({"k": 0}, r"k must be an int in \[1, 6\]"),
        (
            {"train_features": torch.zeros(0, 3), "train_labels": torch.zeros(0, dtype=torch.long)},
            "non-empty",
        ),
        ({"test_features": torch.zeros(0, 3)}, r"test_features must be a non-empty \(N, F\) tensor"),
        ({"test_features": torch.ones(2, 4)}, "dimension 4 but train_features 3"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"num_classes": 2}, "num_classes=2 but train_labels go up to 2; pass at least 3"),
        ({"train_labels": torch.tensor([0.0, 1, 2, 0, 1, 2])}, "1-D integer tensor"),
        ({"train_labels": torch.tensor([-1, 1, 2, 0, 1, 2])}, "must be >= 0"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
    ],
)
def test_knn_errors(kwargs, match):
    args = {
        "train_features": torch.randn(6, 3),
        "train_labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "test_features": torch.randn(2, 3),
        "k": 2,
    }
    with pytest.raises(ValueError, match=match):
        knn_predict(**(args | kwargs))


def test_knn_rejects_non_tensors():
    with pytest.raises(TypeError, match="train_features must be a torch.Tensor, got list"):
        knn_predict([[1.0]], torch.tensor([0]), torch.ones(1, 1), k=1)
    with pytest.raises(TypeError, match="labels for train_features must be a torch.Tensor, got list"):
        knn_predict(torch.ones(1, 1), [0], torch.ones(1, 1), k=1)


def test_knn_accuracy_length_mismatch():
    with pytest.raises(ValueError, match="test_features has 2 rows but its labels have 3"):
        knn_accuracy(torch.randn(4, 3), torch.arange(4), torch.randn(2, 3), torch.arange(3), k=2)


def test_linear_probe_beats_chance_and_is_deterministic():
    # classes split by linear functions of features with very different scales: standardisation matters
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 16, generator=g) * torch.logspace(-2, 2, 16)
    w = torch.randn(16, 4, generator=g) / torch.logspace(-2, 2, 16)[:, None]
    y = (x @ w).argmax(1)
    kwargs = {"epochs": 40, "batch_size": 200, "lr": 0.05}
    acc = linear_probe(x[:600], y[:600], x[600:], y[600:], **kwargs)
    assert acc > 0.9  # chance is about 0.25
    assert acc == linear_probe(x[:600], y[:600], x[600:], y[600:], **kwargs)
    preds = linear_predict(x[:600], y[:600], x[600:], **kwargs)  # the labels behind that accuracy
    assert preds.shape == (200,) and (preds == y[600:]).float().mean().item() == acc


def test_linear_probe_accepts_inference_tensors():
    train, train_y = blobs(100, 4, 3, spread=0.3, seed=0)
    with torch.inference_mode():
        train = train.clone()
    assert linear_probe(train, train_y, train, train_y, epochs=10, batch_size=20, lr=0.05) > 0.9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_labels": torch.arange(3)}, "test_features has 2 rows but its labels have 3"),
        ({"epochs": 0}, "epochs must be a positive int, got 0"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"test_features": torch.ones(2, 5)}, "dimension 5 but train_features 3"),
    ],
)
def test_linear_probe_errors(kwargs, match):
    args = {
        "train_features": torch.randn(6, 3),
        "train_labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "test_features": torch.randn(2, 3),
        "test_labels": torch.tensor([0, 1]),
    }
    with pytest.raises(ValueError, match=match):
        linear_probe(**(args | kwargs))


def test_per_group_accuracy():
    preds = torch.tensor([0, 1, 2, 2, 3, 0])
    labels = torch.tensor([0, 1, 1, 2, 3, 3])
    out = per_group_accuracy(preds, labels, {"head": [0, 1], "tail": [2, 3], "absent": [7]})
    assert out["head"] == pytest.approx(2 / 3) and out["tail"] == pytest.approx(2 / 3)
    assert math.isnan(out["absent"])


@pytest.mark.parametrize(
    "preds, groups, match",
    [
        (torch.tensor([0, 1]), {"a": [0]}, r"same non-zero length, got \(2,\) and \(3,\)"),
        (torch.tensor([0, 1, 2]), {}, "groups is empty"),
        (torch.tensor([0, 1, 2]), {"tail": []}, "group 'tail' lists no classes"),
    ],
)
def test_per_group_accuracy_errors(preds, groups, match):
    with pytest.raises(ValueError, match=match):
        per_group_accuracy(preds, torch.tensor([0, 1, 2]), groups)
