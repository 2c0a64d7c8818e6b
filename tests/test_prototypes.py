import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from protozoo.prototypes import LearnablePrototypes, OnlineGMM


def sphere_mixture(k: int, d: int, n_per: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    h = centres.repeat_interleave(n_per, 0) + spread * torch.randn(k * n_per, d, generator=g)
    return centres, F.normalize(h, dim=1)


def test_recovers_centres_of_separated_clusters():
    torch.manual_seed(0)
    centres, h = sphere_mixture(k=8, d=16, n_per=200, spread=0.05)
    gmm = OnlineGMM(8, 16, eta=0.01)
    step = 0
    for _ in range(20):
        for batch in h[torch.randperm(len(h))].split(256):
            gmm.update(batch, beta=min(1.0, 0.5 + step / 100))  # annealed 0.5 -> 1
            step += 1
    cos = centres @ gmm.prototypes.T  # (8, 8)
    # every true centre has a prototype within cos 0.99, and prototypes match centres one to one
    assert cos.max(dim=1).values.min() > 0.99
    assert len(set(cos.argmax(dim=1).tolist())) == 8


def test_responsibilities_are_a_distribution():
    gmm = OnlineGMM(32, 8)
    gamma = gmm.responsibilities(F.normalize(torch.randn(50, 8), dim=1), beta=0.5)
    assert gamma.shape == (50, 32)
    assert torch.all(gamma >= 0)
    torch.testing.assert_close(gamma.sum(1), torch.ones(50))


def test_forgetting_leaves_components_without_responsibility_untouched():
    gmm = OnlineGMM(4, 2, eta=0.1)
    with torch.no_grad():  # two far-apart components, data only near component 0
        gmm.means.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
        gmm.variances.fill_(1e-3)
        gmm.s1.copy_(gmm.means)
        gmm.s2.copy_(gmm.variances + gmm.means**2)
    before = {k: v.clone() for k, v in gmm.state_dict().items()}
    gmm.update(torch.tensor([[1.0, 0.01], [0.99, -0.02]]))
    for name in ("mass", "s1", "s2", "means", "variances"):
        torch.testing.assert_close(getattr(gmm, name)[1:], before[name][1:])
    assert gmm.mass[0] > before["mass"][0]
    # the new mass is a*A + n with a = (1 - eta)^n and n = 2
    torch.testing.assert_close(gmm.mass[0], torch.tensor(0.9**2 * 1.0 + 2.0), atol=1e-4, rtol=0)


def test_mixture_weights_follow_mass():
    gmm = OnlineGMM(16, 4)
    gmm.update(F.normalize(torch.randn(64, 4), dim=1))
    torch.testing.assert_close(gmm.weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(gmm.weights, gmm.mass / gmm.mass.sum())


@pytest.mark.parametrize(
    "batch",
    [
        torch.ones(32, 8),  # constant
        F.normalize(torch.randn(1, 8), dim=1).repeat(64, 1),  # duplicated
        F.normalize(torch.randn(1, 8), dim=1),  # a single sample
        torch.zeros(16, 8),  # all-zero
    ],
    ids=["constant", "duplicated", "single", "zeros"],
)
def test_degenerate_batches_stay_finite(batch):
    gmm = OnlineGMM(128, 8)  # K larger than the batch
    for _ in range(50):
        gmm.update(batch, beta=0.5)
    for name, value in gmm.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
    assert gmm.variances.min() >= gmm.var_floor


def test_chunking_matches_one_chunk():
    h = F.normalize(torch.randn(100, 8), dim=1)
    a, b = OnlineGMM(300, 8), OnlineGMM(300, 8, chunk_size=64)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        a.update(h, beta=0.7)
        b.update(h, beta=0.7)
    for name, value in a.state_dict().items():
        torch.testing.assert_close(getattr(b, name), value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sharp", [True, False], ids=["near-one-hot (sparse sums)", "spread (dense matmul)"])
def test_statistics_equal_the_dense_weighted_sums(sharp):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 32, generator=g) * (400.0 if sharp else 1.0)
    gamma, hh = logits.softmax(dim=1), torch.randn(64, 8, generator=g)
    sparse = int((gamma > 1e-9).sum()) * hh.shape[1] <= gamma.numel()  # the rule _add_statistics uses
    assert sparse == sharp
    n, stats = torch.empty(32), torch.empty(32, 8)
    OnlineGMM._add_statistics(gamma, hh, n, stats)
    assert torch.allclose(n, gamma.sum(0), rtol=1e-5, atol=1e-7)
    assert torch.allclose(stats, gamma.T @ hh, rtol=1e-5, atol=1e-6)


def test_log_prob_matches_naive_gaussian():
    gmm = OnlineGMM(5, 3)
    gmm.update(F.normalize(torch.randn(20, 3), dim=1))
    h = torch.randn(4, 3)
    logp = torch.cat([lp for _, lp in gmm._log_prob_chunks(h)], dim=1)
    for i in range(4):
        for k in range(5):
            expected = math.log(gmm.weights[k])
            for d in range(3):
                var, mu = gmm.variances[k, d].item(), gmm.means[k, d].item()
                expected += -0.5 * (math.log(2 * math.pi * var) + (h[i, d].item() - mu) ** 2 / var)
            assert logp[i, k].item() == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_update_inside_bf16_autocast_stays_fp32():
    gmm = OnlineGMM(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.Linear(8, 8)(torch.randn(32, 8))
        gmm.update(F.normalize(h, dim=1))
    assert all(v.dtype in (torch.float32, torch.bool, torch.long) for v in gmm.state_dict().values())


def test_state_round_trips_through_safetensors(tmp_path):
    gmm = OnlineGMM(16, 4, init="first_batch")
    gmm.update(F.normalize(torch.randn(8, 4), dim=1))
    save_file(gmm.state_dict(), tmp_path / "gmm.safetensors")
    other = OnlineGMM(16, 4, init="first_batch")
    other.load_state_dict(load_file(tmp_path / "gmm.safetensors"))
    torch.testing.assert_close(other.prototypes, gmm.prototypes)
    assert bool(other.initialized)


def _cone(n: int, d: int) -> torch.Tensor:
    """Embeddings crowded around one direction, as a teacher's are: most random means never win one."""
    x = torch.randn(n, d)
    x[:, 0] += 4
    return F.normalize(x, dim=1)


def test_without_splitting_most_components_stay_dead_and_with_it_every_one_carries_data():
    carrying, used = {}, {}
    for every in (0, 10):
        torch.manual_seed(1)
        gmm = OnlineGMM(256, 32, split_every=every)
        for _ in range(300):
            gmm.update(_cone(256, 32))
        carrying[every] = int((gmm.mass >= 2).sum())
        used[every] = gmm.responsibilities(_cone(4096, 32)).argmax(1).unique().numel()
        assert torch.isfinite(gmm.means).all() and torch.isfinite(gmm.log_weights).all()
    assert carrying[0] < 128 and used[0] < 128, (carrying, used)  # random means outside the cone never move
    assert carrying[10] == 256 and used[10] >= 0.95 * 256, (carrying, used)


@pytest.mark.parametrize("covariance, owner", [("diag", 1), ("shared", 0)])
def test_shared_variance_gives_a_point_to_the_nearest_mean_not_the_broadest(covariance, owner):
    torch.manual_seed(0)
    gmm = OnlineGMM(2, 2, eta=0.5, covariance=covariance, var_floor=1e-6)
    tight = torch.tensor([1.0, 0.0]) + 0.01 * torch.randn(200, 2)  # component 0's data
    broad = torch.tensor([0.0, 1.0]) + 0.3 * torch.randn(200, 2)  # component 1's data
    with torch.no_grad():  # fit each component to its own cluster
        for k, x in enumerate((tight, broad)):
            gmm.mass[k], gmm.s1[k], gmm.s2[k] = len(x), x.sum(0), (x**2).sum(0)
        gmm._m_step()
    if covariance == "shared":  # one value: the mass-weighted mean of the diagonal variances
        expected = ((tight.var(0, correction=0).sum() + broad.var(0, correction=0).sum()) / 4).item()
        torch.testing.assert_close(gmm.variances, torch.full((2, 2), expected))
    # (0.7, 0.3) is nearer the tight cluster's mean, but within the broad cluster's spread
    assert int(gmm.responsibilities(torch.tensor([[0.7, 0.3]])).argmax()) == owner


def test_log_prob_is_the_log_of_the_responsibilities_up_to_a_constant():
    gmm = OnlineGMM(16, 4)
    h = F.normalize(torch.randn(8, 4), dim=1)
    log_gamma = gmm.responsibilities(h, beta=0.5).log()
    torch.testing.assert_close(gmm.log_prob(h, beta=0.5).log_softmax(1), log_gamma)


def test_split_gives_a_dead_component_half_of_the_busiest_one():
    torch.manual_seed(0)
    gmm = OnlineGMM(4, 3, split_every=1)
    gmm.mass.copy_(torch.tensor([10.0, 1.0, 30.0, 20.0]))
    gmm.s1.copy_(gmm.mass[:, None] * F.normalize(torch.randn(4, 3), dim=1))
    gmm.s2.copy_(gmm.s1**2 / gmm.mass[:, None] + gmm.mass[:, None] * torch.tensor([0.01, 0.04, 0.02]))
    gmm._m_step()
    gmm.recent_mass.copy_(torch.tensor([5.0, 0.5, 9.0, 7.0]))  # component 1 is dead, 2 the busiest
    mu, var, total = gmm.means[2].clone(), gmm.variances[2].clone(), gmm.mass.sum()
    gmm._relocate(F.normalize(torch.randn(2, 3), dim=1))  # "split" ignores the batch
    step = torch.tensor([0.0, 0.2, 0.0])  # sigma along the largest-variance axis (0.04 -> 0.2)
    torch.testing.assert_close(gmm.means[2], mu + step)
    torch.testing.assert_close(gmm.means[1], mu - step)
    torch.testing.assert_close(gmm.variances[1], var)
    torch.testing.assert_close(gmm.mass[[1, 2]], torch.tensor([15.0, 15.0]))
    torch.testing.assert_close(gmm.mass.sum(), total - 1.0)  # the dead one's pseudo-count is dropped
    assert (gmm.recent_mass == 0).all()


def _three_components(relocate: str = "embeddings", **kwargs) -> OnlineGMM:
    """Means on e0 (mass 10) and e1 (mass 20), variances 0.01, and component 2 dead near e0."""
    gmm = OnlineGMM(3, 3, split_every=1, relocate=relocate, **kwargs)
    means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.99, 0.1, 0.0]])
    gmm.mass.copy_(torch.tensor([10.0, 20.0, 1.0]))
    gmm.s1.copy_(gmm.mass[:, None] * means)
    gmm.s2.copy_(gmm.mass[:, None] * (means**2 + 0.01))
    gmm._m_step()
    gmm.recent_mass.copy_(torch.tensor([5.0, 9.0, 0.0]))
    return gmm


