"""Bounded Hub downloads for the demo: sizes checked first, only a model's files, within a time limit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from protozoo.demo.constants import LOAD_TIMEOUT, MAX_MODEL_BYTES

NEEDED = ("config.json", "model.safetensors", "head.safetensors")  # what a protozoo model folder loads from

# the download runs in a child process, so that the time limit can stop it wherever it is
_CHILD = """
import sys
from huggingface_hub import snapshot_download
repo_id, revision, cache_dir, endpoint, *files = sys.argv[1:]
print(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                        allow_patterns=files, library_name="protozoo"))
"""


def fetch_model(repo_id: str, max_bytes: int = MAX_MODEL_BYTES, timeout: float = LOAD_TIMEOUT) -> Path:
    """Download the files of a protozoo model folder from a Hub repo, refusing large repos and slow loads.

    The repo's file sizes are read first (``HfApi.model_info(files_metadata=True)``); when the files a model
    folder needs add up to more than ``max_bytes`` nothing is downloaded. Then only those files are fetched,
    at the commit whose sizes were checked, in a child process stopped after ``timeout`` seconds in all.
    Offline (HF_HUB_OFFLINE=1) the cached copy is used, with the same size check on its files.

    Args:
        repo_id: Hub id "org/name".
        max_bytes: the most the needed files may weigh together.
        timeout: seconds for the size check and the download together.

    Returns:
        The local folder holding the files (in the Hugging Face cache).

    Raises:
        FileNotFoundError: no such repo (or not cached, offline).
        ValueError: the repo lacks a needed file, or its files weigh more than ``max_bytes``.
        TimeoutError: the load took longer than ``timeout``.
        OSError: the Hub could not be reached, or the download failed.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=list(NEEDED), local_files_only=True))
        except LocalEntryNotFoundError as e:
            raise FileNotFoundError(f"Hub repo {repo_id!r} is not in the cache and the Hub is off") from e
        _check_sizes(
            repo_id, {f: (folder / f).stat().st_size for f in NEEDED if (folder / f).is_file()}, max_bytes
        )
        return folder
    deadline = time.monotonic() + timeout
    try:
        info = HfApi(library_name="protozoo").model_info(repo_id, files_metadata=True, timeout=timeout)
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"Hub repo {repo_id!r} not found; check the id") from e
    except (HfHubHTTPError, OSError) as e:
        raise OSError(f"Could not reach the Hub for {repo_id!r}: {e}") from e
    except Exception as e:  # the HTTP client's own errors (a time-out, a refused connection) are not OSErrors
        if "Timeout" in type(e).__name__:
            raise _timeout(repo_id, timeout) from e
        raise OSError(f"Could not reach the Hub for {repo_id!r}: {e}") from e
    _check_sizes(repo_id, {s.rfilename: s.size for s in info.siblings or []}, max_bytes)
    args = [repo_id, info.sha or "main", constants.HF_HUB_CACHE, constants.ENDPOINT, *NEEDED]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, *args],
            capture_output=True,
            text=True,
            timeout=max(0.0, deadline - time.monotonic()),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _timeout(repo_id, timeout) from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise OSError(f"Downloading {repo_id!r} failed: {last}")
    return Path(done.stdout.strip().splitlines()[-1])


def _timeout(repo_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"Loading {repo_id!r} took longer than {timeout:.0f} s, so it was stopped; try again later"
    )


def _check_sizes(repo_id: str, sizes: dict[str, int | None], max_bytes: int) -> None:
    missing = [f for f in NEEDED if f not in sizes]
    if missing:
        raise ValueError(
            f"Hub repo {repo_id!r} has no {', '.join(missing)}, so it is not a protozoo model; save one with "
            "save_pretrained or push_to_hub"
        )
    unknown = [f for f in NEEDED if sizes[f] is None]
    if unknown:
        raise ValueError(f"The Hub gave no size for {', '.join(unknown)} of {repo_id!r}, so it is not loaded")
    total = sum(sizes[f] or 0 for f in NEEDED)
    if total > max_bytes:
        raise ValueError(
            f"Hub repo {repo_id!r} holds {total / 1e6:.1f} MB of model files; this demo loads models up to "
            f"{max_bytes / 1e6:.1f} MB"
        )
