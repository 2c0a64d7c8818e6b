"""Rerun every benchmark and rewrite its table in docs/benchmarks.md.

Each benchmark runs in its own fresh process (so that one's threads, memory and imports do not
touch the next), prints its table and writes ``benchmarks/results/<name>.json``. Then the part of
docs/benchmarks.md between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` is rewritten from each
JSON file; the prose around the markers is kept. A benchmark that failed, or that did not run
(bench_gpu.py without a CUDA device), leaves its section as it was.

``--quick`` runs every benchmark in its short mode, writes to ``benchmarks/results/quick/`` and
leaves the docs alone: a smoke test of all scripts in about a minute. The ONNX benchmark
(bench_onnx.py) is rerun too; its docs section is prose written around its table by hand, so its
table is printed and saved but not rewritten.

    python benchmarks/run_all.py [--quick] [--only train gmm ...] [--skip onnx ...] [--docs-only]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
HERE = Path(__file__).resolve().parent
# name -> (script, extra arguments of --quick, whether run_all rewrites its docs section)
BENCHMARKS: dict[str, tuple[str, list[str], bool]] = {
    "train": ("bench_train.py", ["--quick"], True),
    "gmm": ("bench_gmm.py", ["--quick"], True),
    "collapse": ("bench_collapse.py", ["--quick"], True),
    "load": ("bench_load.py", ["--quick"], True),
    "precision": ("bench_precision.py", ["--quick"], True),
    "gpu": ("bench_gpu.py", ["--quick"], True),
    "onnx": ("bench_onnx.py", ["--budget", "0.5", "--threads", "1", "--model", "resnet18_small"], False),
}


def run(name: str, quick: bool) -> bool:
    """Run one benchmark script in a fresh process; True when it exited 0."""
    script, quick_args, _ = BENCHMARKS[name]
    out = (RESULTS / "quick" if quick else RESULTS) / f"{name}.json"
    command = [sys.executable, str(HERE / script), *(quick_args if quick else []), "--out", str(out)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    t = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT).returncode
    print(f"=== {name}: exit {code} after {time.perf_counter() - t:.0f} s", flush=True)
    return code == 0


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``<!-- begin name -->`` and ``<!-- end name -->`` set to ``body``.

    Raises:
        ValueError: when the markers are missing, so that nothing is silently appended.
    """
    pattern = re.compile(rf"(<!-- begin {name} -->\n).*?(\n<!-- end {name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(
            f"{DOCS} has no '<!-- begin {name} -->' ... '<!-- end {name} -->' markers; add them where "
            f"the {name} table belongs"
        )
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def rewrite_docs(names: list[str]) -> None:
    """Rewrite the docs section of each named benchmark from its results JSON, when there is one."""
    text = DOCS.read_text()
    for name in names:
        script, _, in_docs = BENCHMARKS[name]
        path = RESULTS / f"{name}.json"
        if not in_docs or not path.exists():
            continue
        module = importlib.import_module(Path(script).stem)
        text = replace_section(text, name, module.markdown(json.loads(path.read_text())))
        print(f"docs: rewrote the {name} section from {path.relative_to(ROOT)}")
    DOCS.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, results/quick/, docs untouched")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run just these")
    parser.add_argument("--skip", nargs="+", choices=list(BENCHMARKS), default=[], help="do not run these")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the docs from the saved JSON")
    args = parser.parse_args()
    names = [n for n in (args.only or list(BENCHMARKS)) if n not in args.skip]
    failed = []
    if not args.docs_only:
        failed = [name for name in names if not run(name, args.quick)]
    if not args.quick:
        rewrite_docs([n for n in names if n not in failed])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
