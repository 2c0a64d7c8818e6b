"""Cost of one OnlineGMM update (the prototype step) over K, d and B: time, share of a step, memory.

For every K in {1024, 4096, 16384, 65536}, d in {128, 256} and B in {256, 2048} (B = rows of h, the
teacher's embeddings of the global views; a batch of 256 with 2 views gives B = 512), one
``OnlineGMM(K, d).update(h)`` is timed and set against one ResNet-18 training step measured in the
same run: resnet18_small at 28 px, batch 256, 2 views, the recipe's precision, channels_last, teacher
forward, student forward and backward, AdamW and EMA, without the prototype step (the ``no_proto``
step of bench_train.py). The reference step is timed between the groups of K, so that it sees the
same load as the updates. Two regimes are timed: the first
update from the random initialisation, where the responsibilities γ are dense, and the following
ones (median of up to 3), where γ is nearly one-hot as in a settled run (a trained zoo model has
about 1.2 entries above 1e-9 per row) and the update takes its sparse path for the statistics.

Peak memory is measured in a child process whose glibc serves every allocation above 64 KiB with
its own mmap (``MALLOC_MMAP_THRESHOLD_=65536``), so that a freed tensor leaves the resident set at
once: the Linux high-water mark (VmHWM, reset through /proc/self/clear_refs before each update)
minus the resident set before the update is then the update's transient peak, here of the first
(dense, so the larger) update. The chunking table
repeats the largest case with several ``chunk_size`` values, ``chunk_size = K`` being no chunking. The
relocation table times one relocation check (dead and merged components moved, every
``gmm_split_every`` updates) for each K, by splitting and onto embeddings.

    python benchmarks/bench_gmm.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_train import build_trainer, fixed_views, no_prototype_step
from common import RESULTS, Run, run_note, table

from protozoo.prototypes import OnlineGMM

COMMAND = "python benchmarks/bench_gmm.py"
DEFAULT_CHUNK = 4096  # OnlineGMM's default chunk_size
CHECK_EVERY = 50  # the default recipe's gmm_split_every


def time_update(
    num_prototypes: int, dim: int, batch: int, max_repeats: int, chunk_size: int = DEFAULT_CHUNK
) -> tuple[float, list[float]]:
    """Seconds of the first update, then of up to ``max_repeats`` more (one when an update takes > 1 s)."""
    gmm = OnlineGMM(num_prototypes, dim, chunk_size=chunk_size)
    h = F.normalize(torch.randn(batch, dim), dim=1)
    t = time.perf_counter()
    gmm.update(h, beta=1.0)
    warm = time.perf_counter() - t
    times = []
    for _ in range(max_repeats if warm < 1.0 else 1):
        t = time.perf_counter()
        gmm.update(h, beta=1.0)
        times.append(time.perf_counter() - t)
    return warm, times


def time_relocation(num_prototypes: int, dim: int, batch: int, relocate: str) -> float:
    """Seconds of one relocation check (``OnlineGMM._relocate``) with about a quarter of the components
    dead and the merge check on (``merge_eps`` 0.025)."""
    gmm = OnlineGMM(num_prototypes, dim, relocate=relocate, merge_eps=0.025, split_every=1)
    h = F.normalize(torch.randn(batch, dim), dim=1)
    gmm.recent_mass.copy_(torch.rand(num_prototypes) * 4)  # "split" needs busy donors as well as dead ones
    t = time.perf_counter()
    gmm._relocate(h)
    return time.perf_counter() - t


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(configs: list[list[int]]) -> None:
    """Child process: for each (K, d, B, chunk_size), print the update's transient peak as a JSON line."""
    torch.manual_seed(0)
    OnlineGMM(64, 8).update(F.normalize(torch.randn(32, 8), dim=1))  # load the math libraries first
    for num_prototypes, dim, batch, chunk in configs:
        gmm = OnlineGMM(num_prototypes, dim, chunk_size=chunk)
        h = F.normalize(torch.randn(batch, dim), dim=1)
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        t = time.perf_counter()
        gmm.update(h)
        seconds = time.perf_counter() - t
        peak = _status_kb("VmHWM") - before
        state = sum(b.numel() * b.element_size() for b in gmm.buffers())
        print(
            json.dumps(
                {
                    "key": [num_prototypes, dim, batch, chunk],
                    "peak_mb": round(peak / 1024, 1),
                    "state_mb": round(state / 2**20, 1),
                    "seconds_mmap_malloc": round(seconds, 3),
                }
            ),
            flush=True,
        )
        del gmm, h


