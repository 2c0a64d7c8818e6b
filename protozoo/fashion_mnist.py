"""Fashion-MNIST (Xiao et al. 2017, MIT licence, Zalando Research): find, verify and read its IDX files.

The files are read from Debian's `dataset-fashion-mnist` package, a folder named by
`PROTOZOO_FASHION_MNIST` or `root=`, or downloaded from the canonical GitHub copy with checksums.
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
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "PROTOZOO_FASHION_MNIST"
FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
# Downloads land here when neither root= nor PROTOZOO_FASHION_MNIST is given (the Debian folder is read-only).
FASHION_MNIST_CACHE = Path("~/.cache/protozoo/fashion-mnist").expanduser()
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
