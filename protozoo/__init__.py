"""protozoo: self-supervised vision backbones trained with decoupled prototypes.

>>> import protozoo
>>> protozoo.list_models()
>>> model = protozoo.load("dp-resnet18-fmnist")

``import protozoo`` is light: the names below import their modules (torch, timm, huggingface_hub)
on first use, so the ``protozoo`` command answers ``--help`` at once. Importing ``protozoo.model``
(or using ``load``/``ProtoModel``) registers the small-image backbones with timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protozoo.config import ProtoConfig
    from protozoo.model import ProtoModel, ProtoOutput
    from protozoo.registry import list_models

    load = ProtoModel.from_pretrained

__version__ = "0.1.0"
__all__ = ["ProtoConfig", "ProtoModel", "ProtoOutput", "list_models", "load", "__version__"]
_LAZY = {  # public name -> the module that defines it
    "ProtoConfig": "protozoo.config",
    "ProtoModel": "protozoo.model",
    "ProtoOutput": "protozoo.model",
    "list_models": "protozoo.registry",
}


def __getattr__(name: str) -> Any:
    if name == "load":  # load is ProtoModel.from_pretrained
        from protozoo.model import ProtoModel

        return ProtoModel.from_pretrained
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'protozoo' has no attribute {name!r}")
