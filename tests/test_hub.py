"""Save / load / publish round trips, strict-loading errors and the Hub through huggingface_hub's client."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from hub_server import HubServer
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file, save_file

from protozoo import ProtoConfig, ProtoModel
from protozoo.cli import main as cli_main
from protozoo.model import load, load_prototypes, publish

RESNET = dict(architecture="resnet18_small", num_prototypes=64, embed_dim=16, hidden_dim=32)
RESNET_STEM1 = dict(RESNET, backbone_kwargs={"stem_stride": 1})
VIT = dict(
    architecture="vit_tiny_patch4_28",
    num_prototypes=64,
    embed_dim=16,
    hidden_dim=32,
    backbone_kwargs={"depth": 2},
)
DINO = {**VIT, "method": "dino", "temperature": 0.1}  # learnable prototypes, a head without BatchNorm
RESULTS = {"dataset": "fashion_mnist", "eval_split": "test", "knn_top1": 0.8812, "unique": {"0.025": 0.9}}
RECIPE = {"method": "carp_dec", "backbone": "resnet18_small", "dataset": "fashion_mnist", "lr": 0.001}
FILES = {"model.safetensors", "head.safetensors", "config.json", "README.md"}


def make_model(seed: int = 0, num_classes: int = 0, config: dict = VIT) -> ProtoModel:
    """A tiny model whose GMM has seen one batch, so every buffer holds non-initial values."""
    torch.manual_seed(seed)
    model = ProtoModel(ProtoConfig(**config), num_classes=num_classes)
    if model.config.decoupled:
        model.prototype_source.update(F.normalize(torch.randn(128, 16), dim=1))  # type: ignore[operator]
    return model.eval()


@pytest.fixture(scope="module")
def model() -> ProtoModel:
    return make_model()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def folder(model: ProtoModel, tmp_path: Path) -> Path:
    return model.save_pretrained(tmp_path / "m", results=RESULTS, recipe=RECIPE)


def assert_same(a: ProtoModel, b: ProtoModel, x: torch.Tensor) -> None:
    with torch.no_grad():
        oa, ob = a(x), b(x)
    for name in ("features", "embeddings", "assignments"):
        assert torch.equal(getattr(oa, name), getattr(ob, name)), name
    assert torch.equal(a.prototypes, b.prototypes)


def header(path: Path) -> dict:
    """The JSON header of a safetensors file: 8-byte little-endian length, then JSON (no pickle)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


# ---- the folder ----
def test_save_writes_exactly_the_checkpoint_files(folder: Path) -> None:
    assert {p.name for p in folder.iterdir()} == FILES
    assert [p.name for p in folder.parent.iterdir()] == ["m"]  # no temporary folder left behind


def test_safetensors_hold_backbone_and_head_without_pickle(model: ProtoModel, folder: Path) -> None:
    backbone, head = header(folder / "model.safetensors"), header(folder / "head.safetensors")
    assert backbone.pop("__metadata__") == head.pop("__metadata__") == {"format": "pt"}
    assert set(backbone) == set(model.backbone.state_dict())  # timm's own key names
    gmm = {"mass", "means", "variances", "log_weights", "initialized"}  # S1, S2 are rebuilt on load
    assert {k.removeprefix("prototype_source.") for k in head if k.startswith("prototype_source.")} == gmm
    assert {k.split(".")[0] for k in head} == {"head", "prototype_source"}


def test_config_json_is_timm_layout_plus_protozoo_block(model: ProtoModel, folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    # the ViT is stock timm's with other model_args, so it is saved as such
    assert (config["architecture"], config["num_classes"], config["num_features"]) == (
        "vit_tiny_patch16_224",
        0,
        192,
    )
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [1, 28, 28] and cfg["license"] == "apache-2.0"
    assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["crop_pct"]) == (
        [0.286],
        [0.353],
        "bicubic",
        1.0,
    )
    expected_args = {"depth": 2, "in_chans": 1, "img_size": [28, 28], "patch_size": 4}
    assert config["model_args"] | expected_args == config["model_args"]
    block = config["protozoo"]
    assert block["format_version"] == 1 and block["dtype"] == "float32" and block["num_classes"] == 0
    assert ProtoConfig.from_dict(block["config"]) == model.config
    assert (block["results"], block["recipe"], block["name"], block["base_model"]) == (
        RESULTS,
        RECIPE,
        "m",
        None,
    )


