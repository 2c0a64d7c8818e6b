"""protozoo: self-supervised vision backbones trained with decoupled prototypes.

>>> import protozoo
>>> protozoo.list_models()
>>> model = protozoo.load("dp-resnet18-fmnist")
"""

from __future__ import annotations

from typing import Any

from protozoo.config import ProtoConfig
from protozoo.model import ProtoModel, ProtoOutput

__version__ = "0.1.0"
__all__ = ["ProtoConfig", "ProtoModel", "ProtoOutput", "list_models", "load", "__version__"]


def __getattr__(name: str) -> Any:
    # load is ProtoModel.from_pretrained; list_models lives in the registry.
    if name == "load":
        return ProtoModel.from_pretrained
    if name == "list_models":
        from protozoo.registry import list_models

        return list_models
    raise AttributeError(f"module 'protozoo' has no attribute {name!r}")
