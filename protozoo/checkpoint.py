"""The on-disk checkpoint format: writing, reading and strictly checking one Hub-layout folder.

One folder is one Hub repo (architecture.md, "Checkpoint format"). This module only writes and reads
files: :class:`protozoo.model.ProtoModel` builds models from them and :mod:`protozoo.hub` moves them
to and from the Hub. The files:

- ``model.safetensors``: the backbone's state dict alone, under timm's key names, so that
  ``timm.create_model("local-dir:<folder>")`` or ``("hf-hub:org/name", pretrained=True)`` loads it
  strictly; backbones that stock timm expresses with ``model_args`` (the ViTs) are saved that way, so
  plain timm loads them, the others after ``import protozoo`` registers the small-image architectures.
- ``head.safetensors``: the rest of the ProtoModel under its own key names: ``head.*`` (projection),
  ``prototype_source.*`` (the online GMM's log π, μ, σ² and masses A, from which loading rebuilds
  its running sums S1, S2; or the learnable weight) and, for a fine-tuned model, ``classifier.*``.
- ``config.json``: timm's layout, written by timm's own ``save_config_for_hf`` (architecture,
  num_features, model_args, pretrained_cfg with input_size, mean, std, interpolation, crop_pct,
  license), plus a ``protozoo`` block: format_version, config (ProtoConfig), num_classes, dtype,
  name, recipe, results and, for a model changed after loading, ``base_model`` (where it came from
  and what changed).
- ``README.md``: the model card (:mod:`protozoo.card`).
- Optional, written by ``protozoo export`` (:mod:`protozoo.onnx`) and published with the rest when
  present: ``model.onnx`` (the graph), ``model.onnx.data`` (its weights, only for graphs past 2 GB)
  ``preprocessor.json`` (the eval preprocessing and what the graph computes) and
  ``preprocessor_config.json`` (the same preprocessing in Hugging Face's image-processor form).

No pickle anywhere, and loading is strict: every key and shape must match.
"""

from __future__ import annotations

import json
import shutil
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models._hub import save_config_for_hf
from torch import Tensor, nn

from protozoo.backbones import timm_equivalent

