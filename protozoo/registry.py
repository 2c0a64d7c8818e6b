"""The zoo: each pretrained model's name, its Hub repo and the copy shipped inside the package.

A zoo model lives on the Hub under ``hub_id``; a release may also ship it in ``protozoo/zoo/<name>/``
(the same Hub-layout folder), which :func:`protozoo.load` then prefers over any download. The
headline numbers shown by ``protozoo list`` are read from the shipped ``config.json`` (its
``protozoo.results`` block, written by the training run), never typed here.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).parent / "zoo"  # shipped Hub-layout folders, one per zoo name


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained model of the zoo.

    Attributes:
        name: the zoo name users pass to :func:`protozoo.load`.
        hub_id: the Hugging Face Hub repo ("org/name") that holds the checkpoint.
        description: one line for ``protozoo list`` and the model card's title paragraph.
        revision: the Hub commit that the copy shipped in ``protozoo/zoo/<name>/`` equals; loading the
            Hub id at this revision (or at none) falls back to the shipped copy when the Hub cannot
            serve it. None: the shipped copy stands for the Hub repo's main branch.
        baseline: the same recipe trained with joint (non-decoupled) prototypes, as a zoo name, Hub
            id or folder, for side-by-side collapse curves (the demo's "joint baseline"); None if none.
    """

    name: str
    hub_id: str
    description: str
    revision: str | None = None
    baseline: str | None = None


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "dp-resnet18-fmnist",
            "protozoo/dp-resnet18-fmnist",
            "ResNet-18 (small stem), CARP with decoupled GMM prototypes, Fashion-MNIST",
        ),
        ZooEntry(
            "dp-vit-tiny-fmnist",
            "protozoo/dp-vit-tiny-fmnist",
            "ViT-Tiny (7x7 patches, 28 px), CARP with decoupled GMM prototypes, Fashion-MNIST",
        ),
        ZooEntry(
            "dp-resnet18q-fmnist",
            "protozoo/dp-resnet18q-fmnist",
            "quarter-width ResNet-18, CARP with decoupled GMM prototypes, collapse regime (plain SGD)",
            baseline="joint-carp-resnet18q-fmnist",
        ),
        ZooEntry(
            "joint-carp-resnet18q-fmnist",
            "protozoo/joint-carp-resnet18q-fmnist",
            "quarter-width ResNet-18, joint CARP, collapse regime: a baseline shown for its collapse",
        ),
    )
}


def list_models() -> list[str]:
    """Names of the zoo models, in registry order.

    Returns:
        The names :func:`protozoo.load` accepts besides Hub ids and local folders.
    """
    return list(ZOO)


def by_hub_id(hub_id: str) -> ZooEntry | None:
    """The zoo entry whose Hub repo is ``hub_id``, or None."""
    return next((e for e in ZOO.values() if e.hub_id == hub_id), None)


def close_names(name: str) -> list[str]:
    """Zoo names that look like ``name`` (for "did you mean" errors), best first."""
    return difflib.get_close_matches(name, list(ZOO), n=3, cutoff=0.6)


def shipped_folder(name: str) -> Path | None:
    """The folder of zoo model ``name`` shipped inside the package, or None when it is not shipped.

    Args:
        name: a zoo name (a key of :data:`ZOO`).

    Returns:
        ``ZOO_DIR / name`` when it holds a ``config.json``, else None (load then goes to the Hub).
    """
    folder = ZOO_DIR / name
    return folder if (folder / "config.json").is_file() else None


def headline(name: str) -> dict[str, Any] | None:
    """Headline numbers of a shipped zoo model, read from its config.json.

    Args:
        name: a zoo name.

    Returns:
        ``{"knn_top1": float | None, "unique_0.025": float | None, "dataset": str | None}`` from the
        shipped config's ``protozoo.results``, or None when the model is not shipped.
    """
    folder = shipped_folder(name)
    if folder is None:
        return None
    results = json.loads((folder / "config.json").read_text()).get("protozoo", {}).get("results") or {}
    return {
        "knn_top1": results.get("knn_top1"),
        "unique_0.025": (results.get("unique") or {}).get("0.025"),
        "dataset": results.get("dataset"),
    }


def format_zoo_table() -> str:
    """The zoo as a text table: name, Hub id, k-NN top-1 and unique fraction at eps = 0.025.

    Models whose weights are not shipped with this install show "not shipped" instead of numbers
    (they still load from the Hub).

    Returns:
        A plain-text table, one model a line, for ``protozoo list``.
    """
    rows = [("name", "hub id", "k-NN top-1", "unique@0.025", "description")]
    for entry in ZOO.values():
        numbers = headline(entry.name)
        if numbers is None:
            knn = unique = "not shipped"
        else:
            knn = _percent(numbers["knn_top1"])
            unique = _percent(numbers["unique_0.025"])
        rows.append((entry.name, entry.hub_id, knn, unique, entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
