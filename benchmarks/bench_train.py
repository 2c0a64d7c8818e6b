"""Training-step throughput: what the prototype machinery costs, and protozoo against lightly's DINO.

Three training steps run interleaved (round-robin, rotating order, after warm-up) on the same fixed
batch of real Fashion-MNIST views, made once before timing, so data loading is excluded everywhere:

- ``carp_dec``: the real ``Trainer.train_step`` of the 360-step ResNet-18 recipe
  (train/configs/resnet18-360.yaml: resnet18_small, head 512-1024-1024-256 with BN, 2 global 28 px views,
  batch 256, AdamW, grad clipping 3.0, the recipe's precision: bf16 autocast where the CPU computes bf16,
  else fp32; channels_last) at K = 4096 prototypes, blocks of 128.
- ``no_proto``: the same step with the prototype step and the loss taken out. The same Trainer's
  student and teacher, autocast, channels_last, clipping, AdamW and EMA, but no GMM update, no
  prototype scores (student or teacher), no assignment softmax and no CARP loss. Its loss is the
  negative cosine between each student projection and the teacher projection of the other view
  (BYOL's loss without the predictor): it costs O(B·D), and its gradient reaches every element of
  the student projection, so the backward pass through head and backbone has exactly the size of
  the real one (its cost depends on the activations' shapes, not on the loss values).
- ``lightly_dino``: a minimal training step written after lightly's DINO example (student
  backbone + ``DINOProjectionHead``, a teacher updated by ``update_momentum``, ``DINOLoss``,
  AdamW) on the same backbone, views, batch, K, head widths, precision and channels_last.
  As in the example, each view goes through the networks separately.

Target ratios (throughput, so time of the other step / time of carp_dec, median of per-round
ratios): carp_dec / no_proto >= 0.95 and carp_dec / lightly_dino >= 1.0. The ratio of each step's
best round is shown beside it: the least disturbed estimate when other jobs load the machine. Two
components are also timed alone, interleaved with the steps, at the shapes of the step: the GMM
update and the CARP loss (forward + backward). When a target is missed, the run profiles one
carp_dec step with torch.profiler and stores the top operators in the JSON.

    python benchmarks/bench_train.py [--quick] [--batch 256] [--num-prototypes 4096] [--rounds 10]

``--main-job`` instead times README's first command end to end, as a user on a 2-core AVX2 machine runs
it: ``python -m train --config default`` in fp32 (``mixed_precision=no``) with ATen and oneDNN held to
AVX2 kernels, into a temporary folder (or ``--run-dir``, to keep the run). It records the whole
command's wall time, the training loop's (evaluations during training included, as the run prints it)
and the run's final numbers, in benchmarks/results/main_job.json. The 10-minute target is on the
training loop.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, Run, ms, paired_ratio, run_note, table, time_interleaved, verdict
from torch import Tensor, nn
from torch.utils.data import default_collate

from protozoo.prototypes import OnlineGMM
from train.config import load_config
from train.engine import Trainer, cosine

RECIPE = ROOT / "train" / "configs" / "resnet18-360.yaml"
TARGETS = {"carp_dec / no_proto": 0.95, "carp_dec / lightly_dino": 1.0}
COMMAND = "python benchmarks/bench_train.py"
MAIN_JOB = ["-m", "train", "--config", "default", "mixed_precision=no"]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MAIN_JOB_MINUTES = 10.0
REPORT = {  # what the main job prints
    "train": r"training loop: (\d+) min (\d+) s to step (\d+)",
    "live": r"live prototypes \(.*\): (\d+) of",
    "test_knn": r"k-NN top-1 \(\w+ test\): ([\d.]+)",
    "pixels_knn": r"k-NN top-1 of raw pixels on the same split: ([\d.]+)",
}


def main_job(out: str, run_dir: str | None) -> None:
    """Run README's first command's training part in fp32 with AVX2 kernels and record its times."""
    run = Run("main_job", False)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, *MAIN_JOB, f"output_dir={run_dir or f'{tmp}/run'}"]
        t = time.perf_counter()  # the run's progress bars go to stderr, straight to the terminal
        done = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **AVX2}, stdout=subprocess.PIPE, text=True
        )
        wall = time.perf_counter() - t
    print(done.stdout)
    if done.returncode:
        raise SystemExit(f"the main job failed with exit status {done.returncode}")
    found = {key: re.search(pattern, done.stdout) for key, pattern in REPORT.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise SystemExit(f"the main job's report lacks {missing}; did train/__main__.py change its output?")
    minutes, seconds, steps = (int(g) for g in found["train"].groups())  # type: ignore[union-attr]
    results = {
        "train_s": 60 * minutes + seconds,
        "command_s": round(wall, 1),
        "steps": steps,
        "live": int(found["live"].group(1)),  # type: ignore[union-attr]
        "test_knn": float(found["test_knn"].group(1)),  # type: ignore[union-attr]
        "pixels_knn": float(found["pixels_knn"].group(1)),  # type: ignore[union-attr]
    }
    results["target_met"] = results["train_s"] <= 60 * MAIN_JOB_MINUTES
    settings = {"command": " ".join(["python", *MAIN_JOB]), "env": AVX2, "target_minutes": MAIN_JOB_MINUTES}
    run.write(out, settings, results=results)
    print(f"training loop {results['train_s']} s, whole command {results['command_s']} s "
          f"(target: training <= {MAIN_JOB_MINUTES:g} min): {verdict(results['target_met'])}")  # fmt: skip


def build_trainer(num_prototypes: int, batch: int, out_dir: str, method: str = "carp_dec") -> Trainer:
    """The real Trainer of the 360-step ResNet-18 recipe, with a tiny k-NN bank (built in a second)."""
    overrides = [
        f"method={method}",
        f"num_prototypes={num_prototypes}",
        f"batch_size={batch}",
        "eval_bank_size=64",
        "max_steps=10000",  # the schedules' length; only lr and momentum values depend on it
        f"output_dir={out_dir}",
    ]
    return Trainer(load_config(RECIPE, overrides))


def fixed_views(trainer: Trainer, batch: int) -> list[Tensor]:
    """One batch of real training views (the trainer's own augmentations), channels_last, made once."""
    views, _ = default_collate([trainer.train_set[i] for i in range(batch)])
    if trainer.cfg.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return [v.to(trainer.accelerator.device) for v in views]


def no_prototype_step(trainer: Trainer, views: list[Tensor]) -> float:
    """``Trainer.train_step`` without the prototype step, prototype scores and SSL loss.

    Same schedules, autocast, channels_last, clipping, optimizer and EMA as the real step; the
    loss is the negative cosine between student projection i and teacher projection 1 - i, whose
    gradient is dense in the projection, so the backward through head and backbone is the real one.

    Args:
        trainer: a built Trainer (its student, teacher and optimizer are used and updated).
        views: the 2 global views, each (B, C, H, W).

    Returns:
        The loss value.
    """
    cfg, acc, s = trainer.cfg, trainer.accelerator, trainer.step
    lr = cosine(s, trainer.total_steps, cfg.lr * cfg.batch_size / 256, cfg.min_lr, warmup=cfg.warmup_steps)
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    student, teacher = trainer.model, trainer.teacher
    with acc.autocast():
        with torch.no_grad():
            t = teacher.project(views[:2])  # (2B, D)
        z = student.project(views)  # (V·B, D)
        target = torch.cat(t.chunk(2)[::-1])  # teacher projection of the other view, (2B, D)
        loss = -F.cosine_similarity(z[: len(target)].float(), target.float(), dim=-1).mean()
    acc.backward(loss)
    if cfg.clip_grad:
        acc.clip_grad_norm_(trainer.student.parameters(), cfg.clip_grad)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    m = cosine(s, trainer.total_steps, cfg.teacher_momentum, 1.0)
    with torch.no_grad():
        torch._foreach_lerp_(list(teacher.parameters()), list(student.parameters()), 1.0 - m)
    return loss.item()


def lightly_dino_step(trainer: Trainer) -> Callable[[list[Tensor]], float]:
    """A training step after lightly's DINO example, on the trainer's backbone and head sizes.

    Args:
        trainer: supplies the architecture (backbone, head widths, K) and the device.

    Returns:
        A function of the views (the first two are the global ones) that runs one step and returns
        the loss.

    Raises:
        ImportError: when lightly is not installed.
    """
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    cfg, device = trainer.cfg, trainer.accelerator.device

    class DINO(nn.Module):  # as in lightly's examples/pytorch/dino.py
        def __init__(self, backbone: nn.Module, input_dim: int) -> None:
            super().__init__()
            self.student_backbone = backbone
            self.student_head = DINOProjectionHead(
                input_dim, cfg.hidden_dim, cfg.embed_dim, cfg.num_prototypes, freeze_last_layer=1
            )
            self.teacher_backbone = copy.deepcopy(backbone)
            self.teacher_head = DINOProjectionHead(
                input_dim, cfg.hidden_dim, cfg.embed_dim, cfg.num_prototypes
            )
            deactivate_requires_grad(self.teacher_backbone)
            deactivate_requires_grad(self.teacher_head)

        def forward(self, x: Tensor) -> Tensor:
            return self.student_head(self.student_backbone(x).flatten(start_dim=1))

        def forward_teacher(self, x: Tensor) -> Tensor:
            return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))

    backbone = copy.deepcopy(trainer.model.backbone)  # the same timm resnet18_small, num_classes=0
    model = DINO(backbone, trainer.model.num_features).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = DINOLoss(output_dim=cfg.num_prototypes, warmup_teacher_temp_epochs=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    epoch = 10  # past the teacher-temperature warm-up and the frozen last layer

    def step(views: list[Tensor]) -> float:
        update_momentum(model.student_backbone, model.teacher_backbone, m=0.996)
        update_momentum(model.student_head, model.teacher_head, m=0.996)
        with trainer.accelerator.autocast():  # the recipe's precision, as in carp_dec
            teacher_out = [model.forward_teacher(v) for v in views[:2]]
            student_out = [model.forward(v) for v in views]
            loss = criterion(teacher_out, student_out, epoch=epoch)
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=epoch)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    return step


