"""Save, load and publish protozoo checkpoints: one Hub-layout folder is one Hub repo.

This module resolves zoo names, Hub ids and folders, downloads from and uploads to the Hub, and
reads prototype matrices; the folder's files and their strict reading live in
:mod:`protozoo.checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from protozoo import __version__, registry
from protozoo.card import render_card
from protozoo.checkpoint import (
    CHECKPOINT_FILES,
    DTYPES,
    FORMAT_VERSION,
    OPTIONAL_FILES,
    check_replaceable,
    load_folder,
    read_config,
    swap_in,
    write_checkpoint,
)
from protozoo.model import ProtoModel
from protozoo.prototype_files import PrototypeFile, read_prototype_file
from protozoo.registry import format_zoo_table, list_models

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

__all__ = [
    "format_zoo_table",
    "list_models",
    "load",
    "load_prototype_file",
    "load_prototypes",
    "publish",
    "push_to_hub",
    "resolve_folder",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

_DOWNLOAD = ["config.json", "model.safetensors", "head.safetensors"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def save_pretrained(
    model: ProtoModel,
    save_directory: str | Path,
    *,
    results: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    dtype: str = "float32",
    name: str | None = None,
) -> Path:
    """Write ``model`` as a Hub-layout folder: weights, config.json and the model card.

    The folder is built in a temporary folder beside the target and renamed into place, so a
    reader never sees half a checkpoint; an existing checkpoint folder is replaced as a whole
    (including a stale model.onnx).

    Args:
        model: the model to save.
        save_directory: the target folder; created, or replaced when it holds a checkpoint.
        results: the run's metrics for config.json and the card: ``dataset``, ``eval_split``,
            ``knn_top1`` / ``linear_top1`` (fractions), ``unique`` (eps string -> fraction),
            ``perplexity``. Only the numbers present appear in the card.
        recipe: the resolved training config, shown as the card's recipe table.
        dtype: storage dtype of the backbone and head weights: "float32", "bfloat16" (half the
            size; what the zoo ships) or "float16", GMM means and variances included (its masses
            and log-weights stay fp32). Load casts everything back to fp32.
        name: the model's name for the card (title and ``hub_cards/<name>.yaml`` prose); default
            the folder's name. A zoo name makes the card's usage lines use the zoo name.

    Returns:
        The folder written.

    Raises:
        TypeError: when ``model`` is not a ProtoModel, or results / recipe are not JSON-serialisable.
        ValueError: for an unknown dtype, or a target that is a file or holds other files.
    """
    if not isinstance(model, ProtoModel):
        raise TypeError(f"save_pretrained expects a protozoo ProtoModel, got {type(model).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; valid storage dtypes are {', '.join(DTYPES)}")
    folder = Path(save_directory).expanduser().resolve()
    check_replaceable(folder)
    block = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "num_classes": model.num_classes,
        "dtype": dtype,
        "recipe": recipe,
        "results": results,
    }
    try:
        json.dumps(block)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"results and recipe must be JSON-serialisable dicts ({e}); convert paths to str"
        ) from e
    name = name or folder.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_checkpoint(model, tmp, block, DTYPES[dtype])
        zoo = registry.ZOO.get(name)
        card = render_card(
            json.loads((tmp / "config.json").read_text()),
            name=name,
            load_name=name if zoo else str(save_directory),
            hub_id=zoo.hub_id if zoo else None,
        )
        card.save(tmp / "README.md")
        swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved %s (%s weights) to %s", model.config.architecture, dtype, folder)
    return folder


def load(
    name_or_path: str | Path,
    revision: str | None = None,
    num_classes: int | None = None,
    local_files_only: bool = False,
    device: str | torch.device | None = None,
    *,
    token: str | bool | None = None,
) -> ProtoModel:
    """Load a pretrained ProtoModel from a zoo name, a Hub id or a local folder, in eval mode.

    A zoo name (:func:`list_models`) loads the copy shipped in the package when there is one,
    else its Hub repo; "org/name" goes through huggingface_hub (its cache, revision pinning,
    HF_HUB_OFFLINE); an existing folder loads directly. Loading is strict.

    Args:
        name_or_path: zoo name, Hub id "org/name" or a Hub-layout folder.
        revision: Hub branch, tag or commit to pin (Hub ids and zoo names only).
        num_classes: when given, replace any saved classifier with a fresh
            ``nn.Linear(num_features, num_classes)`` on the pooled features (0 removes it);
            None keeps the checkpoint's.
        local_files_only: use the Hugging Face cache only, never the network.
        device: where to move the model (default: CPU).
        token: Hub token for private repos (default: the logged-in one).

    Returns:
        The model in eval mode, fp32.

    Raises:
        ValueError: unknown name (with close zoo names), bad num_classes, an unknown checkpoint format,
            missing / unexpected keys, wrong shapes, or a corrupt or truncated file (each named).
        FileNotFoundError: a missing folder or file, or weights neither shipped, cached nor downloadable.
    """
    if num_classes is not None and (type(num_classes) is not int or num_classes < 0):
        raise ValueError(
            f"num_classes must be an int >= 0 (or None to keep the checkpoint's), got {num_classes!r}"
        )
    model = load_folder(resolve_folder(name_or_path, revision, local_files_only, token=token))
    if num_classes is not None:
        model.classifier = nn.Linear(model.num_features, num_classes) if num_classes > 0 else None
        model.num_classes = num_classes
    if device is not None:
        model.to(device)
    return model.eval()


def resolve_folder(
    name_or_path: str | Path,
    revision: str | None = None,
    local_files_only: bool = False,
    *,
    token: str | bool | None = None,
) -> Path:
    """The local Hub-layout folder behind a zoo name, Hub id or path, downloading it if needed.

    Args:
        name_or_path: zoo name, Hub id "org/name" or a local folder.
        revision: Hub branch, tag or commit (not for local folders).
        local_files_only: use the Hugging Face cache only.
        token: Hub token for private repos.

    Returns:
        A folder holding config.json, model.safetensors and head.safetensors.

    Raises:
        TypeError: when name_or_path is not a str or path.
        ValueError: an unknown name, a file instead of a folder, or a revision for a local folder.
        FileNotFoundError: a missing folder, or weights that are neither shipped, cached nor downloadable.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"Expected a zoo name, Hub id or folder path, got {type(name_or_path).__name__}")
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub ids, but {text!r} is a local folder")
        return path
    if path.exists():
        raise ValueError(
            f"{text!r} is a file; pass the folder that holds config.json and the .safetensors files"
        )
    entry = registry.ZOO.get(text)
    if entry is not None:
        shipped = registry.shipped_folder(text)
        if shipped is not None and revision is None:
            return shipped
        return _download(entry.hub_id, revision, local_files_only, token, zoo_name=text)
    if isinstance(name_or_path, str) and _REPO_ID.fullmatch(text):
        return _download(text, revision, local_files_only, token)
    if not isinstance(name_or_path, str) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"No model folder at {text!r}")
    close = registry.close_names(text)
    raise ValueError(
        f"Unknown model {text!r}: not a zoo name, a Hub id or an existing folder. "
        + (f"Did you mean {' or '.join(map(repr, close))}? " if close else "")
        + f"Pass a zoo name ({', '.join(list_models())}), a Hub id 'org/name' or a folder holding config.json"
    )


