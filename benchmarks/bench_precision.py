"""Training step time in fp32 and under bf16 autocast, and what ``mixed_precision: auto`` picks here.

The real ``Trainer.train_step`` of the zoo recipe (train/configs/dp-resnet18-fmnist.yaml: resnet18_small,
512-wide head, K = 1024 decoupled prototypes, batch 64, 2 global 28 px views; teacher forward, GMM
update, student forward, CARP loss, backward, clipping, AdamW, EMA) on one fixed batch of real views,
timed interleaved in fp32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (what Accelerate's
``mixed_precision="bf16"`` enables), each with and without channels_last. CPUs with AVX512-BF16 or AMX
compute bf16 in hardware; elsewhere (AVX2-only CPUs) it is emulated, and ``mixed_precision: auto``
(train/engine.py ``resolve_precision``) falls back to fp32.

    python benchmarks/bench_precision.py [--quick] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from bench_train import fixed_views
from common import RESULTS, ROOT, Run, ms, paired_ratio, run_note, table, time_interleaved

from train.config import load_config
from train.engine import Trainer, resolve_precision

RECIPE = ROOT / "train" / "configs" / "dp-resnet18-fmnist.yaml"
COMMAND = "python benchmarks/bench_precision.py"
BASE = "fp32, channels_last"  # the setting every other step is compared with


def make_step(bf16: bool, channels_last: bool, batch: int, out_dir: str) -> Callable[[], dict[str, float]]:
    """One real ``Trainer.train_step`` of the zoo recipe at one setting, on a fixed batch of real views.

    The Trainer's Accelerator runs fp32 (``mixed_precision=no``) and bf16 comes from an outer
    ``torch.autocast``, which is what Accelerate's ``mixed_precision="bf16"`` turns on, so that all four
    settings run in one process.
    """
    overrides = ["mixed_precision=no", f"channels_last={channels_last}", f"batch_size={batch}"]
    trainer = Trainer(load_config(RECIPE, [*overrides, "eval_bank_size=64", f"output_dir={out_dir}"]))
    views = fixed_views(trainer, batch)

    def step() -> dict[str, float]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return trainer.train_step([views])

    return step


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: the steps' table and the hardware line."""
    rows = [
        [name, f"{v['median_ms']:.0f}", f"{v['vs_fp32_channels_last']:.2f}"]
        for name, v in record["steps"].items()
    ]
    h = record["hardware"]
    hardware = (
        f"AVX512-BF16 {'yes' if h['avx512_bf16'] else 'no'}, AMX {'yes' if h['amx'] else 'no'}, torch's CPU "
        f"capability {record['machine']['cpu_capability']}: `mixed_precision: auto` runs "
        f"`{h['auto_resolves_to']}` here."
    )
    command = COMMAND + (" --quick" if record["quick"] else "")
    return "\n\n".join(
        [
            table(["setting", "ms / step (median)", f"time / time of {BASE}"], rows),
            hardware,
            run_note(record, command),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batch 16, 1 round: a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS / "precision.json"), help="where to write the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, rounds = (16, args.rounds or 1) if args.quick else (64, args.rounds or 3)
    run = Run("precision", args.quick)
    settings = {(bf16, cl): f"{'bf16' if bf16 else 'fp32'}{', channels_last' if cl else ''}"
                for bf16 in (False, True) for cl in (True, False)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        calls = {name: make_step(*key, batch, f"{tmp}/{i}") for i, (key, name) in enumerate(settings.items())}
        times = time_interleaved(calls, rounds)
    hardware = {
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx": torch.cpu._is_amx_tile_supported(),
        "auto_resolves_to": resolve_precision("auto"),
    }
    steps = {
        name: {**ms(t), "vs_fp32_channels_last": round(paired_ratio(t, times[BASE]), 2)}
        for name, t in times.items()
    }
    record = run.write(
        args.out,
        {"recipe": str(RECIPE.relative_to(ROOT)), "batch": batch, "views": 2, "rounds": rounds},
        hardware=hardware,
        steps=steps,
    )
    print(markdown(record))


if __name__ == "__main__":
    main()
