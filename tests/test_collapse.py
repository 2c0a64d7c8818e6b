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
    assert bare.perplexity is None and bare.dead is None and "usage perplexity" not in str(bare)


# ---- live and dead prototypes: 10 live rows in one cap of the sphere, 90 random rows no data uses ----
LIVE = torch.tensor([2, 7, 11, 30, 31, 45, 58, 66, 80, 99])


def live_and_dead() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 64, generator=g, dtype=torch.float64)  # random directions: far from each other
    cap = torch.zeros(64, dtype=torch.float64)
    cap[0] = 1.0
    # 1 - cos between live rows is about 0.14: distinct at eps 0.025 and 0.1, one prototype at 0.25 and 0.5
    x[LIVE] = cap + 0.05 * torch.randn(10, 64, generator=g, dtype=torch.float64)
    return x


def naive_live(x: torch.Tensor) -> dict[str, int]:
    return {str(eps): naive_unique(x[LIVE].numpy(), eps) for eps in EPS_GRID}


def test_report_counts_live_rows_from_assignments():
    x = live_and_dead()
    indices = LIVE.repeat(3)[torch.randperm(30, generator=torch.Generator().manual_seed(1))]
    for assignments in (indices, torch.nn.functional.one_hot(indices, 100).double() * 0.9 + 0.001):
        report = collapse_report(x, assignments=assignments)
        assert (report.used, report.live, report.carrying, report.min_mass) == (10, 10, None, None)
        assert report.dead == pytest.approx(0.9)
        assert report.unique_live_count == naive_live(x)
        assert report.unique_live == {key: c / 10 for key, c in naive_live(x).items()}
        assert report.unique_live["0.025"] == 1.0 and report.unique_live["0.5"] == 0.1
        assert report.unique["0.5"] > 0.9  # over all K, the dead random rows pass as unique
        text = str(report)
        assert "live prototypes: 10 of 100 (used by data)" in text
        assert "dead prototypes: 90 of 100 (never the argmax" in text and "caveat" not in text
        assert "unique among live" in text


def test_report_counts_live_components_from_masses():
    x = live_and_dead()
    masses = torch.ones(100)  # the pseudo-count every component starts with
    masses[LIVE] = torch.linspace(2.0, 500.0, 10)  # 2.0 exactly counts: "at least min_mass"
    report = collapse_report(x, masses=masses.numpy())
    assert (report.used, report.dead, report.carrying, report.live, report.min_mass) == (
        None,
        None,
        10,
        10,
        2.0,
    )
    assert report.unique_live_count == naive_live(x)
    text = str(report)
    assert "live prototypes: 10 of 100 (carrying >= 2 units of GMM mass)" in text
    assert "dead prototypes: 90 of 100" in text and "caveat" not in text
    none = collapse_report(x, masses=masses, min_mass=600.0)
    assert (none.carrying, none.live, none.unique_live, none.unique_live_count) == (0, 0, None, None)
    assert "live prototypes: 0 of 100" in str(none)


def test_assignments_decide_live_when_masses_are_also_given():
    x = live_and_dead()
    masses = torch.ones(100)
    masses[LIVE] = 9.0
    masses[[0, 1]] = 3.0  # two components gathered mass but are nobody's argmax
    report = collapse_report(x, assignments=LIVE, masses=masses)
    assert (report.used, report.carrying, report.live) == (10, 12, 10)
    assert report.unique_live_count == naive_live(x)
    text = str(report)
    assert "live prototypes: 10 of 100 (used by data)" in text
    assert "carrying >= 2 units of GMM mass: 12 of 100" in text
    as_json = json.loads(json.dumps(report.to_dict()))
    assert {k: as_json[k] for k in ("used", "carrying", "min_mass", "live")} == {
        "used": 10,
        "carrying": 12,
        "min_mass": 2.0,
        "live": 10,
    }
    assert as_json["unique_live"] == report.unique_live


def test_report_without_masses_or_data_warns_that_unique_may_count_unused_prototypes():
    report = collapse_report(live_and_dead())
    assert (report.used, report.carrying, report.live, report.unique_live) == (None, None, None, None)
    text = str(report)
    assert "caveat: live and dead prototypes are unknown" in text
    assert "the unique fractions may count prototypes that no data uses" in text
    assert "unique among live" not in text


@pytest.mark.parametrize(
    "masses, min_mass, match",
    [
        (torch.ones(99), 2.0, r"masses must have shape \(100,\), one per prototype, got \(99,\)"),
        (torch.ones(100, 1), 2.0, r"got \(100, 1\)"),
        (-torch.ones(100), 2.0, "masses must be finite and >= 0"),
        (torch.full((100,), math.nan), 2.0, "masses must be finite and >= 0"),
        (torch.ones(100), 0.0, "min_mass must be a finite number > 0, got 0.0"),
        (torch.ones(100), math.inf, "min_mass must be a finite number > 0"),
    ],
)
def test_report_mass_errors(masses, min_mass, match):
    with pytest.raises(ValueError, match=match):
        collapse_report(live_and_dead(), masses=masses, min_mass=min_mass)


def test_report_masses_must_be_an_array():
    with pytest.raises(
        TypeError, match="masses must be a torch.Tensor or numpy.ndarray of shape \\(K,\\), got list"
    ):
        collapse_report(live_and_dead(), masses=[1.0] * 100)


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


def test_plot_unique_over_steps_with_live_fractions(tmp_path):
    steps = [0, 100, 200]
    curve = [{str(e): 1.0 for e in EPS_GRID}] * 3
    plain, path = tmp_path / "plain.png", tmp_path / "live.png"
    plot_unique_over_steps({"joint": (steps, curve), "decoupled": (steps, curve)}, plain)
    live = {"decoupled": [None, 0.2, 0.95]}  # unknown at step 0 (no evaluation data yet)
    plot_unique_over_steps({"joint": (steps, curve), "decoupled": (steps, curve)}, path, live=live)
    assert is_png(path) and path.read_bytes() != plain.read_bytes()  # the dashed lines were drawn


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


@pytest.mark.parametrize(
    "live, match",
    [
        ({"b": [0.5, 0.5]}, r"live has a curve 'b' that curves lacks; its curves are \['a'\]"),
        ({"a": [0.5]}, r"live curve 'a' has 1 values for 2 steps"),
        ({"a": [0.5, 204]}, r"values \[204\] outside \[0, 1\]; pass live count / K"),
    ],
)
def test_plot_unique_over_steps_live_errors(tmp_path, live, match):
    curves = {"a": ([0, 1], [{str(e): 1.0 for e in EPS_GRID}] * 2)}
    with pytest.raises(ValueError, match=match):
        plot_unique_over_steps(curves, tmp_path / "x.png", live=live)
    assert not (tmp_path / "x.png").exists()


def test_plot_nn_cosine_histogram(tmp_path):
    path = tmp_path / "nn.png"
    plot_nn_cosine_histogram(clustered(64, 8, 5, 0.2, seed=0), path)
    assert is_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["nn.png"]
