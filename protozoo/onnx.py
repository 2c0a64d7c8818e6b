"""ONNX export of a ProtoModel, with the preprocessing shipped beside the graph.

``export_onnx`` writes one graph, input ``pixel_values`` (float32 (B, C, H, W), dynamic batch, the
checkpoint's native size) and outputs ``features`` (B, F), ``embeddings`` (B, D) and ``assignments``
(B, K), plus ``preprocessor.json`` beside it: the eval preprocessing (resize, crop, mean, std) and what
the graph computes (architecture, F, D, K); and ``preprocessor_config.json``, the same preprocessing
as a Hugging Face image processor. Shipping the preprocessing with the graph avoids the usual accuracy
drop of ONNX files whose users guess the normalisation. Inference needs no torch:
:class:`~protozoo.onnx_runtime.OnnxModel` (re-exported here) runs with onnxruntime, numpy and pillow.

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
from importlib import import_module
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from protozoo.model import ProtoModel
from protozoo.onnx_runtime import (
    EXPORT_ID_KEY,
    INPUT_NAME,
    OUTPUT_NAMES,
    PREPROCESSOR_FILE,
    OnnxModel,
    OnnxOutput,
)

if TYPE_CHECKING:
    from torch.onnx import ONNXProgram

__all__ = ["HF_PREPROCESSOR_FILE", "OnnxModel", "OnnxOutput", "export_onnx", "hf_preprocessor_config"]

logger = logging.getLogger(__name__)

HF_PREPROCESSOR_FILE = "preprocessor_config.json"
MIN_OPSET = 18  # the torch.export exporter's lowest native opset; lower requests silently stay at 18
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL's codes, as HF processors store them


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
    ``onnx.checker`` with ``full_check``. The files are written under temporary names in the target
    folder and moved into place with ``os.replace``, so readers never see a half-written file; weights
    go into the .onnx file itself unless they exceed ONNX's 2 GB limit (then torch writes them to
    ``<name>.data`` beside it). The model is exported in eval mode and its previous mode restored.

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
    program.model.metadata_props[EXPORT_ID_KEY] = export_id
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
        hf_config = hf_preprocessor_config(preprocessor)
        (staging / HF_PREPROCESSOR_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
        onnx.checker.check_model(str(staging / path.name), full_check=True)
        written = onnx.load(str(staging / path.name), load_external_data=False)
        got = next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))
        if got != opset:
            raise ValueError(
                f"the exporter wrote opset {got} instead of the requested {opset}; use opset={got}"
            )
        # weights first, then the graph, then preprocessor.json: a reader never finds a graph without weights
        last = (path.name, HF_PREPROCESSOR_FILE, PREPROCESSOR_FILE)
        names = sorted(p.name for p in staging.iterdir() if p.name not in last)
        for name in [*names, *last]:
            os.replace(staging / name, path.parent / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s (opset %d) and %s", path, opset, path.parent / PREPROCESSOR_FILE)
    return path


def hf_preprocessor_config(preprocessor: dict[str, Any]) -> dict[str, Any]:
    """The eval preprocessing of a ``preprocessor.json`` as a Hugging Face image-processor config.

    ``BitImageProcessor`` does what :class:`~protozoo.onnx_runtime.OnnxModel` does: resize the shortest
    edge (PIL resampling), center-crop, rescale by 1/255 and normalise.

    Args:
        preprocessor: the dict written to ``preprocessor.json``.

    Returns:
        The dict for ``preprocessor_config.json``.
    """
    height, width = preprocessor["size"]
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": preprocessor["in_chans"] == 3,
        "do_resize": True,
        "size": {"shortest_edge": preprocessor["resize_shorter_side"]},
        "resample": _PIL_RESAMPLE[preprocessor["interpolation"]],
        "do_center_crop": True,
        "crop_size": {"height": height, "width": width},
        "do_rescale": True,
        "rescale_factor": preprocessor["rescale_factor"],
        "do_normalize": True,
        "image_mean": preprocessor["mean"],
        "image_std": preprocessor["std"],
    }
