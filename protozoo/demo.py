"""The Gradio demo: what a prototype model sees in an image, and how its prototypes cover a reference set.

Three tabs over one loaded model and a Fashion-MNIST reference set (a fixed random subset of the test
split):

- **Assign**: upload an image (or pick an example) and get its top-k prototypes with probabilities, a strip
  of the reference images most assigned to each of them, and its nearest reference images in feature space.
- **Atlas**: a 2-D map of the reference embeddings (UMAP when ``umap-learn`` is installed, else PCA)
  coloured by top prototype, with the prototypes projected into it; a prototype selector with its gallery;
  the prototype usage histogram and the prototype-to-prototype cosine similarity heatmap.
- **Collapse**: the fraction of unique prototypes against eps (the paper's Definition 2.1) for the loaded
  model beside its joint-training baseline when the zoo registry names one, or beside any model you pick.

The reference features, embeddings, assignments and 2-D coordinates are computed once per model and cached
as safetensors in ``cache_dir``, under a key hashed from the model's weights and config, the reference set,
the backend and the projection. Later interactions only encode the uploaded image and draw, so they answer
in well under a second on a laptop CPU. The ``onnx`` backend exports the model once into the same cache and
serves it with ONNX Runtime.

Run it with ``protozoo demo [--model NAME|FOLDER] [--backend torch|onnx]`` or ``python app/app.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from safetensors.torch import load_file, save_file
from torch import Tensor

from protozoo import registry
from protozoo.collapse import EPS_GRID, unique_fractions, usage
from protozoo.config import ProtoConfig
from protozoo.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from protozoo.model import ProtoModel
from protozoo.transforms import eval_transform

try:
    import gradio as gr
except ImportError as err:  # gradio is the optional "demo" extra
    raise ImportError("protozoo.demo needs gradio: pip install 'protozoo[demo]'") from err

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
DEFAULT_CACHE_DIR = Path("~/.cache/protozoo/demo").expanduser()
REFERENCE_SIZE = 5000  # test images: ~5 per prototype at K = 1024, encoded once in ~10 s on 2 cores
MAX_PIXELS = 40_000_000  # larger uploads are refused before decoding (decompression-bomb territory)
MAX_SIDE = 1024  # larger uploads are downscaled first; the model reads 28-32 px anyway
MAX_UPLOAD = "20mb"  # the server refuses larger files outright
STRIP_LEN = 8  # reference images per prototype in the Assign strips
GALLERY_LEN = 24  # reference images in the Atlas gallery of the selected prototype
NUM_NEIGHBOURS = 8
HEATMAP_MAX = 64  # the heatmap shows at most this many prototypes, the most used ones
CURVE_EPS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)  # contains EPS_GRID
MAX_SESSIONS = 3  # loaded models kept in memory; the others reload from the disk cache
INVERT_CHOICES = ("auto", "yes", "no")
_CACHE_VERSION = 1  # bump when the layout of the cached reference file changes
_SCALE = 4  # 28 px images are shown at 112 px
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
_CSS = "#prototype-strips img, #neighbours img, #prototype-gallery img {image-rendering: pixelated;}"


# ---- uploads ---------------------------------------------------------------------------------------------
def open_upload(
    path: str | Path, name: str = "upload", max_side: int = MAX_SIDE
) -> tuple[Image.Image, list[str]]:
    """Open an uploaded file as an image, refusing what is not one or is too large to decode safely.

    The pixel count is read from the header before anything is decoded; JPEGs are decoded at a reduced
    scale when that suffices, EXIF rotation is applied, and an image larger than ``max_side`` is downscaled.

    Args:
        path: the uploaded file.
        name: the name to quote in messages (the user's file name).
        max_side: longest side kept; larger images are downscaled to it.

    Returns:
        The decoded image (any PIL mode) and the notes to show the user (e.g. that it was downscaled).

    Raises:
        ValueError: the file is not an image PIL can read, is corrupt or truncated, or has more than
            MAX_PIXELS pixels.
    """
    try:
        image: Image.Image = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(
            f"{name!r} is not an image this demo can read; upload a PNG, JPEG, WebP or BMP file"
        ) from None
    except Image.DecompressionBombError:
        raise ValueError(
            f"{name!r} is far too large to decode; downscale it below {MAX_PIXELS:,} pixels"
        ) from None
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise ValueError(
            f"{name!r} is {w}x{h} = {w * h / 1e6:.0f} megapixels; the demo accepts up to "
            f"{MAX_PIXELS / 1e6:.0f} MP, so downscale it first (the model reads 28x28 images)"
        )
    image.draft(image.mode, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when enough
    try:
        image = ImageOps.exif_transpose(image)
        image.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ValueError(
            f"{name!r} could not be decoded ({e}); re-save it as PNG or JPEG and retry"
        ) from None
    notes = []
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        notes.append(f"{name} is {w}x{h}; it was downscaled to {image.width}x{image.height} first.")
    return image, notes


def prepare_image(image: Image.Image, in_chans: int, invert: str = "auto") -> tuple[Image.Image, list[str]]:
    """Bring any PIL image to what a Fashion-MNIST model expects: a light item on black, 1 or 3 channels.

    Transparent pixels are filled with black (the Fashion-MNIST background), 16-bit and float images are
    scaled to 8 bits, colour is reduced to gray for 1-channel models and gray repeated for 3-channel ones.
    With ``invert="auto"`` an image whose border is mostly light (an item photographed on white) is
    inverted.

    Args:
        image: a decoded image of any mode.
        in_chans: the model's input channels, 1 or 3.
        invert: "auto", "yes" or "no".

    Returns:
        The image in mode "L" (in_chans 1) or "RGB" (in_chans 3), and the notes to show the user.

    Raises:
        ValueError: ``invert`` is not one of INVERT_CHOICES, or the image mode cannot be converted.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    notes = []
    colour = image.mode not in _GRAY_MODES
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # more than 8 bits: scale, never clip
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if image.mode == "F" else (65535.0 if values.max() > 255 else 255.0)
        image = Image.fromarray((values.clip(0, None) / max(peak, 1e-12) * 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba.getchannel("A")).min() < 255:
            notes.append("The image has transparent pixels; they were filled with black.")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), rgba)
    if in_chans == 1 and colour:
        notes.append("The model reads grayscale images; the colours were converted to gray.")
    elif in_chans == 3 and not colour:
        notes.append("The image is grayscale; it was repeated over the model's 3 colour channels.")
    try:
        image = image.convert("L" if in_chans == 1 else "RGB")
    except ValueError:
        raise ValueError(f"cannot convert a {image.mode} image; save it as RGB or grayscale") from None
    gray = np.asarray(image.convert("L"))
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert == "yes" or (invert == "auto" and np.median(border) > 127):
        image = ImageOps.invert(image)
        if invert == "auto":
            notes.append(
                "The background looks light, so the image was inverted (Fashion-MNIST shows light items "
                "on black); set Invert to 'no' to keep it as it is."
            )
    return image, notes


