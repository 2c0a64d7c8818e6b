"""Paper scale on one CUDA GPU: ResNet-50, 224 px, K = 65 536, bf16; what the prototype machinery costs.

The same comparison as bench_train.py at the scale of the paper's ImageNet runs: the real
``Trainer.train_step`` of the recipe train/configs/imagenet-resnet50.yaml (``carp_dec``, timm
``resnet50``, 3 channels, 224 px, head 2048-2048-2048-256 with BN, K = 65 536 prototypes in blocks
of 512, LARS, bf16 autocast, channels_last) with its 2 global views only (no local crops), against
the same step without the prototype step, prototype scores and loss (``no_proto``, see
bench_train.py), interleaved on one fixed batch of random images already on the GPU (speed does
not depend on the pixel values; data loading is excluded). The GMM update and the CARP loss are
also timed alone at the step's shapes: the GMM overhead fraction is the update's time over the
carp_dec step's.

The batch is the largest of 1024, 768, 512, 384, 256, 128, 64 images per view whose carp_dec and
no_proto steps run with a peak below 92 % of the GPU memory. The Trainer is built on a temporary
image folder of tiny PNG files (it needs a dataset; none of it is read while timing). The run
keeps within about 9 minutes: the number of rounds is cut to fit. Without a CUDA device it prints
"no CUDA device" and exits 0.

    python benchmarks/bench_gpu.py [--quick] [--batch N] [--rounds 10]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_train import component_calls, no_prototype_step
from common import RESULTS, ROOT, Run, ms, paired_ratio, run_note, table, time_interleaved, verdict
from PIL import Image

from train.config import load_config
from train.engine import Trainer

COMMAND = "python benchmarks/bench_gpu.py"
RECIPE = ROOT / "train" / "configs" / "imagenet-resnet50.yaml"
BATCHES = (1024, 768, 512, 384, 256, 128, 64)
MEMORY_CAP = 0.92  # largest batch whose peak stays under this share of the GPU memory
BUDGET_S = 540.0  # the whole run, so that it ends within 10 minutes
TARGET = 0.95  # carp_dec throughput / no_proto throughput, as on the CPU


def image_folder(root: Path, count: int) -> Path:
    """A one-class ImageFolder of ``count`` 8x8 PNG files, just enough for the Trainer to build."""
    folder = root / "images" / "noise"
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (8, 8), color=(i % 256, 0, 0)).save(folder / f"{i:05d}.png")
    return root / "images"


def build_trainer(data: Path, out_dir: Path, batch: int) -> Trainer:
    """The paper-scale recipe (imagenet-resnet50.yaml) with 2 global views on a stand-in image folder."""
    overrides = [
        f"dataset=imagefolder:{data}",
        "num_local_crops=0",  # the 2 global views of the CPU benchmark
        f"batch_size={batch}",
        "eval_bank_size=64",
        "num_workers=0",
        "max_steps=100000",
        f"output_dir={out_dir}",
    ]
    return Trainer(load_config(RECIPE, overrides))


def random_views(trainer: Trainer, batch: int) -> list[torch.Tensor]:
    """Two global views of random images, on the GPU, channels_last."""
    shape = (batch, trainer.cfg.in_chans, trainer.cfg.img_size, trainer.cfg.img_size)
    device = trainer.accelerator.device
    return [torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last) for _ in range(2)]


def fits(trainer: Trainer, batch: int) -> tuple[bool, float, float]:
    """Whether both steps run at ``batch`` under the memory cap; (fits, peak share, seconds of a round)."""
    torch.cuda.reset_peak_memory_stats()
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        views = random_views(trainer, batch)
        trainer.train_step([views])
        no_prototype_step(trainer, views)
        torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.train_step([views])
        no_prototype_step(trainer, views)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        ok = True
    except torch.OutOfMemoryError:
        ok, seconds = False, 0.0
    trainer.optimizer.zero_grad(set_to_none=True)
    views = []
    gc.collect()
    torch.cuda.empty_cache()
    share = torch.cuda.max_memory_allocated() / total
    return ok and share < MEMORY_CAP, share, seconds


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: target table, step times and components."""
    s, r = record["settings"], record["results"]
    ratio = r["ratio"]
    carp = r["steps"]["carp_dec"]["median_ms"]
    parts = [
        table(
            ["throughput ratio", "target", "measured (median of paired rounds)", ""],
            [["carp_dec / no_proto", f"≥ {TARGET}", f"{ratio:.3f}", verdict(ratio >= TARGET)]],
        ),
        table(
            ["step", "median ms", "range ms", "images/s (median)"],
            [
                [name, v["median_ms"], f"{v['min_ms']} - {v['max_ms']}", v["img_per_s"]]
                for name, v in r["steps"].items()
            ],
        ),
        table(
            ["component (alone, same shapes)", "median ms", "share of a carp_dec step"],
            [[name, v["median_ms"], f"{v['median_ms'] / carp:.1%}"] for name, v in r["components"].items()],
        ),
        f"GMM overhead fraction {r['gmm_fraction']:.1%}. {s['gpu']}, batch {s['batch']} per view "
        f"(peak {s['peak_memory_share']:.0%} of GPU memory), K = {s['num_prototypes']}, blocks of "
        f"{s['block_size']}, {s['rounds']} rounds. "
        + run_note(record, COMMAND + (" --quick" if record["quick"] else "")),
    ]
    return "\n\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batch 64, 2 rounds, no batch search")
    parser.add_argument(
        "--batch", type=int, default=None, help="images per view (default: the largest that fits)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10, quick 2)")
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"), help="where to write the JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    start = time.perf_counter()
    run = Run("gpu", args.quick)
    torch.manual_seed(0)
    candidates = [args.batch] if args.batch else ([64] if args.quick else list(BATCHES))
    rounds = args.rounds or (2 if args.quick else 10)
    with tempfile.TemporaryDirectory() as tmp:
        data = image_folder(Path(tmp), max(candidates))
        trainer = build_trainer(data, Path(tmp) / "run", max(candidates))
        batch, share, round_s = 0, 0.0, 0.0
        for b in candidates:
            ok, share, round_s = fits(trainer, b)
            print(
                f"batch {b}: {'fits' if ok else 'does not fit'} (peak {share:.0%} of GPU memory)", flush=True
            )
            if ok:
                batch = b
                break
        if batch == 0:
            print(f"no batch of {candidates} fits", file=sys.stderr)
            return 1
        views = random_views(trainer, batch)
        calls: dict[str, Callable[[], Any]] = {
            "carp_dec": lambda: trainer.train_step([views]),
            "no_proto": lambda: no_prototype_step(trainer, views),
        }
        components = component_calls(trainer, batch)
        left = BUDGET_S - (time.perf_counter() - start)
        rounds = max(2, min(rounds, int(left / (1.3 * round_s + 1e-9)) - 1))
        times = time_interleaved({**calls, **components}, rounds, warmup=1, sync=torch.cuda.synchronize)
        peak_share = torch.cuda.max_memory_allocated() / torch.cuda.get_device_properties(0).total_memory

    steps = {name: ms(times[name]) for name in calls}
    for v in steps.values():
        v["img_per_s"] = round(2 * batch / (v["median_ms"] / 1e3), 1)
    comps = {name: ms(times[name]) for name in components}
    settings = {
        "gpu": torch.cuda.get_device_name(0),
        "recipe": str(RECIPE.relative_to(ROOT)),
        "backbone": trainer.cfg.backbone,
        "img_size": trainer.cfg.img_size,
        "optimizer": trainer.cfg.optimizer,
        "num_prototypes": trainer.cfg.num_prototypes,
        "block_size": trainer.cfg.block_size,
        "hidden_dim": trainer.cfg.hidden_dim,
        "batch": batch,
        "views": 2,
        "mixed_precision": trainer.accelerator.mixed_precision,  # what "auto" resolved to
        "channels_last": trainer.cfg.channels_last,
        "rounds": rounds,
        "peak_memory_share": round(max(share, peak_share), 3),
        "data_loading": "excluded: one fixed batch of random images on the GPU",
    }
    results = {
        "ratio": round(paired_ratio(times["no_proto"], times["carp_dec"]), 4),
        "target": TARGET,
        "gmm_fraction": round(comps["gmm_update"]["median_ms"] / steps["carp_dec"]["median_ms"], 4),
        "steps": steps,
        "components": comps,
        "raw_s": {name: [round(t, 4) for t in v] for name, v in times.items()},
    }
    record = run.write(args.out, settings, results=results)
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
