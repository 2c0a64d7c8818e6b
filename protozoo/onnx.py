"""ONNX export of a ProtoModel and ONNX Runtime inference with the preprocessing shipped beside the graph.

``export_onnx`` writes one graph, input ``pixel_values`` (float32 (B, C, H, W), dynamic batch, the
checkpoint's native size) and outputs ``features`` (B, F), ``embeddings`` (B, D) and ``assignments``
(B, K), plus ``preprocessor.json`` beside it: the eval preprocessing (resize, crop, mean, std) and what
the graph computes (architecture, F, D, K). Shipping the preprocessing with the graph avoids the usual
accuracy drop of ONNX files whose users guess the normalisation. ``OnnxModel`` reads both back and runs
the graph on raw images (PIL, uint8 arrays or tensors) or on batches that are already normalised.

We export with the torch.export-based exporter (``dynamo=True``, torch's default since 2.9). The legacy
TorchScript exporter gives the same numbers and ORT runs its graphs no faster (within the run-to-run
noise, docs/benchmarks.md), but it is deprecated, so the export here does not depend on it.
ViTs are traced at their native size, so no position-embedding resize ends up in the graph.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from protozoo.model import ProtoModel
from protozoo.transforms import eval_transform

if TYPE_CHECKING:
    from torch.onnx import ONNXProgram

logger = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("features", "embeddings", "assignments")
PREPROCESSOR_FILE = "preprocessor.json"
MIN_OPSET = 18  # the torch.export exporter's lowest native opset; lower requests silently stay at 18
_EXPORT_ID_KEY = "protozoo.export_id"  # ONNX metadata that ties a graph to its preprocessor.json


def _require(module: str, extra: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed here: pip install 'protozoo[{extra}]' ({e})") from None


class _Graph(nn.Module):
    """ProtoModel.forward with the exported fields as a tuple: the three of OUTPUT_NAMES, then the
    classifier's logits when the model has a classifier."""

    def __init__(self, model: ProtoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        out = self.model(pixel_values)
        logits = () if out.logits is None else (out.logits,)
        return out.features, out.embeddings, out.assignments, *logits


def export_onnx(model: ProtoModel, path: str | Path, *, opset: int = 18) -> Path:
    """Export a ProtoModel to one ONNX graph and write ``preprocessor.json`` beside it.

    The graph takes ``pixel_values`` float32 (B, in_chans, img_size, img_size) with a dynamic batch
    and returns ``features`` (B, F), ``embeddings`` (B, D) and ``assignments`` (B, K), plus ``logits``
    (B, num_classes) when the model has a classifier, as ``model(x)`` does in eval mode. It passes
    ``onnx.checker`` with ``full_check``. Both files are written under temporary names in the
    target folder and moved into place with ``os.replace``, so readers never see a half-written file;
    weights go into the .onnx file itself unless they exceed ONNX's 2 GB limit (then torch writes them
    to ``<name>.data`` beside it). The model is exported in eval mode and its previous mode restored.

    Args:
        model: a float32 ProtoModel, on any device.
        path: output file, e.g. ``model.onnx``; its folder is created when missing.
        opset: ONNX opset of the default domain, from 18 (the exporter's lowest) to the installed
            onnx's newest.

    Returns:
        The path of the written .onnx file.

    Raises:
        TypeError: ``model`` is not a ProtoModel.
        ValueError: an opset out of range, a path not ending in .onnx, or weights that are not float32.
        ImportError: onnx or onnxscript is not installed.
    """
    onnx = _require("onnx", "onnx")
    _require("onnxscript", "onnx")
    if not isinstance(model, ProtoModel):
        raise TypeError(
            f"export_onnx takes a ProtoModel, got {type(model).__name__}; load one with protozoo.load"
        )
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be between {MIN_OPSET} and {newest} (the installed onnx), got {opset}")
    param = next(model.parameters())
    if param.dtype != torch.float32:
        raise ValueError(
            f"export a float32 model (call model.float() first), got weights of dtype {param.dtype}"
        )
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {str(path)!r}")
    c = model.config
    output_names = [*OUTPUT_NAMES, *(["logits"] if model.classifier is not None else [])]
    # batch 2 in the example: torch.export would specialise a batch of 1 to a constant
    example = torch.randn(2, c.in_chans, c.img_size, c.img_size, device=param.device)
    was_training = model.training
    try:
        program = cast(  # an ONNXProgram whenever dynamo=True
            "ONNXProgram",
            torch.onnx.export(
                _Graph(model).eval(),
                (example,),
                input_names=[INPUT_NAME],
                output_names=output_names,
                opset_version=opset,
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                verbose=False,
            ),
        )
    finally:
        model.train(was_training)
    export_id = uuid.uuid4().hex
    program.model.metadata_props[_EXPORT_ID_KEY] = export_id
    preprocessor = {
        "export_id": export_id,
        "input_name": INPUT_NAME,
        "output_names": output_names,
        "input_layout": "NCHW float32",
        "in_chans": c.in_chans,
        "color_mode": "L" if c.in_chans == 1 else "RGB",
        "size": [c.img_size, c.img_size],
        "resize_rule": "shorter side to resize_shorter_side (antialiased), then center-crop to size",
        "resize_shorter_side": math.floor(c.img_size / c.crop_pct),
        "interpolation": c.interpolation,
        "crop_pct": c.crop_pct,
        "rescale_factor": 1 / 255,
        "mean": list(c.mean),
        "std": list(c.std),
        "architecture": c.architecture,
        "method": c.method,
        "num_features": model.num_features,
        "embed_dim": c.embed_dim,
        "num_prototypes": c.num_prototypes,
        "num_classes": model.num_classes,
        "temperature": c.temperature,
        "opset": opset,
        "protozoo_version": version("protozoo"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        program.save(staging / path.name)  # external <name>.data only past 2 GB
        (staging / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n")
        onnx.checker.check_model(str(staging / path.name), full_check=True)
        written = onnx.load(str(staging / path.name), load_external_data=False)
        got = next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))
        if got != opset:
            raise ValueError(
                f"the exporter wrote opset {got} instead of the requested {opset}; use opset={got}"
            )
        # weights first, then the graph, then preprocessor.json: a reader never finds a graph without weights
        names = sorted(p.name for p in staging.iterdir() if p.name not in (path.name, PREPROCESSOR_FILE))
        for name in [*names, path.name, PREPROCESSOR_FILE]:
            os.replace(staging / name, path.parent / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s (opset %d) and %s", path, opset, path.parent / PREPROCESSOR_FILE)
    return path


@dataclass
class OnnxOutput:
    """What an OnnxModel returns: ProtoModel's fields as float32 numpy arrays (no classifier logits).

    Attributes:
        features: (B, F) pooled backbone features.
        embeddings: (B, D) L2-normalised projection.
        assignments: (B, K) probabilities over prototypes; rows sum to 1.
    """

    features: np.ndarray
    embeddings: np.ndarray
    assignments: np.ndarray


_REQUIRED_KEYS = (
    "export_id",
    "input_name",
    "in_chans",
    "size",
    "interpolation",
    "crop_pct",
    "mean",
    "std",
    "num_features",
    "embed_dim",
    "num_prototypes",
)


class OnnxModel:
    """An exported ProtoModel run by ONNX Runtime, with the preprocessing of its ``preprocessor.json``.

    Raw images (PIL images, uint8 arrays or tensors, any size) are converted to the model's channels,
    resized, center-cropped and normalised exactly as ``ProtoModel.transform`` does; float input is taken
    as already normalised. Numpy arrays are image-shaped (H, W, C), tensors torch-shaped (C, H, W):

    ============================  ==========================================================
    input                         meaning
    ============================  ==========================================================
    PIL image, list of images     raw images (a list may also hold single uint8 arrays/tensors)
    uint8 ndarray                 (H, W), (H, W, C) one image; (N, H, W, C) a batch
    uint8 tensor                  (H, W), (C, H, W) one image; (N, C, H, W) a batch
    float ndarray or tensor       (N, C, H, W) normalised batch at the native size
    ============================  ==========================================================

    Args:
        path: the .onnx file written by :func:`export_onnx`, with ``preprocessor.json`` beside it.
        providers: ONNX Runtime execution providers in order of preference; by default CUDA when
            ``onnxruntime-gpu`` sees a GPU, else CPU. Sessions use every graph optimisation and as many
            intra-op threads as torch (``torch.get_num_threads()``: the physical cores, or
            ``OMP_NUM_THREADS``).

    Raises:
        FileNotFoundError: the .onnx file or its preprocessor.json is missing.
        ValueError: preprocessor.json is malformed or belongs to another export or another graph.
        ImportError: onnxruntime is not installed.

    Example:
        >>> onnx_model = OnnxModel(export_onnx(model, "out/model.onnx"))
        >>> out = onnx_model(Image.open("shoe.png"))
        >>> out.assignments.argmax(1)  # the top prototype of each image
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None) -> None:
        ort = _require("onnxruntime", "onnx")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no ONNX file at {str(self.path)!r}; write one with protozoo.onnx.export_onnx"
            )
        pre_path = self.path.parent / PREPROCESSOR_FILE
        if not pre_path.is_file():
            raise FileNotFoundError(
                f"{str(pre_path)!r} is missing: the preprocessing ships beside the graph; re-export with "
                f"protozoo.onnx.export_onnx or `protozoo export <model> --out {self.path}`"
            )
        try:
            pre = json.loads(pre_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(pre_path)!r} is not valid JSON ({e}); re-export the model") from None
        missing = [k for k in _REQUIRED_KEYS if not isinstance(pre, dict) or k not in pre]
        if missing:
            raise ValueError(f"{str(pre_path)!r} lacks the keys {missing}; re-export the model")
        self.preprocessor: dict[str, Any] = pre
        if providers is None:
            available = ort.get_available_providers()
            providers = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
            providers = [*providers, "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()  # physical cores, or OMP_NUM_THREADS
        self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        self._check_graph(pre_path)
        self.in_chans: int = pre["in_chans"]
        self.size: tuple[int, int] = (pre["size"][0], pre["size"][1])
        self.transform = eval_transform(
            pre["size"][0], pre["mean"], pre["std"], self.in_chans, pre["crop_pct"], pre["interpolation"]
        )

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in order."""
        return self.session.get_providers()

    def _check_graph(self, pre_path: Path) -> None:
        pre = self.preprocessor
        graph_id = self.session.get_modelmeta().custom_metadata_map.get(_EXPORT_ID_KEY)
        if graph_id != pre["export_id"]:
            raise ValueError(
                f"{str(pre_path)!r} (export {pre['export_id']}) belongs to another export than "
                f"{str(self.path)!r} (export {graph_id}); export each model into its own folder and "
                f"re-export this one"
            )
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        expected_in = [pre["in_chans"], *pre["size"]]
        c, h, w = expected_in
        dims = {
            "features": pre["num_features"],
            "embeddings": pre["embed_dim"],
            "assignments": pre["num_prototypes"],
        }
        shapes_ok = pre["input_name"] in inputs and list(inputs[pre["input_name"]][1:]) == expected_in
        shapes_ok = shapes_ok and all(
            name in outputs and outputs[name][1:] == [d] for name, d in dims.items()
        )
        if not shapes_ok:
            raise ValueError(
                f"{str(pre_path)!r} describes input {pre['input_name']!r} (B, {c}, {h}, {w}) and outputs"
                f" {dims}, but the graph has inputs {inputs} and outputs {outputs}; "
                f"re-export the model"
            )

    def __call__(self, images: Any) -> OnnxOutput:
        """Run the graph on raw images or on a normalised batch (see the class docstring for the forms).

        Args:
            images: PIL image, list of images, uint8 or float numpy array, or torch tensor.

        Returns:
            :class:`OnnxOutput` with (B, F) features, (B, D) embeddings and (B, K) assignments.

        Raises:
            TypeError: an unsupported input type or dtype.
            ValueError: an empty batch, the wrong number of channels, or a normalised batch whose size is
                not the native one.
        """
        x = self.preprocess(images)
        features, embeddings, assignments = self.session.run(
            list(OUTPUT_NAMES), {self.preprocessor["input_name"]: x}
        )
        return OnnxOutput(features=features, embeddings=embeddings, assignments=assignments)

    def preprocess(self, images: Any) -> np.ndarray:
        """Turn any accepted input into the graph's float32 (B, C, H, W) batch.

        Args:
            images: as :meth:`__call__`.

        Returns:
            Contiguous float32 array (B, in_chans, H, W), normalised.

        Raises:
            TypeError: as :meth:`__call__`.
            ValueError: as :meth:`__call__`.
        """
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("got no images (an empty list or batch); pass at least one")
            return torch.stack([self._raw(image) for image in images]).numpy()
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8:
                if images.ndim == 4:
                    return self.preprocess(list(images))
                return self._raw(images)[None].numpy()
            return self._normalised(images)
        if isinstance(images, Tensor):
            images = images.detach().cpu()
            if images.dtype == torch.uint8:
                return self.preprocess(list(images)) if images.ndim == 4 else self._raw(images)[None].numpy()
            return self._normalised(images.float().numpy() if images.is_floating_point() else images.numpy())
        raise TypeError(
            f"expected a PIL image, a list of images, a numpy array or a torch tensor, "
            f"got {type(images).__name__}"
        )

    def _raw(self, image: Any) -> Tensor:
        """One raw image -> normalised float32 tensor (C, H, W)."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(
                    f"a single numpy image must be uint8, got {image.dtype}; stack normalised floats into "
                    f"one (N, {self.in_chans}, {self.size[0]}, {self.size[1]}) array instead"
                )
            if image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
                raise ValueError(
                    f"numpy images are (H, W) or (H, W, C) with C in 1, 3, 4, got shape {image.shape}; "
                    f"a batch of grayscale images (N, H, W) needs a channel axis: images[..., None]"
                )
            if image.ndim not in (2, 3):
                raise ValueError(f"numpy images are (H, W) or (H, W, C), got shape {image.shape}")
            image = torch.tensor(image).permute(2, 0, 1) if image.ndim == 3 else torch.tensor(image)
        elif not isinstance(image, (Image.Image, Tensor)):
            raise TypeError(
                f"expected a PIL image, numpy array or tensor in the list, got {type(image).__name__}"
            )
        return self.transform(image)

    def _normalised(self, x: np.ndarray) -> np.ndarray:
        """A float batch (N, C, H, W), already normalised -> contiguous float32, after checking its shape."""
        expected = f"(N, {self.in_chans}, {self.size[0]}, {self.size[1]})"
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"expected uint8 images or normalised floats, got dtype {x.dtype}; convert images to uint8"
            )
        if x.ndim != 4:
            raise ValueError(
                f"normalised float input must be a batch {expected}, got shape {x.shape}; add x[None]"
            )
        if x.shape[0] == 0:
            raise ValueError(f"got an empty batch of shape {x.shape}; pass at least one image")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"the model takes {self.in_chans} channel(s), got shape {x.shape}; pass raw uint8 images to "
                f"have them converted, or normalise {expected} floats"
            )
        if tuple(x.shape[2:]) != self.size:
            raise ValueError(
                f"the graph takes {self.size[0]}x{self.size[1]} images, got shape {x.shape}; pass raw uint8 "
                f"images or PIL images to have them resized and cropped"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def __repr__(self) -> str:
        pre = self.preprocessor
        return (
            f"{type(self).__name__}({str(self.path)!r}, architecture={pre.get('architecture')!r}, "
            f"K={pre['num_prototypes']}, D={pre['embed_dim']}, providers={self.providers})"
        )
