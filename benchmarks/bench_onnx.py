"""Eager PyTorch vs ONNX Runtime on this CPU: latency (median, p90) and throughput at batch 1 and 64.

Each model is the full-size zoo configuration (ProtoConfig defaults: 28 px, 1 channel, projection head
2048-2048-256, K = 1024), with random weights: speed does not depend on the values. Three backends run
the same normalised float32 batch through the public call of each API:

- ``eager``: ``model(x)`` in fp32 under ``torch.inference_mode()``, model in eval mode;
- ``eager_cl``: the same with the model and input in channels_last (often faster for CNNs on CPU);
- ``ort``: ``OnnxModel(x)`` on the graph written by ``export_onnx`` (ORT_ENABLE_ALL, as many intra-op
  threads as torch uses, ``intra_op_threads=``).

Calls are interleaved round-robin (eager, eager_cl, ort, eager, ...) so that load from other processes
hits every backend alike; the load average is recorded with the results. The speed-up compares ORT with
the faster eager variant.

    python benchmarks/bench_onnx.py [--model resnet18_small vit_tiny_patch4_28] [--threads 1 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from common import cpu_name

from protozoo.config import ProtoConfig
from protozoo.model import ProtoModel
from protozoo.onnx import OnnxModel, export_onnx

BATCHES = (1, 64)
BACKENDS = ("eager", "eager_cl", "ort")


def backends(model: ProtoModel, onnx_model: OnnxModel, batch: int) -> dict[str, Callable[[], Any]]:
    """Zero-argument callables, one per backend, each running one batch of random normalised images."""
    c = model.config
    x = torch.randn(batch, c.in_chans, c.img_size, c.img_size)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_np = x.numpy()

    def eager() -> Any:
        with torch.inference_mode():
            return model(x)

    def eager_cl() -> Any:
        with torch.inference_mode():
            return model_cl(x_cl)

    return {"eager": eager, "eager_cl": eager_cl, "ort": lambda: onnx_model(x_np)}


def time_interleaved(
    calls: dict[str, Callable[[], Any]], budget_s: float, min_rounds: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Round-robin the calls until the time budget is spent; seconds per call for each backend."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < budget_s:
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
        rounds += 1
    return times


def summarise(seconds: list[float], batch: int) -> dict[str, float]:
    """Median and p90 latency in ms and throughput (images/s at the median)."""
    median = statistics.median(seconds)
    return {
        "median_ms": round(median * 1e3, 3),
        "p90_ms": round(float(np.percentile(seconds, 90)) * 1e3, 3),
        "throughput_img_s": round(batch / median, 1),
        "calls": len(seconds),
    }


def run_model(architecture: str, budget_s: float, opset: int, threads: list[int]) -> list[dict[str, Any]]:
    """Export one full-size model and time the three backends at every thread count and batch size."""
    torch.manual_seed(0)
    model = ProtoModel(ProtoConfig(architecture=architecture)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        path = export_onnx(model, Path(folder) / "model.onnx", opset=opset)
        export_s = time.perf_counter() - t
        for n in threads:
            torch.set_num_threads(n)
            onnx_model = OnnxModel(path, providers=["CPUExecutionProvider"], intra_op_threads=n)
            for batch in BATCHES:
                calls = backends(model, onnx_model, batch)
                ref, out = calls["eager"](), calls["ort"]()
                max_diff = float(np.abs(out.features - ref.features.numpy()).max())
                times = time_interleaved(calls, budget_s, min_rounds=5)
                stats = {name: summarise(times[name], batch) for name in BACKENDS}
                best_eager = min(stats["eager"]["median_ms"], stats["eager_cl"]["median_ms"])
                ort_ms = stats["ort"]["median_ms"]
                rows.append(
                    {
                        "model": architecture,
                        "threads": n,
                        "batch": batch,
                        **stats,
                        "speedup_vs_eager": round(stats["eager"]["median_ms"] / ort_ms, 2),
                        "speedup_vs_best_eager": round(best_eager / ort_ms, 2),
                        "max_abs_diff_features": max_diff,
                        "export_s": round(export_s, 1),
                        "onnx_mb": round(path.stat().st_size / 2**20, 1),
                    }
                )
                print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict[str, Any]) -> str:
    """One markdown table row."""
    cells = [row["model"], str(row["threads"]), str(row["batch"])]
    for name in BACKENDS:
        s = row[name]
        cells.append(f"{s['median_ms']:.2f} / {s['p90_ms']:.2f} ({s['throughput_img_s']:.0f}/s)")
    cells += [f"{row['speedup_vs_eager']:.2f}x", f"{row['speedup_vs_best_eager']:.2f}x"]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| model | threads | batch | eager ms median / p90 (img/s) | eager channels_last | ONNX Runtime "
    "| ORT vs eager | ORT vs best eager |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["resnet18_small", "vit_tiny_patch4_28"],
        help="architectures to time (full-size zoo configuration of each)",
    )
    parser.add_argument(
        "--out", default="benchmarks/results/onnx.json", help="where to write the JSON results"
    )
    parser.add_argument(
        "--budget", type=float, default=6.0, help="seconds of timed rounds per model, thread count and batch"
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset of the exported graphs")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, torch.get_num_threads()}),
        help="intra-op thread counts to time, the same for both backends (default 1 and torch's default, "
        "the physical cores); 1 is the least sensitive to other processes on a shared machine",
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    print(HEADER, flush=True)
    rows = [row for arch in args.model for row in run_model(arch, args.budget, args.opset, args.threads)]
    result = {
        "benchmark": "eager PyTorch vs ONNX Runtime, fp32, interleaved",
        "machine": {
            "cpu": cpu_name(),
            "cores": len(os.sched_getaffinity(0)),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "settings": {
            "opset": args.opset,
            "budget_s": args.budget,
            "batches": list(BATCHES),
            "threads": args.threads,
        },
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average before {load_before}, after {os.getloadavg()}; wrote {out}")


if __name__ == "__main__":
    main()
