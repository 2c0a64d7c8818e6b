"""KoLeoProtoLoss against a naive loop implementation of method.md §6, hand values and errors."""

from __future__ import annotations

import math

import pytest
import torch

from protozoo.losses import KoLeoProtoLoss


def naive_koleo(prototypes, delta):
    """Straight from the formula: explicit loops over prototype pairs."""
    c = [row.double() / row.double().norm() for row in prototypes]
    terms = []
    for k in range(len(c)):
        nearest = min((c[k] - c[j]).norm() for j in range(len(c)) if j != k)
        terms.append(torch.log(nearest + delta))
    return -torch.stack(terms).mean()


@pytest.mark.parametrize(("k", "d", "chunk_size"), [(7, 3, 1), (7, 3, 3), (7, 3, 4096), (12, 5, 5)])
def test_matches_naive_loops(k, d, chunk_size):
    prototypes = torch.randn(k, d) * 3
    out = KoLeoProtoLoss(delta=1e-3, chunk_size=chunk_size)(prototypes)
    torch.testing.assert_close(out["loss"].double(), naive_koleo(prototypes, 1e-3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("prototypes", "expected"),
    [
        (torch.tensor([[1.0, 0.0], [-3.0, 0.0]]), -math.log(2.0)),  # antipodal: distance 2
        (torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -5.0]]), -math.log(math.sqrt(2))),
    ],
)
def test_hand_values(prototypes, expected):
    assert KoLeoProtoLoss(chunk_size=1)(prototypes)["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_autocast_computes_in_fp32():
    prototypes = torch.randn(9, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = KoLeoProtoLoss(chunk_size=4)(prototypes)["loss"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, KoLeoProtoLoss()(prototypes)["loss"])


def test_gradient_spreads_close_prototypes():
    prototypes = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]], requires_grad=True)
    KoLeoProtoLoss()(prototypes)["loss"].backward()
    assert prototypes.grad is not None
    # Descending the loss moves the two close prototypes apart along the second axis.
    assert prototypes.grad[0, 1] > 0 and prototypes.grad[1, 1] < 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": 0.0}, r"delta must be positive.*got 0.0"),
        ({"chunk_size": 0}, r"chunk_size must be a positive number of rows, got 0"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KoLeoProtoLoss(**kwargs)


@pytest.mark.parametrize(
    ("prototypes", "error", "match"),
    [
        (torch.randn(1, 4), ValueError, r"K >= 2 rows.*got shape \(1, 4\)"),
        (torch.randn(4), ValueError, r"2-D \(K, D\) tensor.*got shape \(4,\)"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, r"prototypes contain NaN or Inf"),
        ([[1.0, 0.0], [0.0, 1.0]], TypeError, r"prototypes must be a \(K, D\) tensor, got list"),
    ],
)
def test_forward_errors(prototypes, error, match):
    with pytest.raises(error, match=match):
        KoLeoProtoLoss()(prototypes)