def test_a_dead_component_moves_onto_the_embedding_the_others_cover_worst():
    gmm = _three_components()
    far = F.normalize(torch.tensor([0.0, 0.3, 1.0]), dim=0)  # nearest staying mean: e1
    h = torch.stack([torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), far])
    total = gmm.mass.sum()
    gmm._relocate(h)
    torch.testing.assert_close(gmm.means[2], far)
    torch.testing.assert_close(gmm.variances[2], torch.full((3,), 0.01))  # its owner's, e1's
    torch.testing.assert_close(gmm.mass, torch.tensor([10.0, 10.0, 10.0]))  # e1's mass shared
    torch.testing.assert_close(gmm.means[1], torch.tensor([0.0, 1.0, 0.0]))  # the owner stays put
    torch.testing.assert_close(gmm.mass.sum(), total - 1.0)  # the dead one's pseudo-count is dropped
    assert (gmm.recent_mass == 0).all()


def test_a_merged_component_moves_and_none_moves_onto_covered_embeddings():
    gmm = _three_components(merge_eps=0.025)
    gmm.recent_mass.fill_(5.0)  # every component is live: only the merge can move one
    h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # both lie on a staying mean
    gmm._relocate(h)
    torch.testing.assert_close(gmm.means[2], torch.tensor([0.99, 0.1, 0.0]))  # nowhere to go: it waits
    far = torch.tensor([[0.0, 0.0, 1.0]])
    gmm.recent_mass.fill_(5.0)
    gmm._relocate(far)  # 1 - cos(c_2, c_0) = 0.005 < 0.025 and c_0 is heavier: c_2 moves
    torch.testing.assert_close(gmm.means[2], far[0])
    torch.testing.assert_close(gmm.means[0], torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("order, placed, waiting", [("index", 2, 3), ("lightest", 3, 2)])
def test_a_check_with_more_movers_than_embeddings_places_them_in_the_given_order(order, placed, waiting):
    gmm = OnlineGMM(4, 3, split_every=1, relocate="embeddings", relocate_order=order)
    means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0], [0.7, -0.7, 0.0]])
    gmm.mass.copy_(torch.tensor([10.0, 20.0, 5.0, 1.0]))  # 2 moved before and failed, 3 has waited
    gmm.s1.copy_(gmm.mass[:, None] * F.normalize(means, dim=1))
    gmm.s2.copy_(gmm.s1**2 / gmm.mass[:, None] + gmm.mass[:, None] * 0.01)
    gmm._m_step()
    gmm.recent_mass.copy_(torch.tensor([5.0, 9.0, 0.0, 0.0]))  # 2 and 3 dead, one embedding to place
    far = torch.tensor([[0.0, 0.0, 1.0]])
    before = gmm.means[waiting].clone()
    gmm._relocate(far)
    torch.testing.assert_close(gmm.means[placed], far[0])
    torch.testing.assert_close(gmm.means[waiting], before)  # the other waits for the next check


