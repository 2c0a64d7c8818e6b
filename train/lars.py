"""LARS (You et al., 2017), the optimiser of CARP's and SwAV's reference runs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose update of each weight matrix is scaled by ‖w‖ / ‖∇w‖ (trust ratio).

    Biases and norm parameters (1-D tensors) get neither weight decay nor the trust ratio, as in
    DINO's and CARP's implementations.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(dp)
                    ratio = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, 1.0)
                    dp = dp.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"]).add_(dp)
                p.add_(mu, alpha=-group["lr"])
