"""End to end in headless Chromium: upload an image, see its prototypes rendered, take a screenshot.

PROTOZOO_SAVE_SCREENSHOT=1 also writes the screenshot to docs/figures/demo.png; set it to a zoo name or
model folder instead (PROTOZOO_SAVE_SCREENSHOT=dp-resnet18-fmnist) to show that model rather than the tiny
random one.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver", allow_module_level=True
    )
pytest.importorskip("gradio")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install playwright"
)

from protozoo import ProtoConfig, ProtoModel  # noqa: E402
from protozoo.demo import launch  # noqa: E402
from protozoo.fashion_mnist import load_fashion_mnist  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
FLAGS = [  # headless Chromium as root in a container, with nothing reaching out to the network
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "demo.png"
SAVE = os.environ.get("PROTOZOO_SAVE_SCREENSHOT", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upload_shows_prototypes(tmp_path: Path) -> None:
    shown, reference = (SAVE, 2000) if SAVE not in ("", "1") else (None, 300)
    if shown is None:
        torch.manual_seed(0)
        tiny = ProtoModel(ProtoConfig(num_prototypes=64, embed_dim=16, hidden_dim=32)).eval()
        shown = str(tiny.save_pretrained(tmp_path / "model"))
    images, _ = load_fashion_mnist("train")
    upload = tmp_path / "ankle-boot.png"
    Image.fromarray(images[0].numpy()).save(upload)
    demo = launch(
        shown, port=free_port(), reference_size=reference, cache_dir=tmp_path / "cache", block=False
    )
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(demo.local_url, timeout=60_000)
            file_input = page.locator("#input-image input[type=file]")
            file_input.wait_for(state="attached", timeout=60_000)
            file_input.set_input_files(str(upload))
            sync_api.expect(page.locator("#neighbours img")).to_have_count(8, timeout=30_000)
            sync_api.expect(page.locator("#top-prototypes")).to_contain_text("prototype", timeout=30_000)
            page.wait_for_function(  # the strips decoded, not just an <img> element in place
                "() => [...document.querySelectorAll('#prototype-strips img')]"
                ".some(img => img.complete && img.naturalHeight > 5 * 112)",  # top-5 by default
                timeout=30_000,
            )
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert Image.open(shot).size[0] >= 1400
    if SAVE:
        DOCS_FIGURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_FIGURE)
