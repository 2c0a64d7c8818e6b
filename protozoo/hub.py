"""Where a checkpoint folder comes from and where it goes: resolving names, downloading, uploading.

A zoo name, a Hub id "org/name" or a path resolves to a local Hub-layout folder (downloaded through
huggingface_hub when needed); a folder uploads to a Hub repo as one commit. Reading and writing the
folder's files is :mod:`protozoo.checkpoint`'s job, building models from them
:class:`protozoo.model.ProtoModel`'s (``from_pretrained``, ``save_pretrained``, ``push_to_hub``).
"""

from __future__ import annotations

import logging
import os
import re
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from protozoo import registry
from protozoo.card import render_card
from protozoo.checkpoint import CHECKPOINT_FILES, OPTIONAL_FILES, read_config
from protozoo.registry import ZooEntry, format_zoo_table, list_models

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

__all__ = [
    "check_repo_id",
    "format_zoo_table",
    "list_models",
    "resolve_folder",
    "upload_files",
    "upload_folder",
]

logger = logging.getLogger(__name__)

_DOWNLOAD = ["config.json", "model.safetensors", "head.safetensors"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_folder(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local Hub-layout folder behind a zoo name, Hub id or path, downloading it if needed.

    A zoo name takes the copy shipped in the package when there is one (unless a revision or
    ``force_download`` asks for the Hub). A zoo model's own Hub id goes to the Hub, and falls back to
    the shipped copy when the Hub cannot serve it (offline, not cached) and the revision is the shipped
    one (None, or the registry's ``revision``).

    Args:
        name_or_path: zoo name, Hub id "org/name" or a local folder.
        revision: Hub branch, tag or commit (not for local folders).
        cache_dir: the Hugging Face cache folder to use (default: huggingface_hub's).
        force_download: download again even when the files are cached (or shipped).
        local_files_only: use the Hugging Face cache (and the shipped copies) only.
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
    options = dict(
        revision=revision,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
        token=token,
    )
    entry = registry.ZOO.get(text) or registry.by_hub_id(text)
    if entry is not None:
        shipped = registry.shipped_folder(entry.name)
        if shipped is not None and text == entry.name and revision is None and not force_download:
            return shipped
        usable = shipped if shipped is not None and revision in (None, entry.revision) else None
        try:
            return _download(entry.hub_id, zoo=entry, shipped=shipped, **options)
        except FileNotFoundError:
            if usable is None:
                raise
            logger.info("%s: the Hub cannot serve it; using the copy shipped in %s", text, usable)
            return usable
    if isinstance(name_or_path, str) and _REPO_ID.fullmatch(text):
        return _download(text, **options)
    if not isinstance(name_or_path, str) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"No model folder at {text!r}")
    close = registry.close_names(text)
    raise ValueError(
        f"Unknown model {text!r}: not a zoo name, a Hub id or an existing folder. "
        + (f"Did you mean {' or '.join(map(repr, close))}? " if close else "")
        + f"Pass a zoo name ({', '.join(list_models())}), a Hub id 'org/name' or a folder holding config.json"
    )


def _download(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    force_download: bool,
    local_files_only: bool,
    token: str | bool | None,
    zoo: ZooEntry | None = None,
    shipped: Path | None = None,
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    what = f"zoo model {zoo.name!r} (Hub repo {repo_id!r})" if zoo else f"Hub repo {repo_id!r}"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=_DOWNLOAD,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            library_name="protozoo",
            library_version=version("protozoo"),
        )
    except LocalEntryNotFoundError as e:
        offline = local_files_only or constants.HF_HUB_OFFLINE
        if zoo is None:
            ship_note = ""
        elif shipped is None:
            ship_note = f"not shipped with this install ({registry.ZOO_DIR / zoo.name}) and "
        else:
            ship_note = f"shipped with this install only at revision {zoo.revision!r} and "
        raise FileNotFoundError(
            f"The weights of {what} are "
            + ship_note
            + f"not in the Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE}), and "
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
        local = "" if zoo else f", and there is no local folder {repo_id!r} either"
        raise FileNotFoundError(
            f"{what} not found on the Hub{local}; check the id, or pass token= (or `hf auth login`) "
            "if the repo is private"
        ) from e
    return Path(folder)


def check_repo_id(repo_id: str) -> None:
    """Refuse a Hub repo id that is not "org/name".

    Raises:
        ValueError: quoting the id and the expected form.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"Invalid Hub repo id {repo_id!r}; use the form 'org/name'")


def upload_files(folder: Path) -> list[str]:
    """The files of a checkpoint folder that go to the Hub: the checkpoint's, then the optional ones."""
    return [f for f in CHECKPOINT_FILES if f == "README.md" or (folder / f).is_file()] + [
        f for f in OPTIONAL_FILES if (folder / f).is_file()
    ]


def upload_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload protozoo model",
) -> CommitInfo:
    """Commit a checkpoint folder to ``repo_id`` as one commit, removing stale optional files.

    README.md is rendered afresh from config.json for ``repo_id``, so the card's name, prose and
    usage lines match the repo. Optional files (model.onnx, preprocessor.json, ...) that the repo
    holds but the folder does not are deleted in the same commit, so the repo never pairs new
    weights with an old graph.

    Args:
        folder: a checked Hub-layout folder.
        repo_id: "org/name"; created when missing.
        token: Hub token with write access (default: the logged-in one).
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main when missing (default main).
        commit_message: the commit's summary.

    Returns:
        The huggingface_hub CommitInfo of the commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    name = repo_id.split("/")[1]
    zoo = registry.ZOO.get(name)
    card = render_card(
        read_config(folder / "config.json"),
        name=name,
        load_name=name if zoo is not None and zoo.hub_id == repo_id else repo_id,
        hub_id=repo_id,
        head=folder / "head.safetensors",
        weights=folder / "model.safetensors",
    )
    files = upload_files(folder)
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(
            path_in_repo=f, path_or_fileobj=str(card).encode() if f == "README.md" else folder / f
        )
        for f in files
    ]
    api = HfApi(token=token, library_name="protozoo", library_version=version("protozoo"))
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.model_info(repo_id, revision=revision or "main", files_metadata=False)
    present = {s.rfilename for s in info.siblings or []}
    stale = [f for f in OPTIONAL_FILES if f in present and f not in files]
    operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
    commit = api.create_commit(
        repo_id, operations, commit_message=commit_message, revision=revision, parent_commit=info.sha
    )
    logger.info("uploaded %s to %s (%s), removed %s", folder, repo_id, commit.oid, stale or "nothing")
    return commit