def component_calls(trainer: Trainer, batch: int) -> dict[str, Callable[[], Any]]:
    """The GMM update and the CARP loss alone, at the shapes of one step of ``trainer``."""
    cfg, device = trainer.cfg, trainer.accelerator.device
    gmm = OnlineGMM(cfg.num_prototypes, cfg.embed_dim).to(device)  # a copy: the trainer's stays untouched
    h = F.normalize(torch.randn(2 * batch, cfg.embed_dim, device=device), dim=-1)  # 2 teacher views
    student = [torch.randn(batch, cfg.num_prototypes, device=device, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(batch, cfg.num_prototypes, device=device) for _ in range(2)]

    def carp_loss() -> None:
        trainer.criterion(student=student, teacher=teacher)["loss"].backward()

    return {"gmm_update": lambda: gmm.update(h, beta=1.0), "carp_loss": carp_loss}


def profile_step(trainer: Trainer, views: list[Tensor], top: int = 15) -> list[dict[str, Any]]:
    """torch.profiler over one carp_dec step: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step([views])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in events[:top]
    ]


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: target table, step times, components, profile if any."""
    s, r = record["settings"], record["results"]
    rows = [
        [
            name,
            f"≥ {target}",
            f"{r['ratios'][name]:.3f}",
            f"{r['best_round_ratios'][name]:.3f}",
            verdict(r["ratios"][name] >= target),
        ]
        for name, target in TARGETS.items()
        if name in r["ratios"]
    ]
    header = ["throughput ratio", "target", "median of paired rounds", "best round of each", ""]
    parts = [table(header, rows)]
    step_rows = [
        [name, v["median_ms"], f"{v['min_ms']} - {v['max_ms']}", v["img_per_s"]]
        for name, v in r["steps"].items()
    ]
    parts.append(table(["step", "median ms", "range ms", "images/s (median)"], step_rows))
    comp = r["components"]
    carp = r["steps"]["carp_dec"]["median_ms"]
    parts.append(
        table(
            ["component (alone, same shapes)", "median ms", "share of a carp_dec step"],
            [[name, v["median_ms"], f"{v['median_ms'] / carp:.1%}"] for name, v in comp.items()],
        )
    )
    if r.get("lightly_error"):
        parts.append(f"lightly could not be imported: `{r['lightly_error']}`.")
    if r.get("profile"):
        parts.append(
            "Profile of one carp_dec step (top operators by self CPU time):\n\n"
            + table(
                ["operator", "self CPU ms", "share", "calls"],
                [[p["op"], p["self_cpu_ms"], f"{p['share']:.1%}", p["calls"]] for p in r["profile"]],
            )
        )
    parts.append(
        f"K = {s['num_prototypes']}, batch {s['batch']}, {s['views']} global views of {s['img_size']} px, "
        f"{s['rounds']} timed rounds after {s['warmup']} warm-up rounds. "
        + run_note(record, COMMAND + (" --quick" if record["quick"] else ""))
    )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="batch 64, 2 rounds: a smoke test of a few seconds"
    )
    parser.add_argument("--batch", type=int, default=None, help="images per view (default 256, quick 64)")
    parser.add_argument("--num-prototypes", type=int, default=4096, help="K of carp_dec and of the DINO head")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10, quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds (default 2, quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile a carp_dec step even if targets pass")
    parser.add_argument("--main-job", action="store_true", help="time README's main job instead (see above)")
    parser.add_argument("--run-dir", default=None, help="main job's run folder (default: temporary)")
    parser.add_argument(
        "--out", default=None, help="where to write the JSON (default: results/<benchmark>.json)"
    )
    args = parser.parse_args()
    if args.main_job:
        main_job(args.out or str(RESULTS / "main_job.json"), args.run_dir)
        return
    args.out = args.out or str(RESULTS / "train.json")
    batch = args.batch or (64 if args.quick else 256)
    rounds = args.rounds or (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run("train", args.quick)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = build_trainer(args.num_prototypes, batch, out_dir)
        views = fixed_views(trainer, batch)
        calls: dict[str, Callable[[], Any]] = {
            "carp_dec": lambda: trainer.train_step([views]),
            "no_proto": lambda: no_prototype_step(trainer, views),
        }
        lightly_error = None
        try:
            lightly_step = lightly_dino_step(trainer)
            calls["lightly_dino"] = lambda: lightly_step(views)
        except ImportError as e:
            lightly_error = str(e)
            print(f"lightly could not be imported ({e}); timing without it")
        components = component_calls(trainer, batch)
        times = time_interleaved({**calls, **components}, rounds=rounds, warmup=warmup)

        images = batch * len(views)
        steps = {name: ms(times[name]) for name in calls}
        for v in steps.values():  # throughput at the median step time
            v["img_per_s"] = round(images / (v["median_ms"] / 1e3), 1)
        others = [name for name in ("no_proto", "lightly_dino") if name in calls]
        ratios = {f"carp_dec / {o}": round(paired_ratio(times[o], times["carp_dec"]), 4) for o in others}
        best_ratios = {f"carp_dec / {o}": round(min(times[o]) / min(times["carp_dec"]), 4) for o in others}
        missed = any(ratios[k] < t for k, t in TARGETS.items() if k in ratios)
        profile = profile_step(trainer, views) if (missed or args.profile) else None

    settings = {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "method": "carp_dec",
        "num_prototypes": args.num_prototypes,
        "block_size": trainer.cfg.block_size,
        "hidden_dim": trainer.cfg.hidden_dim,
        "batch": batch,
        "views": len(views),
        "img_size": trainer.cfg.img_size,
        "mixed_precision": trainer.cfg.mixed_precision,
        "channels_last": trainer.cfg.channels_last,
        "rounds": rounds,
        "warmup": warmup,
        "data_loading": "excluded: one fixed batch of real views made before timing",
    }
    results = {
        "ratios": ratios,
        "best_round_ratios": best_ratios,
        "targets": TARGETS,
        "steps": steps,
        "components": {name: ms(times[name]) for name in components},
        "raw_s": {name: [round(t, 4) for t in v] for name, v in times.items()},
        "lightly_error": lightly_error,
        "profile": profile,
    }
    record = run.write(args.out, settings, results=results)
    print(markdown(record))


if __name__ == "__main__":
    main()