# ---- encoders and the reference set --------------------------------------------------------------------
class _TorchEncoder:
    """PIL images -> (features (B, F), embeddings (B, D), assignments (B, K)) with the PyTorch model."""

    def __init__(self, model: ProtoModel) -> None:
        self.model, self.transform = model.eval(), model.transform

    def __call__(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.stack([self.transform(im) for im in images])  # (B, C, H, W)
        with torch.inference_mode():
            out = self.model(x)
        return out.features.float(), out.embeddings.float(), out.assignments.float()


class _OnnxEncoder:
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


def _weights_digest(model: ProtoModel) -> str:
    """SHA-256 of the config and every tensor of the state dict: the model's identity, whatever its source."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def _reference_images(size: int) -> tuple[Tensor, Tensor]:
    """A fixed random subset (seed 0, kept in index order) of the Fashion-MNIST test split."""
    images, labels = load_fashion_mnist("test", download=True)
    if type(size) is not int or not 1 <= size <= len(images):
        raise ValueError(f"reference_size must be an int in [1, {len(images)}], got {size!r}")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:size].sort().values
    return images[idx], labels[idx]


def _encode_reference(
    encoder: _TorchEncoder | _OnnxEncoder, images: Tensor, batch: int = 256
) -> dict[str, Tensor]:
    parts = [
        encoder([Image.fromarray(im.numpy()) for im in images[i : i + batch]])
        for i in range(0, len(images), batch)
    ]
    features, embeddings, assignments = (torch.cat(p) for p in zip(*parts, strict=True))
    return {"features": F.normalize(features, dim=1), "embeddings": embeddings, "assignments": assignments}


def _project(embeddings: Tensor, prototypes: Tensor, method: str) -> tuple[Tensor, Tensor]:
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


def _projection_method() -> str:
    try:
        import umap  # noqa: F401
    except ImportError:
        return "pca"
    return "umap"


def _save_atomic(tensors: dict[str, Tensor], path: Path) -> None:
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
class _Reference:
    """The reference set as one model sees it."""

    images: Tensor  # (N, 28, 28) uint8
    labels: Tensor  # (N,) Fashion-MNIST classes
    features: Tensor  # (N, F) L2-normalised pooled features, for cosine nearest neighbours
    embeddings: Tensor  # (N, D) unit-norm projections
    assignments: Tensor  # (N, K) probabilities over prototypes
    coords: Tensor  # (N, 2) positions in the 2-D map
    proto_coords: Tensor  # (K, 2) the prototypes projected into the same map


class _Session:
    """One loaded model with its reference set, and the parts of the views that never change."""

    def __init__(
        self,
        name: str,
        config: ProtoConfig,
        encoder: _TorchEncoder | _OnnxEncoder,
        prototypes: Tensor,
        reference: _Reference,
        projection: str,
        backend: str,
        baseline: tuple[str, dict[str, float]] | None,
    ) -> None:
        self.name, self.config, self.encoder = name, config, encoder
        self.projection, self.backend, self.baseline = projection, backend, baseline
        c = config
        self.transform = eval_transform(c.img_size, c.mean, c.std, c.in_chans, c.crop_pct, c.interpolation)
        self.prototypes, self.ref = prototypes, reference  # prototypes: (K, D)
        self.num_prototypes = prototypes.shape[0]
        self.winners = reference.assignments.argmax(1)  # (N,)
        self.counts = torch.bincount(self.winners, minlength=self.num_prototypes)  # (K,)
        m = min(GALLERY_LEN, len(reference.labels))
        self.members = torch.topk(reference.assignments, m, dim=0).indices.T  # (K, M), most assigned first
        self.curve = unique_fractions(prototypes, CURVE_EPS)
        self.usage_image = _render(_usage_figure(self.counts, usage(reference.assignments)))
        self.heatmap_image = _render(_heatmap_figure(prototypes, self.counts, reference.assignments.mean(0)))

    def status(self) -> str:
        """One Markdown line describing the loaded model."""
        c = self.config
        return (
            f"**{self.name}**: {c.architecture}, {c.method}, K = {self.num_prototypes}, D = {c.embed_dim}; "
            f"reference set: {len(self.ref.labels)} Fashion-MNIST test images; backend: {self.backend}"
        )

    def curves(self, other: tuple[str, dict[str, float]] | None = None) -> list[tuple[str, dict[str, float]]]:
        """This model's unique-fraction curve, then the comparison (or the registry's baseline) if any."""
        if other is None and self.baseline is not None:
            other = (f"{self.baseline[0]} (joint baseline)", self.baseline[1])
        return [(self.name, self.curve)] + ([other] if other is not None else [])


# ---- drawing ----------------------------------------------------------------------------------------------
def _render(fig: Figure) -> Image.Image:
    """Draw a matplotlib figure with Agg (no pyplot, no global state) into an RGB image."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def _tile(images: Tensor, scale: int = _SCALE, gap: int = 2) -> Image.Image:
    """(M, H, W) uint8 images side by side, upscaled ``scale`` times, on white."""
    m, h, w = images.shape
    out = torch.full((h * scale, m * (w * scale + gap) - gap), 255, dtype=torch.uint8)
    big = images.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (M, H*s, W*s)
    for i in range(m):
        x = i * (w * scale + gap)
        out[:, x : x + w * scale] = big[i]
    return Image.fromarray(out.numpy())


