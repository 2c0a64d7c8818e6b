"""Hugging Face Spaces entry point of the protozoo demo; locally: ``python app/app.py``.

Everything is set from the environment, so a Space needs no code change:

- ``PROTOZOO_DEMO_MODEL``: zoo name, Hub id "org/name" or model folder (default: the first zoo model);
- ``PROTOZOO_DEMO_BACKEND``: "torch" (default) or "onnx";
- ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``: where to listen (Spaces sets both; default 127.0.0.1:7860).
"""

from __future__ import annotations

import logging
import os

from protozoo.demo import launch

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    launch(
        model=os.environ.get("PROTOZOO_DEMO_MODEL") or None,
        backend=os.environ.get("PROTOZOO_DEMO_BACKEND", "torch"),
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
