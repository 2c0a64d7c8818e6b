"""Tests for protozoo.data and protozoo.fashion_mnist: IDX files, loading, splits, long tail, datasets."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from protozoo import data, fashion_mnist
from protozoo.data import (
    ImageTensorDataset,
    build_dataset,
    class_groups,
    long_tailed_indices,
    train_val_split,
)
from protozoo.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
    read_idx,
)

HAVE_FMNIST = (Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST,
    reason=f"Fashion-MNIST not in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


def write_idx(path: Path, array: torch.Tensor, magic: int, compress: bool = False) -> Path:
    """Write a uint8 IDX file: magic (whose last byte is ndim), then big-endian dims, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.to(torch.uint8).numpy().tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture(scope="module")
def fmnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    if not HAVE_FMNIST:
        pytest.skip(f"Fashion-MNIST not in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")
    return load_fashion_mnist("train")


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    path = write_idx(tmp_path / "x.idx", images, magic=2051, compress=compress)
    assert torch.equal(read_idx(path, magic=2051), images)
    labels = torch.tensor([0, 9, 3], dtype=torch.uint8)
    assert torch.equal(
        read_idx(write_idx(tmp_path / "y", labels, magic=2049, compress=compress), 2049), labels
    )


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", torch.zeros(4), magic=2049)
    with pytest.raises(ValueError, match=r"labels has IDX magic number 2049, expected 2051"):
        read_idx(path, magic=2051)


