"""Model cards: metadata huggingface_hub parses, numbers only from the run, sections and prose files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from protozoo.card import CARDS_DIR, load_prose, render_card

CONFIG = {
    "architecture": "resnet18_small",
    "num_features": 512,
    "pretrained_cfg": {"input_size": [1, 28, 28]},
    "protozoo": {
        "format_version": 1,
        "dtype": "bfloat16",
        "config": {
            "method": "carp_dec",
            "num_prototypes": 1024,
            "embed_dim": 256,
            "mean": [0.286],
            "std": [0.353],
        },
        "recipe": {
            "method": "carp_dec",
            "lr": 0.001,
            "dataset": "fashion_mnist",
            "output_dir": "/home/me/run",
        },
        "results": {
            "dataset": "fashion_mnist",
            "eval_split": "test",
            "knn_top1": 0.88123,
            "linear_top1": None,
            "unique": {"0.025": 0.91234, "0.1": 0.5, "0.25": 0.125, "0.5": 0.01},
            "perplexity": 0.7,
            "dead": 0.25,
        },
    },
}


def with_results(results: dict | None, dataset: str | None = "fashion_mnist") -> dict:
    config = json.loads(json.dumps(CONFIG))
    config["protozoo"]["results"] = results
    config["protozoo"]["recipe"]["dataset"] = dataset
    return config


def parse(card: ModelCard, tmp_path: Path) -> ModelCard:
    """Write README.md and read it back with huggingface_hub, as the Hub would."""
    card.save(tmp_path / "README.md")
    return ModelCard.load(tmp_path / "README.md")


def test_metadata_and_model_index_parse_with_huggingface_hub(tmp_path: Path) -> None:
    card = parse(render_card(CONFIG, name="dp-resnet18-fmnist", load_name="dp-resnet18-fmnist"), tmp_path)
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == (
        "protozoo",
        "image-feature-extraction",
        "apache-2.0",
    )
    assert {"self-supervised", "prototypes", "carp_dec", "timm"} <= set(data.tags)
    assert data.datasets == ["zalando-datasets/fashion_mnist"] and data.model_name == "dp-resnet18-fmnist"
    values = {r.metric_name: (r.metric_type, r.metric_value, r.dataset_type) for r in data.eval_results}
    assert values == {
        "k-NN top-1": ("accuracy", 88.12, "zalando-datasets/fashion_mnist"),
        "unique prototypes (eps=0.025)": ("unique_prototypes", 0.9123, "zalando-datasets/fashion_mnist"),
        "unique prototypes (eps=0.1)": ("unique_prototypes", 0.5, "zalando-datasets/fashion_mnist"),
        "unique prototypes (eps=0.25)": ("unique_prototypes", 0.125, "zalando-datasets/fashion_mnist"),
        "unique prototypes (eps=0.5)": ("unique_prototypes", 0.01, "zalando-datasets/fashion_mnist"),
    }  # linear_top1 is None in the run, so it is absent, not zero


def test_sections_usage_recipe_results_and_citations(tmp_path: Path) -> None:
    text = parse(render_card(CONFIG, name="mine", load_name="org/mine", hub_id="org/mine"), tmp_path).text
    for heading in (
        "Usage",
        "Intended use",
        "Training recipe",
        "Results",
        "Prototype collapse",
        "Limitations",
    ):
        assert f"\n## {heading}\n" in text
    assert (
        'protozoo.load("org/mine")' in text
        and 'timm.create_model("hf-hub:org/mine", pretrained=True)' in text
    )
    assert (
        "protozoo export org/mine --out model.onnx" in text
        and 'protozoo.load("org/mine", num_classes=10)' in text
    )
    assert 'OnnxModel("model.onnx")' in text
    assert "| lr | 0.001 |" in text and "/home/me/run" not in text  # machine-local paths stay out
    assert "| k-NN top-1 | 88.12% |" in text and "| 0.025 | 0.912 |" in text and "linear-probe" not in text
    assert "| usage perplexity / K | 0.700 |" in text
    assert "| live prototypes (the best match of an evaluation image) | 768 of 1024 |" in text
    assert "| dead prototypes (never the best match) | 256 of 1024 |" in text  # dead 0.25, live not logged
    assert "2510.20108" in text and "silva2023carp" in text and "@software{protozoo" in text
    assert "Apache-2.0" in text and "Fashion-MNIST (Zalando Research) is MIT-licensed" in text


def test_recipe_lists_epochs_only_when_they_bound_the_run() -> None:
    config = json.loads(json.dumps(CONFIG))
    config["protozoo"]["recipe"].update(epochs=10, max_steps=9600)
    assert "| max_steps | 9600 |" in (text := render_card(config, name="m", load_name="m").text)
    assert "| epochs |" not in text  # max_steps overrode them
    config["protozoo"]["recipe"]["max_steps"] = None
    assert "| epochs | 10 |" in render_card(config, name="m", load_name="m").text


def test_zoo_prose_and_local_folder_usage(tmp_path: Path) -> None:
    prose = load_prose("dp-vit-tiny-fmnist")
    card = render_card(CONFIG, name="dp-vit-tiny-fmnist", load_name="/models/vit")
    assert prose["description"] in card.text and all(item in card.text for item in prose["limitations"])
    assert 'timm.create_model("local-dir:/models/vit", pretrained=True)' in card.text
    assert load_prose("someone-elses-model") == load_prose("default")


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ("  - a limitation\n    that goes on: unquoted\n", r"m\.yaml is not valid YAML"),
        ("  - a limitation: unquoted\n", r"m\.yaml: each limitation must be text"),
    ],
    ids=["not-yaml", "mapping-item"],
)
def test_prose_with_an_unquoted_colon_is_named_with_its_file(tmp_path: Path, item: str, error: str) -> None:
    (tmp_path / "m.yaml").write_text((CARDS_DIR / "default.yaml").read_text() + item)
    with pytest.raises(ValueError, match=error):
        load_prose("m", tmp_path)


@pytest.mark.parametrize(
    ("results", "dataset", "metrics", "datasets"),
    [
        (
            {"unique": {"0.025": 0.5}},
            "fashion_mnist",
            ["unique prototypes (eps=0.025)"],
            ["zalando-datasets/fashion_mnist"],
        ),
        ({"knn_top1": 0.5, "dataset": "hf:org/pets"}, None, ["k-NN top-1"], ["org/pets"]),
        ({"unique": {"0.5": 0.5}}, "imagefolder:/data/pets", ["unique prototypes (eps=0.5)"], None),
        (None, "fashion_mnist", None, ["zalando-datasets/fashion_mnist"]),
        ({"knn_top1": 0.5}, None, None, None),
    ],
    ids=["unique-only", "hf-dataset", "local-folder", "no-results", "no-dataset"],
)
def test_only_recorded_numbers_reach_the_model_index(
    tmp_path: Path, results: dict | None, dataset: str | None, metrics: list | None, datasets: list | None
) -> None:
    card = parse(render_card(with_results(results, dataset), name="m", load_name="m"), tmp_path)
    assert card.data.datasets == datasets
    assert ([r.metric_name for r in card.data.eval_results] if card.data.eval_results else None) == metrics
    if results is None:
        assert "No evaluation results were recorded" in card.text and "protozoo diagnose m" in card.text
    if dataset == "imagefolder:/data/pets":
        assert card.data.eval_results[0].dataset_type == "imagefolder"  # not the local path


def test_unique_fractions_among_the_live_prototypes_beside_those_over_all_k() -> None:
    results = {**CONFIG["protozoo"]["results"], "live": 700, "dead": 0.31640625}
    results["unique_live"] = {"0.025": 1.0, "0.1": 0.75, "0.25": 0.5, "0.5": 0.125}
    text = render_card(with_results(results), name="m", load_name="m").text
    assert "| live prototypes (the best match of an evaluation image) | 700 of 1024 |" in text
    assert "| dead prototypes (never the best match) | 324 of 1024 |" in text
    assert "| eps | unique fraction (all 1024) | unique fraction among the 700 live |" in text
    assert "| 0.025 | 0.912 | 1.000 |" in text and "| 0.5 | 0.010 | 0.125 |" in text
    assert "may count as unique" not in text


def test_without_live_prototypes_the_card_says_they_are_unknown() -> None:
    config = with_results({"knn_top1": 0.5, "unique": {"0.025": 0.5}})
    text = render_card(config, name="m", load_name="m").text
    assert "| live / dead prototypes | unknown (not recorded by the run) |" in text
    assert "| 0.025 | 0.500 |" in text and "among the" not in text
    assert "count all 1024 prototypes, live or dead" in text and "may count as unique ones" in text


def test_an_older_run_counts_uniques_among_the_gmm_components_carrying_mass(tmp_path: Path) -> None:
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.001], [-1.0, 0.0]])  # rows 0 and 2 coincide
    mass = torch.tensor([5.0, 1.0, 2.0, 1.5])  # rows 0 and 2 carry >= 2 units: one unique among them
    save_file({"prototype_source.means": means, "prototype_source.mass": mass}, tmp_path / "head.safetensors")
    config = with_results({"unique": {e: 0.75 for e in ("0.025", "0.1", "0.25", "0.5")}, "dead": 0.5})
    config["protozoo"]["config"]["num_prototypes"] = 4
    text = render_card(config, name="m", load_name="m", head=tmp_path / "head.safetensors").text
    assert "| live prototypes (the best match of an evaluation image) | 2 of 4 |" in text
    assert "| GMM components carrying data (mass >= 2) | 2 of 4 |" in text
    assert "| eps | unique fraction (all 4) | unique fraction among the 2 carrying |" in text
    assert "| 0.025 | 0.750 | 0.500 |" in text and "at least 2 units of mass" in text
    assert render_card(config, name="m", load_name="m", head=tmp_path / "head.safetensors").text == text
    save_file({"prototype_source.weight": means}, tmp_path / "joint.safetensors")  # a joint head: no masses
    joint = render_card(config, name="m", load_name="m", head=tmp_path / "joint.safetensors").text
    assert "carrying" not in joint and "may count as unique ones" in joint


def test_a_gmm_run_states_its_carrying_components_beside_the_live_ones(tmp_path: Path) -> None:
    unique_live = {e: 1.0 for e in ("0.025", "0.1", "0.25", "0.5")}
    results = {**CONFIG["protozoo"]["results"], "live": 3, "dead": 0.25, "unique_live": unique_live}
    config = with_results(results)
    config["protozoo"]["config"]["num_prototypes"] = 4
    recorded = render_card(with_results({**results, "carrying": 4}), name="m", load_name="m").text
    assert "| GMM components carrying data (mass >= 2) | 4 of 1024 |" in recorded
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    save_file({"prototype_source.means": means, "prototype_source.mass": torch.tensor([5.0, 2.0, 3.0, 0.5])},
              tmp_path / "head.safetensors")  # fmt: skip
    text = render_card(config, name="m", load_name="m", head=tmp_path / "head.safetensors").text
    assert "| GMM components carrying data (mass >= 2) | 3 of 4 |" in text  # counted from the masses
    assert "| eps | unique fraction (all 4) | unique fraction among the 3 live |" in text


def test_card_files_hold_no_numbers() -> None:
    for path in CARDS_DIR.glob("*.yaml"):
        assert "%" not in path.read_text(), path  # results come from config.json, never from the prose


def test_prose_and_template_errors(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text("description: hi\nintended_use: x\n")
    with pytest.raises(
        ValueError,
        match=r"default\.yaml must hold exactly the fields \['description', 'intended_use', 'limitations'\]",
    ):
        load_prose("m", tmp_path)
    (tmp_path / "m.yaml").write_text("description: hi\nintended_use: x\nlimitations: none\n")
    with pytest.raises(ValueError, match=r"m\.yaml: 'limitations' must be a list, got str"):
        load_prose("m", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"No model-card prose for 'x'"):
        load_prose("x", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"Model-card template .*model_card\.md not found"):
        render_card(CONFIG, name="m", load_name="m", cards_dir=tmp_path)
    shutil.copy(CARDS_DIR / "model_card.md", tmp_path / "model_card.md")
    with pytest.raises(ValueError, match=r"'limitations' must be a list"):
        render_card(CONFIG, name="m", load_name="m", cards_dir=tmp_path)
