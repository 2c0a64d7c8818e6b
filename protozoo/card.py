"""Model cards: the hub_cards/ template, per-model prose and the run's own numbers -> README.md.

The card is a pure function of a checkpoint's ``config.json`` (its ``protozoo`` block holds the
config, the training recipe and the results the run measured), the prose in
``hub_cards/<name>.yaml`` (or ``hub_cards/default.yaml``) and where the model can be loaded from.
No number is ever typed into a card by hand: the model-index, the results table and the collapse
table all come from ``protozoo.results``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from protozoo.collapse import collapse_report
from protozoo.prototype_files import read_prototype_file


def _cards_dir() -> Path:
    """hub_cards/: the folder beside protozoo/ in a checkout, else the package data ``protozoo.hub_cards``."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "hub_cards").is_dir():
        return checkout / "hub_cards"
    return Path(str(importlib.resources.files("protozoo.hub_cards")))  # an installed wheel


CARDS_DIR = _cards_dir()
TEMPLATE = "model_card.md"
EPS_KEYS = ("0.025", "0.1", "0.25", "0.5")  # the paper's thresholds, as keyed in metrics.jsonl
# Dataset names of protozoo.data -> (Hub dataset id, display name), for the card's datasets metadata.
HUB_DATASETS = {
    "fashion_mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST"),
    "cifar10": ("uoft-cs/cifar10", "CIFAR-10"),
    "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
}
# benchmarks/label_efficiency.py's results: the card's fine-tuning table for the model it measured
LABEL_EFFICIENCY = CARDS_DIR.parent / "benchmarks" / "results" / "label_efficiency.json"
FINETUNE_METHODS = ("finetune", "linear probe", "scratch", "pixels")  # the table's columns, in order
_PROSE_FIELDS = {"description": str, "intended_use": str, "limitations": list}
_LOCAL_RECIPE_KEYS = {"output_dir", "data_root", "resume"}  # machine-local settings, not part of the recipe


def load_prose(name: str, cards_dir: Path = CARDS_DIR) -> dict[str, Any]:
    """The card prose of model ``name``: ``<cards_dir>/<name>.yaml``, else ``default.yaml``.

    Args:
        name: the model's name (a zoo name or the Hub repo's name part).
        cards_dir: the folder holding the template and the prose files.

    Returns:
        ``{"description": str, "intended_use": str, "limitations": list[str]}``.

    Raises:
        FileNotFoundError: when neither file exists.
        ValueError: when the file is not YAML, misses a field, has an unknown one, or a field has the
            wrong type.
    """
    path = cards_dir / f"{name}.yaml"
    if not path.is_file():
        path = cards_dir / "default.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"No model-card prose for {name!r}: neither {cards_dir / (name + '.yaml')} nor {path} exists; "
            "protozoo needs its hub_cards/ folder (run from a checkout or an editable install)"
        )
    try:
        prose = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(
            f"{path} is not valid YAML ({err}); write each text field as a folded block (>-) and "
            "quote any list item that holds ': '"
        ) from err
    if not isinstance(prose, dict) or set(prose) != set(_PROSE_FIELDS):
        keys = sorted(prose) if isinstance(prose, dict) else type(prose).__name__
        raise ValueError(f"{path} must hold exactly the fields {sorted(_PROSE_FIELDS)}, got {keys}")
    for field, kind in _PROSE_FIELDS.items():
        if not isinstance(prose[field], kind):
            raise ValueError(
                f"{path}: {field!r} must be a {kind.__name__}, got {type(prose[field]).__name__}"
            )
    if not all(isinstance(item, str) for item in prose["limitations"]):
        raise ValueError(f"{path}: each limitation must be text; quote any that holds ': '")
    return prose