def measure_memory(configs: list[tuple[int, int, int, int]]) -> dict[tuple[int, ...], dict[str, Any]]:
    """Run ``memory_worker`` in a child process with per-allocation mmap; (K, d, B, chunk) -> record."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-worker", json.dumps(configs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {tuple(r.pop("key")): r for r in records}


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: the grid, chunking and relocation tables."""
    r = record["results"]
    step = r["resnet_step_ms"]
    grid = table(
        [
            "K",
            "d",
            "B",
            "ms per update, settled γ: median (min)",
            "share of a ResNet-18 step",
            "first update, dense γ: ms",
            "transient peak MB (first update)",
            "GMM state MB",
        ],
        [
            [
                row["K"],
                row["d"],
                row["B"],
                f"{row['ms']:.1f} ({row['min_ms']:.1f})",
                f"{row['ms'] / step:.1%}",
                f"{row['first_ms']:.0f}",
                row["peak_mb"],
                row["state_mb"],
            ]
            for row in r["grid"]
        ],
    )
    c = r["chunking"]
    chunks = table(
        [
            "chunk_size",
            "ms per update, settled γ",
            "first update, dense γ: ms",
            "transient peak MB",
            "B × chunk_size fp32 MB",
        ],
        [
            [
                f"{row['chunk_size']}" + (" (no chunking)" if row["chunk_size"] >= c["K"] else ""),
                f"{row['ms']:.0f}",
                f"{row['first_ms']:.0f}",
                row["peak_mb"],
                f"{c['B'] * min(row['chunk_size'], c['K']) * 4 / 2**20:.0f}",
            ]
            for row in c["rows"]
        ],
    )
    relocation = table(
        ["K", "d", "B", "relocate", "ms per check", f"per update at a check every {CHECK_EVERY} updates"],
        [
            [
                row["K"],
                row["d"],
                row["B"],
                row["relocate"],
                f"{row['ms']:.0f}",
                f"{row['ms'] / CHECK_EVERY:.2f} ms",
            ]
            for row in r.get("relocation", [])
        ],
    )
    return "\n\n".join(
        [
            grid,
            f"Reference ResNet-18 step (resnet18_small, 28 px, batch {r['resnet_batch']}, 2 views, "
            f"no prototype step): median {step:.0f} ms over {len(r['resnet_step_samples_ms'])} steps "
            f"spread over the run. Default chunk_size {DEFAULT_CHUNK}.",
            f"Chunking at K = {c['K']}, d = {c['d']}, B = {c['B']}:\n\n{chunks}",
            "One relocation check (`gmm_split_every`), a quarter of the components dead and the merge "
            f"check on (`gmm_merge_eps` 0.025):\n\n{relocation}",
            run_note(record, COMMAND + (" --quick" if record["quick"] else "")),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small grid and batch 32: a few seconds")
    parser.add_argument("--out", default=str(RESULTS / "gmm.json"), help="where to write the JSON")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker is not None:
        memory_worker(json.loads(args.memory_worker))
        return

    run = Run("gmm", args.quick)
    torch.manual_seed(0)
    ks: tuple[int, ...] = (1024, 4096) if args.quick else (1024, 4096, 16384, 65536)
    ds: tuple[int, ...] = (128,) if args.quick else (128, 256)
    bs: tuple[int, ...] = (256,) if args.quick else (256, 2048)
    resnet_batch, repeats = (32, 1) if args.quick else (256, 3)
    chunk_case: tuple[int, int, int] = (8192, 128, 256) if args.quick else (65536, 256, 2048)
    chunk_sizes: tuple[int, ...] = (4096, 8192) if args.quick else (1024, 4096, 65536)

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = build_trainer(1024, resnet_batch, out_dir)
        views = fixed_views(trainer, resnet_batch)

        def resnet_step() -> float:
            t = time.perf_counter()
            no_prototype_step(trainer, views)
            return time.perf_counter() - t

        resnet_step()  # warm-up
        step_s: list[float] = []
        grid: list[dict[str, Any]] = []
        for k in ks:
            step_s.append(resnet_step())
            for d, b in itertools.product(ds, bs):
                first, times = time_update(k, d, b, repeats)
                median_ms = statistics.median(times) * 1e3
                grid.append(
                    {
                        "K": k,
                        "d": d,
                        "B": b,
                        "ms": round(median_ms, 2),
                        "min_ms": round(min(times) * 1e3, 2),
                        "first_ms": round(first * 1e3, 2),
                    }
                )
                print(f"K={k} d={d} B={b}: {median_ms:.1f} ms", flush=True)
        relocation: list[dict[str, Any]] = []
        for k, relocate in itertools.product(ks, ("split", "embeddings")):
            seconds = time_relocation(k, ds[-1], bs[0], relocate)
            relocation.append(
                {"K": k, "d": ds[-1], "B": bs[0], "relocate": relocate, "ms": round(seconds * 1e3, 1)}
            )
            print(f"relocation K={k} {relocate}: {seconds * 1e3:.0f} ms", flush=True)
        chunk_rows: list[dict[str, Any]] = []
        for cs in chunk_sizes:
            first, (seconds,) = time_update(*chunk_case, max_repeats=1, chunk_size=cs)
            chunk_rows.append(
                {"chunk_size": cs, "ms": round(seconds * 1e3, 1), "first_ms": round(first * 1e3, 1)}
            )
            print(f"chunk_size={cs}: {seconds * 1e3:.0f} ms", flush=True)
        step_s.append(resnet_step())

    memory = measure_memory(
        [(r["K"], r["d"], r["B"], DEFAULT_CHUNK) for r in grid] + [(*chunk_case, cs) for cs in chunk_sizes]
    )
    for row in grid:
        row.update(memory[(row["K"], row["d"], row["B"], DEFAULT_CHUNK)])
    for row in chunk_rows:
        row.update(memory[(*chunk_case, row["chunk_size"])])
    step_ms = statistics.median(step_s) * 1e3
    for row in grid:
        row["share_of_step"] = round(row["ms"] / step_ms, 4)
    settings = {
        "K": list(ks),
        "d": list(ds),
        "B": list(bs),
        "chunk_size": DEFAULT_CHUNK,
        "max_repeats": repeats,
        "memory": "VmHWM - VmRSS around one update, child process with MALLOC_MMAP_THRESHOLD_=65536",
    }
    results = {
        "resnet_batch": resnet_batch,
        "resnet_step_ms": round(step_ms, 1),
        "resnet_step_samples_ms": [round(s * 1e3, 1) for s in step_s],
        "grid": grid,
        "chunking": {"K": chunk_case[0], "d": chunk_case[1], "B": chunk_case[2], "rows": chunk_rows},
        "relocation": relocation,
    }
    record = run.write(args.out, settings, results=results)
    print(markdown(record))


if __name__ == "__main__":
    main()
