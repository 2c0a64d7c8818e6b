"""The reference set and its encoding: encoders, the weights digest of the cache key, the 2-D map, saving."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

from protozoo.fashion_mnist import load_fashion_mnist
from protozoo.model import ProtoModel


class TorchEncoder:
    """PIL images -> (features (B, F), embeddings (B, D), assignments (B, K)) with the PyTorch model."""

    def __init__(self, model: ProtoModel) -> None:
        self.model, self.transform = model.eval(), model.transform

    def __call__(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.stack([self.transform(im) for im in images])  # (B, C, H, W)
        with torch.inference_mode():
            out = self.model(x)
        return out.features.float(), out.embeddings.float(), out.assignments.float()


class OnnxEncoder:
    """PIL images -> (features, embeddings, assignments) with ONNX Runtime."""

    def __init__(self, path: Path) -> None:
        from protozoo.onnx import OnnxModel

        self.model = OnnxModel(path)

    def __call__(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(list(images))
        f, e, a = (
            torch.from_numpy(np.asarray(x, dtype=np.float32))
            for x in (out.features, out.embeddings, out.assignments)
        )
        return f, e, a


def weights_digest(model: ProtoModel) -> str:
    """SHA-256 of the config and every tensor of the state dict: the model's identity, whatever its source."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def reference_images(size: int) -> tuple[Tensor, Tensor]:
    """A fixed random subset (seed 0, kept in index order) of the Fashion-MNIST test split."""
    images, labels = load_fashion_mnist("test", download=True)
    if type(size) is not int or not 1 <= size <= len(images):
        raise ValueError(f"reference_size must be an int in [1, {len(images)}], got {size!r}")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:size].sort().values
    return images[idx], labels[idx]


def encode_reference(
    encoder: TorchEncoder | OnnxEncoder, images: Tensor, batch: int = 256
) -> dict[str, Tensor]:
    """Encode (N, H, W) uint8 images: L2-normalised features, embeddings and assignments by name."""
    parts = [
        encoder([Image.fromarray(im.numpy()) for im in images[i : i + batch]])
        for i in range(0, len(images), batch)
    ]
    features, embeddings, assignments = (torch.cat(p) for p in zip(*parts, strict=True))
    return {"features": F.normalize(features, dim=1), "embeddings": embeddings, "assignments": assignments}


def project(embeddings: Tensor, prototypes: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """2-D coordinates of the embeddings (N, D) and of the prototypes (K, D) in one map."""
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, random_state=0).fit(embeddings.numpy())
        projected = reducer.transform(prototypes.numpy())
        return torch.as_tensor(reducer.embedding_, dtype=torch.float32), torch.as_tensor(
            projected, dtype=torch.float32
        )
    mean = embeddings.mean(0)
    _, _, vh = torch.linalg.svd(embeddings - mean, full_matrices=False)  # rows of vh: principal directions
    basis = vh[:2].T  # (D, 2)
    return (embeddings - mean) @ basis, (prototypes - mean) @ basis


def projection_method() -> str:
    """ "umap" when umap-learn is installed, else "pca"."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return "pca"
    return "umap"


def save_atomic(tensors: dict[str, Tensor], path: Path) -> None:
    """Write a safetensors file next to ``path`` and move it into place, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Reference:
    """The reference set as one model sees it."""

    images: Tensor  # (N, 28, 28) uint8
    labels: Tensor  # (N,) Fashion-MNIST classes
    features: Tensor  # (N, F) L2-normalised pooled features, for cosine nearest neighbours
    embeddings: Tensor  # (N, D) unit-norm projections
    assignments: Tensor  # (N, K) probabilities over prototypes
    coords: Tensor  # (N, 2) positions in the 2-D map
    proto_coords: Tensor  # (K, 2) the prototypes projected into the same map
