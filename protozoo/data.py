"""Datasets: Fashion-MNIST, torchvision / ImageFolder / Hugging Face sets, splits and long-tail subsets.

Every dataset that `build_dataset` returns yields `(transform(image), label)` pairs and exposes
`.targets`, an int64 tensor (N,) of labels, so callers can count classes without decoding images.
Images reach the transform as a PIL image (torchvision, ImageFolder, Hugging Face) or a uint8 tensor
(C, H, W) (Fashion-MNIST); the transforms in `protozoo.transforms` accept both.

Fashion-MNIST's files are found and read by `protozoo.fashion_mnist`. The long-tail profile is the
exponential one of Cao et al. 2019 (LDAM, CIFAR-LT): n_c = n_max * IF^(-c / (C - 1)).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from protozoo.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

logger = logging.getLogger(__name__)

# torchvision datasets live under root=, else $PROTOZOO_DATA, else this folder.
DATA_DIR = "~/.cache/protozoo/data"
VAL_SIZE = 5_000  # images held out of a training set for the "val" split, always with seed 0
_VAL_SEED = 0
DATASET_FORMS = ("fashion_mnist", "cifar10", "cifar100", "stl10", "imagefolder:<path>", "hf:<dataset id>")


class ImageTensorDataset(Dataset):
    """In-memory uint8 images with integer labels, e.g. Fashion-MNIST.

    The transform receives each image as a uint8 tensor (C, H, W), which torchvision.transforms.v2 and
    `protozoo.transforms` handle directly; without a transform the image comes back as float in [0, 1].

    Args:
        images: uint8 tensor (N, H, W) (one channel) or (N, C, H, W).
        labels: integer tensor (N,).
        transform: callable applied to each (C, H, W) uint8 image.
        classes: optional class names, indexed by label.

    Raises:
        TypeError: images are not uint8.
        ValueError: images are not 3-D/4-D, or images and labels differ in length.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Any] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(
                f"images must be uint8, got {images.dtype}; convert with (x * 255).round().byte()"
            )
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"labels must be (N,) with N = {len(images)} images, got shape {tuple(labels.shape)}"
            )
        self.images = images.unsqueeze(1) if images.ndim == 3 else images  # (N, C, H, W)
        self.targets = labels.long()
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image.float() / 255), int(self.targets[index])


class LabelledSubset(Dataset):
    """A subset of another dataset that keeps its labels as `.targets` (int64 tensor (M,)).

    Args:
        dataset: the dataset to index into.
        indices: int64 tensor (M,) of indices into `dataset`.
        targets: int64 tensor (N,) of the labels of the whole `dataset`.
    """

    def __init__(self, dataset: Dataset, indices: Tensor, targets: Tensor) -> None:
        self.dataset = dataset
        self.indices = indices
        self.targets = targets[indices]
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]


class HFImageDataset(Dataset):
    """A Hugging Face `datasets.Dataset` with one image and one label column, yielding (image, label).

    Args:
        hf_dataset: the loaded split.
        transform: callable applied to each PIL image.

    Raises:
        ValueError: no image or no label column can be identified; the message lists the columns.
    """

    def __init__(self, hf_dataset: Any, transform: Callable[[Any], Any] | None = None) -> None:
        from datasets import ClassLabel, Image

        features = hf_dataset.features
        image_cols = [k for k, f in features.items() if isinstance(f, Image)] or [
            k for k in ("image", "img") if k in features
        ]
        label_cols = [k for k, f in features.items() if isinstance(f, ClassLabel)] or [
            k for k in ("label", "labels", "fine_label") if k in features
        ]
        if not image_cols or not label_cols:
            raise ValueError(f"need an image and a label column, dataset has columns {list(features)}")
        self.image_col, self.label_col = image_cols[0], label_cols[0]
        self.dataset = hf_dataset
        self.targets = torch.as_tensor(hf_dataset[self.label_col], dtype=torch.long)
        label_feature = features[self.label_col]
        self.classes = list(label_feature.names) if isinstance(label_feature, ClassLabel) else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.dataset[int(index)][self.image_col]
        return (self.transform(image) if self.transform else image), int(self.targets[index])


