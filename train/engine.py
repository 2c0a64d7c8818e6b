"""The training loop: decoupled-prototype and joint prototypical SSL on Accelerate.

One iteration (method.md §2): the EMA teacher embeds the two global crops; for decoupled methods
the online GMM takes one EM step on those (detached) embeddings; the student then takes one
optimiser step on the SSL loss with the prototypes held fixed; the teacher follows by EMA.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import broadcast, set_seed
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from protozoo.collapse import collapse_report, plot_unique_over_steps
from protozoo.data import build_dataset, class_groups, final_eval_splits, random_subset
from protozoo.eval import knn_accuracy, knn_predict, linear_predict, per_group_accuracy
from protozoo.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from protozoo.losses import CARPLoss, DINOLoss, KoLeoProtoLoss
from protozoo.model import ProtoModel
from protozoo.prototypes import LearnablePrototypes, OnlineGMM
from protozoo.transforms import eval_transform, multicrop_preset

from .config import TrainConfig
from .lars import LARS

logger = logging.getLogger(__name__)
CARD_RESULTS = ("knn_top1", "linear_top1", "unique", "perplexity", "dead", "live", "carrying", "unique_live")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class WithCleanView:
    """Appends the image as evaluation sees it (``eval_tf``) to the augmented views (``gmm_fit=clean``)."""

    def __init__(self, views_tf: Callable[[Any], list[Tensor]], eval_tf: Callable[[Any], Tensor]) -> None:
        self.views_tf, self.eval_tf = views_tf, eval_tf

    def __call__(self, image: Any) -> list[Tensor]:
        return [*self.views_tf(image), self.eval_tf(image)]


class SeededViews(Dataset):
    """Draws each sample's augmentations from a seed of (seed, epoch, index).

    The views of a sample then do not depend on which process or worker loads it, so a run on
    two processes sees exactly the views of a run on one, and a resumed run those it would have
    seen without the interruption.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]


def cosine(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_from: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_from`` to ``start`` over ``warmup`` steps, then cosine to ``end``."""
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def resolve_precision(mixed_precision: str) -> str:
    """Accelerate's ``mixed_precision`` for a config value; ``auto`` is bf16 where the hardware computes it.

    That is a CUDA GPU with bf16 (fp16 on older ones) or a CPU with AVX512-BF16 or AMX; elsewhere
    ``auto`` is ``no`` (fp32), since emulated bf16 on an AVX2-only CPU is 13 times slower than fp32
    (``python benchmarks/bench_precision.py``).
    """
    if mixed_precision != "auto":
        return mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "no"


def accelerator_options(mixed_precision: str) -> dict[str, Any]:
    """``cpu`` and ``mixed_precision`` for Accelerator, leaving what ``accelerate launch`` set to Accelerate.

    ``accelerate launch`` passes its flags and the user's accelerate config as environment variables
    (ACCELERATE_MIXED_PRECISION, ACCELERATE_USE_CPU), which Accelerate reads when these arguments are
    None. The recipe's ``auto`` defers to them; an explicit recipe value that contradicts them is an
    error. The CPU is forced only where torch sees no accelerator (CUDA, MPS, XPU, ...), which also
    makes torchrun on CPUs use gloo.

    Raises:
        ValueError: when the recipe's mixed_precision contradicts ACCELERATE_MIXED_PRECISION.
    """
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched is not None and mixed_precision not in ("auto", launched):
        raise ValueError(
            f"mixed_precision={mixed_precision} in the recipe contradicts accelerate's "
            f"mixed_precision={launched} (from `accelerate launch --mixed_precision` or the accelerate "
            "config); keep one of them, e.g. mixed_precision=auto in the recipe"
        )
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return {
        "cpu": use_cpu or not torch.accelerator.is_available(),
        "mixed_precision": None if launched is not None else resolve_precision(mixed_precision),
    }


@torch.no_grad()
def pixels(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """(flattened normalised images (N, C·H·W), labels (N,)): the features of raw-pixel k-NN."""
    images, labels = zip(*((x.flatten(1), y) for x, y in DataLoader(dataset, batch_size=1024)), strict=True)
    return torch.cat(images), torch.cat(labels)


def gather_outputs(
    accelerator: Accelerator, model: ProtoModel, dataset: Dataset, batch_size: int = 512, num_workers: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """(features, assignments, labels) of a whole dataset, each process encoding its shard of the batches.

    ``accelerator.gather_for_metrics`` collects every batch on every process in dataset order and drops
    the samples that evened out the last batches, so the result equals one process's. Outputs are fp32
    on the CPU; the model runs in eval mode, its modes restored afterwards.
    """
    loader = prepare_data_loader(
        DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator()),
        accelerator.device,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        put_on_device=True,
    )
    modes = {module: module.training for module in model.modules()}
    model.eval()
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        for images, labels in loader:
            with accelerator.autocast():
                out = model(images)
            batch = accelerator.gather_for_metrics((out.features.float(), out.assignments.float(), labels))
            parts.append(tuple(t.cpu() for t in batch))  # type: ignore[arg-type]
    finally:
        for module, mode in modes.items():
            module.train(mode)
    features, assignments, labels = (torch.cat(column) for column in zip(*parts, strict=True))
    return features, assignments, labels


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name and rename it, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Trainer:
    """Builds everything a run needs from a TrainConfig and runs it; ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.mean is None:
            fmnist = cfg.dataset == "fashion_mnist"
            cfg.mean = list(FASHION_MNIST_MEAN if fmnist else IMAGENET_MEAN[: cfg.in_chans])
            cfg.std = list(FASHION_MNIST_STD if fmnist else IMAGENET_STD[: cfg.in_chans])
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            **accelerator_options(cfg.mixed_precision),
            log_with=cfg.trackers or None,
            project_dir=str(self.out),
        )
        acc = self.accelerator
        if cfg.batch_size % (acc.num_processes * cfg.grad_accum_steps):
            raise ValueError(
                f"batch_size={cfg.batch_size} must be divisible by processes x grad_accum_steps "
                f"= {acc.num_processes} x {cfg.grad_accum_steps}"
            )
        self.micro_batch = cfg.batch_size // (acc.num_processes * cfg.grad_accum_steps)
        set_seed(cfg.seed)
        self._build_data()
        self._build_model()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.knn_pixels: float | None = None  # raw-pixel k-NN on the final evaluation's split
        self.train_seconds: float | None = None  # this process's training loop, evaluations included

    # ====== data ======
    def _build_data(self) -> None:
        cfg = self.cfg
        mean, std = cfg.mean or (), cfg.std or ()
        train_tf = multicrop_preset(
            cfg.img_size,
            mean,
            std,
            cfg.in_chans,
            num_local=cfg.num_local_crops,
            global_scale=cfg.global_crops_scale,
            local_scale=cfg.local_crops_scale,
            blur_prob=cfg.blur_prob,
            solarize_prob=cfg.solarize_prob,
        )
        eval_tf = eval_transform(cfg.img_size, mean, std, cfg.in_chans, cfg.crop_pct)
        if cfg.gmm_fit == "clean":
            train_tf = WithCleanView(train_tf, eval_tf)
        root, lt = cfg.data_root, cfg.long_tail
        train = build_dataset(
            cfg.dataset, "train", transform=train_tf, root=root, long_tail=lt, seed=cfg.seed
        )
        self.train_set = SeededViews(train, cfg.seed)
        bank = build_dataset(cfg.dataset, "train", transform=eval_tf, root=root, long_tail=lt, seed=cfg.seed)
        self.bank_set = random_subset(bank, cfg.eval_bank_size, cfg.seed)
        self.val_set = build_dataset(cfg.dataset, "val", transform=eval_tf, root=cfg.data_root)
        if cfg.eval_val_size is not None:
            self.val_set = random_subset(self.val_set, cfg.eval_val_size, cfg.seed)
        self.steps_per_epoch = len(self.train_set) // cfg.batch_size  # type: ignore[arg-type]
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size={cfg.batch_size} is larger than the training set ({len(self.train_set)})"
            )  # type: ignore[arg-type]
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * self.steps_per_epoch
        self.eval_tf = eval_tf

    def _micro_batches(self, epoch: int, start_step: int) -> list[list[int]]:
        """This process's micro-batches of one epoch from ``start_step`` on; order set by (seed, epoch)."""
        cfg, acc = self.cfg, self.accelerator
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(self.train_set), generator=g).tolist()  # type: ignore[arg-type]
        batches = []
        for step in range(start_step, self.steps_per_epoch):
            chunk = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            for a in range(cfg.grad_accum_steps):  # micro-batch a of process r
                i = (a * acc.num_processes + acc.process_index) * self.micro_batch
                batches.append(chunk[i : i + self.micro_batch])
        return batches

    # ====== model, teacher, losses, optimiser ======
    def _build_model(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        student = ProtoModel(cfg.proto_config())
        if acc.num_processes > 1 and acc.device.type == "cuda":  # batch statistics over the global batch
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        teacher = copy.deepcopy(student)
        if student.config.decoupled:
            teacher.prototype_source = student.prototype_source  # one shared GMM
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.channels_last:
            student, teacher = (
                student.to(memory_format=torch.channels_last),
                teacher.to(memory_format=torch.channels_last),
            )
        K = cfg.num_prototypes
        if student.config.family == "carp":
            self.criterion: nn.Module = CARPLoss(
                K, block_size=cfg.block_size, sinkhorn_iterations=cfg.sinkhorn_iterations
            )
        else:
            centering = "none" if cfg.centering == "posterior" else cfg.centering  # posteriors: as they are
            self.criterion = DINOLoss(
                K, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum, centering=centering
            )
        self.koleo = KoLeoProtoLoss()  # stateless: on the prototypes (carp_kp) and on features (koleo_weight)
        self.student, self.optimizer = acc.prepare(student, self._optimizer(list(student.parameters())))
        self.teacher = teacher.to(acc.device)
        self.criterion.to(acc.device)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """cfg.optimizer over two groups: weight matrices (decayed), biases and norms (not, as DINO)."""
        cfg = self.cfg
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum)
        return LARS(groups, momentum=cfg.momentum)

    def _schedule(self) -> tuple[float, float]:
        """Put this step's lr and weight decay into the optimiser; return (lr, DINO teacher temperature)."""
        cfg, s, T = self.cfg, self.step, self.total_steps
        lr = cosine(s, T, cfg.lr * cfg.batch_size / 256, cfg.min_lr, warmup=cfg.warmup_steps)
        wd = cosine(s, T, cfg.weight_decay, cfg.weight_decay_end)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = lr
            group["weight_decay"] = wd if i == 0 else 0.0
        warm = cfg.teacher_temp_warmup_steps
        return lr, cosine(s, T, cfg.teacher_temp, cfg.teacher_temp, warm, cfg.teacher_temp_start)

    @property
    def model(self) -> ProtoModel:
        """The student without its distributed wrapper."""
        return self.accelerator.unwrap_model(self.student)

    # ====== one iteration ======
    def train_step(self, micro_batches: list[list[Tensor]]) -> dict[str, float]:
        cfg, acc, s, T = self.cfg, self.accelerator, self.step, self.total_steps
        lr, teacher_temp = self._schedule()
        beta = min(1.0, cfg.gmm_beta0 + (1 - cfg.gmm_beta0) * s / max(1, cfg.gmm_anneal_frac * T))
        logs: dict[str, float] = {}
        for a, views in enumerate(micro_batches):
            views = [v.to(acc.device, non_blocking=True) for v in views]
            if cfg.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            clean = views.pop() if cfg.gmm_fit == "clean" else None  # for the GMM only
            last = a == len(micro_batches) - 1
            with acc.no_sync(self.student) if not last else nullcontext(), acc.autocast():
                with torch.no_grad():
                    z_t = self.teacher.project(views[:2])
                    source = self.model.prototype_source
                    if isinstance(source, OnlineGMM):  # the prototype step
                        h_t = F.normalize(z_t.float(), dim=-1)
                        if cfg.gmm_fit == "mean":  # one point per image: its views' mean direction
                            h_fit = F.normalize(sum(h_t.chunk(2)), dim=-1)
                        elif clean is not None:  # one point per image: the image itself
                            h_fit = F.normalize(self.teacher.project([clean]).float(), dim=-1)
                        else:
                            h_fit = h_t
                        source.update(h_fit, beta=beta)
                    if cfg.centering == "posterior" and isinstance(source, OnlineGMM):  # targets: γ(h_t)
                        t_scores, teacher_temp = source.log_prob(h_t).chunk(2), 1.0
                    else:
                        t_scores = self.teacher.prototype_logits(z_t).chunk(2)  # 2 x (B, K)
                out = self.student(views)  # prototypes now fixed for this step
                student_scores = list(out.scores.chunk(len(views)))  # V x (B, K)
                if self.model.config.family == "carp":
                    terms = self.criterion(student=student_scores, teacher=list(t_scores))
                else:
                    terms = self.criterion(
                        student=student_scores, teacher=list(t_scores), teacher_temp=teacher_temp
                    )
                loss = terms["loss"]
                if cfg.method == "carp_kp":
                    terms["koleo"] = self.koleo(self.model.prototypes)["loss"]
                    loss = loss + cfg.kp_weight * terms["koleo"]
                if cfg.koleo_weight:  # DINOv2: spread each global crop's batch of features
                    spread = out.features if cfg.koleo_space == "features" else out.embeddings
                    globals_ = spread.chunk(len(views))[:2]
                    terms["koleo_features"] = sum(self.koleo(f)["loss"] for f in globals_) / 2
                    loss = loss + cfg.koleo_weight * terms["koleo_features"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {s}; lower lr or raise warmup_steps")
            acc.backward(loss / len(micro_batches))
            for k, v in terms.items():
                logs[k] = logs.get(k, 0.0) + v.item() / len(micro_batches)
        if cfg.clip_grad:
            acc.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
        if s < cfg.freeze_last_layer_steps and not self.model.config.decoupled:
            self.model.prototype_source.weight.grad = None  # DINO: keep the last layer fixed early
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        m = cosine(s, T, cfg.teacher_momentum, cfg.teacher_momentum_end)
        with torch.no_grad():  # teacher = EMA of the student
            t_params: list[Tensor] = list(self.teacher.parameters())
            torch._foreach_lerp_(t_params, list(self.model.parameters()), 1.0 - m)
        self.step += 1
        return {**logs, "lr": lr, "teacher_momentum": m, "beta": beta if self.model.config.decoupled else 1.0}

    # ====== evaluation ======
    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, Any]:
        """k-NN top-1 of the teacher's features and the collapse report of the prototypes.

        During training: a memory bank of ``eval_bank_size`` training images and the held-out
        "val" split (at most ``eval_val_size`` images of it). At the end (``final``): the whole training
        set (long-tailed like the training data when ``long_tail`` is set, with k-NN per head/medium/tail
        class group) against the test split (:func:`final_eval_splits`). Every process encodes its
        shard of the images; all of them get the whole result.
        """
        cfg, model = self.cfg, self.teacher
        bank_set, query_set, split = self.bank_set, self.val_set, "val"
        if final:
            bank_split, split = final_eval_splits(cfg.dataset)
            bank_set = build_dataset(cfg.dataset, bank_split, transform=self.eval_tf, root=cfg.data_root,
                                     long_tail=cfg.long_tail, seed=cfg.seed)  # fmt: skip
            query_set = build_dataset(cfg.dataset, split, transform=self.eval_tf, root=cfg.data_root)
        acc, workers = self.accelerator, cfg.num_workers
        bank_f, _, bank_y = gather_outputs(acc, model, bank_set, num_workers=workers)
        query_f, assign, query_y = gather_outputs(acc, model, query_set, num_workers=workers)
        source = getattr(model, "prototype_source", None)  # lightly's anchors have prototypes only
        masses = source.mass.cpu() if isinstance(source, OnlineGMM) else None
        report = collapse_report(
            model.prototypes.float().cpu(), assignments=assign.float().argmax(1), masses=masses
        )
        result: dict[str, Any] = {
            "step": self.step,
            "knn_top1": knn_accuracy(bank_f, bank_y, query_f, query_y),
            "unique": report.unique,
            "perplexity": report.perplexity,
            "dead": report.dead,
            "live": report.live,  # prototypes that are the argmax of at least one held-out image
            "unique_live": report.unique_live,
            "carrying": report.carrying,  # GMM components holding >= 2 units of mass (None if joint)
            "nn_cosine_mean": report.nn_cosine_mean,
        }
        if isinstance(getattr(self.model, "prototype_source", None), LearnablePrototypes):
            student = collapse_report(self.model.prototypes.float().cpu())  # the matrix the gradient moves
            result["student_unique"] = student.unique
            result["student_nn_cosine_mean"] = student.nn_cosine_mean
        if final:
            result["split"] = split
            preds = knn_predict(bank_f, bank_y, query_f)
            result["knn_preds"], result["labels"] = preds.tolist(), query_y.tolist()
            if cfg.long_tail:
                groups = class_groups(torch.bincount(bank_y))
                result["knn_groups"] = per_group_accuracy(preds, query_y, groups)
            if cfg.linear_probe:
                linear = linear_predict(bank_f, bank_y, query_f)
                result["linear_top1"] = (linear == query_y.cpu()).float().mean().item()
                result["linear_preds"] = linear.tolist()
            result["knn_pixels"] = knn_accuracy(*pixels(bank_set), *pixels(query_set))  # the floor to beat
        return result

    # ====== checkpoints ======
    def save_checkpoint(self) -> None:
        """Everything needed to resume, written to a temporary folder and renamed."""
        acc = self.accelerator
        final = self.out / "checkpoints" / f"step_{self.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()  # every process has written its part before the rename
        if acc.is_main_process:
            teacher = {k: v.contiguous() for k, v in self.teacher.state_dict().items()}
            save_file(teacher, tmp / "teacher.safetensors")
            save_file(
                {k: v.contiguous() for k, v in self.criterion.state_dict().items()} or {"_": torch.zeros(1)},
                tmp / "loss.safetensors",
            )
            (tmp / "trainer.json").write_text(json.dumps({"step": self.step}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            old = sorted((self.out / "checkpoints").glob("step_???????"))[: -self.cfg.keep_checkpoints]
            for folder in old:
                shutil.rmtree(folder)
        acc.wait_for_everyone()

    def load_checkpoint(self) -> bool:
        """Restore the latest complete checkpoint of output_dir; False when there is none.

        Process 0 picks the checkpoint and every process loads that one, so all resume from the same step.

        Raises:
            FileNotFoundError: when a process cannot see the checkpoint process 0 picked.
        """
        acc = self.accelerator
        acc.wait_for_everyone()  # no process looks while another still renames
        found = sorted((self.out / "checkpoints").glob("step_???????"))
        step = broadcast(torch.tensor([int(found[-1].name[5:]) if found else -1], device=acc.device))
        if step.item() < 0:
            return False
        folder = self.out / "checkpoints" / f"step_{step.item():07d}"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"process {acc.process_index} cannot see {folder}, which process 0 resumes from; "
                "put output_dir on a file system that every process shares"
            )
        self.accelerator.load_state(str(folder))
        # read on the CPU (a CPU process's device reads "cpu:<rank>", which safetensors refuses); the copy
        # into the modules puts the tensors on their device
        self.teacher.load_state_dict(load_file(folder / "teacher.safetensors", device="cpu"))
        loss_state = load_file(folder / "loss.safetensors", device="cpu")
        if "_" not in loss_state:
            self.criterion.load_state_dict(loss_state)
        self.step = json.loads((folder / "trainer.json").read_text())["step"]
        logger.info("resumed from %s at step %d", folder, self.step)
        return True

    # ====== logging ======
    def log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        flat = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        flat.update({f"unique/{e}": v for e, v in record.get("unique", {}).items()})
        if self.cfg.trackers:
            self.accelerator.log(flat, step=record["step"])

    def _restore_history(self) -> None:
        """Keep metrics.jsonl lines up to the resumed step, so a resumed run appends from there.

        A fresh start (step 0) keeps none. The file is rewritten under a temporary name and renamed,
        so a crash here cannot lose the lines a later resume needs.
        """
        path = self.out / "metrics.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        keep = [r for r in lines if 0 < self.step and r["step"] <= self.step and not r.get("final")]
        self.accelerator.wait_for_everyone()  # every process has read the file before it is rewritten
        if self.accelerator.is_main_process and path.exists():
            _write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
        self.history = [r for r in keep if "unique" in r]

    def _record_eval(self, result: dict[str, Any]) -> None:
        self.history.append(result)
        self.log(result)
        if self.accelerator.is_main_process:
            steps = [r["step"] for r in self.history]
            k = self.cfg.num_prototypes
            live = [r["live"] / k if r.get("live") is not None else None for r in self.history]
            plot_unique_over_steps(
                {self.cfg.method: (steps, [r["unique"] for r in self.history])},
                self.out / "collapse.png",
                live={self.cfg.method: live},
            )

    # ====== the run ======
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (resuming when asked), evaluate, and write the model folder."""
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            if self.out.exists() and not cfg.resume and any(self.out.glob("checkpoints/step_*")):
                raise FileExistsError(f"{self.out} already holds a run; pass resume=true or a new output_dir")
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        acc.wait_for_everyone()
        if cfg.trackers:
            acc.init_trackers(
                "protozoo", config={k: v for k, v in cfg.to_dict().items() if not isinstance(v, (dict, list))}
            )
        if not (cfg.resume and self.load_checkpoint()):
            self._restore_history()
            self._record_eval(self.evaluate())  # step 0: collapse starts early, so measure from the start
        else:
            self._restore_history()
        bar = tqdm(
            total=self.total_steps, initial=self.step, disable=not acc.is_main_process, desc=cfg.method
        )
        while self.step < self.total_steps:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            self.train_set.epoch = epoch
            loader = DataLoader(
                self.train_set,
                batch_sampler=self._micro_batches(epoch, start),
                num_workers=cfg.num_workers,
                generator=torch.Generator(),  # leaves the global RNG (saved in checkpoints) untouched
            )
            micro: list[list[Tensor]] = []
            for views, _ in loader:
                micro.append(views)
                if len(micro) < cfg.grad_accum_steps:
                    continue
                logs = self.train_step(micro)
                micro = []
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{logs['lr']:.2e}")
                if self.step % cfg.log_every == 0:
                    self.log({"step": self.step, "epoch": self.step / self.steps_per_epoch, **logs})
                epoch_end = self.step % self.steps_per_epoch == 0
                if self.step % cfg.eval_every == 0 or epoch_end or self.step == self.total_steps:
                    self._record_eval(self.evaluate())  # every process encodes its shard
                    r = self.history[-1]
                    if acc.is_main_process:
                        bar.write(
                            f"step {self.step}: knn {r['knn_top1']:.4f} live {r['live']} unique {r['unique']}"
                        )
                if self.step % cfg.save_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
                if self.step >= self.total_steps:
                    break
        self.train_seconds = bar.format_dict["elapsed"]
        bar.close()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Final evaluation on the test split and the Hub-layout model folder under output_dir/model."""
        cfg, acc = self.cfg, self.accelerator
        last = self.history[-1] if self.history else {}
        if cfg.final_eval:
            last = self.evaluate(final=True)  # every process encodes its shard
            per_image = ("knn_preds", "linear_preds", "labels")
            self.log({k: v for k, v in last.items() if k not in per_image} | {"final": True})
            self.knn_pixels = last["knn_pixels"]
        results = {
            "dataset": cfg.dataset,
            "eval_split": last.get("split", "val"),
            **{k: last.get(k) for k in CARD_RESULTS},
            "steps": self.step,
        }
        if acc.is_main_process:
            if cfg.final_eval:
                predictions = {"preds": last["knn_preds"], "labels": last["labels"]}
                if "linear_preds" in last:
                    predictions["linear_preds"] = last["linear_preds"]
                _write_text(self.out / "predictions.json", json.dumps(predictions))
            self.save_model(results)
        acc.wait_for_everyone()
        acc.end_training()
        return results

    def save_model(self, results: dict[str, Any]) -> None:
        """Write the teacher as a Hub-layout folder under output_dir/model, with results for its card."""
        self.teacher.save_pretrained(
            self.out / "model", results=results, recipe=self.cfg.to_dict(), name=self.cfg.name
        )