def push_to_hub(
    model: ProtoModel,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload protozoo model",
    results: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> CommitInfo:
    """Save ``model`` to a temporary folder and publish it to the Hub repo ``repo_id``.

    Args:
        model: the model to upload.
        repo_id: "org/name"; created when missing.
        token: Hub token with write access (default: the logged-in one).
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main when missing (default main).
        commit_message: the commit's summary.
        results: run metrics for config.json and the card (see :func:`save_pretrained`).
        recipe: the resolved training config (see :func:`save_pretrained`).
        dtype: weight storage dtype (see :func:`save_pretrained`).

    Returns:
        The huggingface_hub CommitInfo of the upload.

    Raises:
        ValueError: a malformed repo id, or as :func:`save_pretrained`.
    """
    _check_repo_id(repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(
            model,
            Path(tmp) / "model",
            results=results,
            recipe=recipe,
            dtype=dtype,
            name=repo_id.split("/")[1],
        )
        return _upload(folder, repo_id, token, private, revision, commit_message)


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload protozoo model",
) -> list[str]:
    """Upload a saved checkpoint folder to the Hub (``protozoo publish``).

    The folder must load strictly first. The weights, config.json, and model.onnx and
    preprocessor.json when present, go up as they are; README.md is rendered afresh from
    config.json for ``repo_id``, so the card's name, prose and usage lines match the repo.

    Args:
        folder: a Hub-layout folder (save_pretrained output or a training run's ``model/``).
        repo_id: "org/name"; created when missing.
        token: Hub token with write access (default: the logged-in one).
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main when missing (default main).
        dry_run: only check the folder and list what would be uploaded.
        commit_message: the commit's summary.

    Returns:
        The file names uploaded (or that would be, with dry_run).

    Raises:
        ValueError: a malformed repo id, or a folder that does not load (see :func:`load`).
        FileNotFoundError: a missing folder or checkpoint file.
    """
    _check_repo_id(repo_id)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"No model folder at {str(folder)!r}; pass a save_pretrained output folder")
    load_folder(folder)
    files = _upload_files(folder)
    if not dry_run:
        _upload(folder, repo_id, token, private, revision, commit_message)
    return files


