"""Hugging Face Spaces entry point of the protozoo demo; locally: ``python app/app.py``.

It always runs in public mode: visitors load only the zoo models, the Hub ids listed in
``PROTOZOO_DEMO_ALLOW_MODELS`` and the starting model (see SECURITY.md). Everything is set from the
environment, so a Space needs no code change:

- ``PROTOZOO_DEMO_MODEL``: zoo name, Hub id "org/name" or model folder (default: the first zoo model);
- ``PROTOZOO_DEMO_BACKEND``: "torch" (default) or "onnx";
- ``PROTOZOO_DEMO_ALLOW_MODELS``: comma-separated Hub ids visitors may load besides the zoo (default none);
- ``PROTOZOO_DEMO_ALLOW_LOCAL``: "1" lets visitors load local folders by path (default off);
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
        public=True,
        allow_models=os.environ.get("PROTOZOO_DEMO_ALLOW_MODELS", "").split(","),
        allow_local=os.environ.get("PROTOZOO_DEMO_ALLOW_LOCAL") == "1",
    )
