"""CARPLoss against a naive loop implementation of method.md §4, hand values, errors, 2 processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import protozoo.losses.carp as carp_module
from protozoo.losses import CARPLoss


def naive_carp(student, teacher, perm, block_size, eps=1e-6):
    """Straight from the formula: explicit loops over views, blocks and samples."""
    k = student[0].shape[1]
    blocks = [perm[b * block_size : (b + 1) * block_size] for b in range(k // block_size)]

    def probs(logits, n, idx):
        return torch.softmax(logits[n, idx].double(), dim=0)

    terms = []
    for i, s in enumerate(student):
        for j, t in enumerate(teacher):
            if i == j:
                continue
            for idx in blocks:
                for n in range(s.shape[0]):
                    dot = (probs(s, n, idx) * probs(t, n, idx)).sum()
                    terms.append(-torch.log(dot.clamp(eps, 1 - eps)))
    consistency = torch.stack(terms).mean()

    kls = []
    for s in student:
        for idx in blocks:
            mean_p = torch.stack([probs(s, n, idx) for n in range(s.shape[0])]).mean(dim=0)
            kls.append((mean_p * torch.log(mean_p * block_size)).sum())
    uniformity = torch.stack(kls).mean()
    return consistency, uniformity


@pytest.mark.parametrize(
    ("n_student", "n_teacher", "batch", "k", "block_size"),
    [(2, 2, 4, 8, 4), (4, 2, 3, 12, 3), (3, 1, 5, 6, 6)],
)
def test_matches_naive_loops(n_student, n_teacher, batch, k, block_size):
    student = [torch.randn(batch, k) * 3 for _ in range(n_student)]
    teacher = [torch.randn(batch, k) * 3 for _ in range(n_teacher)]
    torch.manual_seed(7)
    out = CARPLoss(k, block_size)(student=student, teacher=teacher)
    torch.manual_seed(7)
    consistency, uniformity = naive_carp(student, teacher, torch.randperm(k), block_size)
    torch.testing.assert_close(out["consistency"].double(), consistency, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["uniformity"].double(), uniformity, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["consistency"] + out["uniformity"])


def test_uniform_logits_hand_value():
    # Uniform block probabilities: <p, q> = N_B * (1/N_B)^2, and the mean assignment is uniform.
    views = [torch.zeros(4, 16) for _ in range(2)]
    out = CARPLoss(16, block_size=4)(student=views, teacher=views)
    assert out["consistency"].item() == pytest.approx(-math.log(1 / 4))
    assert out["uniformity"].item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_reaches_student_and_joint_prototypes_only():
    z_s = [torch.randn(3, 8, requires_grad=True) for _ in range(2)]
    z_t = [torch.randn(3, 8, requires_grad=True) for _ in range(2)]
    learnable = torch.randn(16, 8, requires_grad=True)
    fixed = torch.randn(16, 8, requires_grad=True)
    loss_fn = CARPLoss(16, block_size=8)
    joint = loss_fn(student=[z @ learnable.T for z in z_s], teacher=[z @ learnable.T for z in z_t])
    decoupled = loss_fn(student=[z @ fixed.detach().T for z in z_s], teacher=[z @ fixed.T for z in z_t])
    (joint["loss"] + decoupled["loss"]).backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in z_s)
    assert all(z.grad is None for z in z_t)
    assert learnable.grad is not None and learnable.grad.abs().sum() > 0
    assert fixed.grad is None


def test_bf16_logits_and_autocast_compute_in_fp32():
    views = [torch.randn(4, 16).bfloat16() for _ in range(2)]
    fp32 = [v.float() for v in views]
    torch.manual_seed(0)
    reference = CARPLoss(16, block_size=8)(student=fp32, teacher=fp32)["loss"]
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CARPLoss(16, block_size=8)(student=views, teacher=views)["loss"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"num_prototypes": 100, "block_size": 64},
            r"num_prototypes=100 is not divisible by block_size=64.*\[2, 4, 5",
        ),
        ({"num_prototypes": 1, "block_size": 1}, r"num_prototypes >= 2 and block_size >= 2"),
        ({"num_prototypes": 8, "block_size": 4, "eps": 0.7}, r"eps must lie in \(0, 0.5\), got 0.7"),
        (
            {"num_prototypes": 8, "block_size": 4, "sinkhorn_iterations": -1},
            r"sinkhorn_iterations must be >= 0",
        ),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CARPLoss(**kwargs)


def naive_sinkhorn(logits, iterations):
    """SwAV's distributed_sinkhorn for one block, in probability space: (B, N) logits -> (B, N)."""
    q = torch.exp(logits.double()).T  # (N, B)
    n, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * n  # every prototype 1 / N of the mass
        q /= q.sum(dim=0, keepdim=True) * b  # every sample 1 / B of it
    return (q * b).T


def test_sinkhorn_matches_swav_and_equipartitions():
    logits = torch.randn(12, 3, 4, generator=torch.Generator().manual_seed(0)) * 3  # (B, M, N_B)
    q = carp_module.sinkhorn(logits, 3)
    for m in range(3):
        torch.testing.assert_close(q[:, m].double(), naive_sinkhorn(logits[:, m], 3))
    converged = carp_module.sinkhorn(logits, 200)
    torch.testing.assert_close(converged.sum(dim=-1), torch.ones(12, 3))
    torch.testing.assert_close(converged.sum(dim=0), torch.full((3, 4), 12 / 4))  # B / N_B per prototype
    assert not torch.allclose(logits.softmax(dim=-1).sum(dim=0), torch.full((3, 4), 3.0), atol=0.1)


def test_sinkhorn_targets_replace_the_teacher_softmax():
    student, teacher = _fixed_views()
    torch.manual_seed(0)
    plain = CARPLoss(K, BLOCK)(student=student, teacher=teacher)
    torch.manual_seed(0)
    balanced = CARPLoss(K, BLOCK, sinkhorn_iterations=3)(student=student, teacher=teacher)
    torch.testing.assert_close(balanced["uniformity"], plain["uniformity"])  # student side unchanged
    assert not torch.isclose(balanced["consistency"], plain["consistency"])


def _views(n, batch=2, k=8):
    return [torch.randn(batch, k) for _ in range(n)]


@pytest.mark.parametrize(
    ("student", "teacher", "error", "match"),
    [
        (_views(1), _views(1), ValueError, r"at least two student views.*got 1 student and 1 teacher"),
        (_views(2), [], ValueError, r"got 2 student and 0 teacher"),
        (_views(2), _views(3), ValueError, r"3 teacher views but only 2 student views"),
        (
            _views(2),
            _views(1, batch=3),
            ValueError,
            r"teacher\[0\] has shape \(3, 8\) but student\[0\] has \(2, 8\)",
        ),
        (
            _views(2, k=6),
            _views(1, k=6),
            ValueError,
            r"student\[0\] has shape \(2, 6\); expected a 2-D \(B, 8\)",
        ),
        (_views(2) + [torch.randn(2, 8, 1)], _views(1), ValueError, r"student\[2\] has shape \(2, 8, 1\)"),
        (_views(2), [torch.full((2, 8), float("nan"))], ValueError, r"teacher\[0\] has NaN or Inf"),
        (torch.randn(2, 8), _views(1), TypeError, r"student must be a list of \(B, K\) tensors.*got Tensor"),
    ],
)
def test_forward_errors(student, teacher, error, match):
    with pytest.raises(error, match=match):
        CARPLoss(8, block_size=4)(student=student, teacher=teacher)


K, BLOCK, BATCH = 16, 4, 6


def _fixed_views() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(BATCH, K, generator=g) * 2 for _ in range(3)]
    return student, [s + 0.5 * torch.randn(BATCH, K, generator=g) for s in student[:2]]


def _two_process_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        drawn = []
        broadcast = carp_module.broadcast_

        def spy(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
            drawn.append(broadcast(tensor, src).clone())
            return drawn[-1]

        carp_module.broadcast_ = spy
        student, teacher = _fixed_views()
        rows = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        local = [s[rows].clone().requires_grad_() for s in student]
        torch.manual_seed(100 + rank)  # each rank's own draw differs; only the broadcast can align them
        out = CARPLoss(K, BLOCK)(student=local, teacher=[t[rows] for t in teacher])
        out["uniformity"].backward()
        balanced = CARPLoss(K, BLOCK, sinkhorn_iterations=3)(
            student=local, teacher=[t[rows] for t in teacher]
        )
        result = {"perm": drawn[0], "grad": torch.stack([s.grad for s in local])}
        result |= {name: out[name].detach().reshape(1) for name in ("uniformity", "consistency")}
        result["sinkhorn_consistency"] = balanced["consistency"].detach().reshape(1)
        save_file(result, str(Path(out_dir) / f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_partition_and_global_uniformity(tmp_path):
    mp.spawn(_two_process_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]

    torch.manual_seed(100)
    rank0_draw = torch.randperm(K)
    torch.manual_seed(101)
    assert not torch.equal(torch.randperm(K), rank0_draw)  # rank 1 alone would have drawn another
    assert torch.equal(ranks[0]["perm"], rank0_draw) and torch.equal(ranks[1]["perm"], rank0_draw)

    student, teacher = _fixed_views()
    full = [s.clone().requires_grad_() for s in student]
    torch.manual_seed(100)
    out = CARPLoss(K, BLOCK)(student=full, teacher=teacher)
    out["uniformity"].backward()
    for r in ranks:
        torch.testing.assert_close(r["uniformity"], out["uniformity"].detach().reshape(1))
    mean_consistency = (ranks[0]["consistency"] + ranks[1]["consistency"]) / 2
    torch.testing.assert_close(mean_consistency, out["consistency"].detach().reshape(1))
    # Sinkhorn's column sums run over the global batch: two halves give the one-process targets
    # (rank 0's second draw is the partition, as it is here after the first loss).
    balanced = CARPLoss(K, BLOCK, sinkhorn_iterations=3)(student=full, teacher=teacher)["consistency"]
    mean_balanced = (ranks[0]["sinkhorn_consistency"] + ranks[1]["sinkhorn_consistency"]) / 2
    torch.testing.assert_close(mean_balanced, balanced.detach().reshape(1))
    # Each rank's gradient is world_size times the global one, so DDP's gradient average is exact.
    local_grads = torch.cat([r["grad"] for r in ranks], dim=1)  # (V_s, B, K)
    torch.testing.assert_close(local_grads / 2, torch.stack([s.grad for s in full]))
