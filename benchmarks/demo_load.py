"""Load test of the public demo: many clients at once, valid and bad uploads, model switches, refused loads.

The demo runs in its own process on 127.0.0.1 in public mode (``launch(public=True, allow_local=True)``),
serving the two zoo models and two small local models, so that switching among the four goes past the
in-memory LRU (MAX_SESSIONS = 3) and models are dropped and reloaded. After one warm-up load of each
model (reference sets of ``--reference`` images, 1000 by default against the demo's 5000, to keep the
warm-up short; an /assign call encodes one image whatever the size), ``--clients`` threads, each with
its own gradio_client connection, send calls for ``--seconds`` seconds, each drawn at random:

- a valid upload to /assign (a Fashion-MNIST image, PNG or JPEG, sometimes 2000 px wide);
- a bad upload to /assign: text, an empty file, a truncated PNG, a 45-megapixel PNG, a PNG header that
  claims 30000 x 30000 pixels, or a 24 MB file over the 20 MB upload limit (posted straight to gradio's
  upload route, since gradio_client refuses it before sending);
- a model switch (/load_model of another of the four models);
- a refused load (/load_model or /compare of a path such as /etc or ../../etc/passwd, or a Hub id that
  is not allowed).

Every answer is classified: answered as intended (a result, or the intended refusal for a bad upload or
a refused load), or an error of any other kind (a wrong message, a dropped connection, a time-out),
which must not happen. It reports p50 / p95 latency of the valid /assign calls, the server's resident
memory after warm-up and at the end (and its peak), and whether it still answers a valid call after.

    python benchmarks/demo_load.py [--seconds 60] [--clients 20] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, Run, table
from PIL import Image

COMMAND = "python benchmarks/demo_load.py"
TIMEOUT = 120.0  # seconds a client waits for any one request
WEIGHTS = {"valid": 0.5, "bad": 0.2, "switch": 0.15, "refused": 0.15}
REFUSED = ["/etc", "../../etc/passwd", "/nonexistent/model", "/root/.cache", "org/not-allowed", "~"]
BAD = {  # kind -> the message the intended refusal contains
    "text": "is not an image this demo can read",
    "empty": "is not an image this demo can read",
    "truncated": "could not be decoded",
    "huge": "megapixels; the demo accepts up to",
    "bomb": "is far too large to decode",  # PIL refuses the claimed size before decoding
    "oversize": "maximum allowed size",  # sent straight to the upload route: gradio_client checks first
}
SERVER = """
import logging, sys
from protozoo.demo import launch
logging.basicConfig(level=logging.WARNING)
launch(sys.argv[1], port=int(sys.argv[2]), host="127.0.0.1", cache_dir=sys.argv[3], public=True,
       allow_local=True, reference_size=int(sys.argv[4]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: round(int(fields[f].split()[0]) / 1024, 1) for k, f in (("now", "VmRSS"), ("peak", "VmHWM"))}


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit gray pixels, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def write_inputs(folder: Path) -> dict[str, list[Path]]:
    """The upload files: valid images, and one file per kind of bad upload."""
    from protozoo.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist("train")
    valid = []
    for i in range(6):
        image = Image.fromarray(images[i].numpy())
        path = folder / f"valid-{i}.{'png' if i % 2 else 'jpg'}"
        (image.resize((2000, 2000)) if i == 5 else image).save(path)
        valid.append(path)
    full = io.BytesIO()
    Image.fromarray(images[0].numpy()).resize((300, 300)).save(full, "PNG")
    bad = {
        "text": b"not an image at all",
        "empty": b"",
        "truncated": full.getvalue()[:400],
        "bomb": png_claiming(30000, 30000),
        "oversize": os.urandom(24 * 1024 * 1024),
    }
    paths = {}
    for kind, data in bad.items():
        paths[kind] = folder / f"{kind}.png"
        paths[kind].write_bytes(data)
    paths["huge"] = folder / "huge.png"
    Image.new("L", (9000, 5000)).save(paths["huge"])
    return {"valid": valid, **{k: [p] for k, p in paths.items()}}


def write_models(folder: Path) -> list[str]:
    """Two small local models besides the zoo's (K = 256, D = 64), so that switches pass the LRU."""
    from protozoo import ProtoConfig, ProtoModel

    names = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = ProtoModel(ProtoConfig(num_prototypes=256, embed_dim=64, hidden_dim=128))
        names.append(str(model.save_pretrained(folder / f"local-{seed}").resolve()))
    return names


class Client:
    """One visitor: a gradio_client connection that draws calls at random and classifies their answers."""

    def __init__(self, url: str, seed: int, inputs: dict[str, list[Path]], models: list[str]) -> None:
        from gradio_client import Client as GradioClient

        # a browser waits for an upload as long as it takes; gradio_client's httpx calls give up after 5 s
        self.url = url
        self.client = GradioClient(
            url, verbose=False, download_files=False, httpx_kwargs={"timeout": TIMEOUT}
        )
        self.rng, self.inputs, self.models = random.Random(seed), inputs, models
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.latency: list[float] = []

    def call(self, *args: Any, api_name: str) -> Any:
        return self.client.submit(*args, api_name=api_name).result(timeout=3 * TIMEOUT)

    def upload_raw(self, path: Path) -> None:
        """POST a file to gradio's upload route as a browser would; raise with the answer if refused."""
        import httpx

        with open(path, "rb") as f:
            r = httpx.post(f"{self.url}gradio_api/upload", files=[("files", (path.name, f))], timeout=TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text}")

    def one(self) -> None:
        from gradio_client import handle_file
        from gradio_client.exceptions import AppError

        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        expected = None
        try:
            if kind == "valid":
                path = self.rng.choice(self.inputs["valid"])
                start = time.perf_counter()
                _, label, _, neighbours = self.call(handle_file(path), 5, "auto", api_name="/assign")
                self.latency.append(time.perf_counter() - start)
                assert len(label["confidences"]) == 5 and len(neighbours) > 0, "incomplete answer"
            elif kind == "bad":
                what = self.rng.choice(list(BAD))
                kind, expected = f"bad:{what}", BAD[what]
                if what == "oversize":
                    self.upload_raw(self.inputs[what][0])
                else:
                    self.call(handle_file(self.inputs[what][0]), 5, "auto", api_name="/assign")
            elif kind == "switch":
                name = self.rng.choice(self.models)
                status = self.call(name, api_name="/load_model")[0]
                assert name in status, f"loaded something else: {status}"
            else:
                name, expected = self.rng.choice(REFUSED), "is not a model this demo serves"
                self.call(name, api_name=self.rng.choice(["/load_model", "/compare"]))
            if expected is not None:
                raise AssertionError(f"{kind} was not refused")
            self.outcomes[kind] += 1
        except AppError as e:
            if expected is not None and expected in str(e):
                self.outcomes[f"{kind} (refused)"] += 1
            else:
                self.errors.append(f"{kind}: AppError: {e}"[:300])
        except Exception as e:  # a dropped connection, a time-out, a wrong answer: all count against
            if expected is not None and expected in str(e):
                self.outcomes[f"{kind} (refused)"] += 1
            else:
                self.errors.append(f"{kind}: {type(e).__name__}: {e}"[:300])

    def run(self, until: float) -> None:
        while time.monotonic() < until:
            self.one()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--reference", type=int, default=1000, help="reference set size (demo default 5000)")
    parser.add_argument("--quick", action="store_true", help="10 s with 4 clients, into results/quick/")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.clients = 10.0, 4
    out = args.out or RESULTS / ("quick" if args.quick else "") / "demo_load.json"
    run = Run("demo_load", args.quick)

    from gradio_client import Client as GradioClient
    from gradio_client import handle_file

    from protozoo.registry import list_models

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs, models = write_inputs(root), list_models() + write_models(root)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, models[0], str(port), str(root / "cache"), str(args.reference)],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "server.log", "w"),  # noqa: SIM115 (closed with the folder)
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 3600  # start-up and reference encoding on busy shared cores
            while True:
                try:
                    warm = GradioClient(url, verbose=False, download_files=False)
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((root / "server.log").read_text()[-3000:]) from None
                    time.sleep(2)
            for name in models:  # encode every reference set once, outside the timed part
                warm.predict(name, api_name="/load_model")
            rss_start = rss_mb(server.pid)
            clients = [Client(url, seed, inputs, models) for seed in range(args.clients)]
            until = time.monotonic() + args.seconds
            threads = [threading.Thread(target=c.run, args=(until,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rss_end = rss_mb(server.pid)
            try:
                after = Client(url, 1000, inputs, models)
                _, label, _, _ = after.call(handle_file(inputs["valid"][0]), 5, "auto", api_name="/assign")
                answers_after = len(label["confidences"]) == 5
            except Exception as e:
                print(f"no answer after the load: {type(e).__name__}: {e}")
                answers_after = False
        finally:
            server.terminate()
            server.wait(timeout=60)
    outcomes = sum((c.outcomes for c in clients), Counter())
    errors = [e for c in clients for e in c.errors]
    latency = sorted(t for c in clients for t in c.latency)
    p50, p95 = (latency[int(q * (len(latency) - 1))] for q in (0.5, 0.95))
    refused = sum(n for k, n in outcomes.items() if k.endswith("(refused)"))
    results = {
        "calls": sum(outcomes.values()) + len(errors),
        "answered": sum(outcomes.values()),
        "intended_refusals": refused,
        "other_errors": len(errors),
        "outcomes": dict(sorted(outcomes.items())),
        "errors": errors,
        "assign_latency_s": {"p50": round(p50, 3), "p95": round(p95, 3), "n": len(latency)},
        "assign_latency_mean_s": round(statistics.mean(latency), 3),
        "server_rss_mb": {"after_warmup": rss_start["now"], "end": rss_end["now"], "peak": rss_end["peak"]},
        "answers_after": answers_after,
    }
    settings = {
        "seconds": args.seconds,
        "clients": args.clients,
        "reference_size": args.reference,
        "models": len(models),
        "weights": WEIGHTS,
    }
    run.write(out, settings, **results)
    print(
        table(
            [
                "clients x s",
                "calls",
                "answered",
                "intended refusals",
                "other errors",
                "assign p50 / p95 s",
                "server RSS MB (after warm-up → end, peak)",
                "answers after",
            ],  # fmt: skip
            [
                [
                    f"{args.clients} x {args.seconds:.0f}",
                    results["calls"],
                    results["answered"],
                    refused,
                    len(errors),
                    f"{p50:.2f} / {p95:.2f}",
                    f"{rss_start['now']:.0f} → {rss_end['now']:.0f}, {rss_end['peak']:.0f}",
                    "yes" if answers_after else "**no**",
                ]
            ],
        )
    )
    print(table(["call", "count"], [[k, n] for k, n in sorted(outcomes.items())]))
    for e in errors[:20]:
        print("error:", e)


if __name__ == "__main__":
    main()
