"""lightly's DINO and SwAV as outside anchors: they train, log, evaluate and resume like our methods."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

pytest.importorskip("lightly")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")  # lightly's

from train import compare  # noqa: E402
from train.__main__ import main as train_main  # noqa: E402
from train.anchors import AnchorTrainer, LightlyDINO, LightlySwAV  # noqa: E402
from train.config import ANCHORS, TrainConfig, load_config  # noqa: E402

TINY = [
    "backbone=vit_tiny_patch4_28",
    "backbone_kwargs.depth=1",
    "backbone_kwargs.embed_dim=32",
    "backbone_kwargs.num_heads=2",
    "backbone_kwargs.dynamic_img_size=true",  # the 14 px local crops, padded to 16
    "backbone_kwargs.dynamic_img_pad=true",
    "num_local_crops=2",
    "hidden_dim=32",
    "embed_dim=16",
    "num_prototypes=64",
    "batch_size=16",
    "warmup_steps=1",
    "log_every=1",
    "channels_last=false",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A flat image folder, so every split is the whole tree: 4 classes x 16 grey 28x28 images."""
    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for c in range(4):
        (root / f"c{c}").mkdir()
        for i in range(16):
            pixels = (torch.rand(28, 28, generator=g) * 100 + 40 * c).to(torch.uint8)  # class = brightness
            Image.fromarray(pixels.numpy()).save(root / f"c{c}" / f"{i}.png")
    return f"imagefolder:{root}"


def tiny(images: str, out: Path, *extra: str) -> list[str]:
    return [*TINY, f"dataset={images}", f"output_dir={out}", *extra]


def config(images: str, out: Path, *extra: str) -> TrainConfig:
    return load_config(None, tiny(images, out, *extra))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def first_batch(trainer: AnchorTrainer) -> list[list[Tensor]]:
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_sampler=trainer._micro_batches(0, 0)[:1])
    return [next(iter(loader))[0]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, images: str) -> Path:
    """Both anchors, 4 steps each, through ``python -m train``'s entry point, as compare runs them."""
    out = tmp_path_factory.mktemp("compare")
    extra = ["max_steps=4", "eval_every=2", "save_every=4", "long_tail=2", "linear_probe=true"]
    for method in ANCHORS:
        train_main(tiny(images, out / method, f"method={method}", *extra))
    return out


@pytest.mark.parametrize("method", ANCHORS)
def test_anchor_trains_and_logs_like_our_methods(runs: Path, method: str) -> None:
    folder = runs / method
    lines = metrics(folder)
    losses = [r["loss"] for r in lines if "loss" in r]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert all(math.isfinite(x) for x in losses) and len(set(losses)) > 1
    evals = [r for r in lines if "unique" in r and not r.get("final")]
    assert [r["step"] for r in evals] == [0, 2, 4]  # 46 long-tailed images: epochs of 2 steps
    for r in evals:
        assert set(r["unique"]) == {"0.025", "0.1", "0.25", "0.5"}
        assert 0 < r["perplexity"] <= 1 and 0 <= r["knn_top1"] <= 1
    final = lines[-1]
    assert final["final"] and final["split"] == "test" and final["step"] == 4
    assert set(final["knn_groups"]) == {"head", "medium", "tail"} and 0 <= final["linear_top1"] <= 1
    predictions = json.loads((folder / "predictions.json").read_text())
    linear_right = [p == y for p, y in zip(predictions["linear_preds"], predictions["labels"], strict=True)]
    assert sum(linear_right) / len(linear_right) == pytest.approx(final["linear_top1"])  # for paired tests
    assert (folder / "collapse.png").exists()
    assert not (folder / "model").exists()  # lightly's heads are no ProtoModel
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["step_0000004"]


def test_compare_rejects_a_job_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--jobs", "0", "--methods", "carp"])
    assert "--jobs must be a positive number" in capsys.readouterr().err


def test_concurrent_runs_share_the_cores_unless_the_user_set_the_threads() -> None:
    assert compare.job_env(4, 16, {"PATH": "/bin"}) == {"PATH": "/bin", "OMP_NUM_THREADS": "4"}
    assert compare.job_env(7, 16, {})["OMP_NUM_THREADS"] == "2"
    assert compare.job_env(3, 2, {})["OMP_NUM_THREADS"] == "1"  # never zero threads
    assert "OMP_NUM_THREADS" not in compare.job_env(1, 16, {})  # one run keeps torch's default
    assert compare.job_env(4, 16, {"OMP_NUM_THREADS": "8"})["OMP_NUM_THREADS"] == "8"


