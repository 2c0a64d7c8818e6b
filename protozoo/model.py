"""ProtoModel: a timm backbone, a projection head and a prototype source, with one output type."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
import torch.nn.functional as F
from timm.models import get_pretrained_cfg_value
from torch import Tensor, nn

from protozoo import backbones as _backbones  # noqa: F401  (registers the small-image variants)
from protozoo.config import ProtoConfig
from protozoo.heads import ProjectionHead
from protozoo.prototypes import LearnablePrototypes, OnlineGMM

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo


@dataclass
class ProtoOutput:
    """What a ProtoModel returns.

    Attributes:
        features: (B, F) pooled backbone features, what downstream tasks use.
        embeddings: (B, D) L2-normalised projection, the space of the prototypes.
        assignments: (B, K) probabilities over prototypes; rows sum to 1.
        logits: (B, num_classes) classifier output when the model has a classifier, else None.
        projection: (B, D) the unnormalised projection z (what training uses).
        scores: (B, K) prototype scores before the temperature (what the SSL losses take).
    """

    features: Tensor
    embeddings: Tensor
    assignments: Tensor
    logits: Tensor | None = None
    projection: Tensor | None = None
    scores: Tensor | None = None


class ProtoModel(nn.Module):
    """Backbone + projection head + prototypes (+ an optional classifier for fine-tuning).

    The backbone is any timm model created with ``num_classes=0``, so its state dict uses timm's
    own key names. The prototypes are an :class:`OnlineGMM` for decoupled methods (``*_dec``)
    and :class:`LearnablePrototypes` for the joint baselines.

    Args:
        config: architecture, method and preprocessing.
        num_classes: when > 0, a fresh linear classifier on the pooled features.

    Example:
        >>> model = ProtoModel(ProtoConfig(num_prototypes=64, hidden_dim=128, embed_dim=32))
        >>> out = model(torch.randn(2, 1, 28, 28))
        >>> out.features.shape, out.embeddings.shape, out.assignments.shape
        (torch.Size([2, 512]), torch.Size([2, 32]), torch.Size([2, 64]))
    """

    def __init__(self, config: ProtoConfig, num_classes: int = 0) -> None:
        super().__init__()
        self.config = config
        if not timm.is_model(config.architecture):
            close = difflib.get_close_matches(config.architecture, timm.list_models(), n=5)
            raise ValueError(
                f"Unknown backbone {config.architecture!r}: not a timm model name; close names: {close}"
            )
        kwargs = dict(config.backbone_kwargs)
        if get_pretrained_cfg_value(config.architecture, "fixed_input_size"):
            kwargs.setdefault("img_size", config.img_size)
        backbone: Any = timm.create_model(
            config.architecture, pretrained=False, num_classes=0, in_chans=config.in_chans, **kwargs
        )
        self.backbone = backbone
        self.num_features: int = backbone.num_features
        self.head = ProjectionHead(
            self.num_features,
            config.hidden_dim,
            config.embed_dim,
            config.head_layers,
            batch_norm=config.family == "carp",
        )
        if config.decoupled:
            self.prototype_source: OnlineGMM | LearnablePrototypes = OnlineGMM(
                config.num_prototypes,
                config.embed_dim,
                eta=config.gmm_eta,
                var_floor=config.gmm_var_floor,
                init=config.gmm_init,
                init_samples=config.gmm_init_samples,
                split_every=config.gmm_split_every,
                split_min_mass=config.gmm_split_min_mass,
                merge_eps=config.gmm_merge_eps,
            )
        else:
            self.prototype_source = LearnablePrototypes(config.num_prototypes, config.embed_dim)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else None

    @property
    def prototypes(self) -> Tensor:
        """(K, D) unit-norm prototype matrix."""
        return self.prototype_source.prototypes

    @property
    def transform(self) -> Callable[[Any], Tensor]:
        """Eval preprocessing from the config: PIL image or uint8 tensor -> normalised (C, H, W)."""
        from protozoo.transforms import eval_transform

        c = self.config
        return eval_transform(c.img_size, c.mean, c.std, c.in_chans, c.crop_pct, c.interpolation)

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled backbone features (timm's forward_features)."""
        return self.backbone.forward_features(x)

    def prototype_logits(self, z: Tensor) -> Tensor:
        """(B, K) scores against the prototypes: z Cᵀ for CARP, normalize(z) Cᵀ for DINO.

        Decoupled prototypes are buffers, so no gradient reaches them; learnable ones get one.
        """
        if self.config.family == "dino":
            z = F.normalize(z, dim=-1)
        return z @ self.prototypes.to(z.dtype).T

    def forward(self, x: Tensor | list[Tensor]) -> ProtoOutput:
        """Images (B, C, H, W), normalised as ``transform`` does, -> :class:`ProtoOutput`.

        A list of views (multi-crop, possibly of two sizes) runs the backbone once per size and
        the head once on the concatenation, like DINO's MultiCropWrapper; outputs are then
        (V·B, ...) in view order.

        Raises:
            ValueError: when x is not a float tensor of shape (B, in_chans, H, W) with B >= 1
                (and H = W = img_size for fixed-size backbones such as ViTs).
        """
        features, z = self._features_and_projection(x)
        scores = self.prototype_logits(z)
        return ProtoOutput(
            features=features,
            embeddings=F.normalize(z, dim=-1),
            assignments=torch.softmax(scores.float() / self.config.temperature, dim=-1),
            logits=self.classifier(features) if self.classifier is not None else None,
            projection=z,
            scores=scores,
        )

    def project(self, x: Tensor | list[Tensor]) -> Tensor:
        """The head's unnormalised projections z, (B, D) or (V·B, D), without scoring the prototypes.

        Takes what :meth:`forward` takes; the training teacher uses it, since the prototypes it would
        score against change in the GMM update that follows.
        """
        return self._features_and_projection(x)[1]

    def _features_and_projection(self, x: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        views = x if isinstance(x, (list, tuple)) else [x]
        for v in views:
            self._check_input(v)
        features = torch.cat([self.backbone(torch.cat(group)) for group in _same_size_groups(views)])
        return features, self.head(features)

    def _check_input(self, x: Tensor) -> None:
        c = self.config
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] == 0 or x.shape[1] != c.in_chans:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"Expected images of shape (B, {c.in_chans}, H, W) with B >= 1, got {shape}; "
                f"preprocess PIL images with model.transform"
            )
        if not x.is_floating_point():
            raise ValueError(f"Expected a float tensor normalised with model.transform, got dtype {x.dtype}")
        fixed = get_pretrained_cfg_value(c.architecture, "fixed_input_size")
        if fixed and tuple(x.shape[-2:]) != (c.img_size, c.img_size):
            raise ValueError(
                f"{c.architecture} takes {c.img_size}x{c.img_size} inputs, got {x.shape[-2]}x{x.shape[-1]}; "
                f"resize with model.transform"
            )

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path:
        """Write the Hub-layout folder (see :func:`protozoo.hub.save_pretrained`)."""
        from protozoo.hub import save_pretrained

        return save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> CommitInfo:
        """Upload to the Hub (see :func:`protozoo.hub.push_to_hub`)."""
        from protozoo.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _same_size_groups(views: list[Tensor] | tuple[Tensor, ...]) -> list[list[Tensor]]:
    """Consecutive views of the same spatial size, so each group is one backbone call."""
    groups: list[list[Tensor]] = []
    for v in views:
        if groups and groups[-1][0].shape[-2:] == v.shape[-2:]:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups
