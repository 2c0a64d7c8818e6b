"""Fine-tuning: ``python -m train.finetune --model NAME_OR_PATH [--config recipe.yaml] [key=value ...]``.

A zoo name, Hub id or model folder gets a fresh linear classifier on its pooled features and is
trained on labelled images, in one of two modes: ``full`` (every backbone weight moves) or
``linear`` (the backbone is frozen, only the classifier learns). The run uses Accelerate like
``python -m train`` (``accelerate launch -m train.finetune ...`` on several devices), AdamW with a
linear warm-up then a cosine decay, optionally a layer-wise lr decay, and the model's own eval
preprocessing with light augmentation (a random resized crop of mild scale and a horizontal flip).

Data (``dataset``):
    - ``fashion_mnist``: its 55 000 "train" images, the fixed 5 000 "val" and the 10 000 "test".
    - ``imagefolder``: ``data_dir`` with one subfolder per class, or ``train/`` (and ``val/``,
      ``test/``) folders of those; a missing ``val/`` is held out of train (``val_fraction``, seed 0),
      a missing ``test/`` is replaced by val, as the log says.
    - ``idx``: MNIST-format IDX files given by path (``idx_files``); val is held out of train.
``label_fraction`` keeps that share of each class of the training split (seeded by ``seed``).

Images whose channels differ from the model's (RGB images for a grayscale model, or the reverse) are
refused before training unless ``convert_channels=true``, which converts them to the model's
channels (RGB to gray by ITU-R 601 luma, gray to RGB by repeating the channel) and logs it.

The run folder gets ``config.yaml``, ``metrics.jsonl`` (one line per evaluation: train loss, val and
test top-1), ``checkpoints/best.safetensors`` and ``last.safetensors`` (backbone and classifier),
and ``model/``: the best checkpoint by val top-1 as a Hub-layout folder that ``protozoo.load``
returns with its classifier, with ``model.onnx`` (logits included) beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import InterpolationMode, v2
from tqdm.auto import tqdm

from protozoo.model import ProtoModel
from protozoo.transforms import to_uint8_image

from .config import _check_key, _coerce
from .engine import cosine, resolve_precision

logger = logging.getLogger(__name__)
DATASETS = ("fashion_mnist", "imagefolder", "idx")
MODES = ("full", "linear")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes of single-channel images


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Each comment says when to change the value."""

    # ---- model ----
    model: str | None = None  # zoo name, Hub id org/name or model folder (also --model)
    revision: str | None = None  # Hub branch, tag or commit to pin a Hub id to
    pretrained: bool = True  # false: the same architecture with fresh weights (the from-scratch baseline)
    mode: str = "full"  # full: train every weight; linear: frozen backbone, classifier only
    # ---- data ----
    dataset: str = "fashion_mnist"  # fashion_mnist | imagefolder | idx
    data_dir: str | None = None  # imagefolder: its root; fashion_mnist: a folder of its IDX files
    idx_files: list[str] | None = None  # idx: [train images, train labels, test images, test labels]
    label_fraction: float = 1.0  # in (0, 1]: this share of each class of the training split
    val_fraction: float = 0.1  # held out of train as val when the data has no val split
    num_classes: int | None = None  # None: from the data; when set, the data must have that many
    convert_channels: bool = False  # true: convert RGB images for a grayscale model (and the reverse)
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])  # random-crop area; [1, 1]: none
    hflip: bool = True  # random horizontal flips; false where left and right differ (digits, text)
    # ---- optimisation ----
    epochs: int = 10
    max_steps: int | None = None  # overrides epochs when set (a fixed step budget)
    batch_size: int = 64  # global batch over all processes
    lr: float = 1e-3  # peak AdamW lr; lower it (1e-4) if the pretrained features get lost early
    min_lr: float = 1e-6  # end of the cosine decay
    warmup_fraction: float = 0.1  # share of the steps with a linear lr warm-up
    weight_decay: float = 0.05  # on weight matrices only, not on biases and norms
    layer_decay: float | None = None  # e.g. 0.75: each block down the backbone gets 0.75x the lr above
    mixed_precision: str = "auto"  # auto | bf16 | fp16 | no, as in train.config
    num_workers: int = 0  # data-loading processes
    # ---- evaluation and outputs ----
    eval_every: int = 0  # steps between evaluations; 0: at the end of each epoch (and at the last step)
    eval_size: int | None = None  # cap on val and test images per evaluation (a seeded subset); None: all
    onnx: bool = True  # also export output_dir/model/model.onnx (needs protozoo[onnx])
    output_dir: str = "runs/finetune"
    seed: int = 0  # seeds the label subset, the classifier's init and the data order

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}; valid choices are {', '.join(DATASETS)}")
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; valid modes are {', '.join(MODES)}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(
                f"label_fraction must be in (0, 1], got {self.label_fraction}; 0.01 keeps 1 % of the labels"
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(
                f"num_classes must be at least 2 (or null to take it from the data), got {self.num_classes}"
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1] (or null for none), got {self.layer_decay}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(
                f"crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale}"
            )
        for key in ("epochs", "batch_size", "max_steps", "eval_size"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1) and not (
                key in ("max_steps", "eval_size") and value is None
            ):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.dataset == "idx" and (self.idx_files is None or len(self.idx_files) != 4):
            raise ValueError(
                "dataset=idx needs idx_files=[train images, train labels, test images, test labels] "
                f"(MNIST-format IDX files, .gz or not), got {self.idx_files!r}"
            )
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ValueError("dataset=imagefolder needs data_dir=<folder with one subfolder per class>")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


def load_finetune_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> FinetuneConfig:
    """Read a YAML recipe and apply ``key=value`` overrides, as :func:`train.config.load_config` does.

    Raises:
        FileNotFoundError: when the recipe does not exist.
        ValueError: for unknown keys (with the closest valid names), malformed overrides or bad values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Recipe {str(path)!r} not found; recipes live in train/configs/")
        values = yaml.safe_load(Path(path).read_text()) or {}
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    hints = typing.get_type_hints(FinetuneConfig)
    for key in values:
        _check_key(key, fields)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not key=value (e.g. label_fraction=0.1)")
        _check_key(key, fields)
        values[key] = _coerce(key, text, hints[key])
    return FinetuneConfig(**values)


# ====== data ======
class ImageFiles(Dataset):
    """Image files with integer labels; images reach the transform as PIL images."""

    def __init__(self, samples: list[tuple[str, int]], transform: Any = None) -> None:
        self.samples, self.transform = samples, transform
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            image.load()
        return self.transform(image) if self.transform else image, label


class TrainTransform:
    """The model's preprocessing with light augmentation: a random resized crop of mild scale, a flip.

    Args:
        model: the model whose size, channels, mean, std and interpolation to use.
        scale: (low, high) area fraction of the crop.
        hflip: flip horizontally with probability 0.5.
    """

    def __init__(self, model: ProtoModel, scale: list[float], hflip: bool) -> None:
        c = model.config
        self.in_chans = c.in_chans
        self.augment = v2.Compose(
            [
                v2.RandomResizedCrop(
                    c.img_size, scale=tuple(scale), interpolation=InterpolationMode(c.interpolation)
                ),
                v2.RandomHorizontalFlip(0.5 if hflip else 0.0),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(c.mean), list(c.std)),
            ]
        )

    def __call__(self, image: Any) -> Tensor:
        return self.augment(to_uint8_image(image, self.in_chans))


def _imagefolder_samples(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) of every image under ``folder/<class>/``; classes sorted by name as ImageFolder does."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None and found != classes:
        raise ValueError(
            f"{folder} has class folders {found}, but the training folder has {classes}; use the same classes"
        )
    samples = [
        (str(p), label)
        for label, name in enumerate(found)
        for p in sorted((folder / name).rglob("*"))
        if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()
    ]
    if not samples:
        raise ValueError(
            f"{folder} holds no images: expected one subfolder per class with image files "
            f"({', '.join(IMG_EXTENSIONS)})"
        )
    counts = torch.bincount(torch.tensor([label for _, label in samples]), minlength=len(found))
    if len(found) < 2:
        raise ValueError(
            f"{folder} has one class ({found[0]!r}); a classifier needs at least 2 class folders"
        )
    empty = [found[i] for i in (counts == 0).nonzero().flatten().tolist()]
    if empty:
        raise ValueError(f"{folder}: class folders {empty} hold no images; add images or remove the folders")
    return samples, found


def _folder_channels(samples: list[tuple[str, int]], limit: int = 64) -> int:
    """3 when any of ``limit`` images spread over the folder has colour, else 1."""
    from PIL import Image

    for path, _ in samples[:: max(1, len(samples) // limit)]:
        with Image.open(path) as image:
            if image.mode not in _GRAY_MODES:
                return 3
    return 1


def _held_out(n: int, fraction: float) -> tuple[Tensor, Tensor]:
    """(train, val) indices with ``fraction`` of n held out, always with seed 0 so val never moves."""
    from protozoo.data import train_val_split

    return train_val_split(n, fraction, seed=0)


def load_splits(cfg: FinetuneConfig) -> tuple[dict[str, Dataset], int, int]:
    """The untransformed train / val / test datasets, the number of classes and the images' channels.

    Raises:
        ValueError: a folder with no images, one class, or a class without images; malformed IDX files.
        FileNotFoundError: missing data.
    """
    from protozoo.data import ImageTensorDataset, build_dataset
    from protozoo.fashion_mnist import read_idx

    if cfg.dataset == "fashion_mnist":
        splits = {s: build_dataset("fashion_mnist", s, root=cfg.data_dir) for s in ("train", "val", "test")}
        return splits, 10, 1
    if cfg.dataset == "idx":
        files = cfg.idx_files or []  # four paths, checked by FinetuneConfig
        tx, ty, sx, sy = (read_idx(p, magic) for p, magic in zip(files, (2051, 2049) * 2, strict=True))
        for images, labels, name in ((tx, ty, "train"), (sx, sy, "test")):
            if images.ndim != 3 or labels.shape != (len(images),):
                raise ValueError(
                    f"idx {name} files hold images {tuple(images.shape)} and labels {tuple(labels.shape)}; "
                    "expected (N, H, W) grayscale images and N labels"
                )
        num_classes = int(max(ty.max(), sy.max())) + 1
        train, val = _held_out(len(ty), cfg.val_fraction)
        splits = {
            "train": ImageTensorDataset(tx[train], ty[train]),
            "val": ImageTensorDataset(tx[val], ty[val]),
            "test": ImageTensorDataset(sx, sy),
        }
        return splits, num_classes, 1
    root = Path(cfg.data_dir or "").expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} is not a folder; pass the root of the image folder")
    has_train = (root / "train").is_dir()
    samples, classes = _imagefolder_samples(root / "train" if has_train else root)
    if (root / "val").is_dir() and has_train:
        val_samples = _imagefolder_samples(root / "val", classes)[0]
    else:
        train, val = _held_out(len(samples), cfg.val_fraction)
        samples, val_samples = [samples[i] for i in train], [samples[i] for i in val]
        logger.info("no val/ folder: %d images of train are held out as val", len(val_samples))
    if (root / "test").is_dir() and has_train:
        test_samples = _imagefolder_samples(root / "test", classes)[0]
    else:
        test_samples = val_samples
        logger.info("no test/ folder: the test top-1 is measured on the val images")
    splits = {"train": ImageFiles(samples), "val": ImageFiles(val_samples), "test": ImageFiles(test_samples)}
    return splits, len(classes), _folder_channels(samples)


def label_subset(targets: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-stratified subset: ``fraction`` of each class (at least one image), seeded.

    Args:
        targets: int64 tensor (N,) of labels.
        fraction: share of each class to keep, in (0, 1].
        seed: seed of the per-class choice.

    Returns:
        Sorted int64 tensor (M,) of indices into ``targets``.
    """
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in targets.unique().tolist():
        members = (targets == c).nonzero().flatten()
        n = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(keep).sort().values


def eval_subset(n: int, size: int) -> Tensor:
    """The ``size`` images (all when fewer) of an n-image split that a capped evaluation uses: seed 0."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]


# ====== model ======
class Classifier(nn.Module):
    """What fine-tuning trains: the backbone and the linear classifier of a ProtoModel (shared, not copied).

    The projection head and the prototypes are not used, so they keep their pretrained values.
    """

    def __init__(self, model: ProtoModel, frozen: bool) -> None:
        super().__init__()
        self.backbone, self.classifier, self.frozen = model.backbone, model.classifier, frozen
        self.backbone.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a linear probe keeps the BatchNorm statistics too
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.backbone(x)  # (B, F)
        return self.classifier(features)  # (B, num_classes)


def build_model(cfg: FinetuneConfig, num_classes: int) -> ProtoModel:
    """The model to fine-tune, with a fresh classifier; fresh weights throughout when not pretrained."""
    import protozoo

    if not cfg.model:
        raise ValueError("no model given: pass --model NAME_OR_PATH (a zoo name, Hub id or model folder)")
    model = protozoo.load(cfg.model, revision=cfg.revision, num_classes=num_classes)
    if not cfg.pretrained:
        model = ProtoModel(model.config, num_classes=num_classes)
    return model


def _optimizer(net: Classifier, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over the trainable weights: matrices decayed, biases and norms not; per-block lr_scale."""
    from timm.optim import param_groups_layer_decay

    head = [
        {"params": [net.classifier.weight], "lr_scale": 1.0},
        {"params": [net.classifier.bias], "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    if net.frozen:
        groups = head
    elif cfg.layer_decay is not None:
        skip = getattr(net.backbone, "no_weight_decay", set)()
        groups = [
            *param_groups_layer_decay(net.backbone, cfg.weight_decay, skip, layer_decay=cfg.layer_decay),
            *head,
        ]
    else:
        params = list(net.backbone.parameters())
        groups = [
            {"params": [p for p in params if p.ndim > 1], "lr_scale": 1.0},
            {"params": [p for p in params if p.ndim <= 1], "lr_scale": 1.0, "weight_decay": 0.0},
            *head,
        ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


# ====== the run ======
def _save(state: dict[str, Tensor], path: Path) -> None:
    """safetensors through a temporary name, so a reader never sees half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _top1(net: nn.Module, loader: DataLoader, acc: Accelerator) -> float:
    net.eval()
    correct = total = 0
    for x, y in loader:
        pred, y = acc.gather_for_metrics((net(x).argmax(1), y))
        correct += int((pred == y).sum())
        total += len(y)
    net.train()
    return correct / total


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run one fine-tuning and write the run folder (see the module docstring).

    Every check on the data and the model runs before the first training step.

    Returns:
        ``{"val_top1", "test_top1", "best_step", "steps", "train_images", "num_classes"}`` of the
        best checkpoint by val top-1 (what ``output_dir/model`` holds).

    Raises:
        ValueError: bad data for the model (channels, classes, sizes) or a bad config.
        FileNotFoundError: missing data or model.
    """
    acc = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=resolve_precision(cfg.mixed_precision)
    )
    set_seed(cfg.seed)
    splits, data_classes, data_chans = load_splits(cfg)
    if cfg.num_classes is not None and cfg.num_classes != data_classes:
        raise ValueError(
            f"num_classes={cfg.num_classes} disagrees with the data, which has {data_classes} classes; "
            f"drop num_classes (or set num_classes={data_classes})"
        )
    model = build_model(cfg, data_classes).to(acc.device)
    chans = model.config.in_chans
    if data_chans != chans:
        kinds = {1: "grayscale", 3: "RGB"}
        if not cfg.convert_channels:
            raise ValueError(
                f"{cfg.model} takes {chans}-channel ({kinds[chans]}) images but the data is "
                f"{kinds[data_chans]}; "
                f"pass convert_channels=true to convert the images to {kinds[chans]}, or fine-tune a "
                f"{kinds[data_chans]} model"
            )
        logger.info("converting the %s images to %s, the model's input", kinds[data_chans], kinds[chans])
    picked = label_subset(splits["train"].targets, cfg.label_fraction, cfg.seed)  # type: ignore[attr-defined]
    if len(picked) < cfg.batch_size:
        raise ValueError(
            f"label_fraction={cfg.label_fraction} leaves {len(picked)} training images, fewer than "
            f"batch_size={cfg.batch_size}; lower batch_size or raise label_fraction"
        )
    for name, split in splits.items():
        split.transform = (
            TrainTransform(model, cfg.crop_scale, cfg.hflip) if name == "train" else model.transform
        )  # type: ignore[attr-defined]
    train = Subset(splits["train"], picked.tolist())
    evals = {}
    for name in ("val", "test"):
        data: Dataset = splits[name]
        if cfg.eval_size is not None:
            data = Subset(data, eval_subset(len(data), cfg.eval_size).tolist())  # type: ignore[arg-type]
        evals[name] = DataLoader(data, batch_size=256, num_workers=cfg.num_workers)
    per_process = cfg.batch_size // acc.num_processes
    loader = DataLoader(
        train,
        batch_size=per_process,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    net = Classifier(model, frozen=cfg.mode == "linear")
    optimizer = _optimizer(net, cfg)
    net, optimizer, loader, val_loader, test_loader = acc.prepare(
        net, optimizer, loader, evals["val"], evals["test"]
    )
    steps_per_epoch = len(loader)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    eval_every = cfg.eval_every or steps_per_epoch
    out, ckpt = Path(cfg.output_dir), Path(cfg.output_dir) / "checkpoints"
    if acc.is_main_process:
        ckpt.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (out / "metrics.jsonl").write_text("")
        logger.info(
            "fine-tuning %s (%s) on %d %s images, %d classes, %d steps",
            cfg.model,
            cfg.mode,
            len(picked),
            cfg.dataset,
            data_classes,
            total,
        )

    # ====== training ======
    step, best, losses = 0, {"val_top1": -1.0, "step": 0}, []
    bar = tqdm(total=total, disable=not acc.is_main_process, desc=f"finetune ({cfg.mode})")
    net.train()
    while step < total:
        for x, y in loader:
            lr = cosine(step, total, cfg.lr, cfg.min_lr, warmup=round(cfg.warmup_fraction * total))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with acc.autocast():
                loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower lr")
            acc.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if step % eval_every == 0 or step == total:
                record = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 3),
                    "train_loss": sum(losses) / len(losses),
                    "val_top1": _top1(net, val_loader, acc),
                    "test_top1": _top1(net, test_loader, acc),
                }
                losses = []
                improved = record["val_top1"] > best["val_top1"]  # the same on every process (gathered)
                if improved:
                    best = {"val_top1": record["val_top1"], "test_top1": record["test_top1"], "step": step}
                if acc.is_main_process:
                    state = acc.unwrap_model(net).state_dict()
                    _save(state, ckpt / "last.safetensors")
                    if improved:
                        _save(state, ckpt / "best.safetensors")
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.write(
                        f"step {step}: val top-1 {record['val_top1']:.4f}, "
                        f"test top-1 {record['test_top1']:.4f}"
                    )
            if step == total:
                break
    bar.close()

    # ====== the best checkpoint as a loadable model ======
    acc.wait_for_everyone()
    acc.unwrap_model(net).load_state_dict(load_file(ckpt / "best.safetensors"))
    results = {
        "dataset": cfg.dataset,
        "eval_split": "test",
        "mode": cfg.mode,
        "label_fraction": cfg.label_fraction,
        "val_top1": best["val_top1"],
        "test_top1": best["test_top1"],
        "best_step": best["step"],
        "steps": step,
        "train_images": len(picked),
        "num_classes": data_classes,
    }
    if acc.is_main_process:
        folder = model.eval().save_pretrained(out / "model", results=results, recipe=cfg.to_dict())
        if cfg.onnx:
            from protozoo.onnx import export_onnx

            export_onnx(model, folder / "model.onnx")
    acc.wait_for_everyone()
    acc.end_training()
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse ``--model``, the recipe and overrides; fine-tune; print the final test top-1."""
    parser = argparse.ArgumentParser(
        prog="python -m train.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="zoo name, Hub id org/name or model folder")
    parser.add_argument(
        "--config", default=None, help="YAML recipe, e.g. train/configs/finetune-dp-resnet18-fmnist.yaml"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. label_fraction=0.01 mode=linear"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_finetune_config(
            args.config, [*args.overrides, *([f"model={args.model}"] if args.model else [])]
        )
        results = finetune(cfg)
    except (ValueError, FileNotFoundError, ImportError) as e:
        parser.exit(2, f"python -m train.finetune: error: {e}\n")
    if PartialState().is_main_process:
        print(
            f"best val top-1 {results['val_top1']:.4f} at step {results['best_step']} of {results['steps']}"
        )
        print(f"test top-1 ({cfg.dataset} test): {results['test_top1']:.4f}")
        print(f"model written to {cfg.output_dir}/model")


if __name__ == "__main__":
    main(sys.argv[1:])
