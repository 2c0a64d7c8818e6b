"""The paths that only large runs take: ImageFolder recipes, recipe types, Accelerate's own settings,
sharded evaluation and resuming on several processes (two gloo processes through torchrun)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from protozoo import ProtoConfig, ProtoModel
from protozoo.fashion_mnist import FASHION_MNIST_DIR
from train.config import load_config
from train.engine import Trainer, accelerator_options, gather_outputs

REPO = Path(__file__).parents[1]
TINY_VIT = [
    "backbone_kwargs.depth=1",
    "backbone_kwargs.embed_dim=32",
    "backbone_kwargs.num_heads=2",
    "hidden_dim=32",
    "embed_dim=16",
    "num_prototypes=64",
    "block_size=32",
    "warmup_steps=1",
    "channels_last=false",
    "num_workers=0",
]
needs_fmnist = pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")


@pytest.fixture
def fresh_accelerate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Accelerate's process-wide state reset before and after, so a test may pick other settings."""
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def image_folder(root: Path, splits: dict[str, int]) -> Path:
    """An ImageNet-style tree root/<split>/<class>/*.png of random 40x48 RGB images, two classes."""
    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 128, (40, 48, 3), dtype=np.uint8) + 127 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


# ---- ImageFolder recipes end to end ----
@pytest.mark.parametrize("recipe", ["imagenet-vit-s16", "imagenet-resnet50"])
def test_imagefolder_recipe_trains_evaluates_and_writes_the_model(
    recipe: str, tmp_path: Path, fresh_accelerate: None
) -> None:
    root = image_folder(tmp_path / "images", {"train": 12, "val": 4})
    resnet = [
        "backbone=resnet18_small",
        "hidden_dim=32",
        "embed_dim=16",
        "num_prototypes=64",
        "block_size=32",
    ]
    small = ["backbone=vit_tiny_patch4_32", *TINY_VIT] if "vit" in recipe else resnet
    overrides = [*small, "img_size=32", "num_local_crops=0", "batch_size=8", "max_steps=2", "warmup_steps=1",
                 "eval_every=100", "save_every=100", "num_workers=0", "eval_bank_size=64",
                 f"dataset=imagefolder:{root}", f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    results = Trainer(load_config(REPO / "train" / "configs" / f"{recipe}.yaml", overrides)).fit()
    assert results["eval_split"] == "val" and 0 <= results["knn_top1"] <= 1  # ImageNet's val is its test set
    final = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"] and final["split"] == "val"
    assert len(json.loads((tmp_path / "run" / "predictions.json").read_text())["labels"]) == 8
    model = ProtoModel.from_pretrained(tmp_path / "run" / "model")
    assert model.provenance["results"]["eval_split"] == "val" and model.config.in_chans == 3


def test_imagefolder_with_a_test_folder_evaluates_on_it(tmp_path: Path) -> None:
    from protozoo.data import final_eval_splits

    assert final_eval_splits("fashion_mnist") == ("trainval", "test")
    root = image_folder(tmp_path / "a", {"train": 1, "val": 1})
    assert final_eval_splits(f"imagefolder:{root}") == ("train", "val")
    (root / "test").mkdir()
    assert final_eval_splits(f"imagefolder:{root}") == ("train", "test")


# ---- recipe files: validated and coerced at start ----
def test_recipe_values_are_coerced_and_bad_ones_named(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 1e-3\nmin_lr: 0\nglobal_crops_scale: [0.3, 1]\nmax_steps: 5\nclip_grad: null\n")
    cfg = load_config(recipe)
    assert (cfg.lr, cfg.min_lr, cfg.global_crops_scale, cfg.clip_grad) == (1e-3, 0.0, [0.3, 1.0], None)
    assert type(cfg.lr) is float and type(cfg.global_crops_scale[1]) is float
    for text, match in [
        ("lr: fast\n", r"key 'lr': expected float, got str 'fast'"),
        ("batch_size: 25.5\n", r"key 'batch_size': expected int, got float 25.5"),
        ("channels_last: 'no'\n", r"key 'channels_last': expected bool, got str 'no'"),
        ("trackers: tensorboard\n", r"key 'trackers': expected list\[str\], got str 'tensorboard'"),
    ]:
        recipe.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_config(recipe)


# ---- Accelerate's own settings ----
def test_accelerate_launch_settings_are_not_overridden(
    monkeypatch: pytest.MonkeyPatch, fresh_accelerate: None
) -> None:
    assert accelerator_options("no")["mixed_precision"] == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # `accelerate launch --mixed_precision bf16`
    options = accelerator_options("auto")
    assert options["mixed_precision"] is None and Accelerator(**options).mixed_precision == "bf16"
    assert accelerator_options("bf16")["mixed_precision"] is None
    with pytest.raises(ValueError, match=r"mixed_precision=fp16 in the recipe contradicts accelerate's "):
        accelerator_options("fp16")


def test_the_cpu_is_forced_only_without_an_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. a Mac (MPS) or an Intel GPU (XPU)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert accelerator_options("no")["cpu"] is False
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # accelerate launch --cpu
    assert accelerator_options("no")["cpu"] is True
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert accelerator_options("no")["cpu"] is True


# ---- sharded evaluation and resume on two processes ----
def tiny_eval_model() -> ProtoModel:
    torch.manual_seed(0)
    config = ProtoConfig(
        architecture="vit_tiny_patch4_28",
        method="dino",
        temperature=0.1,
        num_prototypes=32,
        embed_dim=8,
        hidden_dim=16,
        backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    )
    return ProtoModel(config)


def eval_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(37, 1, 28, 28, generator=g), torch.randint(0, 10, (37,), generator=g))


WORKER = """
import json, sys
from pathlib import Path
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[2])
from test_scale_paths import eval_data, tiny_eval_model
from train.config import load_config
from train.engine import Trainer, gather_outputs

out, args = Path(sys.argv[1]), sys.argv[3:]
trainer = Trainer(load_config(None, args))
acc = trainer.accelerator
model, seen = tiny_eval_model(), []
model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
features, assignments, labels = gather_outputs(acc, model, eval_data(), batch_size=4)
shard = {"encoded": sum(seen), "of": acc.num_processes}
(out / f"rank{acc.process_index}.json").write_text(json.dumps(shard))
if acc.is_main_process:
    save_file({"features": features, "assignments": assignments, "labels": labels}, out / "two.safetensors")
trainer.fit()
"""


def torchrun(out: Path, *args: str) -> None:
    """WORKER on two gloo processes (fresh interpreters: forking after OpenMP kernels can hang), with the
    repository root on the path, where the checkout's train/ is importable."""
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(out / "worker.py"), str(out), str(Path(__file__).parent), *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow
@needs_fmnist
def test_two_processes_shard_evaluation_and_resume_from_the_same_checkpoint(
    tmp_path: Path, fresh_accelerate: None
) -> None:
    (tmp_path / "worker.py").write_text(WORKER)
    run = tmp_path / "run"
    args = ["backbone=vit_tiny_patch4_28", *TINY_VIT, "method=dino_dec", "batch_size=32", "max_steps=2",
            "eval_every=1", "save_every=1", "keep_checkpoints=5", "eval_bank_size=100", "eval_val_size=50",
            "final_eval=false", "log_every=1", "mixed_precision=no", f"output_dir={run}"]  # fmt: skip
    torchrun(tmp_path, *args)

    # evaluation: each process encoded its half of the batches, and the gathered result is one process's
    shards = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["of"] for s in shards] == [2, 2] and [s["encoded"] for s in shards] == [20, 20]  # 37 + 3 padded
    two = load_file(tmp_path / "two.safetensors")
    one = gather_outputs(Accelerator(cpu=True), tiny_eval_model(), eval_data(), batch_size=4)
    for name, expected in zip(("features", "assignments", "labels"), one, strict=True):
        torch.testing.assert_close(two[name], expected, rtol=1e-5, atol=1e-6, msg=name)

    # resume: both processes continue from process 0's newest checkpoint and redo step 2 exactly
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in metrics if "loss" in r}
    shutil.rmtree(run / "checkpoints" / "step_0000002")  # a kill after the step-1 checkpoint
    shutil.rmtree(run / "model")
    torchrun(tmp_path, *args, "resume=true")
    resumed = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [r["step"] for r in metrics]
    assert {r["step"]: r["loss"] for r in resumed if "loss" in r} == pytest.approx(losses, rel=1e-5)
    assert json.loads((run / "checkpoints" / "step_0000002" / "trainer.json").read_text())["step"] == 2