def test_compare_reads_finished_anchor_runs_without_rerunning(runs: Path, tmp_path: Path) -> None:
    # a rerun would fail on the missing recipe
    compare.main(["eval_every=2", "--methods", *ANCHORS, "--steps", "4", "--out", str(runs), "--docs",
                  str(tmp_path), "--recipe", "nope.yaml", "--jobs", "2"])  # fmt: skip
    saved = json.loads((tmp_path / "tables" / f"{runs.name}.json").read_text())
    # the overrides come before --methods, or rerunning the command would read them as method names
    tail = f"--out {runs} eval_every=2 --methods {' '.join(ANCHORS)}"
    assert saved["command"] == f"python -m train.compare --recipe nope.yaml --steps 4 {tail}"
    assert list(saved["runs"]) == list(ANCHORS) and all(r["final"]["final"] for r in saved["runs"].values())
    assert all([e["step"] for e in r["evals"]] == [0, 2, 4] for r in saved["runs"].values())
    table = (tmp_path / "tables" / f"{runs.name}.md").read_text()
    assert "| lightly_dino |" in table and "| lightly_swav |" in table


@pytest.mark.parametrize("method, optimizer", [("lightly_dino", "adamw"), ("lightly_swav", "lars")])
def test_regimes_parse(method: str, optimizer: str) -> None:
    assert load_config(None, [f"method={method}", *compare.REGIMES[method]]).optimizer == optimizer


@pytest.mark.parametrize("method, frozen", [(m, f) for m in ANCHORS for f in (0, 1)])
def test_prototypes_move_unless_frozen(tmp_path: Path, images: str, method: str, frozen: int) -> None:
    extra = ["warmup_steps=0", "lr=0.05", f"freeze_last_layer_steps={frozen}"]
    trainer = AnchorTrainer(config(images, tmp_path, f"method={method}", *extra))
    anchor = trainer.model
    assert isinstance(anchor, LightlyDINO if method == "lightly_dino" else LightlySwAV)
    before = anchor.prototypes.detach().clone()
    trainer.train_step(first_batch(trainer))
    after = anchor.prototypes.detach()
    torch.testing.assert_close(after.norm(dim=1), torch.ones(64))
    moved = (after - before).abs().max().item()
    assert moved < 1e-6 if frozen else moved > 1e-4


def test_dino_teacher_starts_as_the_student_and_follows_by_ema(tmp_path: Path, images: str) -> None:
    trainer = AnchorTrainer(config(images, tmp_path, "method=lightly_dino", "warmup_steps=0", "lr=0.05"))
    student, teacher = trainer.model, trainer.teacher
    assert isinstance(student, LightlyDINO) and isinstance(teacher, LightlyDINO)
    for (k, s), t in zip(student.state_dict().items(), teacher.state_dict().values(), strict=True):
        torch.testing.assert_close(t, s, msg=k)
    old = teacher.head.last_layer.weight_v.clone()
    m = trainer.train_step(first_batch(trainer))["teacher_momentum"]
    new = student.head.last_layer.weight_v
    assert not torch.allclose(new, old)
    torch.testing.assert_close(teacher.head.last_layer.weight_v, m * old + (1 - m) * new)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_swav_is_evaluated_through_its_student(tmp_path: Path, images: str) -> None:
    trainer = AnchorTrainer(config(images, tmp_path, "method=lightly_swav"))
    assert trainer.teacher is trainer.model
    out = trainer.model(torch.randn(3, 1, 28, 28))
    assert out.features.shape == (3, 32) and out.embeddings.shape == (3, 16)
    torch.testing.assert_close(out.assignments.sum(1), torch.ones(3))


@pytest.mark.parametrize("method", ANCHORS)
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, images: str, method: str) -> None:
    extra = [f"method={method}", "max_steps=4", "save_every=2", "eval_every=2", "keep_checkpoints=5",
             "final_eval=false"]  # fmt: skip
    for run in ("full", "cut"):
        AnchorTrainer(config(images, tmp_path / run, *extra)).fit()
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_0000004")  # killed after the step-2 checkpoint
    AnchorTrainer(config(images, tmp_path / "cut", *extra, "resume=true")).fit()
    for name in ("model.safetensors", "teacher.safetensors", "loss.safetensors"):
        full, cut = (
            load_file(tmp_path / run / "checkpoints" / "step_0000004" / name) for run in ("full", "cut")
        )
        assert full.keys() == cut.keys()
        for k in full:
            torch.testing.assert_close(cut[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
    full_m, cut_m = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["step"] for r in full_m] == [r["step"] for r in cut_m]
    for a, b in zip(full_m, cut_m, strict=True):
        assert a.get("loss") == pytest.approx(b.get("loss"), rel=1e-5)
