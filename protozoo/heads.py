"""Projection head between the backbone's pooled features and the prototype space."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """MLP in → hidden → … → out with GELU, as in CARP (with BatchNorm) and DINO (without).

    CARP's head is Linear-BN-GELU, Linear-BN-GELU, Linear to 256 with an unnormalised output;
    DINO's is the same without BN, followed by L2 normalisation (done by the caller).

    Args:
        in_dim: backbone feature width F.
        hidden_dim: width of the hidden layers.
        out_dim: D, the prototype dimension.
        num_layers: number of Linear layers (>= 1).
        batch_norm: BatchNorm1d after each hidden Linear.

    Example:
        >>> head = ProjectionHead(512, 2048, 256)
        >>> head(torch.randn(8, 512)).shape
        torch.Size([8, 256])
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, batch_norm: bool = True
    ):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim)]
            layers += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            layers += [nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, F) features -> (B, D) projection."""
        return self.mlp(x)
