"""A tiny training run killed with SIGKILL at the worst moments, then resumed, ends as if never killed.

Each run is ``python -m train``'s ``main`` in a fresh interpreter (a fork of the test process could
inherit OpenMP's locked state after earlier tests and hang), which kills itself with SIGKILL at one
chosen point: after a step, halfway through writing a checkpoint
file, halfway through rewriting metrics.jsonl on resume, or just before the final model is written. Nothing
can run after a SIGKILL, so this is what a crash, an OOM kill or a pre-empted node leaves behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save

from protozoo.fashion_mnist import load_fashion_mnist
from train import engine
from train.__main__ import main

TINY = [
    "backbone=vit_tiny_patch4_28",
    "backbone_kwargs.depth=1",
    "backbone_kwargs.embed_dim=32",
    "backbone_kwargs.num_heads=2",
    "hidden_dim=32",
    "embed_dim=16",
    "num_prototypes=32",
    "block_size=16",
    "batch_size=16",
    "eval_bank_size=64",
    "warmup_steps=1",
    "final_eval=false",
    "log_every=1",
    "channels_last=false",
    "method=carp_dec",
    "max_steps=6",  # 4 steps an epoch: the run crosses an epoch boundary
    "save_every=2",
    "eval_every=2",
    "keep_checkpoints=2",
    "resume=true",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 64 training and 32 validation Fashion-MNIST images in 4 classes."""
    root = tmp_path_factory.mktemp("images")
    pixels, labels = load_fashion_mnist("train")
    for split, start, per_class in (("train", 0, 16), ("val", 1000, 8)):
        for c in range(4):
            folder = root / split / str(c)
            folder.mkdir(parents=True)
            for i in torch.nonzero(labels == c).flatten()[start : start + per_class].tolist():
                Image.fromarray(pixels[i].numpy()).save(folder / f"{i}.png")
    return root


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(n: int) -> Callable[[], None]:
    def install() -> None:
        step = engine.Trainer.train_step

        def train_step(self: engine.Trainer, micro: list) -> dict[str, float]:
            logs = step(self, micro)
            if self.step == n:
                kill()
            return logs

        engine.Trainer.train_step = train_step  # type: ignore[method-assign]

    return install


def inside_checkpoint(n: int) -> Callable[[], None]:
    """Kill halfway through writing teacher.safetensors into the step-n checkpoint."""

    def install() -> None:
        save_file = engine.save_file

        def half_then_kill(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
            path = Path(path)
            if path.name == "teacher.safetensors" and path.parent.name.startswith(f"step_{n:07d}"):
                data = save(tensors)
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                kill()
            save_file(tensors, path)

        engine.save_file = half_then_kill

    return install


def inside_metrics_rewrite() -> None:
    """Kill halfway through rewriting metrics.jsonl (a resumed run cuts it back to its checkpoint)."""
    write_text = Path.write_text

    def half_then_kill(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if "metrics.jsonl" in self.name:
            with open(self, "w") as f:
                f.write(data[: len(data) // 2])
            kill()
        return write_text(self, data, *args, **kwargs)

    Path.write_text = half_then_kill  # type: ignore[method-assign]


def before_model() -> None:
    """Kill after the last checkpoint, before the model folder is written."""
    engine.Trainer.save_model = lambda self, results: kill()  # type: ignore[method-assign]


def child(out: str, images: str, point: str | None, n: int | None) -> None:
    """The body of one run (in its own interpreter): install the kill point, record the resumed
    checkpoint in ``<out>.resumed``, train."""
    marker = Path(f"{out}.resumed")
    load = engine.Trainer.load_checkpoint

    def load_checkpoint(self: engine.Trainer) -> bool:
        found = load(self)
        marker.write_text(f"step_{self.step:07d}" if found else "")
        return found

    engine.Trainer.load_checkpoint = load_checkpoint  # type: ignore[method-assign]
    if point is not None:
        install = globals()[point]
        (install(n) if n is not None else install)()
    main([*TINY, f"dataset=imagefolder:{images}", f"output_dir={out}"])


def run(out: Path, images: Path, point: str | None = None, n: int | None = None) -> str | None:
    """``python -m train`` that finishes (no ``point``) or SIGKILLs itself at ``point`` (a kill-point
    function of this module, called with ``n`` when given).

    Returns the checkpoint the run resumed from (None for a fresh start), as the child reports it.
    """
    marker = out.parent / f"{out.name}.resumed"
    marker.unlink(missing_ok=True)
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_crash_resume as t; "
        f"t.child({str(out)!r}, {str(images)!r}, {point!r}, {n!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True)
    if point is None:
        assert proc.returncode == 0, f"the run failed: {proc.stderr.decode()[-3000:]}"
    else:
        assert proc.returncode == -signal.SIGKILL, (
            f"not killed ({proc.returncode}): {proc.stderr.decode()[-3000:]}"
        )
    return marker.read_text() or None


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoints/step_*"))


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    files = ("model", "head")
    return {f"{f}:{k}": v for f in files for k, v in load_file(folder / f"{f}.safetensors").items()}


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_killed_anywhere_and_resumed_ends_as_the_uninterrupted_run(tmp_path: Path, images: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(full, images) is None

    assert run(cut, images, "after_step", 1) is None  # before any checkpoint
    assert checkpoints(cut) == []
    assert run(cut, images, "inside_checkpoint", 2) is None  # a fresh start: nothing to resume
    assert checkpoints(cut) == ["step_0000002.tmp"]  # half written, under its temporary name
    assert run(cut, images, "after_step", 3) is None  # the half-written checkpoint is not picked up
    assert checkpoints(cut) == ["step_0000002"]
    assert run(cut, images, "inside_checkpoint", 4) == "step_0000002"
    assert checkpoints(cut) == ["step_0000002", "step_0000004.tmp"]
    assert run(cut, images, "inside_metrics_rewrite") == "step_0000002"
    assert run(cut, images, "before_model") == "step_0000002"
    assert checkpoints(cut) == ["step_0000004", "step_0000006"] and not (cut / "model").exists()
    assert run(cut, images) == "step_0000006"

    a, b = tensors(full / "model"), tensors(cut / "model")
    gmm = {f"head:prototype_source.{k}" for k in ("means", "variances", "log_weights", "mass")}
    assert a.keys() == b.keys() and gmm <= a.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert metrics(cut) == metrics(full)
    assert [r["step"] for r in metrics(full) if "knn_top1" in r] == [0, 2, 4, 6]
