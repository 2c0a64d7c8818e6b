"""Self-supervised losses over prototypes: CARP and DINO (the encoder objectives) and KoLeo-proto.

Each loss takes logits or prototypes computed by the caller, so the same module serves joint
training (learnable prototypes) and decoupled training (prototypes fitted by the online GMM).
"""

from protozoo.losses.carp import CARPLoss
from protozoo.losses.dino import DINOLoss
from protozoo.losses.koleo import KoLeoProtoLoss

__all__ = ["CARPLoss", "DINOLoss", "KoLeoProtoLoss"]