def eval_results(results: dict[str, Any], dataset: str | None) -> list[EvalResult]:
    """The model-index entries of a run's results: only the numbers the run actually recorded.

    Args:
        results: ``protozoo.results`` of a config.json: ``knn_top1`` and ``linear_top1`` as fractions
            in [0, 1], ``unique`` a map from eps string to unique fraction, ``eval_split``.
        dataset: the dataset name (protozoo.data form, e.g. "fashion_mnist"); None gives no entries,
            since every model-index entry needs its dataset.

    Returns:
        k-NN and linear-probe top-1 (in percent) and the unique fraction at each eps present.
    """
    if dataset is None:
        return []
    dataset_id, display, _ = dataset_names(dataset)
    split = results.get("eval_split")
    entries = []
    for key, label in (("knn_top1", "k-NN top-1"), ("linear_top1", "linear-probe top-1")):
        if results.get(key) is not None:
            entries.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image classification (frozen features)",
                    dataset_type=dataset_id,
                    dataset_name=display,
                    dataset_split=split,
                    metric_type="accuracy",
                    metric_name=label,
                    metric_value=round(100 * float(results[key]), 2),
                )
            )
    unique = results.get("unique") or {}
    for eps in EPS_KEYS:
        if unique.get(eps) is not None:
            entries.append(
                EvalResult(
                    task_type="image-feature-extraction",
                    task_name="Prototype collapse",
                    dataset_type=dataset_id,
                    dataset_name=display,
                    metric_type="unique_prototypes",
                    metric_name=f"unique prototypes (eps={eps})",
                    metric_config=f"eps={eps}",
                    metric_value=round(float(unique[eps]), 4),
                )
            )
    return entries


def dataset_names(dataset: str) -> tuple[str, str, bool]:
    """(dataset type, display name, whether the type is a Hub dataset id) of a protozoo.data name.

    Known datasets and "hf:<id>" map to their Hub ids; "imagefolder:<path>" maps to "imagefolder"
    (a local path says nothing to the card's readers), anything else to itself.
    """
    if dataset in HUB_DATASETS:
        return (*HUB_DATASETS[dataset], True)
    if dataset.startswith("hf:"):
        return dataset[3:], dataset[3:], True
    name = dataset.split(":")[0]
    return name, name, False


