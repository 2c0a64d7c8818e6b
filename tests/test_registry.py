"""The zoo registry: names, shipped folders before the Hub, headline numbers and name errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hub_server import HubServer
from huggingface_hub import constants

import protozoo
from protozoo import ProtoConfig, ProtoModel, registry
from protozoo.card import CARDS_DIR, load_prose
from protozoo.cli import main as cli_main
from protozoo.model import load

TINY = dict(
    architecture="vit_tiny_patch4_28",
    num_prototypes=32,
    embed_dim=8,
    hidden_dim=16,
    backbone_kwargs={"depth": 1},
)
RESULTS = {"dataset": "fashion_mnist", "knn_top1": 0.8812, "unique": {"0.025": 0.9, "0.5": 0.25}}


@pytest.fixture
def zoo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty zoo folder in place of the package's protozoo/zoo/."""
    monkeypatch.setattr(registry, "ZOO_DIR", tmp_path / "zoo")
    return tmp_path / "zoo"


@pytest.fixture(scope="module")
def model() -> ProtoModel:
    torch.manual_seed(0)
    model = ProtoModel(ProtoConfig(**TINY))  # type: ignore[arg-type]
    model.prototype_source.update(F.normalize(torch.randn(64, 8), dim=1))  # type: ignore[operator]
    return model.eval()


def test_zoo_names_hub_ids_and_card_prose() -> None:
    names = ["dp-resnet18-fmnist", "dp-vit-tiny-fmnist", "dp-resnet18q-fmnist", "joint-carp-resnet18q-fmnist"]
    assert registry.list_models() == protozoo.list_models() == names
    for name, entry in registry.ZOO.items():
        assert entry.name == name and re.fullmatch(r"[\w-]+/" + re.escape(name), entry.hub_id)
        assert (CARDS_DIR / f"{name}.yaml").is_file()


def test_table_says_not_shipped_without_a_shipped_folder(
    zoo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        registry.shipped_folder("dp-resnet18-fmnist") is None
        and registry.headline("dp-resnet18-fmnist") is None
    )
    lines = registry.format_zoo_table().splitlines()
    assert lines[0].split()[:3] == ["name", "hub", "id"] and len(lines) == 1 + len(registry.ZOO)
    assert all("not shipped" in line for line in lines[1:])
    assert cli_main(["list"]) == 0
    assert "dp-vit-tiny-fmnist" in capsys.readouterr().out


def test_shipped_folder_gives_headline_numbers_and_loads_without_the_hub(
    zoo_dir: Path, model: ProtoModel, hub: HubServer
) -> None:
    model.save_pretrained(zoo_dir / "dp-vit-tiny-fmnist", results=RESULTS, dtype="bfloat16")
    assert registry.headline("dp-vit-tiny-fmnist") == {
        "knn_top1": 0.8812,
        "unique_0.025": 0.9,
        "dataset": "fashion_mnist",
    }
    row = next(
        line for line in registry.format_zoo_table().splitlines() if line.startswith("dp-vit-tiny-fmnist")
    )
    assert "88.1%" in row and "90.0%" in row
    shipped = load("dp-vit-tiny-fmnist")
    assert torch.allclose(shipped.prototypes, model.prototypes, atol=1e-2)  # bf16 means
    assert hub.requests == []


@pytest.mark.parametrize("name", sorted(registry.ZOO))
def test_a_shipped_zoo_model_is_at_most_25_mb_and_loads(name: str) -> None:
    folder = registry.ZOO_DIR / name
    if not folder.is_dir():
        pytest.skip(f"{name} is not shipped in this checkout")
    assert sum(f.stat().st_size for f in folder.glob("*.safetensors")) <= 25e6
    out = load(name)(torch.zeros(1, 1, 28, 28))
    assert out.features.shape[0] == 1 and torch.allclose(out.assignments.sum(1), torch.ones(1))


def test_zoo_name_falls_back_to_its_hub_repo(zoo_dir: Path, model: ProtoModel, hub: HubServer) -> None:
    model.push_to_hub(registry.ZOO["dp-resnet18-fmnist"].hub_id)
    assert torch.equal(load("dp-resnet18-fmnist").prototypes, model.prototypes)
    card = hub.files(registry.ZOO["dp-resnet18-fmnist"].hub_id)["README.md"].decode()
    assert 'protozoo.load("dp-resnet18-fmnist")' in card  # the card of a zoo repo uses the zoo name


def test_zoo_name_offline_and_not_cached_says_so(
    zoo_dir: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = (
        r"zoo model 'dp-resnet18-fmnist' \(Hub repo 'protozoo/dp-resnet18-fmnist'\) are not shipped "
        r"with this install .* and not in the Hugging Face cache .*HF_HUB_OFFLINE=1"
    )
    with pytest.raises(FileNotFoundError, match=message):
        load("dp-resnet18-fmnist")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("dp-resnet18-fmnst", r"Unknown model 'dp-resnet18-fmnst'.*Did you mean 'dp-resnet18-fmnist'[ ?]"),
        ("vit", r"Unknown model 'vit'.*Pass a zoo name \(dp-resnet18-fmnist, dp-vit-tiny-fmnist, .*\)"),
    ],
)
def test_unknown_names_list_close_names_and_accepted_forms(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load(name)


def test_entries_name_their_hub_repo_revision_and_baseline() -> None:
    entry = registry.ZOO["dp-resnet18-fmnist"]
    assert registry.by_hub_id(entry.hub_id) is entry and registry.by_hub_id("org/unknown") is None
    assert (entry.revision, entry.baseline) == (None, None)  # nothing pinned, no joint twin of this recipe
    joint = registry.ZooEntry("x", "org/x", "a model", baseline="org/x-joint")
    assert joint.baseline == "org/x-joint"  # what the demo's "joint baseline" curve reads


def test_the_collapse_regime_pair_names_its_joint_baseline() -> None:
    decoupled, joint = registry.ZOO["dp-resnet18q-fmnist"], registry.ZOO["joint-carp-resnet18q-fmnist"]
    assert decoupled.baseline == joint.name and joint.baseline is None  # the demo's default comparison
    for entry in (decoupled, joint):
        assert "collapse regime" in entry.description
        assert "train/configs/collapse.yaml" in load_prose(entry.name)["description"]
    assert load_prose(joint.name)["description"].startswith("A baseline shown for its collapse.")
    folder = registry.shipped_folder(joint.name)
    if folder is not None:  # shipped: the joint model's prototypes are partly collapsed, the card says so
        results = json.loads((folder / "config.json").read_text())["protozoo"]["results"]
        assert results["unique"]["0.5"] < 0.5 < results["unique"]["0.025"]
        assert "A baseline shown for its collapse." in (folder / "README.md").read_text()