def test_read_idx_truncated(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", torch.zeros(3, 28, 28), magic=2051)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"images holds 2342 data bytes .* truncated"):
        read_idx(path, magic=2051)


def test_read_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.gz", torch.zeros(3, 28, 28), magic=2051, compress=True)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"images.gz is a corrupt gzip file"):
        read_idx(path, magic=2051)


def test_load_fashion_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOZOO_FASHION_MNIST", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=rf"not found in {tmp_path}.*apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist("test")
    with pytest.raises(FileNotFoundError, match=r"PROTOZOO_FASHION_MNIST / pass root=.*download=True"):
        load_fashion_mnist("test", root=tmp_path / "elsewhere")


def test_load_fashion_mnist_checks_counts(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", torch.zeros(5, 28, 28), magic=2051)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.zeros(5), magic=2049, compress=True)
    with pytest.raises(ValueError, match=r"images of shape \(5, 28, 28\), expected \(10000, 28, 28\)"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match=r"unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val", root=tmp_path)


@pytest.mark.parametrize("good", [True, False])
def test_download_verifies_checksums(tmp_path: Path, good: bool) -> None:
    source = tmp_path / "source.gz"
    source.write_bytes(b"fashion" * 1000)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest() if good else "0" * 64
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "train-labels-idx1-ubyte.gz"
    if good:
        fashion_mnist._download(source.as_uri(), dest, sha256, md5)
        assert dest.read_bytes() == source.read_bytes()
    else:
        with pytest.raises(ValueError, match=r"checksum mismatch for file://.*nothing was written"):
            fashion_mnist._download(source.as_uri(), dest, sha256, md5)
    assert sorted(p.name for p in dest.parent.iterdir()) == ([dest.name] if good else [])  # no temp file


def test_download_failure_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"could not download file://.*apt-get install"):
        fashion_mnist._download((tmp_path / "absent.gz").as_uri(), tmp_path / "x.gz", "0" * 64, "0" * 32)


@needs_fmnist
def test_real_fashion_mnist(fmnist_train: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = fmnist_train
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and torch.equal(torch.bincount(labels), torch.full((10,), 6000))
    pixels = images.float() / 255
    assert round(pixels.mean().item(), 4) == FASHION_MNIST_MEAN[0]
    assert round(pixels.std().item(), 4) == FASHION_MNIST_STD[0]
    test_images, test_labels = load_fashion_mnist("test")
    assert (
        test_images.shape == (10_000, 28, 28) and int(test_labels.min()) == 0 and int(test_labels.max()) == 9
    )
    assert len(FASHION_MNIST_CLASSES) == 10


def test_image_tensor_dataset() -> None:
    images = torch.randint(0, 256, (4, 6, 5), dtype=torch.uint8)
    ds = ImageTensorDataset(images, torch.tensor([1, 0, 1, 2]))
    x, y = ds[2]
    assert x.shape == (1, 6, 5) and x.dtype == torch.float32 and y == 1
    assert torch.allclose(x[0], images[2].float() / 255)
    seen = []
    ds = ImageTensorDataset(
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), transform=seen.append
    )
    ds[1]
    assert seen[0].shape == (3, 4, 4) and seen[0].dtype == torch.uint8
    assert ds.targets.dtype == torch.int64


def test_image_tensor_dataset_errors() -> None:
    with pytest.raises(TypeError, match=r"images must be uint8, got torch.float32"):
        ImageTensorDataset(torch.zeros(2, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"labels must be \(N,\) with N = 2 images, got shape \(3,\)"):
        ImageTensorDataset(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        ImageTensorDataset(torch.zeros(2, 4, dtype=torch.uint8), torch.zeros(2))


def _check_profile(counts: torch.Tensor, n_max: int, factor: float) -> None:
    expected = [round(n_max * factor ** (-c / 9)) for c in range(10)]
    assert counts.tolist() == expected
    assert all(a >= b for a, b in zip(expected, expected[1:], strict=False))


def test_long_tail_profile_synthetic() -> None:
    labels = torch.arange(10).repeat(600)
    idx = long_tailed_indices(labels, 10.0, seed=0)
    counts = torch.bincount(labels[idx], minlength=10)
    _check_profile(counts, 600, 10.0)
    assert counts[0] == 600 and counts[9] == 60
    assert torch.equal(idx, long_tailed_indices(labels, 10.0, seed=0))
    assert not torch.equal(idx, long_tailed_indices(labels, 10.0, seed=1))
    assert torch.equal(long_tailed_indices(labels, 1.0), torch.arange(6000))


@needs_fmnist
def test_long_tail_fashion_mnist(fmnist_train: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, labels = fmnist_train
    counts = torch.bincount(labels[long_tailed_indices(labels, 100.0)])
    assert counts[0] == 6000 and counts[9] == 60
    _check_profile(counts, 6000, 100.0)


@pytest.mark.parametrize(
    ("labels", "factor", "match"),
    [
        (torch.arange(10), 0.5, r"imbalance_factor must be >= 1 \(n_head / n_tail\), got 0.5"),
        (torch.tensor([0, 2, 2]), 10.0, r"classes \[1\] have no samples"),
        (torch.tensor([-1, 0]), 10.0, r"non-empty 1-D tensor of class indices >= 0"),
    ],
)
def test_long_tail_errors(labels: torch.Tensor, factor: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        long_tailed_indices(labels, factor)


@pytest.mark.parametrize(
    ("counts", "head", "tail", "expected"),
    [
        (
            [6000, 3597, 2156, 1293, 775, 465, 278, 167, 100, 60],
            0.3,
            0.3,
            ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9]),
        ),
        ([5, 50, 500, 1], 0.25, 0.5, ([2], [1], [0, 3])),
        (torch.tensor([3, 3, 3]), 0.0, 0.0, ([], [0, 1, 2], [])),
    ],
)
def test_class_groups(counts: list[int], head: float, tail: float, expected: tuple[list[int], ...]) -> None:
    groups = class_groups(counts, head=head, tail=tail)
    assert (groups["head"], groups["medium"], groups["tail"]) == expected


def test_class_groups_error() -> None:
    with pytest.raises(ValueError, match=r"head \+ tail <= 1, got head=0.6, tail=0.6"):
        class_groups([1, 2, 3], head=0.6, tail=0.6)


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"), [(60_000, 5000 / 60_000, 5000), (10, 0.25, 2), (2, 0.01, 1)]
)
def test_train_val_split(n: int, fraction: float, n_val: int) -> None:
    train, val = train_val_split(n, fraction, seed=3)
    assert len(val) == n_val and not torch.isin(val, train).any()
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.equal(val, train_val_split(n, fraction, seed=3)[1])


@pytest.mark.parametrize(
    ("n", "fraction", "match"), [(1, 0.5, r"n=1"), (10, 1.0, r"val_fraction .* got 1.0")]
)
def test_train_val_split_errors(n: int, fraction: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_val_split(n, fraction)


@pytest.mark.parametrize(
    ("name", "split", "error", "match"),
    [
        (
            "mnist",
            "train",
            ValueError,
            r"unknown dataset 'mnist'; valid forms: fashion_mnist, cifar10, .*hf:",
        ),
        ("hf:", "train", ValueError, r"unknown dataset 'hf:'"),
        ("fashion_mnist", "dev", ValueError, r"unknown Fashion-MNIST split 'dev'"),
        ("cifar10", "dev", ValueError, r"unknown cifar10 split 'dev'"),
        ("stl10", "val", ValueError, r"unknown stl10 split 'val'"),
        ("fashion_mnist", "train", FileNotFoundError, r"apt-get install dataset-fashion-mnist"),
        ("cifar100", "train", FileNotFoundError, r"cifar100 not found .* pass download=True"),
        ("stl10", "test", FileNotFoundError, r"stl10 not found .* pass download=True"),
        ("imagefolder:/no/such/dir", "train", FileNotFoundError, r"'/no/such/dir' is not a folder"),
    ],
)
def test_build_dataset_errors(tmp_path: Path, name: str, split: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_dataset(name, split, root=tmp_path)


def test_build_dataset_long_tail_on_test() -> None:
    with pytest.raises(ValueError, match=r"long_tail applies to training splits, not 'test'"):
        build_dataset("fashion_mnist", "test", long_tail=10)


def test_build_dataset_hf_needs_datasets() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install datasets"):
            build_dataset("hf:zalando-datasets/fashion_mnist", "train")
    else:
        pytest.skip("the datasets package is installed")


def _image_tree(root: Path, splits: list[str]) -> None:
    for split in splits:
        for label, cls in enumerate(["cat", "dog"]):
            (root / split / cls).mkdir(parents=True)
            for i in range(label + 2):
                Image.new("RGBA", (10 + i, 8), (255, 0, 0, 128)).save(root / split / cls / f"{i}.png")


def test_build_dataset_imagefolder(tmp_path: Path) -> None:
    _image_tree(tmp_path, ["train", "test"])
    ds = build_dataset(f"imagefolder:{tmp_path}", "test", transform=lambda im: im.size)
    assert len(ds) == 5 and ds.targets.tolist() == [0, 0, 1, 1, 1] and ds.classes == ["cat", "dog"]
    assert ds[3] == ((11, 8), 1)
    tail = build_dataset(f"imagefolder:{tmp_path}", "train", long_tail=3.0)
    assert torch.bincount(tail.targets).tolist() == [2, 1]  # n_max = 3: cat keeps its 2, dog round(3 / 3)
    with pytest.raises(FileNotFoundError, match=r"has split folders \['train', 'test'\] but no 'val'"):
        build_dataset(f"imagefolder:{tmp_path}", "val")
    flat = tmp_path / "train"
    assert len(build_dataset(f"imagefolder:{flat}", "val")) == 5  # no split folders: the whole tree


@needs_fmnist
def test_build_dataset_fashion_mnist_splits() -> None:
    sizes = {split: len(build_dataset("fashion_mnist", split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    ds = build_dataset("fashion_mnist", "trainval", long_tail=100.0, seed=0)
    assert torch.bincount(ds.targets)[[0, 9]].tolist() == [6000, 60]
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and 0 <= y <= 9


def test_build_dataset_hf_local(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    images = [Image.new("L", (6 + i, 5), i * 40) for i in range(4)]
    rows = datasets.Dataset.from_dict({"img": images, "fine": [2, 0, 2, 1]}, features=features)
    rows.to_parquet(str(tmp_path / "train.parquet"))
    ds = build_dataset(f"hf:{tmp_path}", "train", transform=lambda im: im.size, root=tmp_path / "cache")
    assert ds.targets.tolist() == [2, 0, 2, 1] and ds.classes == ["a", "b", "c"]
    assert ds[3] == ((9, 5), 1)
    with pytest.raises(ValueError, match=r"need an image and a label column, dataset has columns \['img'\]"):
        data.HFImageDataset(rows.remove_columns("fine"))