@pytest.mark.parametrize(
    "relocate_mass, moved_mass, owner_mass, stays",
    [("shared", 200.0, 200.0, True), ("least", 4.0, 400.0, False), ("fresh", 1.0, 400.0, False)],
)
def test_a_moved_component_with_little_mass_follows_the_data_it_wins(
    relocate_mass, moved_mass, owner_mass, stays
):
    gmm = OnlineGMM(
        3, 3, split_every=1000, relocate="embeddings", covariance="shared", relocate_mass=relocate_mass
    )
    means = torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 1.0]])
    gmm.mass.copy_(torch.tensor([400.0, 4.0, 1.0]))
    gmm.s1.copy_(gmm.mass[:, None] * means)
    gmm.s2.copy_(gmm.mass[:, None] * (means**2 + 0.01))
    gmm._m_step()
    gmm.recent_mass.copy_(torch.tensor([50.0, 9.0, 0.0]))  # 2 is dead
    gmm._relocate(torch.eye(3)[[2, 0, 1]])  # onto the outlier e3, in 0's region
    torch.testing.assert_close(gmm.mass, torch.tensor([owner_mass, 4.0, moved_mass]))
    # Then 2 of every 64 embeddings lie near a cluster 0.46 away from where it landed.
    centre = F.normalize(torch.tensor([0.5, 0.0, 1.0]), dim=0)
    points = torch.cat([centre.expand(2, 3), torch.tensor([[1.0, 0.0, 0.0]]).expand(62, 3)])
    draws = torch.Generator().manual_seed(0)
    for _ in range(20):
        gmm.update(F.normalize(points + 0.05 * torch.randn(64, 3, generator=draws), dim=1))
    distance = float((gmm.means[2] - centre).norm())
    assert distance > 0.3 if stays else distance < 0.1  # with its owner's share it barely moves off e3


