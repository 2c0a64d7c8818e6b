"""Find the prototype layer inside a checkpoint file, without pickle.

``protozoo diagnose`` measures collapse in checkpoints that other codebases wrote, so this module knows
where each keeps its prototypes (module names as in each project's own code):

- DINO and CARP (``main_dino.py`` / ``main_carp.py``): a dict with ``student`` and ``teacher`` state dicts;
  the head's weight-normalised last layer is ``[module.]head.last_layer.weight_g`` (K, 1) and
  ``.weight_v`` (K, D), combined as the layer computes them, ``w = g * v / ||v||`` row by row;
- SwAV: ``module.prototypes.weight`` (K, D), bare or under ``state_dict``; with several prototype sets,
  ``module.prototypes.prototypes0.weight``, ...;
- lightly: ``DINOProjectionHead.last_layer`` (weight-normalised), ``SwaVPrototypes`` as
  ``heads.0.weight`` (older releases ``layers.weight``) under the attribute the user chose, usually
  ``prototypes``;
- solo-learn (PyTorch Lightning ``.ckpt``, under ``state_dict``): SwAV's weight-normalised
  ``prototypes``, DINO's ``head.last_layer`` and its teacher ``momentum_head.last_layer``, DeepCluster
  v2's ``prototypes.0.weight``;
- protozoo's own ``head.safetensors``: ``prototype_source.means`` (the GMM's means, with their masses
  ``prototype_source.mass``) or ``prototype_source.weight``, L2-normalised as the model uses them.

Nested dicts are searched under dotted names (``teacher.head.last_layer``). When several layers qualify,
the teacher's (``teacher``, ``momentum_*``) is taken before a student's. Newer PyTorch stores weight norm as
``parametrizations.weight.original0`` / ``original1``; that form is read too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from protozoo.checkpoint import read_weights

__all__ = ["PrototypeFile", "find_prototypes", "read_prototype_file"]

_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".pth.tar")
_WEIGHT_NORM = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)
_GMM = "prototype_source"  # protozoo's head: OnlineGMM or LearnablePrototypes under this name
_SHOWN = 12  # names quoted in an error before "..."


@dataclass(frozen=True)
class PrototypeFile:
    """A prototype matrix read from a file, and where in the file it was found.

    Attributes:
        prototypes: (K, D) float32 matrix on the CPU, as the layer computes it (rows need not be unit norm).
        masses: (K,) mass A of each GMM component when the file has it (protozoo heads), else None.
        key: the tensor or layer name inside the file (e.g. ``teacher.head.last_layer``), or None for a
            bare matrix (.npy, or a file holding one unnamed tensor).
        candidates: every prototype layer the file holds, the one used first; more than one means the
            file has a student and a teacher, or several prototype sets.
    """

    prototypes: Tensor
    masses: Tensor | None = None
    key: str | None = None
    candidates: tuple[str, ...] = ()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Tensors of a nested dict under dotted names; other values (epoch, args, lists) are skipped."""
    out: dict[str, Tensor] = {}
    for name, value in tree.items():
        full = f"{prefix}{name}"
        if isinstance(value, Tensor):
            out[full] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, full + "."))
    return out


def _is_prototype_layer(layer: str) -> bool:
    """Whether a module path names a prototype layer in one of the known layouts."""
    parts = layer.split(".")
    return "last_layer" in parts or any(p.startswith("prototypes") for p in parts) or layer.endswith(_GMM)


def _layers(tensors: dict[str, Tensor]) -> list[str]:
    """The prototype layers among the tensors, in file order."""
    found: list[str] = []
    for name, value in tensors.items():
        layer = None
        for g, v in _WEIGHT_NORM:
            if name.endswith("." + v) and name[: -len(v)] + g in tensors:
                layer = name[: -len(v) - 1]
        for suffix in (".weight", ".means"):  # .means: protozoo's OnlineGMM
            if name.endswith(suffix) and value.ndim == 2:
                layer = name[: -len(suffix)]
        if layer is not None and _is_prototype_layer(layer) and layer not in found:
            found.append(layer)
    return found


def _rank(layer: str) -> int:
    """0 for a teacher's layer, 1 for an unnamed one, 2 for a student's (the teacher is what is evaluated)."""
    parts = layer.lower().split(".")
    if any("teacher" in p or p.startswith("momentum") for p in parts):
        return 0
    return 2 if any("student" in p for p in parts) else 1


def _matrix(tensors: dict[str, Tensor], layer: str, where: str) -> tuple[Tensor, Tensor | None] | None:
    """The matrix a layer (or one tensor) computes and the GMM masses when it has them; None if absent."""
    for g_name, v_name in _WEIGHT_NORM:
        g, v = tensors.get(f"{layer}.{g_name}"), tensors.get(f"{layer}.{v_name}")
        if g is None or v is None:
            continue
        if v.ndim != 2 or g.numel() != v.shape[0]:
            raise ValueError(
                f"{where}: {layer} has {g_name} of shape {tuple(g.shape)} and {v_name} of shape "
                f"{tuple(v.shape)}; expected (K, 1) and (K, D), a weight norm over rows"
            )
        v = v.float()
        return g.float().reshape(-1, 1) * v / v.norm(dim=1, keepdim=True), None  # torch.nn.utils.weight_norm
    if f"{layer}.means" in tensors:  # protozoo's OnlineGMM: the prototypes are its normalised means
        mass = tensors.get(f"{layer}.mass")
        means = F.normalize(tensors[f"{layer}.means"].float(), dim=1)
        return means, None if mass is None else mass.float()
    if layer.endswith(_GMM) and f"{layer}.weight" in tensors:  # protozoo's LearnablePrototypes
        return F.normalize(tensors[f"{layer}.weight"].float(), dim=1), None
    for name in (layer, f"{layer}.weight"):
        if name in tensors:
            return tensors[name].float(), None
    return None


