"""ProtoConfig: everything needed to rebuild a ProtoModel, saved in every checkpoint's config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

METHODS = ("carp", "carp_kp", "carp_dec", "dino", "dino_dec")


@dataclass
class ProtoConfig:
    """Architecture, method and preprocessing of a prototype model.

    The defaults are the embedded Fashion-MNIST recipe; method.md gives the reasons.
    """

    architecture: str = "resnet18_small"  # any timm model name; *_small / *_patch4_28 suit 28-32 px
    method: str = (
        "carp_dec"  # carp | carp_kp | carp_dec | dino | dino_dec; *_dec fits prototypes by online GMM
    )
    num_prototypes: int = 1024  # K; 1-4k at Fashion-MNIST scale, 65 536 at ImageNet scale
    embed_dim: int = 256  # D, the projection (and prototype) dimension, 256 as in CARP and DINO's bottleneck
    hidden_dim: int = 2048  # width of the projection MLP (CARP and DINO use 2048)
    head_layers: int = 3  # linear layers in the projection MLP
    temperature: float = 1.0  # assignment softmax temperature: 1.0 for CARP (none), 0.1 for DINO's student
    img_size: int = 28  # native input size; ViTs are built (and exported) at this size
    in_chans: int = 1  # 1 for Fashion-MNIST, 3 for colour data
    mean: tuple[float, ...] = (0.2860,)  # per-channel normalisation (Fashion-MNIST train set)
    std: tuple[float, ...] = (0.3530,)
    interpolation: str = "bicubic"  # eval resize interpolation
    crop_pct: float = 1.0  # eval center-crop fraction (timm's crop_pct); 0.875 for ImageNet-style data
    gmm_eta: float = 1e-3  # online GMM forgetting per unit of responsibility
    gmm_var_floor: float = 1e-4  # lower bound on GMM variances
    gmm_init: str = "random"  # GMM means: "random" unit vectors, "first_batch" features + noise, "kmeans++"
    gmm_init_samples: int = 4096  # kmeans++: teacher embeddings buffered before the means are seeded
    gmm_split_every: int = 0  # every this many updates, dead GMM components take half of busy ones; 0: never
    gmm_split_min_mass: float = 1.0  # a component with less responsibility since the last check is dead
    gmm_covariance: str = "diag"  # "diag" per component, or "shared": one isotropic variance for all
    gmm_relocate: str = "split"  # where moved components go: split | embeddings | sampled | busiest
    gmm_merge_eps: float = 0.0  # a prototype this close (1 - cos) to a heavier one moves; 0: never
    gmm_relocate_order: str = "index"  # movers placed first when a check cannot place all: index | lightest
    gmm_relocate_mass: str = "shared"  # a moved component's start: shared with its owner | least | fresh
    gmm_uniform_weights: bool = False  # mixture weights fixed at 1/K instead of learned from the masses
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm kwargs, e.g. drop_path_rate

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; valid methods are {', '.join(METHODS)}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(
                f"mean {self.mean} and std {self.std} need one value per input channel "
                f"(in_chans={self.in_chans})"
            )
        for name in ("num_prototypes", "embed_dim", "hidden_dim", "head_layers", "img_size", "in_chans"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    @property
    def decoupled(self) -> bool:
        """True when the prototypes come from the online GMM rather than the loss."""
        return self.method.endswith("_dec")

    @property
    def family(self) -> str:
        """The loss family: "carp" or "dino"."""
        return self.method.split("_")[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProtoConfig:
        """Build from a dict, rejecting unknown keys by name.

        Raises:
            ValueError: when ``values`` holds keys that are not ProtoConfig fields.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown ProtoConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**values)
