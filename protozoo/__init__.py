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
    # load / list_models live in protozoo.hub, which imports huggingface_hub; import it on first use.
    if name in ("load", "list_models"):
        from protozoo import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'protozoo' has no attribute {name!r}")