def load_prototypes(source: str | Path, key: str | None = None) -> Tensor:
    """A (K, D) prototype matrix: the ``prototypes`` of :func:`load_prototype_file`."""
    return load_prototype_file(source, key).prototypes


def load_prototype_file(source: str | Path, key: str | None = None) -> PrototypeFile:
    """The prototype layer of a model or checkpoint file, with the GMM's masses when it has them.

    Args:
        source: a zoo name, Hub id or model folder (its head's unit-norm prototypes and masses), or a
            checkpoint or matrix file (``.safetensors``, ``.npy``, ``.pt``, ``.pth``, ``.pth.tar``,
            ``.ckpt``; read without pickle) in which :func:`protozoo.prototype_files.find_prototypes` finds
            the DINO, CARP, SwAV, lightly, solo-learn or protozoo prototype layer.
        key: the tensor or layer name to take inside a file, instead of searching (files only).

    Returns:
        A :class:`~protozoo.prototype_files.PrototypeFile`: prototypes, masses (or None) and the key used.

    Raises:
        ValueError: an unknown suffix, no prototype layer or an unknown key (the error lists the 2-D
            tensors), a tensor that is not 2-d, a key given for a model, or as :func:`resolve_folder`.
        FileNotFoundError: as :func:`resolve_folder`.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return read_prototype_file(path, key)
    if key is not None:
        raise ValueError(f"key={key!r} selects a tensor inside a file, but {str(source)!r} is a model")
    return read_prototype_file(resolve_folder(source) / "head.safetensors")


def _download(
    repo_id: str,
    revision: str | None,
    local_files_only: bool,
    token: str | bool | None,
    zoo_name: str | None = None,
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    what = f"zoo model {zoo_name!r} (Hub repo {repo_id!r})" if zoo_name else f"Hub repo {repo_id!r}"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=_DOWNLOAD,
            local_files_only=local_files_only,
            token=token,
            library_name="protozoo",
            library_version=__version__,
        )
    except LocalEntryNotFoundError as e:
        offline = local_files_only or constants.HF_HUB_OFFLINE
        raise FileNotFoundError(
            f"The weights of {what} are "
            + (f"not shipped with this install ({registry.ZOO_DIR / zoo_name}) and " if zoo_name else "")
            + f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and "
            + (
                "downloading is off (HF_HUB_OFFLINE=1 or local_files_only=True)"
                if offline
                else "the Hub is unreachable"
            )
            + ". Load it once with network access to cache it, or pass a local folder"
        ) from e
    except RevisionNotFoundError as e:
        raise ValueError(f"Revision {revision!r} not found in {what}; pass a branch, tag or commit") from e
    except RepositoryNotFoundError as e:
        local = "" if zoo_name else f", and there is no local folder {repo_id!r} either"
        raise FileNotFoundError(
            f"{what} not found on the Hub{local}; check the id, or pass token= (or `hf auth login`) "
            "if the repo is private"
        ) from e
    return Path(folder)


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"Invalid Hub repo id {repo_id!r}; use the form 'org/name'")


def _upload_files(folder: Path) -> list[str]:
    return [f for f in CHECKPOINT_FILES if f == "README.md" or (folder / f).is_file()] + [
        f for f in OPTIONAL_FILES if (folder / f).is_file()
    ]


def _upload(
    folder: Path,
    repo_id: str,
    token: str | bool | None,
    private: bool | None,
    revision: str | None,
    commit_message: str,
) -> CommitInfo:
    from huggingface_hub import CommitOperationAdd, HfApi

    name = repo_id.split("/")[1]
    zoo = registry.ZOO.get(name)
    card = render_card(
        read_config(folder / "config.json"),
        name=name,
        load_name=name if zoo is not None and zoo.hub_id == repo_id else repo_id,
        hub_id=repo_id,
    )
    operations = [
        CommitOperationAdd(
            path_in_repo=f, path_or_fileobj=str(card).encode() if f == "README.md" else folder / f
        )
        for f in _upload_files(folder)
    ]
    api = HfApi(token=token, library_name="protozoo", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    logger.info("uploaded %s to %s (%s)", folder, repo_id, info.oid)
    return info
