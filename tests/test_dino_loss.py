"""DINOLoss against a naive loop implementation of method.md §5, hand values and errors."""

from __future__ import annotations

import math

import pytest
import torch

from protozoo.losses import DINOLoss


def naive_dino(student, teacher, center, student_temp, teacher_temp):
    """Straight from the formula: explicit loops over views and samples."""
    terms = []
    for s, g_s in enumerate(student):
        for t, g_t in enumerate(teacher):
            if s == t:
                continue
            for n in range(g_s.shape[0]):
                q = torch.softmax((g_t[n].double() - center[0].double()) / teacher_temp, dim=0)
                log_p = torch.log_softmax(g_s[n].double() / student_temp, dim=0)
                terms.append(-(q * log_p).sum())
    return torch.stack(terms).mean()


def naive_center(center, teacher, momentum):
    rows = [g[n].double() for g in teacher for n in range(g.shape[0])]
    return momentum * center.double() + (1 - momentum) * torch.stack(rows).mean(dim=0, keepdim=True)


@pytest.mark.parametrize(("n_student", "n_teacher", "batch", "k"), [(2, 2, 3, 5), (5, 2, 4, 7), (2, 1, 2, 3)])
@pytest.mark.parametrize("teacher_temp", [None, 0.07])
def test_matches_naive_loops_over_two_steps(n_student, n_teacher, batch, k, teacher_temp):
    loss_fn = DINOLoss(k, student_temp=0.2, teacher_temp=0.05, center_momentum=0.8)
    tau_t = 0.05 if teacher_temp is None else teacher_temp
    center = torch.zeros(1, k, dtype=torch.float64)
    for _ in range(2):  # the second step checks that the updated centre is the one used
        student = [torch.randn(batch, k) for _ in range(n_student)]
        teacher = [torch.randn(batch, k) for _ in range(n_teacher)]
        out = loss_fn(student=student, teacher=teacher, teacher_temp=teacher_temp)
        expected = naive_dino(student, teacher, center, 0.2, tau_t)
        torch.testing.assert_close(out["loss"].double(), expected, rtol=1e-5, atol=1e-6)
        center = naive_center(center, teacher, 0.8)
        torch.testing.assert_close(loss_fn.center.double(), center, rtol=1e-5, atol=1e-6)


def test_identical_uniform_views_hand_value():
    views = [torch.zeros(3, 10) for _ in range(2)]
    assert DINOLoss(10)(student=views, teacher=views)["loss"].item() == pytest.approx(math.log(10))


def test_center_update_value_and_eval_mode_keeps_it():
    loss_fn = DINOLoss(4, center_momentum=0.9)
    teacher = [torch.full((2, 4), 2.0), torch.full((2, 4), 4.0)]
    loss_fn(student=[torch.zeros(2, 4)] * 2, teacher=teacher)
    torch.testing.assert_close(loss_fn.center, torch.full((1, 4), 0.1 * 3.0))
    loss_fn.eval()
    loss_fn(student=[torch.zeros(2, 4)] * 2, teacher=[torch.full((2, 4), 9.0)] * 2)
    torch.testing.assert_close(loss_fn.center, torch.full((1, 4), 0.3))