@pytest.mark.parametrize(
    "config", [RESNET, RESNET_STEM1, VIT, DINO], ids=["resnet", "resnet-stem1", "vit", "vit-dino"]
)
def test_round_trip_and_timm_local_dir_give_identical_outputs(
    config: dict, tmp_path: Path, x: torch.Tensor
) -> None:
    model = make_model(config=config)
    folder = model.save_pretrained(tmp_path / "m")
    loaded = load(folder, device="cpu")
    assert not loaded.training
    assert_same(model, loaded, x)
    for name, buffer in model.prototype_source.named_buffers():
        assert torch.allclose(buffer, dict(loaded.prototype_source.named_buffers())[name], rtol=1e-6), name
    assert torch.equal(loaded.prototypes, model.prototypes)
    backbone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(backbone) is type(model.backbone)
    if "resnet" in config["architecture"]:  # model_args carry the stem's stride ...
        assert backbone.conv1.stride == model.backbone.conv1.stride
    else:  # ... and the ViT's depth
        assert len(backbone.blocks) == 2
    with torch.no_grad():
        assert torch.equal(backbone(x), model.backbone(x))


def test_small_resnet_stem_stride_one_keeps_twice_the_resolution() -> None:
    x = torch.randn(2, 1, 28, 28)
    for stride, size in ((2, 2), (1, 4)):
        model = timm.create_model("resnet18_small", in_chans=1, stem_stride=stride)
        assert model.forward_features(x).shape[-2:] == (size, size)
        assert model.feature_info[-1]["reduction"] == 8 * stride
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, got 3"):
        timm.create_model("resnet18_small", stem_stride=3)


def test_bfloat16_storage_halves_the_weights_and_keeps_the_gmm_masses_fp32(
    model: ProtoModel, folder: Path, tmp_path: Path, x: torch.Tensor
) -> None:
    small = model.save_pretrained(tmp_path / "bf16", dtype="bfloat16")
    for file in ("model.safetensors", "head.safetensors"):
        ratio = (small / file).stat().st_size / (folder / file).stat().st_size
        assert 0.45 < ratio < 0.55, file
    head = header(small / "head.safetensors")
    assert head["head.mlp.0.weight"]["dtype"] == head["prototype_source.means"]["dtype"] == "BF16"
    assert head["prototype_source.mass"]["dtype"] == "F32"
    loaded = load(small)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.allclose(loaded.prototypes, model.prototypes, atol=1e-2)
    gmm = loaded.prototype_source
    assert torch.allclose(gmm.s1, gmm.mass[:, None] * gmm.means)  # rebuilt from the published summary
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).features, model(x).features, rtol=0.05, atol=0.05)


def test_num_classes_gives_a_fresh_classifier_and_a_saved_one_round_trips(
    folder: Path, tmp_path: Path, x: torch.Tensor
) -> None:
    fresh = load(folder, num_classes=10)
    assert isinstance(fresh.classifier, torch.nn.Linear) and fresh.classifier.weight.shape == (10, 192)
    tuned = make_model(num_classes=3)
    saved = tuned.save_pretrained(tmp_path / "tuned")
    assert "classifier.weight" in header(saved / "head.safetensors")
    with torch.no_grad():
        assert torch.equal(load(saved)(x).logits, tuned(x).logits)  # type: ignore[arg-type]
    assert load(saved, num_classes=0).classifier is None


def test_save_replaces_an_existing_checkpoint_folder(folder: Path, x: torch.Tensor) -> None:
    (folder / "model.onnx").write_bytes(b"stale")
    other = make_model(seed=5)
    other.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} == FILES  # the stale ONNX export went with the old weights
    assert [p.name for p in folder.parent.iterdir()] == ["m"]
    assert_same(other, load(folder), x)