FORMAT_VERSION = 1  # bump when the layout changes; load refuses versions it does not know
CHECKPOINT_FILES = ("model.safetensors", "head.safetensors", "config.json", "README.md")
# written by protozoo export (the .data file only for graphs past 2 GB), published when present
OPTIONAL_FILES = ("model.onnx", "model.onnx.data", "preprocessor.json", "preprocessor_config.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The GMM's running sums S1 = A μ and S2 = A (σ² + μ²), its relocation counters and its k-means++
# seeding buffer are not published:
# OnlineGMM rebuilds them on load. Its masses and log-weights stay fp32 (tiny); everything else is
# stored in the chosen dtype.
DERIVED = tuple(
    f"prototype_source.{k}" for k in ("s1", "s2", "recent_mass", "num_updates", "init_buffer", "init_filled")
)
_KEEP_FP32 = ("prototype_source.mass", "prototype_source.log_weights")


def check_replaceable(folder: Path) -> None:
    """Refuse to save over a file, or over a folder that holds files other than a checkpoint's."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; save_pretrained writes a folder")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in CHECKPOINT_FILES + OPTIONAL_FILES)
        if foreign:
            raise ValueError(
                f"{str(folder)!r} holds files that are not part of a checkpoint ({', '.join(foreign[:5])}); "
                "saving replaces the whole folder, so pass a new or empty folder"
            )


def split_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A ProtoModel state dict -> (backbone under timm's key names, the rest without derived GMM sums)."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    rest = {k: v for k, v in state.items() if not k.startswith("backbone.") and k not in DERIVED}
    return backbone, rest


def write_checkpoint(
    state: dict[str, Tensor],
    backbone: nn.Module,
    folder: Path,
    block: dict[str, Any],
    data_config: dict[str, Any],
    dtype: torch.dtype,
) -> None:
    """Write the weights of a ProtoModel ``state`` and its config.json into ``folder``, in ``dtype``.

    Args:
        state: the model's state dict (``backbone.*`` keys and the rest).
        backbone: the timm backbone, whose factory arguments timm records in config.json.
        folder: an existing, empty folder.
        block: the ``protozoo`` block of config.json.
        data_config: timm's eval preprocessing (input_size, mean, std, interpolation, crop_pct).
        dtype: storage dtype of floating tensors (the GMM's masses and log-weights stay fp32).
    """
    backbone_state, rest = split_state(state)
    save_file(_storage(backbone_state, dtype), folder / "model.safetensors", metadata={"format": "pt"})
    save_file(_storage(rest, dtype), folder / "head.safetensors", metadata={"format": "pt"})
    save_config_for_hf(
        backbone,
        str(folder / "config.json"),
        model_config={"pretrained_cfg": {"license": "apache-2.0", "tag": "protozoo"}, "protozoo": block},
        data_config=data_config,
    )


def _storage(state: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Detached CPU copies, floating tensors cast to dtype (the GMM's masses and log-weights excepted)."""
    cast = {
        k: v.to(dtype) if v.is_floating_point() and not k.startswith(_KEEP_FP32) else v
        for k, v in state.items()
    }
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in cast.items()}


def swap_in(tmp: Path, folder: Path) -> None:
    """Rename the finished tmp folder to folder; an existing folder is moved aside first."""
    if not folder.exists():
        tmp.rename(folder)
        return
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    folder.rename(old)
    try:
        tmp.rename(folder)
    except BaseException:
        old.rename(folder)
        raise
    shutil.rmtree(old)


def read_config(path: Path) -> dict[str, Any]:
    """Read and validate a checkpoint's config.json: JSON, a protozoo block, a known format version."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path.parent)!r} has no config.json, so it is not a protozoo model folder "
            f"(expected {', '.join(CHECKPOINT_FILES)})"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}): it is corrupt or truncated; re-download or re-save it"
        ) from e
    block = config.get("protozoo") if isinstance(config, dict) else None
    if not isinstance(block, dict):
        raise ValueError(
            f"{path} has no 'protozoo' block, so it is not a protozoo checkpoint; a plain timm checkpoint "
            f"loads with timm.create_model('local-dir:{path.parent}', pretrained=True)"
        )
    found = block.get("format_version")
    if type(found) is not int or found != FORMAT_VERSION:
        raise ValueError(
            f"{path}: unknown protozoo checkpoint format_version {found!r}; protozoo {version('protozoo')} "
            f"reads format_version {FORMAT_VERSION}. Upgrade protozoo (pip install -U protozoo) "
            "or re-save the checkpoint"
        )
    arch = (block.get("config") or {}).get("architecture")
    if config.get("architecture") not in (arch, timm_equivalent(arch)[0] if isinstance(arch, str) else arch):
        raise ValueError(
            f"{path}: architecture {config.get('architecture')!r} disagrees with "
            f"protozoo.config.architecture {arch!r}; the file was edited or mixed from two checkpoints"
        )
    return config


def read_weights(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file, turning a missing or corrupt file into a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a protozoo folder holds {', '.join(CHECKPOINT_FILES)}")
    try:
        return load_file(path, device="cpu")
    except SafetensorError as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}): it is corrupt or truncated; "
            "re-download it (delete it from the cache) or re-save the model"
        ) from e


def check_weights(expected: dict[str, Tensor], found: dict[str, Tensor], path: Path) -> None:
    """Strict key, shape and kind check, naming every mismatch (load_state_dict's own error is terse)."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    both = sorted(set(expected) & set(found))
    shapes = [
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in both
        if found[k].shape != expected[k].shape
    ]
    kinds = [
        f"{k}: file {found[k].dtype} vs model {expected[k].dtype}"
        for k in both
        if found[k].is_floating_point() != expected[k].is_floating_point()
    ]
    problems = [
        f"{label} {_few(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
            ("wrong dtypes", kinds),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"{path} does not match the model its config.json describes: {'; '.join(problems)}. "
            "The weights and config.json come from different checkpoints; re-save or re-download the folder"
        )


def _few(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" ... and {len(items) - limit} more" if len(items) > limit else "")