def long_tailed_indices(labels: Tensor, imbalance_factor: float, seed: int = 0) -> Tensor:
    """Indices of a long-tailed subset with an exponential class profile.

    Class c keeps n_c = min(count_c, round(n_max * IF^(-c / (C - 1)))) randomly chosen samples, where
    n_max is the largest class count and classes are ranked by index: class 0 is the head, class C - 1 the
    tail with n_max / IF samples (Cao et al. 2019). On the balanced 60 000 Fashion-MNIST training images,
    IF = 100 keeps 6000 images of class 0 down to 60 of class 9.

    Args:
        labels: integer tensor (N,) with values in 0..C-1, every class present.
        imbalance_factor: IF = n_head / n_tail, at least 1; 1 keeps every index.
        seed: seed of the per-class random choice.

    Returns:
        Sorted int64 tensor (M,) of indices into `labels`.

    Raises:
        ValueError: imbalance_factor < 1, labels not 1-D non-negative, or a class without samples.
    """
    if not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor must be >= 1 (n_head / n_tail), got {imbalance_factor}")
    if labels.ndim != 1 or labels.numel() == 0 or int(labels.min()) < 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor of class indices >= 0, got {labels}")
    counts = torch.bincount(labels.long())
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"classes {missing} have no samples; the long-tail profile needs every class 0..C-1")
    if imbalance_factor == 1:
        return torch.arange(len(labels))
    num_classes, n_max = len(counts), int(counts.max())
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(num_classes):
        n_c = max(1, round(n_max * imbalance_factor ** (-c / max(num_classes - 1, 1))))
        members = (labels == c).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    return torch.cat(keep).sort().values


def class_groups(
    counts: Tensor | Sequence[int], head: float = 0.3, tail: float = 0.3
) -> dict[str, list[int]]:
    """Split classes into "head", "medium" and "tail" groups by rank of their training count.

    Classes are ranked by count, largest first (ties by class index); the first round(head * C) are the
    head, the last round(tail * C) the tail and the rest medium. The defaults give 3 / 4 / 3 for 10 classes,
    the split used for the long-tailed Fashion-MNIST and CIFAR-10 results.

    Args:
        counts: tensor or sequence (C,) of training samples per class, e.g. torch.bincount(dataset.targets).
        head: fraction of classes in the head group.
        tail: fraction of classes in the tail group.

    Returns:
        {"head": [...], "medium": [...], "tail": [...]}, each a sorted list of class indices.

    Raises:
        ValueError: head or tail outside [0, 1] or head + tail > 1.
    """
    if not (0 <= head <= 1 and 0 <= tail <= 1 and head + tail <= 1):
        raise ValueError(f"need 0 <= head, tail and head + tail <= 1, got head={head}, tail={tail}")
    counts = torch.as_tensor(counts).tolist()
    num_classes = len(counts)
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    n_head, n_tail = round(head * num_classes), round(tail * num_classes)
    return {
        "head": sorted(order[:n_head]),
        "medium": sorted(order[n_head : num_classes - n_tail]),
        "tail": sorted(order[num_classes - n_tail :]),
    }


