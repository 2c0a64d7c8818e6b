"""Cold start: ``protozoo.load`` of a zoo model to its first features, in a fresh Python process.

Each measurement starts a new interpreter (``python -c ...``). The parent notes the wall clock just
before starting it and the child prints the wall clock at each milestone, so "start to ready" runs
from process start (interpreter start-up included) to the milestone: ``import protozoo`` done, or
the features of one image in hand after ``protozoo.load``. The whole process, exit included, is
timed too: interpreter shutdown after importing timm costs about a second here, which a user who
keeps the model does not wait for. Three commands run round-robin: an empty interpreter (the
floor), ``import protozoo`` alone, and the load to first features. The first round is reported
apart, as the only one that may read files from disk rather than from the page cache.

The model is the first zoo model when its weights are shipped or cached (no network is used:
HF_HUB_OFFLINE=1). When they are not, a stand-in of the same size is saved with
``save_pretrained`` into a temporary folder and loaded from there: resnet18_small with the zoo's
head (K = 1024, D = 256, hidden 512) in bfloat16, as the zoo ships; the table says which.

    python benchmarks/bench_load.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, Run, run_note, table, verdict

COMMAND = "python benchmarks/bench_load.py"
TARGET_S = 2.0
LOAD = "protozoo.load to first features"
CHILDREN = {
    "python -c pass": "pass",
    "import protozoo": "import json, time\nimport protozoo\nprint(json.dumps({'ready': time.time()}))",
    LOAD: """
import json, sys, time
t0 = time.time()
import protozoo
t1 = time.time()
import torch
model = protozoo.load(sys.argv[1])
t2 = time.time()
c = model.config
with torch.inference_mode():
    features = model(torch.randn(1, c.in_chans, c.img_size, c.img_size)).features
t3 = time.time()
print(json.dumps({"ready": t3, "import_s": t1 - t0, "load_s": t2 - t1, "first_forward_s": t3 - t2,
                  "features": list(features.shape)}))
""",
}


def model_to_load(folder: Path) -> tuple[str, str]:
    """(what to pass to protozoo.load, description): the first zoo model, or a saved stand-in."""
    import protozoo
    from protozoo.hub import resolve_folder

    name = protozoo.list_models()[0]
    try:
        resolve_folder(name, local_files_only=True)
        return name, f"zoo model {name} (shipped in the package or in the Hugging Face cache)"
    except (FileNotFoundError, OSError, ValueError):
        pass
    from protozoo.config import ProtoConfig
    from protozoo.model import ProtoModel

    config = ProtoConfig(architecture="resnet18_small", num_prototypes=1024, embed_dim=256, hidden_dim=512)
    path = ProtoModel(config).save_pretrained(folder / "resnet18-standin", dtype="bfloat16")
    return str(path), (
        f"stand-in: the weights of {name} are neither shipped nor cached, so a resnet18_small of the zoo's "
        "size (K = 1024, D = 256, hidden 512, bfloat16) saved with save_pretrained into a temporary folder"
    )


def run_child(code: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -c code *args`` in a fresh interpreter: start-to-ready and whole-process seconds."""
    started = time.time()
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    whole = time.perf_counter() - t
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    return {**report, "ready_s": report["ready"] - started if report else whole, "whole_s": whole}


def markdown(record: dict[str, Any]) -> str:
    """The docs section body: the target row, then the other timings."""
    r = record["results"]
    rows = [
        [
            name,
            f"{v['ready_median_s']:.2f}",
            f"{v['ready_first_s']:.2f}",
            f"{v['whole_median_s']:.2f}",
            f"≤ {TARGET_S:.0f} s" if name == LOAD else "",
            verdict(v["ready_median_s"] <= TARGET_S) if name == LOAD else "",
        ]
        for name, v in r["commands"].items()
    ]
    split = r["split_median_s"]
    header = [
        "fresh process",
        "start to ready, median s",
        "first round",
        "whole process with exit",
        "target",
        "",
    ]
    return "\n\n".join(
        [
            table(header, rows),
            f"Model: {r['model']}. Inside the load process (median): import protozoo "
            f"{split['import_s']:.2f} s, protozoo.load {split['load_s']:.2f} s, first forward of one image "
            f"{split['first_forward_s']:.2f} s. "
            + run_note(record, COMMAND + (" --quick" if record["quick"] else "")),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 6")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the three commands (default 6)")
    parser.add_argument("--out", default=str(RESULTS / "load.json"), help="where to write the JSON")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 6)
    run = Run("load", args.quick)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    names = list(CHILDREN)
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as folder:
        target, description = model_to_load(Path(folder))
        for r in range(rounds):
            for name in names[r % 3 :] + names[: r % 3]:
                reports[name].append(run_child(CHILDREN[name], [target] if name == LOAD else [], env))
            print(
                f"round {r}: " + ", ".join(f"{n} {reports[n][-1]['ready_s']:.2f} s" for n in names),
                flush=True,
            )
    commands = {
        name: {
            "ready_median_s": round(statistics.median(x["ready_s"] for x in v), 3),
            "ready_first_s": round(v[0]["ready_s"], 3),
            "whole_median_s": round(statistics.median(x["whole_s"] for x in v), 3),
            "ready_samples_s": [round(x["ready_s"], 3) for x in v],
            "whole_samples_s": [round(x["whole_s"], 3) for x in v],
        }
        for name, v in reports.items()
    }
    split = {
        k: round(statistics.median(x[k] for x in reports[LOAD]), 3)
        for k in ("import_s", "load_s", "first_forward_s")
    }
    settings = {"rounds": rounds, "target_s": TARGET_S, "env": "HF_HUB_OFFLINE=1"}
    results = {
        "model": description,
        "commands": commands,
        "split_median_s": split,
        "features_shape": reports[LOAD][0]["features"],
    }
    record = run.write(args.out, settings, results=results)
    print(markdown(record))


if __name__ == "__main__":
    main()
