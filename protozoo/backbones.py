"""Small-image backbone variants for 28-32 px inputs, registered with timm.

After ``import protozoo.backbones``, ``timm.create_model("resnet18_small")`` and friends work like any timm
model, including ``pretrained=True`` from ``hf-hub:`` and ``local-dir:`` checkpoints.

- ``resnet18_small`` / ``resnet50_small``: timm's ResNet with a 3×3 stride-2 stem conv and no
  max-pool (28 px → 14 px after the stem instead of 7 px), the usual stage layout; ``stem_stride=1``
  keeps the full 28 px through the stem, for about four times the compute.
- ``vit_tiny_patch4_28`` / ``vit_small_patch4_32`` …: timm's ViT with 4×4 patches at the native
  size of the small datasets (28 px → 49 tokens, 32 px → 64 tokens); ``vit_tiny_patch7_28`` has
  7×7 patches (16 tokens) for a third of the compute.

The ViT variants are stock timm ViTs with other ``model_args``, so :class:`protozoo.ProtoModel` builds
them as such (:func:`timm_equivalent`) and their config.json loads in plain timm, without protozoo.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn


class SmallStemResNet(ResNet):
    """timm ResNet whose stem is one 3×3 conv (stride 2, or 1 with ``stem_stride=1``) without max-pool,
    for 28-32 px images."""

    def __init__(self, *args: Any, stem_stride: int = 2, **kwargs: Any) -> None:
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        super().__init__(*args, **kwargs)
        old: Any = self.conv1
        stem = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=stem_stride, padding=1, bias=False)
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        self.conv1 = stem  # type: ignore[assignment]
        self.maxpool = nn.Identity()  # type: ignore[assignment]
        feature_info: list[dict[str, Any]] = self.feature_info  # type: ignore[assignment]
        for info in feature_info:  # one conv of stride 1 or 2 instead of the stride-4 stem
            info["reduction"] = max(stem_stride, info["reduction"] * stem_stride // 4)


# protozoo name -> (stock timm architecture, the model_args that make it this variant)
TIMM_EQUIVALENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_tiny_patch4_28": ("vit_tiny_patch16_224", {"patch_size": 4}),
    "vit_tiny_patch7_28": ("vit_tiny_patch16_224", {"patch_size": 7}),
    "vit_tiny_patch4_32": ("vit_tiny_patch16_224", {"patch_size": 4}),
    "vit_small_patch4_32": ("vit_small_patch16_224", {"patch_size": 4}),
}


def timm_equivalent(architecture: str) -> tuple[str, dict[str, Any]]:
    """The stock timm architecture and model_args that build ``architecture`` (itself and {} if none).

    The image size is not among the model_args: the model's config supplies it.
    """
    name, args = TIMM_EQUIVALENTS.get(architecture, (architecture, {}))
    return name, dict(args)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


def _vit_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(first_conv="patch_embed.proj", classifier="head", fixed_input_size=True, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "resnet18_small.untrained": _cfg(),
        "resnet50_small.untrained": _cfg(),
        "vit_tiny_patch4_28.untrained": _vit_cfg(input_size=(1, 28, 28)),
        "vit_tiny_patch7_28.untrained": _vit_cfg(input_size=(1, 28, 28)),
        "vit_tiny_patch4_32.untrained": _vit_cfg(),
        "vit_small_patch4_32.untrained": _vit_cfg(),
    }
)


def _resnet(variant: str, pretrained: bool, **kwargs: Any) -> SmallStemResNet:
    return build_model_with_cfg(SmallStemResNet, variant, pretrained, **kwargs)


def _vit(variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    return build_model_with_cfg(
        VisionTransformer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs
    )


@register_model
def resnet18_small(pretrained: bool = False, **kwargs: Any) -> SmallStemResNet:
    """ResNet-18 with a 3×3 stride-2 stem and no max-pool (28-32 px inputs)."""
    return _resnet("resnet18_small", pretrained, **dict(block=BasicBlock, layers=(2, 2, 2, 2), **kwargs))


@register_model
def resnet50_small(pretrained: bool = False, **kwargs: Any) -> SmallStemResNet:
    """ResNet-50 with a 3×3 stride-2 stem and no max-pool (28-32 px inputs)."""
    return _resnet("resnet50_small", pretrained, **dict(block=Bottleneck, layers=(3, 4, 6, 3), **kwargs))


@register_model
def vit_tiny_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny, 4×4 patches at 28 px (49 tokens), one input channel by default."""
    args = dict(img_size=28, patch_size=4, embed_dim=192, depth=12, num_heads=3)
    return _vit("vit_tiny_patch4_28", pretrained, **dict(args, **kwargs))


@register_model
def vit_tiny_patch7_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny, 7×7 patches at 28 px (16 tokens): about a third of the patch-4 model's compute."""
    args = dict(img_size=28, patch_size=7, embed_dim=192, depth=12, num_heads=3)
    return _vit("vit_tiny_patch7_28", pretrained, **dict(args, **kwargs))


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny, 4×4 patches at 32 px (64 tokens)."""
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3)
    return _vit("vit_tiny_patch4_32", pretrained, **dict(args, **kwargs))


@register_model
def vit_small_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Small, 4×4 patches at 32 px (64 tokens)."""
    args = dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6)
    return _vit("vit_small_patch4_32", pretrained, **dict(args, **kwargs))