def test_gradient_reaches_student_only():
    student = [torch.randn(3, 6, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(3, 6, requires_grad=True) for _ in range(2)]
    DINOLoss(6)(student=student, teacher=teacher)["loss"].backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_bf16_logits_and_autocast_compute_in_fp32():
    views = [torch.randn(4, 6).bfloat16() for _ in range(2)]
    reference = DINOLoss(6)(student=[v.float() for v in views], teacher=[v.float() for v in views])["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DINOLoss(6)(student=views, teacher=views)["loss"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out_dim": 0}, r"out_dim must be a positive number of prototypes, got 0"),
        ({"out_dim": 4, "student_temp": 0.0}, r"student_temp must be positive.*got 0.0"),
        ({"out_dim": 4, "teacher_temp": -0.04}, r"teacher_temp must be positive.*got -0.04"),
        ({"out_dim": 4, "center_momentum": 1.5}, r"center_momentum must lie in \[0, 1\].*got 1.5"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(**kwargs)


def _views(n, batch=2, k=4):
    return [torch.randn(batch, k) for _ in range(n)]


@pytest.mark.parametrize(
    ("student", "teacher", "kwargs", "error", "match"),
    [
        (_views(1), _views(1), {}, ValueError, r"at least two student views.*got 1 student and 1 teacher"),
        (_views(2), _views(3), {}, ValueError, r"3 teacher views but only 2 student views"),
        (_views(2), _views(1, batch=3), {}, ValueError, r"teacher\[0\] has shape \(3, 4\) but student\[0\]"),
        (
            _views(2, k=5),
            _views(1, k=5),
            {},
            ValueError,
            r"student\[0\] has shape \(2, 5\); expected .*\(B, 4\)",
        ),
        (
            [torch.full((2, 4), float("inf"))] * 2,
            _views(1),
            {},
            ValueError,
            r"student\[0\] has NaN or Inf",
        ),
        (_views(2), _views(1), {"teacher_temp": 0.0}, ValueError, r"teacher_temp must be positive.*got 0.0"),
        (_views(2), torch.randn(2, 4), {}, TypeError, r"teacher must be a list of \(B, K\) tensors"),
    ],
)
def test_forward_errors(student, teacher, kwargs, error, match):
    with pytest.raises(error, match=match):
        DINOLoss(4)(student=student, teacher=teacher, **kwargs)


def naive_sinkhorn(scores, iterations=3):
    """Sinkhorn-Knopp with explicit loops: columns to B / K each, then rows to 1, in probability space."""
    q = torch.exp(scores.double() - scores.double().max())
    b, k = q.shape
    for _ in range(iterations):
        for j in range(k):
            q[:, j] *= (b / k) / q[:, j].sum()
        for n in range(b):
            q[n] /= q[n].sum()
    return q


def test_sinkhorn_centering_matches_naive_loops_and_leaves_the_centre():
    torch.manual_seed(0)
    loss_fn = DINOLoss(6, student_temp=0.2, centering="sinkhorn")
    student = [torch.randn(8, 6) for _ in range(3)]
    teacher = [torch.randn(8, 6) + torch.tensor([3.0, 0, 0, 0, 0, 0]) for _ in range(2)]  # one dominant
    terms = []
    for t, g_t in enumerate(teacher):
        q = naive_sinkhorn(g_t / 0.04)
        assert q[:, 0].sum() < 8 / 6 + 0.5  # equipartition: the dominant prototype no longer takes all
        for s, g_s in enumerate(student):
            if s != t:
                terms.append(-(q * torch.log_softmax(g_s.double() / 0.2, dim=1)).sum(1))
    out = loss_fn(student=student, teacher=teacher)
    torch.testing.assert_close(out["loss"].double(), torch.cat(terms).mean(), rtol=1e-5, atol=1e-6)
    assert (loss_fn.center == 0).all()


def test_no_centering_scores_the_plain_softmax_and_leaves_the_centre():
    torch.manual_seed(0)
    loss_fn = DINOLoss(6, student_temp=0.2, centering="none")
    student, teacher = [torch.randn(8, 6) for _ in range(2)], [torch.randn(8, 6) for _ in range(2)]
    terms = [
        -((teacher[t].double() / 0.5).softmax(1) * (student[s].double() / 0.2).log_softmax(1)).sum(1)
        for t in range(2)
        for s in range(2)
        if s != t
    ]
    out = loss_fn(student=student, teacher=teacher, teacher_temp=0.5)
    torch.testing.assert_close(out["loss"].double(), torch.cat(terms).mean(), rtol=1e-5, atol=1e-6)
    assert (loss_fn.center == 0).all()


def test_unknown_centering_raises():
    with pytest.raises(ValueError, match="Unknown centering 'softmax'; valid choices are ema, sinkhorn, no"):
        DINOLoss(4, centering="softmax")