def test_a_busiest_move_lands_in_the_busiest_region_and_halves_its_load():
    gmm = OnlineGMM(4, 3, split_every=1, relocate="busiest")
    means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    gmm.mass.copy_(torch.tensor([10.0, 20.0, 1.0, 1.0]))
    gmm.s1.copy_(gmm.mass[:, None] * means)
    gmm.s2.copy_(gmm.mass[:, None] * (means**2 + 0.01))
    gmm._m_step()
    gmm.recent_mass.copy_(torch.tensor([5.0, 9.0, 0.0, 0.0]))  # 2 and 3 are dead, 1 is the busiest
    a = F.normalize(torch.tensor([1.0, -0.9, 0.0]), dim=0)  # 0's region, the farthest of all (d = 0.26)
    b = F.normalize(torch.tensor([0.0, 1.0, -0.3]), dim=0)  # 1's region, d = 0.04
    c = F.normalize(torch.tensor([-0.5, 1.0, 0.0]), dim=0)  # 1's region, d = 0.11
    gmm._relocate(torch.stack([a, b, c]))
    torch.testing.assert_close(gmm.means[2], c)  # the farthest embedding in the busiest region
    torch.testing.assert_close(gmm.means[3], a)  # 1's load is halved (4.5 < 5): then 0's region
    torch.testing.assert_close(gmm.mass, torch.tensor([5.0, 10.0, 10.0, 5.0]))  # each owner's mass shared


