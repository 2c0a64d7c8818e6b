"""CARP loss: consistency and uniformity of soft assignments over random partitions of prototypes.

References:
    Silva & Ramírez Rivera, "Representation Learning via Consistent Assignment of Views over Random
    Partitions", NeurIPS 2023. Code: https://github.com/sthalles/carp
    Arteaga et al., "Why Prototypes Collapse", ICLR 2026 (decoupled prototypes: the same loss on
    logits against a fixed prototype matrix).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from protozoo.distributed import all_reduce_sum_, broadcast_, global_batch_mean, global_logsumexp


def _suggest_block_sizes(num_prototypes: int) -> list[int]:
    return [d for d in range(2, num_prototypes + 1) if num_prototypes % d == 0][:8]


class CARPLoss(nn.Module):
    """CARP loss over a fresh random partition of the K prototypes into blocks of ``block_size``.

    Every call draws one permutation of the K prototype indices (rank 0's draw is broadcast, so all
    processes share the partition), splits it into K / N_B blocks and takes a softmax inside each
    block, for student and teacher alike. With p = student and q = (detached) teacher block
    probabilities:

        L = mean_{i, j≠i, b, n} −log clamp(<p_b^i[n], q_b^j[n]>, eps, 1−eps)
            + mean_{i, b} KL(mean_n p_b^i[n] ‖ Uniform(N_B))

    where the batch mean of the uniformity term runs over the global batch of all processes. With
    ``sinkhorn_iterations`` > 0 the teacher's q is instead equipartitioned inside each block, as in
    SwAV (Caron et al. 2020): Sinkhorn-Knopp on exp(teacher logits) alternately gives every prototype of
    the block B / N_B samples' worth of mass over the global batch and every sample a total of 1. The
    loss only sees logits, so it serves joint training (learnable prototypes) and decoupled training
    (logits against a detached, GMM-fitted prototype matrix) alike.

    Args:
        num_prototypes: K, the number of logits per sample.
        block_size: N_B, prototypes per block of the random partition; must divide K.
        eps: clamp of the inner products before the log.
        sinkhorn_iterations: Sinkhorn-Knopp iterations on the teacher's block assignments; 0 keeps
            CARP's plain softmax.

    Raises:
        ValueError: if ``num_prototypes`` is not divisible by ``block_size`` or an argument is out
            of range.

    Example:
        >>> loss_fn = CARPLoss(num_prototypes=1024, block_size=128)
        >>> student = [z @ prototypes.T for z in student_projections]  # V_s tensors (B, K)
        >>> teacher = [z @ prototypes.T for z in teacher_projections]  # V_t tensors (B, K)
        >>> loss_fn(student=student, teacher=teacher)["loss"].backward()
    """

    def __init__(
        self, num_prototypes: int, block_size: int = 128, eps: float = 1e-6, sinkhorn_iterations: int = 0
    ) -> None:
        super().__init__()
        if num_prototypes < 2 or block_size < 2:
            raise ValueError(
                f"CARPLoss needs num_prototypes >= 2 and block_size >= 2, got num_prototypes="
                f"{num_prototypes} and block_size={block_size}."
            )
        if num_prototypes % block_size != 0:
            raise ValueError(
                f"num_prototypes={num_prototypes} is not divisible by block_size={block_size}; "
                f"use a block size that divides it, e.g. one of {_suggest_block_sizes(num_prototypes)}."
            )
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}.")
        if sinkhorn_iterations < 0:
            raise ValueError(f"sinkhorn_iterations must be >= 0 (0 turns it off), got {sinkhorn_iterations}.")
        self.num_prototypes = num_prototypes
        self.block_size = block_size
        self.eps = eps
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(self, *, student: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        """Compute the CARP loss for one step.

        Student view i and teacher view i must be the same crop (the global crops come first), so
        the pairs i = j are skipped. Logits are cast to fp32 and autocast is off inside, so bf16
        autocast callers are safe.

        Args:
            student: V_s >= 2 tensors (B, K) of student logits z Cᵀ (no temperature).
            teacher: V_t >= 1 tensors (B, K) of teacher logits of the first V_t student crops;
                detached here.

        Returns:
            Dict of scalars: "loss" = "consistency" + "uniformity".

        Raises:
            TypeError: if ``student`` or ``teacher`` is not a list of tensors.
            ValueError: on too few views, mismatched shapes, a last dimension other than K or
                non-finite logits.
        """
        check_views(student, teacher, self.num_prototypes)
        # fp32 throughout: under bf16 autocast the einsum would otherwise round <p, q> near 1.
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            k, nb = self.num_prototypes, self.block_size
            # Global RNG on the logits' device; rank 0's draw wins so every process shares the partition.
            perm = broadcast_(torch.randperm(k, device=student[0].device))

            def blocks(logits: Tensor) -> Tensor:
                return logits.float().index_select(1, perm).reshape(-1, k // nb, nb)  # (B, K/N_B, N_B)

            p = torch.stack([blocks(x).softmax(dim=-1) for x in student])  # (V_s, B, K/N_B, N_B)
            with torch.no_grad():
                q = torch.stack([blocks(x.detach()) for x in teacher], dim=1)  # (B, V_t, K/N_B, N_B)
                q = sinkhorn(q, self.sinkhorn_iterations) if self.sinkhorn_iterations else q.softmax(dim=-1)
                q = q.transpose(0, 1)  # (V_t, B, K/N_B, N_B)

            agreement = torch.einsum("sbmn,tbmn->stbm", p, q)  # (V_s, V_t, B, K/N_B)
            cross_view = ~torch.eye(len(student), len(teacher), dtype=torch.bool, device=p.device)
            nll = -agreement.clamp(self.eps, 1.0 - self.eps).log()  # (V_s, V_t, B, K/N_B)
            consistency = nll[cross_view].mean()

            mean_p = global_batch_mean(p.transpose(0, 1))  # (V_s, K/N_B, N_B) over the global batch
            kl = torch.special.xlogy(mean_p, mean_p).sum(dim=-1) + math.log(nb)  # (V_s, K/N_B)
            uniformity = kl.mean()
        loss = consistency + uniformity
        check_finite(loss, student, teacher)
        return {"loss": loss, "consistency": consistency, "uniformity": uniformity}


def sinkhorn(logits: Tensor, iterations: int) -> Tensor:
    """Equipartitioned assignments: Sinkhorn-Knopp in log space over the global batch (SwAV).

    Alternately rescales exp(logits) so that every prototype of a block receives B / N_B of the mass over
    the global batch of B samples and every sample's row sums to 1, ending on the row step. Each block
    (every index of the middle dimensions) is balanced on its own.

    Args:
        logits: (B, ..., N_B) local rows of blocks of N_B prototypes.
        iterations: number of (column, row) rescaling rounds, >= 1.

    Returns:
        (B, ..., N_B) probabilities, each row summing to 1 within its block.
    """
    nb = logits.shape[-1]
    batch = all_reduce_sum_(torch.tensor(float(logits.shape[0]), device=logits.device))
    log_q = logits
    for _ in range(iterations):
        log_q = log_q - global_logsumexp(log_q) + torch.log(batch / nb)  # columns: B / N_B each
        log_q = log_q - log_q.logsumexp(dim=-1, keepdim=True)  # rows: 1 each
    return log_q.exp()


def check_views(student: list[Tensor], teacher: list[Tensor], dim: int) -> None:
    """Validate the student/teacher view lists of a cross-view prototype loss (CARP, DINO).

    Args:
        student: V_s tensors (B, dim).
        teacher: V_t tensors (B, dim), teacher view j being the same crop as student view j.
        dim: expected size of the last dimension.

    Raises:
        TypeError: if a list is not a list of tensors.
        ValueError: on fewer than 2 student or 1 teacher views, more teacher than student views,
            mismatched or non-2-D shapes or a last dimension other than ``dim``.
    """
    for name, views in (("student", student), ("teacher", teacher)):
        if not isinstance(views, list | tuple) or not all(isinstance(v, Tensor) for v in views):
            raise TypeError(
                f"{name} must be a list of (B, K) tensors, one per view, got {type(views).__name__}."
            )
    if len(student) < 2 or len(teacher) < 1:
        raise ValueError(
            f"Need at least two student views and one teacher view to form a cross-view pair, got "
            f"{len(student)} student and {len(teacher)} teacher views."
        )
    if len(teacher) > len(student):
        raise ValueError(
            f"Got {len(teacher)} teacher views but only {len(student)} student views; teacher view j "
            f"must be the same crop as student view j, so pass the global crops first to both."
        )
    all_views = [("student", i, v) for i, v in enumerate(student)] + [
        ("teacher", j, v) for j, v in enumerate(teacher)
    ]
    for name, i, v in all_views:
        if v.dim() != 2 or v.shape[-1] != dim:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(v.shape)}; expected a 2-D (B, {dim}) tensor of logits "
                f"({dim} being the size the loss was built with)."
            )
        if v.shape != student[0].shape:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(v.shape)} but student[0] has {tuple(student[0].shape)}; "
                f"every view must have the same batch size."
            )


def check_finite(loss: Tensor, student: list[Tensor], teacher: list[Tensor]) -> None:
    """When ``loss`` is NaN or Inf, raise a ValueError naming the first view whose logits are.

    The views are scanned only then, which keeps the check off the path of every training step.
    """
    if bool(torch.isfinite(loss)):
        return
    for name, views in (("student", student), ("teacher", teacher)):
        bad = [i for i, v in enumerate(views) if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"{name}[{bad[0]}] has NaN or Inf logits; lower the learning rate or check AMP.")