def _names(names: list[str]) -> str:
    shown = sorted(names)
    return str(shown if len(shown) <= _SHOWN else [*shown[:_SHOWN], "..."])


def _two_d(tensors: dict[str, Tensor]) -> str:
    rows = [f"{name} {tuple(t.shape)}" for name, t in tensors.items() if t.ndim == 2]
    if len(rows) > 3 * _SHOWN:
        rows = [*rows[: 3 * _SHOWN], f"and {len(rows) - 3 * _SHOWN} more"]
    return ", ".join(rows) if rows else "none"


def find_prototypes(
    tensors: dict[str, Any], key: str | None = None, where: str = "the checkpoint"
) -> PrototypeFile:
    """Find the prototype layer in a (nested) state dict.

    Args:
        tensors: a state dict, or a dict of them (``{"student": ..., "teacher": ...}``,
            ``{"state_dict": ...}``); values that are not tensors or dicts are ignored.
        key: what to take instead of searching: a layer's dotted name (``student.module.head.last_layer``,
            whose weight norm is combined, or any layer with a ``.weight``) or a 2-D tensor's full name.
        where: how errors name the source (a file path).

    Returns:
        A :class:`PrototypeFile`; ``masses`` is set for protozoo GMM heads.

    Raises:
        ValueError: no prototype layer and more than one tensor (the error lists the 2-D tensors and says
            how to pass ``key``), an unknown ``key``, or a chosen tensor that is not 2-D.
    """
    flat = _flatten(tensors)
    layers = [key] if key is not None else sorted(_layers(flat), key=_rank)  # stable within a rank
    if key is None and not layers and len(flat) == 1:
        layers = list(flat)
    if not layers:
        raise ValueError(
            f"{where} holds several tensors {_names(list(flat))}; pass key=NAME (protozoo diagnose FILE "
            "--key NAME) to choose the (K, D) prototype matrix: no tensor has a prototype-layer name of "
            "DINO, CARP, SwAV, lightly, solo-learn or protozoo (*last_layer.weight_g/weight_v, "
            f"*prototypes*.weight, prototype_source.means). Its 2-D tensors: {_two_d(flat)}"
        )
    found = _matrix(flat, layers[0], where)
    if found is None:
        raise ValueError(
            f"{where} has no tensor {key!r}; its keys are {_names(list(flat))}; "
            f"its 2-D tensors: {_two_d(flat)}"
        )
    prototypes, masses = found
    if prototypes.ndim != 2:
        raise ValueError(f"{where}: expected a (K, D) prototype matrix, got {tuple(prototypes.shape)}")
    if masses is not None and masses.shape != prototypes.shape[:1]:
        raise ValueError(
            f"{where}: {layers[0]}.mass has shape {tuple(masses.shape)}, but the means are "
            f"{tuple(prototypes.shape)}; expected one mass per component"
        )
    return PrototypeFile(prototypes, masses, layers[0], tuple(layers))


def read_prototype_file(path: str | Path, key: str | None = None) -> PrototypeFile:
    """Read a checkpoint or matrix file and find its prototype layer (see :func:`find_prototypes`).

    Nothing is unpickled: ``.safetensors`` and ``.npy`` (``allow_pickle=False``) hold no code, and
    ``.pt`` / ``.pth`` / ``.pth.tar`` / ``.ckpt`` go through ``torch.load(weights_only=True)``, which
    rebuilds tensors and plain containers only (``argparse.Namespace`` is also allowed, for the
    ``args`` that DINO and CARP save beside the weights).

    Args:
        path: the file.
        key: the tensor or layer name to take instead of searching (see :func:`find_prototypes`).

    Returns:
        A :class:`PrototypeFile`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown file type, a file that cannot be read without pickle, or as
            :func:`find_prototypes`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No file at {str(path)!r}; pass a checkpoint or prototype-matrix file")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        content: Any = read_weights(path)
    elif name.endswith(".npy"):
        try:
            content = torch.from_numpy(np.load(path, allow_pickle=False))
        except ValueError as e:
            raise ValueError(f"{path} is not a plain numeric .npy array ({e})") from e
    elif name.endswith(_TORCH_SUFFIXES):
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for unsafe or corrupt files
            raise ValueError(
                f"{path} could not be read as a tensor file without pickle ({e}). If you trust the file, "
                "load it yourself and save its state dict with safetensors.torch.save_file"
            ) from e
    else:
        raise ValueError(
            f"Unknown prototype file type {path.name!r}; use .safetensors, .npy, .pt, .pth, .pth.tar or .ckpt"
        )
    if isinstance(content, Tensor):
        if key is not None:
            raise ValueError(f"{path} holds one unnamed tensor, so key={key!r} does not apply; drop it")
        if content.ndim != 2:
            raise ValueError(f"{path}: expected a (K, D) prototype matrix, got {tuple(content.shape)}")
        return PrototypeFile(content.float())
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a tensor or a dict of tensors")
    return find_prototypes(content, key, where=str(path))