# ---- strict loading: every broken checkpoint names its problem ----
def rewrite(path: Path, change: dict) -> None:
    tensors = load_file(path)
    for key, value in change.items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    save_file(tensors, path)


@pytest.mark.parametrize(
    ("file", "change", "match"),
    [
        (
            "head.safetensors",
            {"head.mlp.0.bias": None},
            r"head.safetensors .*missing keys head\.mlp\.0\.bias",
        ),
        (
            "model.safetensors",
            {"extra.weight": torch.ones(2)},
            r"model.safetensors .*unexpected keys extra\.weight",
        ),
        (
            "head.safetensors",
            {"prototype_source.means": torch.ones(32, 16)},
            r"wrong shapes prototype_source\.means: file \(32, 16\) vs model \(64, 16\)",
        ),
        ("head.safetensors", {"prototype_source.mass": torch.ones(64, dtype=torch.int64)}, r"wrong dtypes"),
    ],
    ids=["missing", "unexpected", "shape", "dtype"],
)
def test_mismatched_weights_are_named(folder: Path, file: str, change: dict, match: str) -> None:
    rewrite(folder / file, change)
    with pytest.raises(ValueError, match=match):
        load(folder)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["protozoo"].update(format_version=99), r"unknown protozoo checkpoint format_version 99"),
        (lambda c: c.pop("protozoo"), r"no 'protozoo' block.*local-dir:"),
        (lambda c: c.update(architecture="resnet50_small"), r"architecture 'resnet50_small' disagrees"),
        (lambda c: c["protozoo"]["config"].update(colour=1), r"invalid protozoo block.*colour"),
    ],
    ids=["version", "no-block", "architecture", "config-key"],
)
def test_bad_config_json_is_named(folder: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load(folder)


@pytest.mark.parametrize(
    ("file", "damage", "match"),
    [
        (
            "model.safetensors",
            lambda b: b"not a safetensors file at all",
            r"model.safetensors is not a readable safetensors",
        ),
        ("head.safetensors", lambda b: b[: len(b) // 2], r"head.safetensors is not a readable safetensors"),
        ("config.json", lambda b: b[: len(b) // 2], r"config.json is not valid JSON"),
    ],
    ids=["garbage", "truncated", "truncated-config"],
)
def test_corrupt_and_truncated_files_are_named(folder: Path, file: str, damage, match: str) -> None:  # type: ignore[no-untyped-def]
    path = folder / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        load(folder)


def test_missing_files_and_bad_arguments(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 0.*-1"):
        load(folder, num_classes=-1)
    with pytest.raises(ValueError, match=r"revision='v1' applies to Hub ids"):
        load(folder, revision="v1")
    with pytest.raises(ValueError, match=r"is a file; pass the folder"):
        load(folder / "config.json")
    with pytest.raises(FileNotFoundError, match=r"No model folder at './nowhere/model'"):
        load("./nowhere/model")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        load(tmp_path)
    (folder / "head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"head\.safetensors is missing"):
        load(folder)


def test_save_pretrained_rejects_bad_input(model: ProtoModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown dtype 'int8'; valid storage dtypes are float32"):
        model.save_pretrained(tmp_path / "a", dtype="int8")
    with pytest.raises(TypeError, match=r"JSON-serialisable"):
        model.save_pretrained(tmp_path / "a", recipe={"root": Path("/data")})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not part of a checkpoint \(notes\.txt\)"):
        model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a file; save_pretrained writes a folder"):
        model.save_pretrained(tmp_path / "notes.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ---- the Hub, through huggingface_hub's real client and a test server ----
def test_publish_dry_run_lists_exactly_the_files_and_sends_nothing(folder: Path, hub: HubServer) -> None:
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "preprocessor.json").write_text("{}")
    expected = [
        "model.safetensors",
        "head.safetensors",
        "config.json",
        "README.md",
        "model.onnx",
        "preprocessor.json",
    ]
    assert publish(folder, "org/tiny", dry_run=True) == expected
    assert hub.requests == []
    assert publish(folder, "org/tiny") == expected
    assert set(hub.files("org/tiny")) == set(expected)
    assert hub.files("org/tiny")["model.onnx"] == b"onnx"


def test_push_to_hub_then_load_and_timm_hf_hub(model: ProtoModel, hub: HubServer, x: torch.Tensor) -> None:
    info = model.push_to_hub("org/tiny", token="hf_test", private=True, results=RESULTS, recipe=RECIPE)
    assert hub.repos["org/tiny"].private and info.oid == hub.repos["org/tiny"].branches["main"]
    assert set(hub.files("org/tiny")) == FILES
    assert all(auth == "Bearer hf_test" for method, _, auth in hub.requests if method == "POST")
    card = ModelCard(hub.files("org/tiny")["README.md"].decode())
    assert card.data.model_name == "tiny" and 'protozoo.load("org/tiny")' in card.text
    assert_same(model, load("org/tiny"), x)
    backbone = timm.create_model("hf-hub:org/tiny", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(backbone(x), model.backbone(x))


def test_revision_pinning_by_branch_and_commit(hub: HubServer, x: torch.Tensor) -> None:
    first, second = make_model(seed=1), make_model(seed=2)
    first.push_to_hub("org/pinned")
    commit = hub.repos["org/pinned"].branches["main"]
    second.push_to_hub("org/pinned", revision="v2")
    assert hub.repos["org/pinned"].branches["main"] == commit  # the branch took the second model
    assert_same(first, load("org/pinned"), x)
    assert_same(second, load("org/pinned", revision="v2"), x)
    assert_same(first, load("org/pinned", revision=commit), x)
    with pytest.raises(ValueError, match=r"Revision 'nope' not found in Hub repo 'org/pinned'"):
        load("org/pinned", revision="nope")
    with pytest.raises(
        FileNotFoundError,
        match=r"Hub repo 'org/absent' not found on the Hub, and there is no local folder 'org/absent'",
    ):
        load("org/absent")


def test_offline_loads_from_the_cache_only(
    model: ProtoModel, hub: HubServer, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.push_to_hub("org/cached")
    model.push_to_hub("org/uncached")
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache .* local_files_only"):
        load("org/uncached", local_files_only=True)
    load("org/cached")  # fills the cache
    assert_same(model, load("org/cached", local_files_only=True), x)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    assert_same(model, load("org/cached"), x)
    with pytest.raises(
        FileNotFoundError, match=r"'org/uncached' are not in the Hugging Face cache .*HF_HUB_OFFLINE=1"
    ):
        load("org/uncached")
    assert len(hub.requests) == seen  # offline means no request at all


def test_cli_publish(folder: Path, hub: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["publish", str(folder), "--repo-id", "org/cli", "--dry-run"]) == 0
    assert "would upload" in capsys.readouterr().out and hub.requests == []
    assert cli_main(["publish", str(folder), "--repo-id", "org/cli", "--private"]) == 0
    assert set(hub.files("org/cli")) == FILES and hub.repos["org/cli"].private
    assert cli_main(["publish", str(folder), "--repo-id", "not a repo"]) == 2
    assert "Invalid Hub repo id 'not a repo'" in capsys.readouterr().err


def test_publish_refuses_a_broken_folder(folder: Path, hub: HubServer) -> None:
    rewrite(folder / "head.safetensors", {"head.mlp.0.bias": None})
    with pytest.raises(ValueError, match=r"missing keys head\.mlp\.0\.bias"):
        publish(folder, "org/broken")
    with pytest.raises(FileNotFoundError, match=r"No model folder at"):
        publish(folder / "absent", "org/broken")
    assert "org/broken" not in hub.repos


# ---- load_prototypes ----
def test_load_prototypes_from_models_and_matrix_files(
    model: ProtoModel, folder: Path, tmp_path: Path
) -> None:
    assert torch.equal(load_prototypes(folder), model.prototypes)
    matrix = torch.randn(8, 4)
    save_file({"c": matrix}, tmp_path / "one.safetensors")
    save_file({"a": matrix, "b": matrix * 2}, tmp_path / "two.safetensors")
    np.save(tmp_path / "m.npy", matrix.numpy())
    torch.save({"protos": matrix}, tmp_path / "m.pt")
    assert torch.equal(load_prototypes(tmp_path / "one.safetensors"), matrix)
    assert torch.equal(load_prototypes(tmp_path / "two.safetensors", key="b"), matrix * 2)
    assert torch.equal(load_prototypes(tmp_path / "m.npy"), matrix)
    assert torch.equal(load_prototypes(str(tmp_path / "m.pt")), matrix)


class Opaque:
    """Something only pickle can store."""


def test_load_prototypes_errors(folder: Path, tmp_path: Path) -> None:
    save_file({"a": torch.ones(2, 2), "b": torch.ones(3)}, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"holds several tensors \['a', 'b'\]; pass key="):
        load_prototypes(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"has no tensor 'c'; its keys are \['a', 'b'\]"):
        load_prototypes(tmp_path / "two.safetensors", key="c")
    with pytest.raises(ValueError, match=r"expected a \(K, D\) prototype matrix, got \(3,\)"):
        load_prototypes(tmp_path / "two.safetensors", key="b")
    with pytest.raises(ValueError, match=r"key='a' selects a tensor inside a file"):
        load_prototypes(folder, key="a")
    (tmp_path / "p.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"Unknown prototype file type 'p\.csv'"):
        load_prototypes(tmp_path / "p.csv")
    torch.save({"a": Opaque()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"could not be read as a tensor file without pickle"):
        load_prototypes(tmp_path / "pickled.pt")


# ---- the hub-mixin shape: keyword-only options, dtype, cache, zoo Hub ids offline ----
def test_from_pretrained_is_load_and_every_option_is_keyword_only(folder: Path) -> None:
    import protozoo

    assert protozoo.load == ProtoModel.from_pretrained == load
    with pytest.raises(TypeError, match=r"positional argument"):
        load("dp-resnet18-fmnist", "cpu")  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"positional argument"):
        ProtoModel.from_pretrained(folder, None)  # type: ignore[misc]


def test_dtype_option_casts_the_model(folder: Path, x: torch.Tensor) -> None:
    half = load(folder, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half(x.bfloat16()).features.dtype == torch.bfloat16
    assert next(load(folder, dtype=torch.float16).parameters()).dtype == torch.float16
    with pytest.raises(
        ValueError, match=r"Unknown dtype 'int8'; valid dtypes are float32, bfloat16, float16"
    ):
        load(folder, dtype="int8")


def test_cache_dir_and_force_download(model: ProtoModel, hub: HubServer, tmp_path: Path) -> None:
    model.push_to_hub("org/cache")
    cache = tmp_path / "my-cache"
    load("org/cache", cache_dir=cache)
    assert any(cache.glob("models--org--cache/snapshots/*/model.safetensors"))
    downloads = lambda: sum(  # noqa: E731
        1 for method, path, _ in hub.requests if method == "GET" and path.endswith("/model.safetensors")
    )
    before = downloads()
    load("org/cache", cache_dir=cache)
    assert downloads() == before  # cached
    load("org/cache", cache_dir=cache, force_download=True)
    assert downloads() == before + 1


def test_a_zoo_hub_id_offline_falls_back_to_the_shipped_copy(
    model: ProtoModel, hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, x: torch.Tensor
) -> None:
    from protozoo import registry

    monkeypatch.setattr(registry, "ZOO_DIR", tmp_path / "zoo")
    model.save_pretrained(tmp_path / "zoo" / "dp-vit-tiny-fmnist", name="dp-vit-tiny-fmnist")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    shipped = load("protozoo/dp-vit-tiny-fmnist")
    assert_same(model, shipped, x)
    assert shipped.provenance is not None and shipped.provenance["name"] == "dp-vit-tiny-fmnist"
    assert hub.requests == []
    with pytest.raises(FileNotFoundError, match=r"shipped with this install only at revision None and not"):
        load("protozoo/dp-vit-tiny-fmnist", revision="v2")


# ---- publishing: stale files, plain timm, provenance ----
def test_push_to_hub_deletes_stale_optional_files(model: ProtoModel, folder: Path, hub: HubServer) -> None:
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "preprocessor.json").write_text("{}")
    publish(folder, "org/stale")
    assert {"model.onnx", "preprocessor.json"} <= set(hub.files("org/stale"))
    make_model(seed=3).push_to_hub("org/stale")
    assert set(hub.files("org/stale")) == FILES  # no graph of the old weights beside the new ones
    publish(folder, "org/stale")  # and publish adds them back
    assert {"model.onnx", "preprocessor.json"} <= set(hub.files("org/stale"))


PLAIN_TIMM = """
import sys, timm, torch
backbone = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save(backbone(x), sys.argv[3])
assert not any(name.split(".")[0] == "protozoo" for name in sys.modules), "protozoo was imported"
"""


def plain_timm_features(folder: Path, x: torch.Tensor, tmp: Path) -> torch.Tensor:
    """The backbone's output on x, from timm alone in a fresh interpreter that never imports protozoo."""
    import subprocess
    import sys

    torch.save(x, tmp / "x.pt")
    script = [sys.executable, "-c", PLAIN_TIMM, str(folder), str(tmp / "x.pt"), str(tmp / "y.pt")]
    subprocess.run(script, check=True, cwd=tmp)
    return torch.load(tmp / "y.pt", weights_only=True)


def test_the_vit_loads_in_plain_timm_without_protozoo(
    model: ProtoModel, folder: Path, x: torch.Tensor, tmp_path: Path
) -> None:
    with torch.no_grad():
        assert torch.equal(plain_timm_features(folder, x, tmp_path), model.backbone(x))


def test_the_shipped_vit_loads_in_plain_timm(x: torch.Tensor, tmp_path: Path) -> None:
    from protozoo import registry

    folder = registry.shipped_folder("dp-vit-tiny-fmnist")
    if folder is None:
        pytest.skip("dp-vit-tiny-fmnist is not shipped in this checkout")
    with torch.no_grad():
        assert torch.equal(plain_timm_features(folder, x, tmp_path), load(folder).backbone(x))


def test_resaving_a_loaded_model_keeps_its_provenance(folder: Path, tmp_path: Path) -> None:
    again = load(folder).save_pretrained(tmp_path / "again")
    block = json.loads((again / "config.json").read_text())["protozoo"]
    assert (block["name"], block["results"], block["recipe"], block["base_model"]) == (
        "m",
        RESULTS,
        RECIPE,
        None,
    )
    card = ModelCard.load(again / "README.md")
    assert card.data.model_name == "m" and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert card.data.eval_results[0].metric_value == 88.12
    assert "| training data | not recorded |" not in card.text  # the dataset survived the round trip


def test_after_fine_tuning_the_card_says_what_changed(folder: Path, tmp_path: Path) -> None:
    tuned = load(folder, num_classes=10)
    with torch.no_grad():
        tuned.backbone.norm.weight.add_(0.1)
    saved = tuned.save_pretrained(tmp_path / "tuned")
    block = json.loads((saved / "config.json").read_text())["protozoo"]
    assert block["results"] is None and block["name"] == "tuned"
    base = block["base_model"]
    assert (base["name"], base["results"], base["recipe"]) == ("m", RESULTS, RECIPE)
    assert base["changed"] == ["backbone", "new classifier (10 classes)"]
    card = ModelCard.load(saved / "README.md")
    assert card.data.eval_results is None  # the base model's numbers are not this model's
    assert "fine-tuned from | `m`; changed since: backbone, new classifier (10 classes)" in card.text
    assert "88.12%" in card.text and "Fashion-MNIST" in card.text
