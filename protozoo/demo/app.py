"""The demo's server side: models loaded on demand with their reference sets, and the answers to events."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

from protozoo import registry
from protozoo.collapse import collapse_report, unique_fractions, usage
from protozoo.config import ProtoConfig
from protozoo.demo.access import Access, ModelSource, Refused
from protozoo.demo.constants import (
    BACKENDS,
    CURVE_EPS,
    GALLERY_LEN,
    LOAD_TIMEOUT,
    MAX_MODEL_BYTES,
    MAX_SESSIONS,
    NUM_NEIGHBOURS,
    STRIP_LEN,
)
from protozoo.demo.fetch import fetch_model
from protozoo.demo.figures import (
    Curve,
    atlas_figure,
    class_name,
    collapse_figure,
    collapse_table,
    heatmap_figure,
    model_view,
    render,
    strips,
    tile,
    usage_figure,
)
from protozoo.demo.reference import (
    OnnxEncoder,
    Reference,
    TorchEncoder,
    encode_reference,
    project,
    projection_method,
    reference_images,
    save_atomic,
    weights_digest,
)
from protozoo.demo.uploads import open_upload, prepare_image
from protozoo.model import ProtoModel
from protozoo.prototypes import OnlineGMM
from protozoo.transforms import eval_transform

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the layout of the cached reference file changes


def gmm_masses(model: ProtoModel) -> Tensor | None:
    """The (K,) masses of a decoupled model's GMM, None for jointly learned prototypes."""
    source = model.prototype_source
    return source.mass.detach().float().cpu() if isinstance(source, OnlineGMM) else None


def curve(label: str, prototypes: Tensor, masses: Tensor | None, winners: Tensor | None = None) -> Curve:
    """The Collapse tab's curve of a prototype set: live by reference-set usage, else by GMM mass."""
    report = collapse_report(prototypes, assignments=winners, masses=masses)
    return label, unique_fractions(prototypes, CURVE_EPS), report