def weights_digest(path: Path) -> str:
    """The SHA-256 of a weights file, as hex: which weights a benchmark measured."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def finetune_table(
    name: str, path: Path = LABEL_EFFICIENCY, weights: Path | None = None
) -> dict[str, Any] | None:
    """The label-efficiency results of model ``name`` for its card, read from the benchmark's JSON.

    Args:
        name: the model's name; only a benchmark run of that model counts.
        path: benchmarks/results/label_efficiency.json (written by benchmarks/label_efficiency.py).
        weights: the card's model.safetensors; when given, only a run that measured these very weights
            counts (its ``settings["weights_sha256"]``), so a retrained model under the same name does not
            show its predecessor's numbers.

    Returns:
        ``{"rows": [(labels, steps, seeds, finetune, linear probe, scratch, pixels), ...],
        "test_size": int, "batch_size": int}`` with each method's cell "mean [low, high]" in percent,
        or None when the file is missing or measured another model or other weights.
    """
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    settings = record.get("settings") or {}
    if settings.get("model") != name or not record.get("results"):
        return None
    if weights is not None and settings.get("weights_sha256") != weights_digest(weights):
        return None

    def cell(r: dict[str, Any]) -> str:
        interval = f" [{100 * r['low']:.1f}, {100 * r['high']:.1f}]" if r.get("low") is not None else ""
        return f"{100 * r['mean']:.1f}{interval}"

    steps = dict(zip(map(str, settings.get("fractions", [])), settings.get("steps", []), strict=False))
    rows = [
        (
            f"{100 * float(fraction):g} %",
            str(steps.get(fraction, "-")),
            str(len(r["finetune"]["values"])),
            *(cell(r[m]) for m in FINETUNE_METHODS),
        )
        for fraction, r in record["results"].items()
    ]
    return {"rows": rows, "test_size": settings.get("test_size"), "batch_size": settings.get("batch_size")}


def live_prototypes(results: dict[str, Any], num_prototypes: int, head: Path | None = None) -> dict[str, Any]:
    """The card's live and dead prototypes, and the unique fractions among the live ones.

    Live prototypes are the best match (argmax) of at least one evaluation image: ``results["live"]``, or
    ``K (1 - dead)`` from an older run that logged only the dead fraction. The unique fractions among them
    are ``results["unique_live"]``; when the run lacks them but ``head`` holds the GMM's masses, they are
    counted among the components carrying at least 2 units of mass instead. ``carrying`` is
    ``results["carrying"]``, or counted from those masses. A prototype no
    data uses stays where it was initialised, far from the others, so without either the unique fractions
    may count dead random vectors as unique prototypes, and the card says so.

    Args:
        results: the checkpoint's ``protozoo.results``.
        num_prototypes: K.
        head: the checkpoint's head.safetensors, read only when the results lack ``unique_live``.

    Returns:
        ``{"live": int | None, "dead": int | None, "carrying": int | None, "unique_live": {eps: fraction}
        | None, "among": what the unique fractions among the live count, or None}``.
    """
    live = results.get("live")
    if live is None and results.get("dead") is not None:
        live = round((1 - results["dead"]) * num_prototypes)
    out = {"live": live, "dead": None if live is None else num_prototypes - live}
    out["carrying"], out["unique_live"] = results.get("carrying"), results.get("unique_live")
    out["among"] = f"the {live} live" if out["unique_live"] else None
    if (out["carrying"] is None or out["unique_live"] is None) and head is not None and head.is_file():
        found = read_prototype_file(head)
        if found.masses is not None:
            report = collapse_report(found.prototypes, masses=found.masses)
            out["carrying"] = report.carrying
            if out["unique_live"] is None and report.unique_live:
                out["unique_live"], out["among"] = report.unique_live, f"the {report.carrying} carrying"
    return out


def render_card(
    config: dict[str, Any],
    *,
    name: str,
    load_name: str,
    hub_id: str | None = None,
    cards_dir: Path = CARDS_DIR,
    label_efficiency: Path = LABEL_EFFICIENCY,
    head: Path | None = None,
    weights: Path | None = None,
) -> ModelCard:
    """Render the model card of a checkpoint from its config.json.

    Args:
        config: the checkpoint's config.json as a dict (timm layout plus the ``protozoo`` block).
        name: the model's name: the card title, and the prose file ``hub_cards/<name>.yaml`` if any.
        load_name: what to pass to :func:`protozoo.load` in the usage lines (zoo name, Hub id or folder).
        hub_id: the Hub repo ("org/name") for the timm line; None shows timm's ``local-dir:`` form.
        cards_dir: the folder with the template and the prose files.
        label_efficiency: the label-efficiency benchmark's JSON (see :func:`finetune_table`).
        head: the checkpoint's head.safetensors, for the live prototypes of a run that did not record
            them (see :func:`live_prototypes`).
        weights: the checkpoint's model.safetensors, to show only fine-tuning results measured on it
            (see :func:`finetune_table`).

    Returns:
        A :class:`huggingface_hub.ModelCard` (``str(card)`` is README.md; ``card.data`` the metadata).

    Raises:
        FileNotFoundError: when the template or the prose is missing.
        ValueError: when the prose file is malformed (see :func:`load_prose`).
    """
    template = cards_dir / TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(
            f"Model-card template {template} not found; protozoo needs its hub_cards/ folder "
            "(run from a checkout or an editable install)"
        )
    block = config["protozoo"]
    proto, recipe, results = block["config"], block.get("recipe") or {}, block.get("results") or {}
    base = block.get("base_model") or {}  # set when the weights changed after loading (fine-tuning)
    base_recipe = base.get("recipe") or {}
    dataset = results.get("dataset") or recipe.get("dataset") or base_recipe.get("dataset")
    dataset_id, display, on_hub = dataset_names(dataset) if dataset else (None, None, False)
    entries = eval_results(results, dataset)
    card_data = ModelCardData(
        library_name="protozoo",
        license="apache-2.0",
        pipeline_tag="image-feature-extraction",
        tags=["self-supervised", "prototypes", proto["method"], "timm", "image-feature-extraction"],
        datasets=[dataset_id] if on_hub and dataset_id else None,
        model_name=name if entries else None,
        eval_results=entries or None,
        base_model=base.get("hub_id"),
    )
    in_chans, height, width = config["pretrained_cfg"]["input_size"]
    arch = f"`{config['architecture']}` (timm)"
    ours = proto.get("architecture", config["architecture"])
    if config["architecture"] != ours:  # a protozoo variant saved as stock timm + model_args
        args = {k: v for k, v in config.get("model_args", {}).items() if k in ("patch_size", "img_size")}
        arch = f"`{ours}`: {arch} with {', '.join(f'{k}={v}' for k, v in args.items())}"
    details = [
        ("architecture", f"{arch}, {config['num_features']}-d pooled features"),
        (
            "method",
            f"`{proto['method']}`"
            + (" (prototypes fitted by an online GMM)" if proto["method"].endswith("_dec") else ""),
        ),
        ("prototypes", f"K = {proto['num_prototypes']} in D = {proto['embed_dim']}"),
        ("input", f"{in_chans} x {height} x {width}, mean {list(proto['mean'])}, std {list(proto['std'])}"),
        ("weights", f"safetensors, stored as {block.get('dtype', 'float32')}"),
        ("training data", display or "not recorded"),
    ]
    if base:
        base_knn = (base.get("results") or {}).get("knn_top1")
        details.append(
            (
                "fine-tuned from",
                f"`{base.get('hub_id') or base.get('name')}`; changed since: {', '.join(base['changed'])}"
                + (f" (the base model's k-NN top-1: {100 * base_knn:.2f}%)" if base_knn is not None else ""),
            )
        )
    unique = results.get("unique") or {}
    result_rows = [
        (label, f"{100 * results[key]:.2f}%")
        for key, label in (("knn_top1", "k-NN top-1"), ("linear_top1", "linear-probe top-1"))
        if results.get(key) is not None
    ]
    if results.get("perplexity") is not None:
        result_rows.append(("usage perplexity / K", f"{results['perplexity']:.3f}"))
    k = proto["num_prototypes"]
    live = live_prototypes(results, k, head)
    if live["live"] is not None:
        result_rows += [
            ("live prototypes (the best match of an evaluation image)", f"{live['live']} of {k}"),
            ("dead prototypes (never the best match)", f"{live['dead']} of {k}"),
        ]
    elif result_rows:
        result_rows.append(("live / dead prototypes", "unknown (not recorded by the run)"))
    if live["carrying"] is not None:
        result_rows.append(("GMM components carrying data (mass >= 2)", f"{live['carrying']} of {k}"))
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        name=name,
        load_name=load_name,
        timm_name=f"hf-hub:{hub_id}" if hub_id else f"local-dir:{load_name}",
        details=details,
        recipe_rows=_recipe_rows(recipe),
        result_rows=result_rows,
        unique_rows=[
            (eps, f"{unique[eps]:.3f}", f"{live['unique_live'][eps]:.3f}" if live["among"] else None)
            for eps in EPS_KEYS
            if unique.get(eps) is not None
        ],
        live_among=live["among"],
        dataset_display=display,
        eval_split=results.get("eval_split"),
        in_chans=in_chans,
        img_size=height,
        num_features=config["num_features"],
        embed_dim=proto["embed_dim"],
        num_prototypes=k,
        protozoo_version=version("protozoo"),
        finetune=finetune_table(name, label_efficiency, weights),
        **load_prose(name, cards_dir),
    )


def _recipe_rows(recipe: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten the recipe into (dotted key, value) rows for a Markdown table."""
    rows = []
    for key, value in recipe.items():
        if not prefix and (key in _LOCAL_RECIPE_KEYS or (key == "epochs" and recipe.get("max_steps"))):
            continue  # machine-local, or epochs that max_steps overrode
        if isinstance(value, dict) and value:
            rows += _recipe_rows(value, f"{prefix}{key}.")
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            rows.append((f"{prefix}{key}", text.replace("|", "\\|") if value is not None else "-"))
    return rows
