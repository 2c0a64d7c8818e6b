"""Outside anchors: lightly's DINO and SwAV on our backbone, data, budget and evaluation.

``python -m train --config <recipe> method=lightly_dino`` (or ``lightly_swav``) runs the Trainer with
lightly's own heads, losses and momentum update (lightly.models.modules, lightly.loss,
lightly.models.utils) put together as in lightly's examples, in place of ProtoModel and our losses.
Everything else is the Trainer's: the timm backbone, the seeded multi-crop views, batches, schedules,
bf16 autocast, channels_last, checkpoints, metrics.jsonl and the evaluation (k-NN and collapse report
every ``eval_every`` steps, final test k-NN, linear probe, long-tail class groups). DINO is evaluated
through its EMA teacher; SwAV has no teacher, so through the student. No ``model/`` folder is written
(lightly's heads are not a ProtoModel); the final weights stay in ``checkpoints/``.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protozoo.model import ProtoModel, ProtoOutput, _same_size_groups

from .config import TrainConfig
from .engine import Trainer, cosine

try:
    from lightly.loss import DINOLoss, SwaVLoss
    from lightly.models.modules import DINOProjectionHead, SwaVProjectionHead, SwaVPrototypes
    from lightly.models.utils import deactivate_requires_grad, update_momentum
except ImportError as e:
    raise ImportError(f"the lightly anchors need lightly ({e}): pip install 'protozoo[bench]'") from e


class LightlyAnchor(nn.Module, ABC):
    """A timm backbone with a lightly head, answering like a ProtoModel.

    ``forward`` returns a :class:`ProtoOutput` (``features``, unit-norm ``embeddings``,
    ``assignments`` = softmax of the prototype scores at the loss's temperature, ``scores``) and
    ``prototypes`` is the (K, D) unit-norm prototype matrix, which is what Trainer.evaluate reads.

    Args:
        backbone: the timm backbone (``num_classes=0``, pooled (B, F) output).
        temperature: softmax temperature of the assignments (the loss's student temperature).
    """

    def __init__(self, backbone: nn.Module, temperature: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.temperature = temperature

    @property
    @abstractmethod
    def prototypes(self) -> Tensor:
        """(K, D) unit-norm prototype matrix."""

    @abstractmethod
    def embed(self, features: Tensor) -> Tensor:
        """(N, F) backbone features -> (N, D) unit-norm projection."""

    @abstractmethod
    def score(self, z: Tensor) -> Tensor:
        """(N, D) unit-norm projection -> (N, K) prototype scores (what lightly's losses take)."""

    def forward(self, x: Tensor | list[Tensor]) -> ProtoOutput:
        """Images (B, C, H, W), or a list of views, -> ProtoOutput of (V·B, ...) in view order."""
        views = x if isinstance(x, (list, tuple)) else [x]
        # one backbone call per crop size, as ProtoModel and lightly's DINO benchmark do
        features = torch.cat([self.backbone(torch.cat(group)) for group in _same_size_groups(views)])
        z = self.embed(features)  # (V·B, D)
        scores = self.score(z)  # (V·B, K)
        return ProtoOutput(
            features=features,
            embeddings=z,
            assignments=torch.softmax(scores.float() / self.temperature, dim=-1),
            projection=z,
            scores=scores,
        )


class LightlyDINO(LightlyAnchor):
    """lightly's DINOProjectionHead: MLP to the bottleneck, L2 norm, weight-normalised last layer.

    The rows of the last layer are the prototypes; its gain is fixed at 1 (``norm_last_layer``).
    """

    def __init__(self, backbone: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(backbone, cfg.student_temp)
        self.head = DINOProjectionHead(
            backbone.num_features,
            cfg.hidden_dim,
            cfg.embed_dim,
            cfg.num_prototypes,
            freeze_last_layer=cfg.freeze_last_layer_steps,  # lightly counts epochs; we pass steps
        )

    @property
    def prototypes(self) -> Tensor:
        """(K, D) rows of the last layer, g·v/‖v‖ with g = 1."""
        return F.normalize(self.head.last_layer.weight_v, dim=1)

    def embed(self, features: Tensor) -> Tensor:
        """DINOProjectionHead.forward up to its last layer."""
        return F.normalize(self.head.layers(features), dim=-1)

    def score(self, z: Tensor) -> Tensor:
        """The last layer: cosine similarity to each prototype."""
        return self.head.last_layer(z)


class LightlySwAV(LightlyAnchor):
    """lightly's SwaVProjectionHead (Linear-BN-ReLU-Linear), L2 norm and SwaVPrototypes.

    lightly's prototype layer has a bias (SwAV's reference has none); it is kept as lightly ships it.
    """

    def __init__(self, backbone: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(backbone, cfg.student_temp)
        self.projection_head = SwaVProjectionHead(backbone.num_features, cfg.hidden_dim, cfg.embed_dim)
        self.prototype_layer = SwaVPrototypes(cfg.embed_dim, cfg.num_prototypes)

    @property
    def prototypes(self) -> Tensor:
        """(K, D) prototype weights, unit-norm after each step's ``normalize``."""
        return F.normalize(self.prototype_layer.heads[0].weight, dim=1)

    def embed(self, features: Tensor) -> Tensor:
        """Projection head, then L2 norm (lightly's SwAV example)."""
        return F.normalize(self.projection_head(features), dim=1)

    def score(self, z: Tensor) -> Tensor:
        """Dot products with the prototypes (plus lightly's bias)."""
        return self.prototype_layer(z)


class AnchorTrainer(Trainer):
    """The Trainer with lightly's DINO (EMA teacher) or SwAV (no teacher) as the model and loss."""

    teacher: LightlyAnchor  # type: ignore[assignment]

    def _build_model(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        # the backbone exactly as our methods get it: name check, timm kwargs, input size, RNG draw
        backbone = ProtoModel(dataclasses.replace(cfg, method="dino").proto_config()).backbone
        dino = cfg.method == "lightly_dino"
        student: LightlyAnchor = LightlyDINO(backbone, cfg) if dino else LightlySwAV(backbone, cfg)
        if acc.num_processes > 1 and acc.device.type == "cuda":  # batch statistics over the global batch
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        if cfg.channels_last:
            student = student.to(memory_format=torch.channels_last)
        params = [p for p in student.parameters() if p.requires_grad]  # not DINO's fixed gain
        self.student, self.optimizer = acc.prepare(student, self._optimizer(params))
        if dino:  # the teacher starts as the student (weight norm cannot be deep-copied)
            teacher = LightlyDINO(copy.deepcopy(self.model.backbone), cfg)
            teacher.load_state_dict(self.model.state_dict())
            deactivate_requires_grad(teacher)
            self.teacher = teacher.to(acc.device)
            self.criterion: nn.Module = DINOLoss(
                output_dim=cfg.num_prototypes,
                teacher_temp=cfg.teacher_temp,
                student_temp=cfg.student_temp,
                center_momentum=cfg.center_momentum,
            )
        else:
            self.teacher = self.model
            self.criterion = SwaVLoss(
                temperature=cfg.student_temp, sinkhorn_gather_distributed=acc.num_processes > 1
            )
        self.criterion.to(acc.device)

    @property
    def model(self) -> LightlyAnchor:  # type: ignore[override]
        """The student without its distributed wrapper."""
        return self.accelerator.unwrap_model(self.student)

    def train_step(self, micro_batches: list[list[Tensor]]) -> dict[str, float]:
        cfg, acc, s, anchor = self.cfg, self.accelerator, self.step, self.model
        lr, teacher_temp = self._schedule()
        if isinstance(anchor, LightlySwAV):
            anchor.prototype_layer.normalize()  # back on the unit sphere each step (lightly's example)
        total = 0.0
        for a, views in enumerate(micro_batches):
            views = [v.to(acc.device, non_blocking=True) for v in views]
            if cfg.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            last = a == len(micro_batches) - 1
            with acc.no_sync(self.student) if not last else nullcontext(), acc.autocast():
                # scores in fp32: Sinkhorn's exp and sums are no autocast ops, so they stay fp32
                student = list(self.student(views).scores.float().chunk(len(views)))  # V x (B, K)
                if isinstance(anchor, LightlyDINO):
                    with torch.no_grad():  # only the 2 global views pass through the teacher
                        teacher = list(self.teacher(views[:2]).scores.float().chunk(2))  # 2 x (B, K)
                    loss = self.criterion(teacher_out=teacher, student_out=student, teacher_temp=teacher_temp)
                else:  # codes from the global views, predicted from every other view
                    loss = self.criterion(
                        high_resolution_outputs=student[:2], low_resolution_outputs=student[2:]
                    )
            if not torch.isfinite(loss).all():
                raise FloatingPointError(f"loss is {loss.item()} at step {s}; lower lr or raise warmup_steps")
            acc.backward(loss / len(micro_batches))
            total += loss.item() / len(micro_batches)
        if cfg.clip_grad:
            acc.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
        if isinstance(anchor, LightlyDINO):
            anchor.head.cancel_last_layer_gradients(current_epoch=s)
        elif isinstance(anchor, LightlySwAV) and s < cfg.freeze_last_layer_steps:  # as SwAV's reference
            for p in anchor.prototype_layer.parameters():
                p.grad = None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        logs = {"loss": total, "lr": lr}
        if isinstance(anchor, LightlyDINO):
            logs["teacher_momentum"] = m = cosine(s, self.total_steps, cfg.teacher_momentum, 1.0)
            update_momentum(anchor, self.teacher, m=m)  # teacher = EMA of the student
        self.step += 1
        return logs

    def save_model(self, results: dict[str, Any]) -> None:
        """No model folder: lightly's heads are not a ProtoModel (the weights stay in checkpoints/)."""