class Session:
    """One loaded model with its reference set, and the parts of the views that never change."""

    def __init__(
        self,
        name: str,
        config: ProtoConfig,
        encoder: TorchEncoder | OnnxEncoder,
        prototypes: Tensor,
        masses: Tensor | None,
        reference: Reference,
        projection: str,
        backend: str,
        baseline: Curve | None,
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
        self.curve = curve(name, prototypes, masses, self.winners)
        self.usage_image = render(usage_figure(self.counts, usage(reference.assignments)))
        self.heatmap_image = render(heatmap_figure(prototypes, self.counts, reference.assignments.mean(0)))

    def status(self) -> str:
        """One Markdown line describing the loaded model."""
        c = self.config
        return (
            f"**{self.name}**: {c.architecture}, {c.method}, K = {self.num_prototypes}, D = {c.embed_dim}; "
            f"reference set: {len(self.ref.labels)} Fashion-MNIST test images; backend: {self.backend}"
        )

    def curves(self, other: Curve | None = None) -> list[Curve]:
        """This model's unique-fraction curve, then the comparison (or the registry's baseline) if any."""
        if other is None and self.baseline is not None:
            other = (f"{self.baseline[0]} (joint baseline)", *self.baseline[1:])
        return [self.curve] + ([other] if other is not None else [])


class DemoApp:
    """Loads models on demand (a few kept in memory, all cached on disk) and answers the demo's events."""

    def __init__(
        self,
        backend: str,
        reference_size: int,
        cache_dir: Path,
        access: Access,
        max_model_bytes: int = MAX_MODEL_BYTES,
        load_timeout: float = LOAD_TIMEOUT,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend, self.cache_dir, self.projection = backend, cache_dir, projection_method()
        self.access, self.max_model_bytes, self.load_timeout = access, max_model_bytes, load_timeout
        self.images, self.labels = reference_images(reference_size)
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.lock = threading.Lock()  # guards self.sessions
        self.loading = threading.Lock()  # one model load at a time

    def session(self, source: ModelSource) -> Session:
        """The session of ``source``, loaded (or reloaded) when needed; at most MAX_SESSIONS stay in memory.

        Loads run one at a time, but events on models already in memory never wait for them.
        """
        with self.lock:
            if source.name in self.sessions:
                self.sessions.move_to_end(source.name)
                return self.sessions[source.name]
        with self.loading:
            session = self.sessions.get(source.name) or self._load(source)
            with self.lock:
                self.sessions[source.name] = session
                while len(self.sessions) > MAX_SESSIONS:
                    self.sessions.popitem(last=False)
            return session

    def open(self, source: ModelSource) -> ProtoModel:
        """The model behind ``source``; Hub ids go through the bounded :func:`fetch_model`."""
        from protozoo.model import load

        if source.kind == "hub":
            return load(fetch_model(source.name, self.max_model_bytes, self.load_timeout), device="cpu")
        return load(source.name, device="cpu")

    def _load(self, source: ModelSource) -> Session:
        name = source.name
        model = self.open(source)
        digest = weights_digest(model)
        encoder = self._onnx_encoder(model, digest) if self.backend == "onnx" else TorchEncoder(model)
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
            tensors = encode_reference(encoder, self.images)
            tensors["coords"], tensors["proto_coords"] = project(
                tensors["embeddings"], prototypes, self.projection
            )
            save_atomic(tensors, path)
        reference = Reference(images=self.images, labels=self.labels, **tensors)
        baseline = self._baseline(name)
        masses = gmm_masses(model)
        return Session(
            name,
            model.config,
            encoder,
            prototypes,
            masses,
            reference,
            self.projection,
            self.backend,
            baseline,
        )

    def _onnx_encoder(self, model: ProtoModel, digest: str) -> OnnxEncoder:
        """Export the model once into the cache (keyed by its weights) and serve the graph."""
        from protozoo.onnx import export_onnx

        path = self.cache_dir / f"onnx-{digest[:20]}" / "model.onnx"
        if not path.is_file():
            logger.info("exporting %s to %s (once)", model.config.architecture, path)
            path = export_onnx(model, path)
        return OnnxEncoder(path)

    def _winners(self, model: ProtoModel) -> Tensor:
        """(N,) top prototype of each reference image under ``model``, computed once and cached by weights."""
        spec = f"fashion_mnist/test/{len(self.labels)}/seed0|winners"
        key = hashlib.sha256(f"{weights_digest(model)}|{spec}|v{_CACHE_VERSION}".encode()).hexdigest()[:20]
        path = self.cache_dir / f"winners-{key}.safetensors"
        if path.is_file():
            return load_file(path)["winners"]
        winners = encode_reference(TorchEncoder(model), self.images)["assignments"].argmax(1)
        save_atomic({"winners": winners}, path)
        return winners

    def _other_curve(self, label: str, other: ProtoModel | str) -> Curve:
        """The Collapse tab's curve of another prototype set.

        A model's live prototypes are those its reference-set images use; a prototype file (a path) has
        only its GMM masses, when it holds them, to tell the live ones.
        """
        from protozoo.model import load_prototype_file

        if isinstance(other, str):
            found = load_prototype_file(other)
            return curve(label, found.prototypes, found.masses)
        prototypes = other.prototypes.detach().float().cpu()
        return curve(label, prototypes, gmm_masses(other), self._winners(other))

    def _baseline(self, name: str) -> Curve | None:
        """The joint-training baseline the zoo registry names for a model, with its curve, when both exist."""
        from protozoo.model import load

        # a ZooEntry's ``baseline``: the zoo name, Hub id or folder of the same recipe trained jointly
        baseline = getattr(registry.ZOO.get(name), "baseline", None)
        if baseline is None:
            return None
        try:
            is_file = Path(baseline).expanduser().is_file()
            return self._other_curve(baseline, baseline if is_file else load(baseline, device="cpu"))
        except (ValueError, FileNotFoundError, OSError) as e:
            logger.warning("the baseline %s of %s is not available: %s", baseline, name, e)
            return None

    # ---- events: each returns exactly what its outputs show -----------------------------------------------
    def _refuse(self, text: str, source: ModelSource | None, error: Exception, what: str) -> gr.Error:
        """The visitor's error: a public demo's failed local load reads exactly as a refusal."""
        if isinstance(error, Refused):
            return gr.Error(str(error))
        if self.access.public and (source is None or source.kind == "local"):
            logger.warning("refused %r to a visitor: %s", text, error)
            return gr.Error(str(self.access.refusal(text)))
        return gr.Error(f"Could not {what} {text!r}: {error}")

    def load_model(self, name: str | None) -> tuple[Any, ...]:
        """Load a model by zoo name, Hub id or folder (as the access policy allows); every view of it."""
        name, source = (name or "").strip(), None
        try:
            source = self.access.source(name)
            s = self.session(source)
        except (ValueError, FileNotFoundError, TypeError, OSError) as e:  # Refused is a ValueError
            if not name:
                raise gr.Error(str(e)) from None
            raise self._refuse(name, source, e, "load") from None
        selected = int(s.counts.argmax())
        curves = s.curves()
        return (
            source,
            s.status(),
            gr.Slider(minimum=0, maximum=s.num_prototypes - 1, value=selected),
            *self.prototype(selected, source),
            s.usage_image,
            s.heatmap_image,
            render(collapse_figure(curves)),
            collapse_table(curves),
        )

    def prototype(
        self, selected: float, source: ModelSource
    ) -> tuple[Image.Image, list[tuple[Image.Image, str]]]:
        """The atlas with one prototype highlighted, and the gallery of its most assigned reference images."""
        s = self.session(source)
        k = int(selected)  # the slider's bounds are checked by gradio
        p = s.ref.assignments[:, k]
        gallery = [
            (tile(s.ref.images[i : i + 1]), f"{class_name(s.ref.labels[i])} · {p[i]:.3f}")
            for i in s.members[k].tolist()
        ]
        atlas = atlas_figure(
            s.ref.coords, s.ref.proto_coords, s.winners, s.counts, s.members, k, s.projection
        )
        return render(atlas), gallery

    def compare(self, other: str | None, source: ModelSource) -> tuple[Image.Image, pd.DataFrame]:
        """The collapse curve of the loaded model beside that of ``other`` (a model or a prototype file)."""
        s = self.session(source)
        other, theirs = (other or "").strip(), None
        if not other:
            curves = s.curves()
        else:
            try:
                theirs = self.access.source(other, files=True)
                is_file = theirs.kind == "local" and Path(theirs.name).is_file()
                curves = s.curves(
                    self._other_curve(f"{other} (compared)", theirs.name if is_file else self.open(theirs))
                )
            except (ValueError, TypeError, FileNotFoundError, OSError) as e:
                raise self._refuse(other, theirs, e, "read prototypes from") from None
        return render(collapse_figure(curves)), collapse_table(curves)

    def assign(
        self, payload: dict[str, Any] | None, top_k: float | None, invert: str | None, source: ModelSource
    ) -> tuple[Any, ...]:
        """Encode one uploaded image: what the model sees, its top-k prototypes, their strips, neighbours."""
        if not payload or not payload.get("path"):
            raise gr.Error("No image: upload one (PNG, JPEG, WebP or BMP) or pick an example first.")
        s = self.session(source)
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
            common = class_name(torch.mode(s.ref.labels[members]).values)
            used = int(s.counts[i])
            caption = f"prototype {i}: p = {p:.3f}; top prototype of {used} reference images, mostly {common}"
            rows.append((caption, s.ref.images[members]))
        near = torch.topk(
            s.ref.features @ F.normalize(features[0], dim=0), min(NUM_NEIGHBOURS, len(s.ref.labels))
        )
        neighbours = [
            (tile(s.ref.images[i : i + 1]), f"{class_name(s.ref.labels[i])} · {c:.3f}")
            for c, i in zip(near.values.tolist(), near.indices.tolist(), strict=True)
        ]
        return model_view(s.transform(image), s.config), label, strips(rows), neighbours

    def assign_on_change(
        self, payload: dict[str, Any] | None, top_k: float | None, invert: str | None, source: ModelSource
    ) -> tuple[Any, ...]:
        """``assign`` for changes of the image or settings: no image clears the outputs instead of warning."""
        if not payload:
            return None, None, None, []
        return self.assign(payload, top_k, invert, source)
