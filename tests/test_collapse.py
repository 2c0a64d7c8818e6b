import json
import math

import numpy as np
import pytest
import torch

from protozoo.collapse import (
    EPS_GRID,
    CollapseReport,
    collapse_report,
    nearest_neighbour_cosine,
    plot_nn_cosine_histogram,
    plot_unique_over_steps,
    unique_fractions,
    unique_prototypes,
    usage,
)


def naive_unique(x: np.ndarray, eps: float) -> int:
    """Definition 2.1 straight from the text: loops over rows, cosine from scratch."""
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x.tolist()]
    covered = [False] * len(rows)
    count = 0
    for i, a in enumerate(rows):
        if covered[i]:
            continue
        count += 1
        for j in range(i + 1, len(rows)):
            if not covered[j] and 1 - sum(p * q for p, q in zip(a, rows[j], strict=True)) < eps:
                covered[j] = True
    return count


def clustered(k: int, d: int, clusters: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g, dtype=torch.float64)
    return centres[torch.randint(clusters, (k,), generator=g)] + noise * torch.randn(
        k, d, generator=g, dtype=torch.float64
    )


def unit_pair(cos: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0], [cos, math.sqrt(1 - cos * cos)]], dtype=torch.float64)


def test_noisy_copies_of_one_vector_are_one_prototype():
    x = torch.randn(1, 32).repeat(200, 1) + 1e-3 * torch.randn(200, 32)
    assert all(unique_prototypes(x, eps) == 1 for eps in EPS_GRID)


@pytest.mark.parametrize("eps", EPS_GRID)
def test_orthonormal_rows_are_all_unique(eps):
    q, _ = torch.linalg.qr(torch.randn(48, 48))
    assert unique_prototypes(q, eps) == 48
    assert unique_prototypes(q.numpy(), eps, chunk_size=5) == 48


@pytest.mark.parametrize("eps", EPS_GRID)
@pytest.mark.parametrize("offset, expected", [(1e-4, 1), (-1e-4, 2)])
def test_threshold_is_strict_one_minus_cos_below_eps(eps, offset, expected):
    # cos just above 1 - eps means 1 - cos just below eps: covered
    assert unique_prototypes(unit_pair(1 - eps + offset), eps) == expected
    assert unique_prototypes(unit_pair(1 - eps + offset).float(), eps) == expected


def test_scan_order_decides_the_representatives():
    # a-b and b-c are within eps = 0.1 (cos 20 deg = 0.94), a-c is not (cos 40 deg = 0.77)
    a, b, c = (torch.tensor([math.cos(math.radians(t)), math.sin(math.radians(t))]) for t in (0, 20, 40))
    assert unique_prototypes(torch.stack([a, b, c]), eps=0.1) == 2  # a covers b, c stays
    assert unique_prototypes(torch.stack([b, a, c]), eps=0.1) == 1  # b covers both


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("eps", [0.01, *EPS_GRID])
def test_matches_naive_reference(seed, eps):
    x = clustered(k=150, d=8, clusters=12, noise=0.4, seed=seed)
    expected = naive_unique(x.numpy(), eps)
    assert unique_prototypes(x, eps, chunk_size=16) == expected
    assert unique_prototypes(x, eps, chunk_size=1024) == expected


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 299, 300, 4096])
def test_chunk_size_does_not_change_the_answer(chunk_size):
    x = clustered(k=300, d=16, clusters=40, noise=0.3, seed=3)
    for eps in EPS_GRID:
        assert unique_prototypes(x, eps, chunk_size=chunk_size) == unique_prototypes(x, eps, chunk_size=300)


def test_unique_fractions_keys_and_values():
    x = torch.cat([torch.eye(4), torch.eye(4)])  # 8 rows, 4 directions
    assert unique_fractions(x) == {"0.025": 0.5, "0.1": 0.5, "0.25": 0.5, "0.5": 0.5}
    assert unique_fractions(x, eps_grid=(0.1,)) == {"0.1": 0.5}


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.ones(5), ValueError, r"shape \(K, d\).*got shape \(5,\)"),
        (torch.ones(0, 3), ValueError, r"K >= 1.*\(0, 3\)"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "NaN or Inf"),
        (torch.tensor([[1.0, 0.0], [0.0, 0.0]]), ValueError, r"all-zero rows \(rows \[1\]"),
        ([[1.0, 0.0]], TypeError, "got list"),
    ],
)
def test_invalid_prototypes_raise(bad, error, match):
    with pytest.raises(error, match=match):
        unique_prototypes(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0.0}, r"eps must be a finite number > 0, got 0.0"),
        ({"eps": -0.1}, "eps must be"),
        ({"chunk_size": 0}, "chunk_size must be a positive int, got 0"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        unique_prototypes(torch.eye(3), **kwargs)


def test_unique_fractions_rejects_empty_grid():
    with pytest.raises(ValueError, match="at least one threshold"):
        unique_fractions(torch.eye(3), eps_grid=())


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_nearest_neighbour_cosine_matches_full_matrix(chunk_size):
    x = torch.randn(20, 6, dtype=torch.float64)
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.T
    sim.fill_diagonal_(-math.inf)
    torch.testing.assert_close(nearest_neighbour_cosine(x, chunk_size=chunk_size), sim.amax(1))


def test_nearest_neighbour_cosine_hand_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(nearest_neighbour_cosine(x), torch.tensor([1.0, 1.0, 0.0]))


def test_nearest_neighbour_cosine_errors():
    with pytest.raises(ValueError, match="at least 2 prototypes"):
        nearest_neighbour_cosine(torch.ones(1, 4))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        nearest_neighbour_cosine(torch.eye(3), chunk_size=-1)


K = 8


@pytest.mark.parametrize(
    "assignments, num_prototypes, perplexity, dead",
    [
        (torch.arange(K).repeat(3), K, 1.0, 0.0),  # every prototype used equally
        (torch.zeros(10, dtype=torch.long), K, 1 / K, (K - 1) / K),  # all to one
        (torch.eye(K), None, 1.0, 0.0),  # one-hot probabilities, uniform mean
        (torch.eye(K)[torch.zeros(5, dtype=torch.long)], K, 1 / K, (K - 1) / K),
        (torch.tensor([0, 0, 1, 1]), 4, 0.5, 0.5),  # two of four used equally: exp(log 2) / 4
    ],
)
def test_usage_hand_cases(assignments, num_prototypes, perplexity, dead):
    out = usage(assignments, num_prototypes)
    assert out["perplexity"] == pytest.approx(perplexity)
    assert out["dead"] == pytest.approx(dead)


def test_usage_soft_assignments_use_the_mean():
    # both rows spread evenly over the first two prototypes, but argmax picks only the first
    out = usage(torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    assert out == pytest.approx({"perplexity": 0.5, "dead": 0.75})


@pytest.mark.parametrize(
    "assignments, num_prototypes, match",
    [
        (torch.tensor([0, 1]), None, "num_prototypes is required"),
        (torch.tensor([0, 4]), 4, r"in \[0, 4\), got values from 0 to 4"),
        (torch.tensor([0.0, 1.0]), 4, "integer argmax indices"),
        (torch.ones(2, 3), None, "rows must sum to 1"),
        (torch.tensor([[1.5, -0.5]]), None, ">= 0"),
        (torch.eye(3), 4, r"num_prototypes=4 does not match assignments of shape \(3, 3\)"),
        (torch.ones(2, 2, 2), None, r"got shape \(2, 2, 2\)"),
        (torch.zeros(0, dtype=torch.long), 3, r"N >= 1, got shape \(0,\)"),
        (torch.tensor([0]), 0, "num_prototypes must be a positive int"),
    ],
)
def test_usage_errors(assignments, num_prototypes, match):
    with pytest.raises(ValueError, match=match):
        usage(assignments, num_prototypes)


def test_usage_rejects_non_tensor():
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        usage([0, 1], 2)


def test_collapse_report():
    x = torch.cat([torch.eye(4), torch.eye(4)])
    report = collapse_report(x, assignments=torch.tensor([0, 1, 2, 3, 0]))
    assert isinstance(report, CollapseReport)
    assert report.num_prototypes == 8
    assert report.unique_count == {"0.025": 4, "0.1": 4, "0.25": 4, "0.5": 4}
    assert report.unique["0.5"] == 0.5
    assert report.nn_cosine_mean == pytest.approx(1.0) and report.nn_cosine_max == pytest.approx(1.0)
    assert report.dead == pytest.approx(0.5)
    assert json.loads(json.dumps(report.to_dict()))["unique_count"]["0.1"] == 4
    text = str(report)
    assert "0.025" in text and "dead" in text
    bare = collapse_report(x)
    assert bare.perplexity is None and bare.dead is None and "dead" not in str(bare)


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(b"\x89PNG")


def test_plot_unique_over_steps(tmp_path):
    steps = [0, 100, 200]
    curve = [{str(e): 1.0 - 0.2 * i for e in EPS_GRID} for i in range(3)]
    path = tmp_path / "plots" / "collapse.png"
    plot_unique_over_steps({"joint": (steps, curve), "decoupled": (steps, curve[::-1])}, path)
    assert is_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["collapse.png"]  # no temp file left behind
    plot_unique_over_steps({"run": (steps, curve)}, path, title="again")  # overwrites in place
    assert is_png(path)


@pytest.mark.parametrize(
    "curves, match",
    [
        ({}, "curves is empty"),
        ({"a": ([0, 1], [{str(e): 1.0 for e in EPS_GRID}])}, "'a' has 2 steps and 1 unique entries"),
        ({"a": ([0], [{"0.1": 1.0}])}, r"without the eps keys \['0.025', '0.25', '0.5'\]"),
    ],
)
def test_plot_unique_over_steps_errors(tmp_path, curves, match):
    with pytest.raises(ValueError, match=match):
        plot_unique_over_steps(curves, tmp_path / "x.png")


def test_plot_nn_cosine_histogram(tmp_path):
    path = tmp_path / "nn.png"
    plot_nn_cosine_histogram(clustered(64, 8, 5, 0.2, seed=0), path)
    assert is_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["nn.png"]