def test_a_sampled_move_draws_embeddings_by_squared_distance_alike_on_every_process():
    near, far = F.normalize(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.3, 1.0]]), dim=1)  # d = 0.29, 0.71
    h = torch.stack([torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), near, far])

    def landing(relocate: str, updates: int) -> torch.Tensor:
        gmm = _three_components(relocate=relocate, merge_eps=0.025)
        gmm.num_updates.fill_(updates)
        gmm._relocate(h)
        return gmm.means[2]

    drawn = [landing("sampled", n) for n in range(40)]
    on_far = sum(torch.allclose(m, far) for m in drawn)
    on_near = sum(torch.allclose(m, near) for m in drawn)
    assert on_far + on_near == 40  # never onto an embedding a staying mean covers (d = 0)
    assert on_far > on_near > 0  # probability 0.71² : 0.29², so the nearer one is drawn too
    torch.testing.assert_close(landing("sampled", 7), drawn[7])  # the same draw for the same update count
    assert all(torch.allclose(landing("embeddings", n), far) for n in range(3))  # farthest-point: always


def test_published_state_without_split_counters_loads():
    gmm = OnlineGMM(16, 4, split_every=5)
    gmm.update(F.normalize(torch.randn(8, 4), dim=1))
    state = {k: v for k, v in gmm.state_dict().items() if k not in ("s1", "s2", "recent_mass", "num_updates")}
    other = OnlineGMM(16, 4, split_every=5)
    other.load_state_dict(state)
    torch.testing.assert_close(other.s1, gmm.s1)
    assert int(other.num_updates) == 0


def test_no_gradient_reaches_the_gmm():
    gmm = OnlineGMM(8, 4)
    h = torch.randn(10, 4, requires_grad=True)
    gmm.update(h)
    assert all(not b.requires_grad for b in gmm.buffers())
    assert list(gmm.parameters()) == []


@pytest.mark.parametrize(
    "h, match",
    [
        (torch.randn(10, 5), r"shape \(B, 4\)"),
        (torch.randn(10), r"shape \(B, 4\)"),
        (torch.randn(0, 4), r"B >= 1"),
        (torch.full((3, 4), float("nan")), "NaN or Inf"),
    ],
)
def test_bad_embeddings_raise(h, match):
    with pytest.raises(ValueError, match=match):
        OnlineGMM(8, 4).update(h)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eta": 0.0}, "eta must lie"),
        (
            {"init": "kmeans"},
            "Unknown init 'kmeans'; valid choices are 'random', 'first_batch', 'kmeans\\+\\+'",
        ),
        ({"num_prototypes": 0}, ">= 1"),
        ({"split_every": -1}, "split_every must be >= 0"),
        ({"covariance": "full"}, "Unknown covariance 'full'; valid choices are 'diag', 'shared'"),
        ({"relocate": "away"}, "Unknown relocate 'away'; valid choices are 'split', 'embeddings'"),
        ({"merge_eps": -0.1}, "merge_eps is a cosine distance in \\[0, 2\\)"),
        ({"relocate_order": "heaviest"}, "Unknown relocate_order 'heaviest'; valid choices are 'index'"),
        (
            {"relocate_mass": "owner"},
            "Unknown relocate_mass 'owner'; valid choices are 'shared', 'least', 'fresh'",
        ),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineGMM(**{"num_prototypes": 8, "dim": 4, **kwargs})