def _strips(rows: list[tuple[str, Tensor]], band: int = 24, space: int = 10) -> Image.Image:
    """Captioned strips in one image: per (caption, (M, H, W) uint8 images) a line of text, then the tiles."""
    tiles = [_tile(images) for _, images in rows]
    out = Image.new(
        "L", (max(t.width for t in tiles), sum(band + t.height + space for t in tiles) - space), 255
    )
    draw, font, y = ImageDraw.Draw(out), ImageFont.load_default(size=15), 0
    for (caption, _), tile in zip(rows, tiles, strict=True):
        draw.text((2, y + 3), caption, fill=0, font=font)
        out.paste(tile, (0, y + band))
        y += band + tile.height + space
    return out


def _model_view(x: Tensor, config: ProtoConfig) -> Image.Image:
    """The normalised model input (C, H, W) turned back into an image: what the model actually sees."""
    mean, std = torch.tensor(config.mean).view(-1, 1, 1), torch.tensor(config.std).view(-1, 1, 1)
    x = (x * std + mean).clamp(0, 1).mul(255).round().byte()  # (C, H, W)
    x = x.repeat_interleave(_SCALE, 1).repeat_interleave(_SCALE, 2)
    return Image.fromarray(x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy())


def _atlas_figure(s: _Session, selected: int) -> Figure:
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    (x, y), (px, py) = s.ref.coords.numpy().T, s.ref.proto_coords.numpy().T
    ax.scatter(x, y, c=s.winners.numpy() % 20, cmap="tab20", vmin=0, vmax=19, s=7, alpha=0.6, linewidths=0)
    used = (s.counts > 0).numpy()
    ax.scatter(px[used], py[used], marker="x", c="black", s=20, linewidths=0.8, label="prototype")
    if not used.all():
        ax.scatter(px[~used], py[~used], marker="x", c="0.65", s=14, linewidths=0.6, label="never a top one")
    m = s.members[selected, :STRIP_LEN].numpy()
    ax.scatter(x[m], y[m], facecolors="none", edgecolors="red", s=60, linewidths=1.2, label="its top images")
    ax.scatter(
        px[selected],
        py[selected],
        marker="*",
        c="red",
        edgecolors="black",
        s=260,
        label=f"prototype {selected}",
    )
    ax.set(
        xticks=[],
        yticks=[],
        title=f"{s.projection.upper()} of the reference embeddings, coloured by top prototype",
    )
    ax.legend(loc="best", fontsize=8)
    return fig


