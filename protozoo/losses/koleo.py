"""KoLeo prototype regulariser (KP): spread the prototypes by pushing each away from its nearest one.

References:
    Govindarajan et al., "On Partial Prototype Collapse in the DINO Family of Self-Supervised
    Methods", BMVC 2024 (KoLeo applied to the prototypes).
    Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019 (the KoLeo estimator).
    Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024 (on features).
    Arteaga et al., "Why Prototypes Collapse", ICLR 2026 (the regulariser decoupling is compared with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KoLeoProtoLoss(nn.Module):
    """Kozachenko-Leonenko entropy regulariser on the L2-normalised prototype rows.

        L_KP = −(1/K) Σ_k log(min_{j≠k} ‖ĉ_k − ĉ_j‖₂ + δ)

    The nearest neighbours are searched without gradient, ``chunk_size`` rows at a time, so memory
    stays at chunk_size × K rather than K × K; the distances to those neighbours are then recomputed
    with gradient. On prototypes it only acts on learnable ones (joint training); decoupled prototypes
    get no gradient. Add it as L = L_SSL + λ_KP L_KP. Any set of rows works the same way: training's
    ``koleo_weight`` applies it to a batch of backbone features, as DINOv2 does.

    Args:
        delta: δ, keeps the log finite when two prototypes coincide.
        chunk_size: rows per block of the nearest-neighbour search.

    Raises:
        ValueError: if ``delta`` or ``chunk_size`` is not positive.

    Example:
        >>> koleo = KoLeoProtoLoss()
        >>> prototypes = head.last_layer.weight  # (K, D), learnable
        >>> loss = ssl_loss + 0.1 * koleo(prototypes)["loss"]
        >>> loss.backward()
    """

    def __init__(self, delta: float = 1e-8, chunk_size: int = 4096) -> None:
        super().__init__()
        if not delta > 0.0:
            raise ValueError(f"delta must be positive to keep log(distance + delta) finite, got {delta}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}.")
        self.delta = delta
        self.chunk_size = chunk_size

    def forward(self, prototypes: Tensor) -> dict[str, Tensor]:
        """Compute the KoLeo loss of a prototype matrix.

        Args:
            prototypes: (K, D) prototype rows, K >= 2; normalised here (in fp32).

        Returns:
            Dict with the scalar "loss".

        Raises:
            TypeError: if ``prototypes`` is not a tensor.
            ValueError: if it is not 2-D, has fewer than 2 rows or holds NaN/Inf.
        """
        if not isinstance(prototypes, Tensor):
            raise TypeError(f"prototypes must be a (K, D) tensor, got {type(prototypes).__name__}.")
        if prototypes.dim() != 2 or prototypes.shape[0] < 2:
            raise ValueError(
                f"prototypes must be a 2-D (K, D) tensor with K >= 2 rows (a nearest neighbour needs a "
                f"second prototype), got shape {tuple(prototypes.shape)}."
            )
        if not torch.isfinite(prototypes).all():
            raise ValueError("prototypes contain NaN or Inf; check the learning rate of the prototype layer.")
        # fp32 throughout: bf16 similarities would blur which neighbour is nearest.
        with torch.autocast(device_type=prototypes.device.type, enabled=False):
            c = F.normalize(prototypes.float(), dim=1)  # (K, D)
            k = c.shape[0]
            nearest = torch.empty(k, dtype=torch.long, device=c.device)  # (K,)
            with torch.no_grad():
                for start in range(0, k, self.chunk_size):
                    rows = torch.arange(start, min(start + self.chunk_size, k), device=c.device)  # (R,)
                    # On unit vectors the nearest row in L2 is the one with the largest dot product.
                    sim = c[rows] @ c.T  # (R, K)
                    sim[torch.arange(len(rows), device=c.device), rows] = float("-inf")  # exclude j = k
                    nearest[rows] = sim.argmax(dim=1)
            distance = (c - c[nearest]).norm(dim=1)  # (K,)
        return {"loss": -(distance + self.delta).log().mean()}
