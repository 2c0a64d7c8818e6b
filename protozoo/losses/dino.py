"""DINO loss: cross-entropy between the centred, sharpened teacher and the student over prototypes.

References:
    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
    Code: https://github.com/facebookresearch/dino
    Arteaga et al., "Why Prototypes Collapse", ICLR 2026 (decoupled prototypes: the same loss with
    the last layer replaced by fixed GMM means).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from protozoo.distributed import all_reduce_sum_
from protozoo.losses.carp import check_finite, check_views, sinkhorn

CENTERING = ("ema", "sinkhorn", "none")


class DINOLoss(nn.Module):
    """DINO's self-distillation loss with teacher centring and sharpening.

    For every student view s and teacher view t ≠ s (teacher view t being the same crop as student
    view t), the student's log-probabilities are scored against the teacher's centred, sharpened
    probabilities:

        L = mean_{s≠t, n} −softmax((g_t[n] − c) / τ_t) · log_softmax(g_s[n] / τ_s)

    After each training-mode call the centre moves towards the teacher's global batch mean,
    c ← m c + (1 − m) mean(g_t), summed across processes; in eval mode the centre stays put, so
    computing a validation loss does not change training. The loss only sees logits, so it serves
    joint training (learnable last layer) and decoupled training (fixed GMM means) alike.

    Args:
        out_dim: K, the number of logits per sample.
        student_temp: τ_s, the student temperature.
        teacher_temp: τ_t, the default teacher temperature (DINO warms it up from 0.04 to 0.07;
            pass the scheduled value to ``forward``).
        center_momentum: m, the EMA momentum of the centre.
        centering: "ema" (DINO: subtract the centre c) or "sinkhorn" (DINOv2: the teacher's targets are
            the Sinkhorn-Knopp equipartition of exp(g_t / τ_t) over the global batch, 3 iterations, so
            every prototype receives the same mass and neither one prototype nor the uniform target
            can take over; the centre is then unused) or "none" (softmax(g_t / τ_t) as it is; decoupled
            training passes the GMM's log-densities at τ_t = 1, so the targets are its posteriors).

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> loss_fn = DINOLoss(out_dim=1024)
        >>> student = [head(backbone(x)) for x in all_crops]  # V_s tensors (B, K)
        >>> teacher = [teacher_head(teacher_backbone(x)) for x in all_crops[:2]]  # V_t tensors (B, K)
        >>> loss_fn(student=student, teacher=teacher, teacher_temp=0.05)["loss"].backward()
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
        centering: str = "ema",
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be a positive number of prototypes, got {out_dim}.")
        _check_temperature("student_temp", student_temp)
        _check_temperature("teacher_temp", teacher_temp)
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1] (DINO uses 0.9), got {center_momentum}.")
        if centering not in CENTERING:
            raise ValueError(f"Unknown centering {centering!r}; valid choices are {', '.join(CENTERING)}.")
        self.out_dim, self.centering = out_dim, centering
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, *, student: list[Tensor], teacher: list[Tensor], teacher_temp: float | None = None
    ) -> dict[str, Tensor]:
        """Compute the DINO loss and, in training mode, update the centre.

        Logits are cast to fp32 and autocast is off inside, so bf16 autocast callers are safe.

        Args:
            student: V_s >= 2 tensors (B, K) of student logits (global crops first).
            teacher: V_t >= 1 tensors (B, K) of teacher logits of the first V_t student crops;
                detached here.
            teacher_temp: τ_t for this call (the warm-up schedule's value); None uses the
                constructor's.

        Returns:
            Dict with the scalar "loss".

        Raises:
            TypeError: if ``student`` or ``teacher`` is not a list of tensors.
            ValueError: on too few views, mismatched shapes, a last dimension other than K,
                non-finite logits or a non-positive ``teacher_temp``.
        """
        check_views(student, teacher, self.out_dim)
        tau_t = self.teacher_temp if teacher_temp is None else teacher_temp
        _check_temperature("teacher_temp", tau_t)

        # fp32 throughout: under bf16 autocast the einsum would otherwise run in bf16.
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            log_p = (torch.stack(student).float() / self.student_temp).log_softmax(dim=-1)  # (V_s, B, K)
            with torch.no_grad():
                g_t = torch.stack(teacher).detach().float()  # (V_t, B, K)
                if self.centering == "sinkhorn":
                    q = torch.stack([sinkhorn(g / tau_t, iterations=3) for g in g_t])  # (V_t, B, K)
                elif self.centering == "none":
                    q = (g_t / tau_t).softmax(dim=-1)
                else:
                    q = ((g_t - self.center) / tau_t).softmax(dim=-1)  # (V_t, B, K)

            cross_entropy = -torch.einsum("tbk,sbk->stb", q, log_p)  # (V_s, V_t, B)
            cross_view = ~torch.eye(len(student), len(teacher), dtype=torch.bool, device=log_p.device)
            loss = cross_entropy[cross_view].mean()

        check_finite(loss, student, teacher)  # before the centre can take in a NaN
        if self.training and self.centering == "ema":
            self._update_center(g_t)
        return {"loss": loss}

    @torch.no_grad()
    def _update_center(self, g_t: Tensor) -> None:
        # Sum and row count in one collective, so the mean is exact even for unequal local batches.
        flat = g_t.reshape(-1, self.out_dim)  # (V_t * B, K)
        stats = torch.cat([flat.sum(dim=0), flat.new_tensor([flat.shape[0]])])  # (K + 1,)
        all_reduce_sum_(stats)
        batch_center = (stats[:-1] / stats[-1]).unsqueeze(0)  # (1, K)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def _check_temperature(name: str, value: float) -> None:
    if not value > 0.0:
        raise ValueError(f"{name} must be positive (DINO uses 0.1 student, 0.04-0.07 teacher), got {value}.")