def _usage_figure(counts: Tensor, stats: dict[str, float]) -> Figure:
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(counts)), np.sort(counts.numpy())[::-1], width=1.0, color="tab:blue")
    ax.set(xlim=(-0.5, len(counts) - 0.5), xlabel="prototypes, most used first", ylabel="reference images")
    ax.set_title(
        f"Usage: perplexity / K = {stats['perplexity']:.3f}; never a top prototype: {stats['dead']:.1%}"
    )
    return fig


def _heatmap_figure(prototypes: Tensor, counts: Tensor, mean_assignment: Tensor) -> Figure:
    order = torch.argsort(counts.double() + mean_assignment.double(), descending=True)[:HEATMAP_MAX]
    c = F.normalize(prototypes[order], dim=1)  # (k, D)
    if len(order) > 2:  # similar prototypes next to each other: sort along the first principal direction
        _, _, vh = torch.linalg.svd(c - c.mean(0), full_matrices=False)
        perm = torch.argsort((c - c.mean(0)) @ vh[0])
        order, c = order[perm], c[perm]
    fig = Figure(figsize=(6.5, 5.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow((c @ c.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")  # (k, k)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    names = [str(i) for i in order.tolist()] if len(order) <= 32 else []
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    which = "all" if len(order) == len(prototypes) else f"the {len(order)} most used of"
    ax.set_title(f"Prototype cosine similarity ({which} {len(prototypes)})")
    return fig


def _collapse_figure(curves: list[tuple[str, dict[str, float]]]) -> Figure:
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for (label, curve), colour in zip(curves, ("tab:blue", "tab:red"), strict=False):
        ax.plot(CURVE_EPS, [curve[str(e)] for e in CURVE_EPS], "-", color=colour, label=label)
        ax.plot(EPS_GRID, [curve[str(e)] for e in EPS_GRID], "o", color=colour)
    ax.set(
        xlabel="eps (larger merges more prototypes: stricter)", ylabel="unique prototypes / K", ylim=(0, 1.05)
    )
    ax.set_title("Partial prototype collapse")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig


def _collapse_table(curves: list[tuple[str, dict[str, float]]]) -> pd.DataFrame:
    rows = [[e] + [round(curve[str(e)], 4) for _, curve in curves] for e in EPS_GRID]
    return pd.DataFrame(rows, columns=["eps"] + [label for label, _ in curves])


def _class_name(label: Tensor | int) -> str:
    return FASHION_MNIST_CLASSES[int(label)]


# ---- the app ---------------------------------------------------------------------------------------------
class _App:
    """Loads models on demand (a few kept in memory, all cached on disk) and answers the demo's events."""

    def __init__(self, backend: str, reference_size: int, cache_dir: Path) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend, self.cache_dir, self.projection = backend, cache_dir, _projection_method()
        self.images, self.labels = _reference_images(reference_size)
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.lock = threading.Lock()  # guards self.sessions
        self.loading = threading.Lock()  # one model load at a time

    def session(self, name: str) -> _Session:
        """The session of ``name`` (zoo name, Hub id or folder), loaded (or reloaded) when needed.

        Loads run one at a time, but events on models already in memory never wait for them.
        """
        with self.lock:
            if name in self.sessions:
                self.sessions.move_to_end(name)
                return self.sessions[name]
        with self.loading:
            session = self.sessions.get(name) or self._load(name)
            with self.lock:
                self.sessions[name] = session
                while len(self.sessions) > MAX_SESSIONS:
                    self.sessions.popitem(last=False)
            return session

    def _load(self, name: str) -> _Session:
        from protozoo.hub import load

        model = load(name, device="cpu")
        digest = _weights_digest(model)
        encoder = self._onnx_encoder(model, digest) if self.backend == "onnx" else _TorchEncoder(model)
        # the key: the weights, the reference set, the backend (ONNX numbers differ in the last bits), the map
        spec = f"fashion_mnist/test/{len(self.labels)}/seed0|{self.backend}|{self.projection}"
        key = hashlib.sha256(f"{digest}|{spec}|v{_CACHE_VERSION}".encode()).hexdigest()[:20]
        path = self.cache_dir / f"reference-{key}.safetensors"
        prototypes = model.prototypes.detach().float().cpu()
        if path.is_file():
            logger.info("reading the reference set of %s from %s", name, path)
            tensors = load_file(path)
        else:
            logger.info(
                "encoding %d reference images with %s (once, cached in %s)", len(self.labels), name, path
            )
            tensors = _encode_reference(encoder, self.images)
            tensors["coords"], tensors["proto_coords"] = _project(
                tensors["embeddings"], prototypes, self.projection
            )
            _save_atomic(tensors, path)
        reference = _Reference(images=self.images, labels=self.labels, **tensors)
        baseline = self._baseline(name)
        return _Session(
            name, model.config, encoder, prototypes, reference, self.projection, self.backend, baseline
        )

    def _onnx_encoder(self, model: ProtoModel, digest: str) -> _OnnxEncoder:
        """Export the model once into the cache (keyed by its weights) and serve the graph."""
        from protozoo.onnx import export_onnx

        path = self.cache_dir / f"onnx-{digest[:20]}" / "model.onnx"
        if not path.is_file():
            logger.info("exporting %s to %s (once)", model.config.architecture, path)
            path = export_onnx(model, path)
        return _OnnxEncoder(path)

    @staticmethod
    def _baseline(name: str) -> tuple[str, dict[str, float]] | None:
        """The joint-training baseline the zoo registry names for a model, with its curve, when both exist."""
        from protozoo.hub import load_prototypes

        # a ZooEntry's ``baseline``: the zoo name, Hub id or folder of the same recipe trained jointly
        baseline = getattr(registry.ZOO.get(name), "baseline", None)
        if baseline is None:
            return None
        try:
            return baseline, unique_fractions(load_prototypes(baseline), CURVE_EPS)
        except (ValueError, FileNotFoundError, OSError) as e:
            logger.warning("the baseline %s of %s is not available: %s", baseline, name, e)
            return None

    # ---- events: each returns exactly what its outputs show -----------------------------------------------
    def load_model(self, name: str | None) -> tuple[Any, ...]:
        """Load a model by zoo name, Hub id or folder; every view of it."""
        name = _model_key(name or "")
        if not name:
            raise gr.Error("No model given: pick a zoo model or type a zoo name, Hub id or model folder.")
        try:
            s = self.session(name)
        except (ValueError, FileNotFoundError, TypeError, OSError) as e:
            raise gr.Error(f"Could not load {name!r}: {e}") from None
        selected = int(s.counts.argmax())
        curves = s.curves()
        return (
            name,
            s.status(),
            gr.Slider(minimum=0, maximum=s.num_prototypes - 1, value=selected),
            *self.prototype(selected, name),
            s.usage_image,
            s.heatmap_image,
            _render(_collapse_figure(curves)),
            _collapse_table(curves),
        )

    def prototype(self, selected: float, name: str) -> tuple[Image.Image, list[tuple[Image.Image, str]]]:
        """The atlas with one prototype highlighted, and the gallery of its most assigned reference images."""
        s = self.session(name)
        k = int(selected)  # the slider's bounds are checked by gradio
        p = s.ref.assignments[:, k]
        gallery = [
            (_tile(s.ref.images[i : i + 1]), f"{_class_name(s.ref.labels[i])} · {p[i]:.3f}")
            for i in s.members[k].tolist()
        ]
        return _render(_atlas_figure(s, k)), gallery

    def compare(self, other: str | None, name: str) -> tuple[Image.Image, pd.DataFrame]:
        """The collapse curve of the loaded model beside that of ``other`` (a model or a prototype file)."""
        from protozoo.hub import load_prototypes

        s = self.session(name)
        other = (other or "").strip()
        if not other:
            curves = s.curves()
        else:
            try:
                curves = s.curves(
                    (f"{other} (compared)", unique_fractions(load_prototypes(other), CURVE_EPS))
                )
            except (ValueError, TypeError, FileNotFoundError, OSError) as e:
                raise gr.Error(f"Could not read prototypes from {other!r}: {e}") from None
        return _render(_collapse_figure(curves)), _collapse_table(curves)

    def assign(
        self, payload: dict[str, Any] | None, top_k: float | None, invert: str | None, name: str
    ) -> tuple[Any, ...]:
        """Encode one uploaded image: what the model sees, its top-k prototypes, their strips, neighbours."""
        if not payload or not payload.get("path"):
            raise gr.Error("No image: upload one (PNG, JPEG, WebP or BMP) or pick an example first.")
        s = self.session(name)
        filename = payload.get("orig_name") or Path(payload["path"]).name
        try:
            image, notes = open_upload(payload["path"], filename)
            image, more = prepare_image(image, s.config.in_chans, invert or "auto")
        except ValueError as e:
            raise gr.Error(str(e)) from None
        for note in notes + more:
            gr.Warning(note)
        size = s.config.img_size
        gr.Info(f"Read {filename} ({image.width}x{image.height}); the model sees it at {size}x{size}.")
        features, _, assignments = s.encoder([image])
        k = max(1, min(int(top_k) if top_k else 5, s.num_prototypes))
        top = torch.topk(assignments[0], k)  # (K,) -> k
        label, rows = {}, []
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            label[f"prototype {i}"] = p
            members = s.members[i, :STRIP_LEN]
            common = _class_name(torch.mode(s.ref.labels[members]).values)
            used = int(s.counts[i])
            caption = f"prototype {i}: p = {p:.3f}; top prototype of {used} reference images, mostly {common}"
            rows.append((caption, s.ref.images[members]))
        near = torch.topk(
            s.ref.features @ F.normalize(features[0], dim=0), min(NUM_NEIGHBOURS, len(s.ref.labels))
        )
        neighbours = [
            (_tile(s.ref.images[i : i + 1]), f"{_class_name(s.ref.labels[i])} · {c:.3f}")
            for c, i in zip(near.values.tolist(), near.indices.tolist(), strict=True)
        ]
        return _model_view(s.transform(image), s.config), label, _strips(rows), neighbours

    def assign_on_change(
        self, payload: dict[str, Any] | None, top_k: float | None, invert: str | None, name: str
    ) -> tuple[Any, ...]:
        """``assign`` for changes of the image or settings: no image clears the outputs instead of warning."""
        if not payload:
            return None, None, None, []
        return self.assign(payload, top_k, invert, name)


def _model_key(name: str) -> str:
    """Folders by their absolute path (one cache entry however they are typed), anything else as given."""
    name = name.strip()
    path = Path(name).expanduser()
    return str(path.resolve()) if name and path.is_dir() else name


def _write_examples(folder: Path) -> list[tuple[str, str]]:
    """One Fashion-MNIST training image per class (none is in the reference set), and a dark one on white."""
    images, labels = load_fashion_mnist("train", download=True)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for c, class_name in enumerate(FASHION_MNIST_CLASSES):
        path = folder / f"{c}-{class_name.replace('/', '-').replace(' ', '-').lower()}.png"
        if not path.is_file():
            Image.fromarray(images[int(torch.nonzero(labels == c)[0])].numpy()).save(path)
        examples.append((str(path), class_name))
    path = folder / "sneaker-on-white.png"  # a dark item on white, like a product photo: auto-invert at work
    if not path.is_file():
        Image.fromarray(255 - images[int(torch.nonzero(labels == 7)[1])].numpy()).save(path)
    return examples + [(str(path), "Sneaker on white")]


def build_demo(
    model: str | Path | None = None,
    backend: str = "torch",
    reference_size: int = REFERENCE_SIZE,
    cache_dir: str | Path | None = None,
) -> gr.Blocks:
    """Build the Gradio app around one model; its model selector loads others.

    The model is loaded and the reference set encoded (or read from the disk cache) before this returns,
    so the first page view is as fast as every later one.

    Args:
        model: zoo name, Hub id "org/name" or local model folder; None takes the first zoo model.
        backend: "torch" (PyTorch) or "onnx" (exported once into ``cache_dir``, served by ONNX Runtime).
        reference_size: how many Fashion-MNIST test images form the reference set (a fixed random subset).
        cache_dir: where reference encodings, ONNX exports and example images are kept; defaults to
            ``~/.cache/protozoo/demo``.

    Returns:
        The Blocks app with its queue configured (2 events at a time); serve it with :func:`launch` or
        ``.launch()``.

    Raises:
        ValueError: an unknown backend or model name, or a bad reference_size.
        FileNotFoundError: a missing model folder or weights, or missing Fashion-MNIST files.
    """
    from protozoo.hub import list_models

    zoo = list_models()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    app = _App(backend, reference_size, cache)
    name = _model_key(str(model if model is not None else zoo[0]))
    s = app.session(name)  # raises the loader's own errors here, gr.Error only inside events
    _, status0, _, atlas0, gallery0, usage0, heatmap0, collapse0, table0 = app.load_model(name)
    examples = _write_examples(cache / "examples")

    with gr.Blocks(title="protozoo: decoupled prototypes", delete_cache=(3600, 3600)) as demo:
        state = gr.State(name)
        gr.Markdown(
            "# protozoo: what the prototypes of a self-supervised model see\n"
            "Prototypes fitted by an online Gaussian mixture instead of learned with the encoder "
            "(Arteaga et al., *Why Prototypes Collapse*, ICLR 2026); reference set: Fashion-MNIST."
        )
        with gr.Row(equal_height=True):
            zoo_choice = gr.Dropdown(zoo, value=name if name in zoo else None, label="Zoo model", scale=2)
            folder = gr.Textbox(
                label="...or a zoo name, Hub id or model folder", placeholder="runs/x/model", scale=3
            )
            load_button = gr.Button("Load", scale=1)
        status = gr.Markdown(status0, elem_id="model-status")
        with gr.Tab("Assign"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="Image",
                        height=240,
                        elem_id="input-image",
                    )
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k prototypes")
                    invert = gr.Radio(
                        list(INVERT_CHOICES),
                        value="auto",
                        label="Invert",
                        info="Fashion-MNIST shows light items on black",
                    )
                    assign_button = gr.Button("Assign", variant="primary", elem_id="assign-button")
                    gr.Examples(
                        [[path] for path, _ in examples],
                        inputs=[image],
                        example_labels=[c for _, c in examples],
                        label="Examples (not in the reference set)",
                        examples_per_page=12,
                    )
                    seen = gr.Image(label="What the model sees", interactive=False, height=140)
                with gr.Column(scale=2):
                    label = gr.Label(label="Top prototypes", num_top_classes=10, elem_id="top-prototypes")
                    gr.Markdown("**Reference images most assigned to each of these prototypes**")
                    strips = gr.Image(show_label=False, interactive=False, elem_id="prototype-strips")
                    neighbours = gr.Gallery(
                        label="Nearest neighbours in feature space",
                        columns=4,
                        height="auto",
                        elem_id="neighbours",
                    )
        with gr.Tab("Atlas"):
            with gr.Row():
                atlas = gr.Image(atlas0, show_label=False, interactive=False, scale=3)
                with gr.Column(scale=2):
                    proto = gr.Slider(
                        0,
                        s.num_prototypes - 1,
                        value=int(s.counts.argmax()),
                        step=1,
                        label="Prototype",
                        info="starts at the most used one",
                    )
                    gallery = gr.Gallery(
                        gallery0,
                        label="Its most assigned reference images",
                        columns=4,
                        height="auto",
                        elem_id="prototype-gallery",
                    )
            with gr.Row():
                usage_plot = gr.Image(usage0, show_label=False, interactive=False)
                heatmap = gr.Image(heatmap0, show_label=False, interactive=False)
        with gr.Tab("Collapse"):
            gr.Markdown(
                "A prototype is *unique* at eps when no earlier prototype lies within cosine distance eps "
                "of it (the paper's Definition 2.1). Jointly trained prototypes tend to collapse onto few "
                "directions; decoupled ones should stay near 1 at every eps."
            )
            with gr.Row(equal_height=True):
                other = gr.Textbox(
                    label="Compare with (zoo name, Hub id, model folder or prototype file)",
                    scale=4,
                    placeholder="empty: the zoo's joint-training baseline, when there is one",
                )
                compare_button = gr.Button("Compare", scale=1)
            collapse_plot = gr.Image(collapse0, show_label=False, interactive=False)
            collapse_table = gr.Dataframe(
                table0, label="Unique fraction at the paper's eps", interactive=False
            )

        views = [state, status, proto, atlas, gallery, usage_plot, heatmap, collapse_plot, collapse_table]
        load_button.click(app.load_model, folder, views, api_name="load_model")
        folder.submit(app.load_model, folder, views, api_visibility="private")
        zoo_choice.input(app.load_model, zoo_choice, views, api_visibility="private")
        proto.release(app.prototype, [proto, state], [atlas, gallery], api_name="prototype")
        compare_button.click(app.compare, [other, state], [collapse_plot, collapse_table], api_name="compare")
        other.submit(app.compare, [other, state], [collapse_plot, collapse_table], api_visibility="private")
        inputs, outputs = [image, top_k, invert, state], [seen, label, strips, neighbours]
        # preprocess=False: the upload arrives as gradio's file record and open_upload decodes it, so a bad
        # file gets a clear message instead of a failure inside gradio's own image decoding
        assign_button.click(app.assign, inputs, outputs, api_name="assign", preprocess=False)
        for event in (image.change, top_k.release, invert.input):
            event(app.assign_on_change, inputs, outputs, api_visibility="private", preprocess=False)
    demo.queue(default_concurrency_limit=2)
    return demo


def launch(
    model: str | Path | None = None,
    backend: str = "torch",
    port: int = 7860,
    host: str = "127.0.0.1",
    *,
    reference_size: int = REFERENCE_SIZE,
    cache_dir: str | Path | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build the demo (see :func:`build_demo`) and serve it on ``host:port``.

    Args:
        model: zoo name, Hub id or local model folder; None takes the first zoo model.
        backend: "torch" or "onnx".
        port: TCP port.
        host: interface to listen on; "0.0.0.0" opens the demo to the network.
        reference_size: Fashion-MNIST test images in the reference set.
        cache_dir: the cache folder of :func:`build_demo`.
        block: serve until interrupted; False returns at once with the server running in the background
            (stop it with ``.close()``).

    Returns:
        The running Blocks app.

    Raises:
        ValueError, FileNotFoundError: as :func:`build_demo`.
    """
    demo = build_demo(model, backend, reference_size, cache_dir)
    demo.launch(
        server_name=host,
        server_port=port,
        theme=gr.themes.Soft(),
        css=_CSS,
        max_file_size=MAX_UPLOAD,
        show_error=True,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo
