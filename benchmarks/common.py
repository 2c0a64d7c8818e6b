"""What the benchmark scripts share: machine record, interleaved timing, JSON results, markdown tables.

The machine is shared and noisy, so every comparison is timed round-robin (A B C, B C A, C A B, ...)
after warm-up, and reported as the median over rounds of the per-round ratio: a burst of load from
another process then slows both sides of a ratio alike. Every result file records the load average
at the start and the end of its run so that a reader can judge the noise.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's train/, which the wheel installs only as protozoo.train
RESULTS = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(v, 2) for v in os.getloadavg()]


class Run:
    """One benchmark run: its settings, the machine and load at start, and the JSON it writes.

    Args:
        name: benchmark name; the default output is ``benchmarks/results/<name>.json``.
        quick: whether this is a short ``--quick`` run (recorded, and shown in the docs).
    """

    def __init__(self, name: str, quick: bool) -> None:
        self.name, self.quick = name, quick
        self.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.load_start = load_average()
        self.t0 = time.perf_counter()

    def write(self, out: str | Path, settings: dict[str, Any], **results: Any) -> dict[str, Any]:
        """Write the result JSON (settings, machine, load at start and end, results) and return it."""
        record = {
            "benchmark": self.name,
            "quick": self.quick,
            "started": self.started,
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "machine": {
                "cpu": cpu_name(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cores": len(os.sched_getaffinity(0)),
                "torch_threads": torch.get_num_threads(),
                "load_average_start": self.load_start,
                "load_average_end": load_average(),
            },
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            "settings": settings,
            **results,
        }
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(
            f"load average start {self.load_start}, end {record['machine']['load_average_end']}; wrote {path}"
        )
        return record


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Time zero-argument calls round-robin, rotating the order every round.

    Args:
        calls: name -> call; each call is one unit of work (one training step, one update).
        rounds: timed rounds; every call runs once per round.
        warmup: untimed rounds first (allocator, oneDNN kernels and optimizer state warm up).
        sync: called before reading the clock (``torch.cuda.synchronize`` on a GPU).

    Returns:
        name -> seconds of each timed call, in round order, so that entry r of two names comes
        from the same round.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[r] / denominator[r] (both timed in the same round)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def ms(seconds: list[float]) -> dict[str, float]:
    """Median, min and max of a list of durations, in milliseconds."""
    return {
        "median_ms": round(statistics.median(seconds) * 1e3, 2),
        "min_ms": round(min(seconds) * 1e3, 2),
        "max_ms": round(max(seconds) * 1e3, 2),
        "n": len(seconds),
    }


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """Pass/miss cell of a target table."""
    return "pass" if ok else "**miss**"


def run_note(record: dict[str, Any], command: str) -> str:
    """The line under each docs table: command, date, load, threads, run length."""
    m = record["machine"]
    quick = " (quick run)" if record["quick"] else ""
    capability = f" ({m['cpu_capability']})" if "cpu_capability" in m else ""
    return (
        f"`{command}`{quick}: {record['started'][:10]}, {m['cpu']}{capability}, {m['cores']} cores, torch "
        f"{record['versions']['torch']} with {m['torch_threads']} threads, load average "
        f"{m['load_average_start'][0]} at start and {m['load_average_end'][0]} at end, "
        f"{record['wall_s']:.0f} s."
    )


def evaluations(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A run's metrics.jsonl: (its val evaluation lines in step order, its final test line or {})."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    evals = [r for r in lines if "unique" in r and not r.get("final")]
    return evals, next((r for r in lines if r.get("final")), {})


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
