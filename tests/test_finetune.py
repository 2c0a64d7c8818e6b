"""train.finetune: tiny runs through the command, the data it accepts and the errors it gives first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import HubServer
from PIL import Image
from safetensors.torch import load_file

import protozoo
from protozoo import ProtoConfig, ProtoModel
from protozoo.cli import main as cli_main
from train.finetune import Classifier, _optimizer, finetune, label_subset, load_finetune_config

VIT = dict(
    architecture="vit_tiny_patch4_28",
    num_prototypes=64,
    embed_dim=16,
    hidden_dim=32,
    backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
)
RGB = dict(VIT, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
TINY = ["label_fraction=0.002", "max_steps=2", "batch_size=16", "eval_size=32", "onnx=false"]


def tiny_folder(path: Path, config: dict) -> Path:
    torch.manual_seed(0)
    return ProtoModel(ProtoConfig(**config)).save_pretrained(path)


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_folder(tmp_path_factory.mktemp("gray") / "model", VIT)


def images(root: Path, classes: dict[str, int], mode: str = "RGB") -> Path:
    """``count`` random 28x28 images of ``mode`` in ``root/<class>/`` for each class."""
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (28, 28, 3) if mode == "RGB" else (28, 28)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    return root


def run(model: Path | str, out: Path, *overrides: str) -> dict:
    return finetune(load_finetune_config(None, [f"model={model}", f"output_dir={out}", *TINY, *overrides]))


def test_the_command_writes_a_model_whose_logits_are_the_trained_classifiers(gray, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "run"
    args = ["finetune", "--model", str(gray), f"output_dir={out}", *TINY[:-1], "eval_every=1"]
    assert cli_main(args) == 0
    assert "test top-1 (fashion_mnist test):" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all({"train_loss", "val_top1", "test_top1"} <= set(r) for r in lines)
    best_step = max(lines, key=lambda r: r["val_top1"])["step"]  # the first of equal val top-1s
    assert (
        json.loads((out / "model" / "config.json").read_text())["protozoo"]["results"]["best_step"]
        == best_step
    )
    best = load_file(out / "checkpoints" / "best.safetensors")
    assert (out / "checkpoints" / "last.safetensors").is_file()

    model = protozoo.load(out / "model")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out_x = model(x)
        expected = out_x.features @ best["classifier.weight"].T + best["classifier.bias"]  # (4, 10)
    assert model.num_classes == 10
    torch.testing.assert_close(out_x.logits, expected)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, best[f"backbone.{k}"]), k
    session = ort.InferenceSession(str(out / "model" / "model.onnx"))
    (logits,) = session.run(["logits"], {"pixel_values": x.numpy()})
    np.testing.assert_allclose(logits, out_x.logits.numpy(), rtol=1e-4, atol=1e-4)


def test_a_hub_id_fine_tunes_like_the_folder(gray, tmp_path, hub: HubServer):
    protozoo.load(gray).push_to_hub("org/tiny")
    run("org/tiny", tmp_path / "hub")
    run(gray, tmp_path / "folder")
    a, b = (load_file(tmp_path / name / "checkpoints" / "last.safetensors") for name in ("hub", "folder"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_linear_mode_moves_only_the_classifier(gray, tmp_path):
    run(gray, tmp_path, "mode=linear")
    before, after = protozoo.load(gray), protozoo.load(tmp_path / "model")
    for (k, v), w in zip(before.state_dict().items(), after.state_dict().values(), strict=False):
        assert torch.equal(v, w), k  # backbone, head and prototypes, BatchNorm statistics included
    assert after.classifier is not None


def test_scratch_starts_from_fresh_weights(gray, tmp_path):
    run(gray, tmp_path, "pretrained=false", "mode=linear")
    before, after = protozoo.load(gray), protozoo.load(tmp_path / "model")
    assert not torch.equal(before.backbone.patch_embed.proj.weight, after.backbone.patch_embed.proj.weight)


def test_imagefolder_of_rgb_images_is_converted_for_a_grayscale_model_when_asked(gray, tmp_path, caplog):
    data = images(tmp_path / "data" / "train", {"cat": 12, "dog": 12, "fox": 12}).parent
    with caplog.at_level(logging.INFO):
        results = run(gray, tmp_path / "out", "dataset=imagefolder", f"data_dir={data}", "label_fraction=1",
                      "batch_size=4", "convert_channels=true")  # fmt: skip
    assert "converting the RGB images to grayscale" in caplog.text
    assert "no test/ folder" in caplog.text
    assert results["num_classes"] == 3 and results["train_images"] == 32  # 4 of 36 held out as val
    assert protozoo.load(tmp_path / "out" / "model").num_classes == 3


def test_idx_files(gray, tmp_path):
    rng = np.random.default_rng(0)

    def idx(path: Path, array: np.ndarray, magic: int) -> str:
        path.write_bytes(magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
                         + array.astype(np.uint8).tobytes())  # fmt: skip
        return str(path)

    files = [
        idx(tmp_path / "tx", rng.integers(0, 256, (40, 28, 28)), 2051),
        idx(tmp_path / "ty", np.arange(40) % 4, 2049),
        idx(tmp_path / "sx", rng.integers(0, 256, (8, 28, 28)), 2051),
        idx(tmp_path / "sy", np.arange(8) % 4, 2049),
    ]
    results = run(gray, tmp_path / "out", "dataset=idx", f"idx_files=[{','.join(files)}]", "label_fraction=1",
                  "batch_size=8")  # fmt: skip
    assert results["num_classes"] == 4 and results["train_images"] == 36


def test_label_subset_is_stratified_and_seeded():
    targets = torch.arange(1000) % 4  # 250 per class
    picked = label_subset(targets, 0.1, seed=0)
    assert torch.bincount(targets[picked]).tolist() == [25, 25, 25, 25]
    assert torch.equal(picked, label_subset(targets, 0.1, seed=0))
    assert not torch.equal(picked, label_subset(targets, 0.1, seed=1))
    assert torch.bincount(targets[label_subset(targets, 0.0001, seed=0)]).tolist() == [1, 1, 1, 1]


def test_layer_decay_scales_the_lr_down_the_backbone():
    model = ProtoModel(
        ProtoConfig(**{**VIT, "backbone_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}), 3
    )
    cfg = load_finetune_config(None, ["model=x", "layer_decay=0.5"])
    groups = _optimizer(Classifier(model, frozen=False), cfg).param_groups
    scales = {p: g["lr_scale"] for g in groups for p in g["params"]}
    assert scales[model.classifier.weight] == scales[model.backbone.blocks[1].attn.qkv.weight] == 1.0
    assert scales[model.backbone.blocks[0].attn.qkv.weight] == 0.5
    assert scales[model.backbone.patch_embed.proj.weight] == 0.25


def test_every_finetune_recipe_parses():
    recipes = sorted(Path(__file__).parents[1].glob("train/configs/finetune-*.yaml"))
    assert {r.stem for r in recipes} == {f"finetune-{name}" for name in protozoo.list_models()}
    for recipe in recipes:
        assert load_finetune_config(recipe).model in protozoo.list_models()


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["label_fraction=0"], ValueError, r"label_fraction must be in \(0, 1\], got 0.0"),
        (["label_fraction=1.5"], ValueError, r"label_fraction must be in \(0, 1\], got 1.5"),
        (["num_classes=5"], ValueError, "num_classes=5 disagrees with the data, which has 10 classes"),
        (["mode=probe"], ValueError, "Unknown mode 'probe'; valid modes are full, linear"),
        (["dataset=idx"], ValueError, r"dataset=idx needs idx_files=\[train images"),
        (["label_fractoin=0.1"], ValueError, r"key 'label_fractoin'; did you mean \['label_fraction'"),
        (["label_fraction=0.0001", "batch_size=64"], ValueError, "leaves 10 training images, fewer than"),
    ],
)
def test_bad_settings_stop_before_training(gray, tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        run(gray, tmp_path / "out", *overrides)
    assert not (tmp_path / "out").exists()  # nothing written: no step was taken


@pytest.mark.parametrize(
    "classes, match",
    [
        ({}, "holds no images: expected one subfolder per class"),
        ({"cat": 0, "dog": 0}, "holds no images"),
        ({"cat": 4}, "has one class \\('cat'\\); a classifier needs at least 2 class folders"),
        ({"cat": 4, "dog": 0}, r"class folders \['dog'\] hold no images"),
    ],
)
def test_bad_image_folders_stop_before_training(gray, tmp_path, classes, match):
    data = images(tmp_path / "data", classes)
    data.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match):
        run(gray, tmp_path / "out", "dataset=imagefolder", f"data_dir={data}")
    assert not (tmp_path / "out").exists()


def test_channels_that_differ_from_the_models_stop_before_training(gray, tmp_path):
    data = images(tmp_path / "data", {"cat": 4, "dog": 4})
    with pytest.raises(ValueError, match=r"takes 1-channel \(grayscale\) images but the data is RGB; pass "
                       "convert_channels=true"):  # fmt: skip
        run(gray, tmp_path / "out", "dataset=imagefolder", f"data_dir={data}")
    rgb = tiny_folder(tmp_path / "rgb", RGB)
    with pytest.raises(ValueError, match=r"takes 3-channel \(RGB\) images but the data is grayscale"):
        run(rgb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_card_shows_the_label_efficiency_of_its_own_model_only(gray, tmp_path):
    from protozoo.card import render_card, weights_digest

    cell = {"mean": 0.7512, "low": 0.7401, "high": 0.7623, "values": [0.75, 0.74, 0.76]}
    results = {"0.01": {m: cell for m in ("finetune", "linear probe", "scratch", "pixels")}}
    weights = gray / "model.safetensors"
    settings = {"model": "tiny", "fractions": [0.01], "steps": [40], "test_size": 1000}
    settings["weights_sha256"] = weights_digest(weights)
    path = tmp_path / "label_efficiency.json"
    path.write_text(json.dumps({"settings": settings, "results": results}))
    config = json.loads((gray / "config.json").read_text())
    text = render_card(config, name="tiny", load_name="tiny", label_efficiency=path, weights=weights).text
    assert "\n## Fine-tuning\n" in text and "protozoo finetune --model tiny" in text
    assert "| 1 % | 40 | 3 | 75.1 [74.0, 76.2] | 75.1 [74.0, 76.2] |" in text and "1000 fixed test" in text
    other = render_card(config, name="other", load_name="other", label_efficiency=path).text
    assert "protozoo finetune --model other" in other and "75.1" not in other
    retrained = tmp_path / "retrained.safetensors"  # the same name, other weights: not its numbers
    retrained.write_bytes(weights.read_bytes() + b" ")
    text = render_card(config, name="tiny", load_name="tiny", label_efficiency=path, weights=retrained).text
    assert "protozoo finetune --model tiny" in text and "75.1" not in text