def train_val_split(n: int, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Randomly split range(n) into disjoint train and validation index sets that cover it.

    Args:
        n: number of samples, at least 2.
        val_fraction: share of samples in the validation set, in (0, 1); each side gets at least one.
        seed: seed of the permutation.

    Returns:
        train_indices: sorted int64 tensor (n - n_val,).
        val_indices: sorted int64 tensor (n_val,), n_val = round(n * val_fraction) clamped to [1, n - 1].

    Raises:
        ValueError: n < 2 or val_fraction outside (0, 1).
    """
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got n={n}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def random_subset(dataset: Dataset, size: int, seed: int = 0) -> Subset:
    """``size`` samples of ``dataset`` (all of them if it has fewer), picked by a seeded permutation.

    The training runs draw their k-NN bank this way (``eval_bank_size`` images with the run's seed).
    """
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]  # type: ignore[arg-type]
    return Subset(dataset, pick.tolist())


def _split_indices(split: str, n: int) -> Tensor | None:
    """Indices of "train" / "val" inside a training set of n samples (VAL_SIZE held out); None for all."""
    if split == "trainval":
        return None
    train, val = train_val_split(n, VAL_SIZE / n, seed=_VAL_SEED)
    return train if split == "train" else val


def _fashion_mnist(
    split: str, transform: Callable | None, root: str | Path | None, download: bool
) -> Dataset:
    if split not in ("train", "val", "trainval", "test"):
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train', 'val', 'trainval' or 'test'")
    images, labels = load_fashion_mnist("test" if split == "test" else "train", root=root, download=download)
    index = None if split == "test" else _split_indices(split, len(labels))
    if index is not None:
        images, labels = images[index], labels[index]
    return ImageTensorDataset(images, labels, transform=transform, classes=FASHION_MNIST_CLASSES)


def _torchvision(name: str, split: str, transform: Callable | None, root: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    if name == "stl10":
        if split not in ("train", "test", "unlabeled", "train+unlabeled"):
            raise ValueError(
                f"unknown stl10 split {split!r}; use 'train', 'test', 'unlabeled' or 'train+unlabeled'"
            )
    elif split not in ("train", "val", "trainval", "test"):
        raise ValueError(f"unknown {name} split {split!r}; use 'train', 'val', 'trainval' or 'test'")
    try:
        if name == "stl10":
            base = tvd.STL10(str(root), split=split, transform=transform, download=download)
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            base = cls(str(root), train=split != "test", transform=transform, download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{name} not found (or corrupt) under {root}: pass download=True to fetch it there, or root= "
            f"(or $PROTOZOO_DATA) pointing to the folder that holds torchvision's {name} files"
        ) from err
    targets = torch.as_tensor(base.labels if name == "stl10" else base.targets, dtype=torch.long)
    index = _split_indices(split, len(targets)) if split in ("train", "val") and name != "stl10" else None
    return LabelledSubset(base, torch.arange(len(targets)) if index is None else index, targets)


def _image_folder(path_text: str, split: str, transform: Callable | None) -> Dataset:
    from torchvision.datasets import ImageFolder

    path = Path(path_text).expanduser()
    if not path_text or not path.is_dir():
        raise FileNotFoundError(
            f"imagefolder path {path_text!r} is not a folder; use imagefolder:<path to a folder>"
        )
    folder = path / split
    if not folder.is_dir():
        present = [s for s in ("train", "val", "test") if (path / s).is_dir()]
        if present:
            raise FileNotFoundError(
                f"{path} has split folders {present} but no {split!r}; use one of those splits"
            )
        logger.info("%s has no %r subfolder, using the whole tree for split %r", path, split, split)
        folder = path
    base = ImageFolder(str(folder), transform=transform)
    targets = torch.as_tensor(base.targets, dtype=torch.long)
    return LabelledSubset(base, torch.arange(len(targets)), targets)


def _hugging_face(
    dataset_id: str, split: str, transform: Callable | None, root: str | Path | None
) -> Dataset:
    try:
        import datasets as hf_datasets
    except ImportError as err:
        raise ImportError(
            f"hf:{dataset_id} needs the Hugging Face datasets library: pip install datasets"
        ) from err
    hf = hf_datasets.load_dataset(dataset_id, split=split, cache_dir=str(root) if root is not None else None)
    return HFImageDataset(hf, transform=transform)


def final_eval_splits(name: str) -> tuple[str, str]:
    """(bank split, query split) of a run's final k-NN evaluation: all training data against the test set.

    Fashion-MNIST and CIFAR: "trainval" against "test"; an ImageFolder tree: "train" against "test"
    when it has a test folder, else against "val" (ImageNet's layout, whose val folder is the test set);
    STL-10 and Hugging Face datasets: "train" against "test".

    Args:
        name: a dataset name as :func:`build_dataset` takes it.

    Returns:
        The two split names to pass to :func:`build_dataset`.
    """
    if name == "fashion_mnist" or name in ("cifar10", "cifar100"):
        return "trainval", "test"
    if name.startswith("imagefolder:"):
        path = Path(name.removeprefix("imagefolder:")).expanduser()
        has = {s: (path / s).is_dir() for s in ("train", "val", "test")}
        if has["train"] and not has["test"]:
            return "train", "val" if has["val"] else "train"
    return "train", "test"


def build_dataset(
    name: str,
    split: str,
    transform: Callable | None = None,
    root: str | Path | None = None,
    long_tail: float | None = None,
    seed: int = 0,
    download: bool = False,
) -> Dataset:
    """Build a labelled image dataset by name; every result exposes `.targets` (int64 tensor (N,)).

    Names and splits:
        - "fashion_mnist": "train" (55 000), "val" (5 000 held out of the 60 000 training images, always
          the same), "trainval" (60 000), "test" (10 000). Images reach the transform as uint8 (1, 28, 28).
        - "cifar10", "cifar100": torchvision, with the same four splits (50 000 = 45 000 + 5 000 held out).
        - "stl10": torchvision's "train", "test", "unlabeled", "train+unlabeled" (unlabeled targets are -1).
        - "imagefolder:<path>": torchvision ImageFolder on `<path>/<split>` when it exists, else on `<path>`.
        - "hf:<dataset id>": a Hugging Face dataset split with an image and a label column.
    Torchvision / ImageFolder / Hugging Face images reach the transform as PIL images.

    Args:
        name: one of the forms above.
        split: split name, as listed above.
        transform: callable applied to each image (PIL image or uint8 tensor (C, H, W)).
        root: data folder; defaults: Fashion-MNIST as in `load_fashion_mnist`, torchvision sets
            `$PROTOZOO_DATA` or ~/.cache/protozoo/data, Hugging Face its own cache.
        long_tail: imbalance factor of a long-tailed subset (`long_tailed_indices`); training splits only.
        seed: seed of the long-tail subsampling (the "val" split does not depend on it).
        download: fetch missing Fashion-MNIST / torchvision data (needs network).

    Returns:
        A torch Dataset of (transformed image, int label) pairs with a `.targets` tensor.

    Raises:
        ValueError: unknown name or split, or long_tail on an evaluation split.
        FileNotFoundError: the data is missing; the message says where it looked and how to get it.
        ImportError: "hf:" without the `datasets` package.
    """
    if long_tail is not None and split in ("val", "validation", "test"):
        raise ValueError(
            f"long_tail applies to training splits, not {split!r}; evaluate on the balanced split and "
            "report accuracy per class group (class_groups)"
        )
    if name == "fashion_mnist":
        dataset = _fashion_mnist(split, transform, root, download)
    elif name in ("cifar10", "cifar100", "stl10"):
        folder = Path(root if root is not None else os.environ.get("PROTOZOO_DATA", DATA_DIR)).expanduser()
        dataset = _torchvision(name, split, transform, folder, download)
    elif name.startswith("imagefolder:"):
        dataset = _image_folder(name.removeprefix("imagefolder:"), split, transform)
    elif name.startswith("hf:") and len(name) > 3:
        dataset = _hugging_face(name.removeprefix("hf:"), split, transform, root)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid forms: {', '.join(DATASET_FORMS)}")
    if long_tail is not None:
        targets = dataset.targets  # type: ignore[attr-defined]
        dataset = LabelledSubset(dataset, long_tailed_indices(targets, long_tail, seed), targets)
    return dataset