def test_learnable_prototypes_are_unit_norm_and_trainable():
    protos = LearnablePrototypes(10, 6)
    torch.testing.assert_close(protos.prototypes.norm(dim=1), torch.ones(10))
    protos.prototypes.sum().backward()
    assert protos.weight.grad is not None


def _half_batch_worker(rank, init_file, expected_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same data and initial means on both processes
        h = F.normalize(torch.randn(64, 8), dim=1)
        gmm = OnlineGMM(32, 8, init="first_batch")
        for _ in range(3):
            gmm.update(h.chunk(2)[rank], beta=0.8)
        # first_batch init broadcasts rank 0's means, so both start from the first half's rows
        for name, value in load_file(expected_path).items():
            torch.testing.assert_close(getattr(gmm, name), value, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_two_processes_on_half_batches_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    h = F.normalize(torch.randn(64, 8), dim=1)
    gmm = OnlineGMM(32, 8, init="first_batch")
    gmm._init_from(h.chunk(2)[0])  # what rank 0 broadcasts
    for _ in range(3):
        gmm.update(h, beta=0.8)
    save_file(gmm.state_dict(), tmp_path / "expected.safetensors")
    # spawn, not fork: forking a process that already ran OpenMP kernels can hang
    mp.spawn(
        _half_batch_worker, args=(str(tmp_path / "init"), str(tmp_path / "expected.safetensors")), nprocs=2
    )


def test_kmeanspp_waits_for_its_buffer_then_seeds_distinct_means_on_the_data():
    torch.manual_seed(0)
    centres, h = sphere_mixture(k=32, d=16, n_per=40, spread=0.02)  # 1280 embeddings in 32 tight clusters
    h = h[torch.randperm(len(h))]
    gmm = OnlineGMM(32, 16, init="kmeans++", init_samples=512)
    random_means = gmm.means.clone()
    gmm.update(h[:256])
    assert not bool(gmm.initialized) and torch.equal(gmm.means, random_means)  # still buffering
    gmm.update(h[256:512])
    assert bool(gmm.initialized)
    # D² sampling puts one mean on nearly every cluster, never two on one
    nearest = (gmm.prototypes @ centres.T).argmax(1)
    assert nearest.unique().numel() >= 30
    assert (gmm.prototypes @ centres.T).amax(1).min() > 0.95


def test_kmeanspp_needs_as_many_samples_as_prototypes():
    with pytest.raises(ValueError, match="init_samples=8 buffered embeddings"):
        OnlineGMM(16, 4, init="kmeans++", init_samples=8)


@pytest.mark.parametrize("uniform_weights", [False, True])
def test_uniform_weights_own_by_distance_not_by_mass(uniform_weights):
    gmm = OnlineGMM(2, 2, covariance="shared", uniform_weights=uniform_weights)
    means = torch.tensor([[0.8, 0.0], [0.0, 0.8]])
    gmm.mass.copy_(torch.tensor([100.0, 5.0]))  # component 0 has seen 20 times the data
    gmm.s1.copy_(gmm.mass[:, None] * means)
    gmm.s2.copy_(gmm.mass[:, None] * (means**2 + 0.05))
    gmm._m_step()
    gamma = gmm.responsibilities(F.normalize(torch.ones(1, 2), dim=1))[0]  # equally far from both means
    if uniform_weights:
        torch.testing.assert_close(gmm.weights, torch.full((2,), 0.5))
        torch.testing.assert_close(gamma, torch.full((2,), 0.5))
    else:
        torch.testing.assert_close(gmm.weights, torch.tensor([100.0, 5.0]) / 105)
        torch.testing.assert_close(gamma, torch.tensor([100.0, 5.0]) / 105)  # the heavy one takes it
