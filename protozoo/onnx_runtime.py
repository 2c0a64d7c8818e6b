"""ONNX Runtime inference of an exported ProtoModel, with onnxruntime, numpy and pillow only.

This module imports nothing from torch or from the rest of protozoo, so an ONNX deployment needs
neither; it can even be copied next to the graph and imported on its own. ``OnnxModel`` reads
``preprocessor.json`` (written beside the graph by :func:`protozoo.onnx.export_onnx`) and runs the
graph on raw images (PIL, uint8 arrays or tensors) or on batches that are already normalised. The
eval preprocessing (:func:`resize_and_crop`, :func:`to_mode`) is the one ``ProtoModel.transform``
uses, so both give the same pixels.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("features", "embeddings", "assignments")
PREPROCESSOR_FILE = "preprocessor.json"
EXPORT_ID_KEY = "protozoo.export_id"  # ONNX metadata that ties a graph to its preprocessor.json
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
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


def to_mode(image: Image.Image, in_chans: int) -> Image.Image:
    """``image`` in mode "L" (in_chans 1) or "RGB" (3): PIL's ITU-R 601 luma, alpha dropped, gray repeated."""
    mode = "L" if in_chans == 1 else "RGB"
    if image.width == 0 or image.height == 0:
        raise ValueError(f"empty image of size {image.width}x{image.height} (width x height)")
    return image if image.mode == mode else image.convert(mode)


def resize_and_crop(image: Image.Image, size: int, crop_pct: float, interpolation: str) -> Image.Image:
    """Resize the shorter side to floor(size / crop_pct) (antialiased), then center-crop to size x size.

    The arithmetic is torchvision's ``Resize(int)`` and ``CenterCrop`` (the longer side truncated, the
    crop offset rounded), the pixels PIL's resampling, as in timm's and Hugging Face's processors.
    """
    short = math.floor(size / crop_pct)
    w, h = image.size
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), RESAMPLE[interpolation])
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


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

    Tensors are read through their ``.numpy()``; torch itself is never imported.

    Args:
        path: the .onnx file written by ``protozoo.onnx.export_onnx``, with ``preprocessor.json`` beside it.
        providers: ONNX Runtime execution providers in order of preference; by default CUDA when
            ``onnxruntime-gpu`` sees a GPU, else CPU. Sessions use every graph optimisation.
        intra_op_threads: ONNX Runtime's intra-op threads; by default ``OMP_NUM_THREADS`` when set, else
            ONNX Runtime's own default (the physical cores).

    Raises:
        FileNotFoundError: the .onnx file or its preprocessor.json is missing.
        ValueError: preprocessor.json is malformed or belongs to another export or another graph.
        ImportError: onnxruntime is not installed.

    Example:
        >>> onnx_model = OnnxModel("out/model.onnx")
        >>> out = onnx_model(Image.open("shoe.png"))
        >>> out.assignments.argmax(1)  # the top prototype of each image
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        *,
        intra_op_threads: int | None = None,
    ) -> None:
        try:
            ort = import_module("onnxruntime")
        except ImportError as e:
            raise ImportError(f"onnxruntime is needed here: pip install 'protozoo[onnx]' ({e})") from None
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
        if intra_op_threads is None:
            intra_op_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)  # 0: ORT's default
        options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        self._check_graph(pre_path)
        self.in_chans: int = pre["in_chans"]
        self.size: tuple[int, int] = (pre["size"][0], pre["size"][1])
        std = np.asarray(pre["std"], dtype=np.float32).reshape(-1, 1, 1)
        self._scale = 1.0 / (np.float32(255.0) * std)  # (C, 1, 1): x / 255 / std
        self._shift = -np.asarray(pre["mean"], dtype=np.float32).reshape(-1, 1, 1) / std  # (C, 1, 1)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in order."""
        return self.session.get_providers()

    def _check_graph(self, pre_path: Path) -> None:
        pre = self.preprocessor
        graph_id = self.session.get_modelmeta().custom_metadata_map.get(EXPORT_ID_KEY)
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
            return np.stack([self._raw(image) for image in images])
        if _is_tensor(images):
            array = images.detach().cpu().numpy()
            if array.dtype == np.uint8:  # torch layout (C, H, W) -> image layout (H, W, C)
                if array.ndim == 4:
                    return self.preprocess(list(array.transpose(0, 2, 3, 1)))
                return self._raw(array.transpose(1, 2, 0) if array.ndim == 3 else array)[None]
            return self._normalised(array)
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8:
                return self.preprocess(list(images)) if images.ndim == 4 else self._raw(images)[None]
            return self._normalised(images)
        raise TypeError(
            f"expected a PIL image, a list of images, a numpy array or a torch tensor, "
            f"got {type(images).__name__}"
        )

    def _raw(self, image: Any) -> np.ndarray:
        """One raw image (PIL, uint8 (H, W) / (H, W, C) array or (C, H, W) tensor) -> normalised (C, H, W)."""
        if _is_tensor(image):
            array = image.detach().cpu().numpy()
            image = array.transpose(1, 2, 0) if array.ndim == 3 else array
        if isinstance(image, np.ndarray):
            image = _array_to_image(image, self.in_chans, self.size)
        elif not isinstance(image, Image.Image):
            raise TypeError(
                f"expected a PIL image, numpy array or tensor in the list, got {type(image).__name__}"
            )
        pre = self.preprocessor
        image = resize_and_crop(
            to_mode(image, self.in_chans), self.size[0], pre["crop_pct"], pre["interpolation"]
        )
        x = np.asarray(image, dtype=np.float32)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, H, W)
        return self._shift + x * self._scale

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


def _is_tensor(x: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "numpy")


def _array_to_image(image: np.ndarray, in_chans: int, size: tuple[int, int]) -> Image.Image:
    """A uint8 (H, W) or (H, W, C) array with C in 1, 3, 4 -> PIL image (alpha dropped)."""
    if image.dtype != np.uint8:
        raise TypeError(
            f"a single numpy image must be uint8, got {image.dtype}; stack normalised floats into "
            f"one (N, {in_chans}, {size[0]}, {size[1]}) array instead"
        )
    if image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"numpy images are (H, W) or (H, W, C) with C in 1, 3, 4, got shape {image.shape}; "
            f"a batch of grayscale images (N, H, W) needs a channel axis: images[..., None]"
        )
    if image.ndim not in (2, 3):
        raise ValueError(f"numpy images are (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    return Image.fromarray(np.ascontiguousarray(image))
