"""Datasets: Fashion-MNIST from IDX files, torchvision / ImageFolder / Hugging Face sets, long-tail subsets.

Every dataset that `build_dataset` returns yields `(transform(image), label)` pairs and exposes
`.targets`, an int64 tensor (N,) of labels, so callers can count classes without decoding images.
Images reach the transform as a PIL image (torchvision, ImageFolder, Hugging Face) or a uint8 tensor
(C, H, W) (Fashion-MNIST); the transforms in `protozoo.transforms` accept both.

Fashion-MNIST (Xiao et al. 2017, MIT licence, Zalando Research) is read from Debian's
`dataset-fashion-mnist` package, a folder named by `PROTOZOO_FASHION_MNIST` or `root=`, or downloaded
from the canonical GitHub copy with checksums. The long-tail profile is the exponential one of Cao et al.
2019 (LDAM, CIFAR-LT): n_c = n_max * IF^(-c / (C - 1)).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "PROTOZOO_FASHION_MNIST"
FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
# Downloads land here when neither root= nor PROTOZOO_FASHION_MNIST is given (the Debian folder is read-only).
FASHION_MNIST_CACHE = Path("~/.cache/protozoo/fashion-mnist").expanduser()
# torchvision datasets live under root=, else $PROTOZOO_DATA, else this folder.
DATA_DIR = "~/.cache/protozoo/data"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Measured on the 60 000 training images scaled to [0, 1]: 0.28604 and 0.35302.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# file stem -> (IDX magic, number of items, SHA-256 and MD5 of the published .gz file)
_FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": (
        2051,
        60_000,
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    "train-labels-idx1-ubyte": (
        2049,
        60_000,
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    "t10k-images-idx3-ubyte": (
        2051,
        10_000,
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    "t10k-labels-idx1-ubyte": (
        2049,
        10_000,
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
}
VAL_SIZE = 5_000  # images held out of a training set for the "val" split, always with seed 0
_VAL_SEED = 0
DATASET_FORMS = ("fashion_mnist", "cifar10", "cifar100", "stl10", "imagefolder:<path>", "hf:<dataset id>")


def read_idx(path: str | Path, magic: int) -> Tensor:
    """Parse a uint8 IDX file (gzip-compressed or not) into a tensor.

    The IDX header is two zero bytes, a type byte (0x08 for uint8), the number of dimensions, then one
    big-endian int32 per dimension; the payload must hold exactly their product of bytes.

    Args:
        path: the IDX file; gzip compression is detected from its first bytes, not its name.
        magic: the expected magic number, 2051 for image files and 2049 for label files.

    Returns:
        A uint8 tensor with the dimensions stored in the header, e.g. (N, 28, 28) or (N,).

    Raises:
        ValueError: the file is not valid gzip, its magic number differs, or its length does not match
            the header; the message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path} is a corrupt gzip file ({err}); delete it and fetch it again") from err
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if found != magic:
        raise ValueError(f"{path} has IDX magic number {found}, expected {magic}; is it the right file?")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + math.prod(shape):
        raise ValueError(
            f"{path} holds {len(raw) - header} data bytes but its header announces shape {shape}; "
            "the file is truncated or corrupt, fetch it again"
        )
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def _download(url: str, dest: Path, sha256: str, md5: str) -> None:
    """Fetch `url` into `dest` through a temporary file, checking SHA-256 and MD5 before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashes = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    tmp.write(chunk)
                    for h in hashes:
                        h.update(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        except (urllib.error.URLError, OSError) as err:
            os.unlink(tmp.name)
            raise FileNotFoundError(
                f"could not download {url} ({err}); `apt-get install dataset-fashion-mnist` instead, "
                f"or put the file into {dest.parent} yourself"
            ) from err
    got = tuple(h.hexdigest() for h in hashes)
    if got != (sha256, md5):
        os.unlink(tmp.name)
        raise ValueError(
            f"checksum mismatch for {url}: got sha256 {got[0]} / md5 {got[1]}, expected {sha256} / {md5}; "
            "the download was corrupted or the source changed, nothing was written"
        )
    os.replace(tmp.name, dest)


def _find_fashion_mnist(stems: Sequence[str], root: str | Path | None, download: bool) -> list[Path]:
    """Locate (or download) the IDX files named by `stems`, trying `name` and `name.gz` in each folder."""
    env = os.environ.get(FASHION_MNIST_ENV)
    if root is not None:
        folders = [Path(root)]
    else:
        folders = [Path(env)] if env else [Path(FASHION_MNIST_DIR), FASHION_MNIST_CACHE]
    for folder in folders:
        found = [next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None) for s in stems]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    if download:
        paths = [folders[-1] / f"{s}.gz" for s in stems]
        for stem, path in zip(stems, paths, strict=True):
            if not path.is_file():
                logger.info("downloading %s into %s", stem, path.parent)
                _download(FASHION_MNIST_URL + path.name, path, *_FASHION_MNIST_FILES[stem][2:])
        return paths
    raise FileNotFoundError(
        f"Fashion-MNIST files {list(stems)} (.gz or not) not found in {' or '.join(map(str, folders))}. "
        f"Fix: `apt-get install dataset-fashion-mnist` (installs into {FASHION_MNIST_DIR}), or set "
        f"{FASHION_MNIST_ENV} / pass root= to a folder holding them, or pass download=True"
    )


def load_fashion_mnist(
    split: str = "train", root: str | Path | None = None, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Load the Fashion-MNIST training (60 000) or test (10 000) images and labels.

    Files are looked up in `root`, else in `$PROTOZOO_FASHION_MNIST`, else in `FASHION_MNIST_DIR` (Debian's
    `dataset-fashion-mnist`) and then `FASHION_MNIST_CACHE`. Headers and item counts are validated.

    Args:
        split: "train" (60 000 images) or "test" (10 000 images).
        root: folder holding the four IDX files, gzip-compressed or not.
        download: fetch missing files from the canonical GitHub copy, verified by SHA-256 and MD5, into
            `root` (or `$PROTOZOO_FASHION_MNIST`, or `FASHION_MNIST_CACHE`).

    Returns:
        images: uint8 tensor (N, 28, 28).
        labels: int64 tensor (N,) with values in 0..9.

    Raises:
        ValueError: unknown split, or a corrupt file (the message names it).
        FileNotFoundError: files missing and download=False; the message lists the folders tried and fixes.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    image_path, label_path = _find_fashion_mnist(stems, root, download)
    (image_magic, n, *_), (label_magic, *_) = (_FASHION_MNIST_FILES[s] for s in stems)
    images = read_idx(image_path, magic=image_magic)
    labels = read_idx(label_path, magic=label_magic)
    if images.shape != (n, 28, 28):
        raise ValueError(f"{image_path} holds images of shape {tuple(images.shape)}, expected {(n, 28, 28)}")
    if labels.shape != (n,) or int(labels.max()) > 9:
        raise ValueError(
            f"{label_path} holds {tuple(labels.shape)} labels up to {int(labels.max())}, expected {n} in 0..9"
        )
    return images, labels.long()


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
