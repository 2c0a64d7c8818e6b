"""The Gradio demo: what a prototype model sees in an image, and how its prototypes cover a reference set.

Three tabs over one loaded model and a Fashion-MNIST reference set (a fixed random subset of the test
split):

- **Assign**: upload an image (or pick an example) and get its top-k prototypes with probabilities, a strip
  of the reference images most assigned to each of them, and its nearest reference images in feature space.
- **Atlas**: a 2-D map of the reference embeddings (UMAP when ``umap-learn`` is installed, else PCA)
  coloured by top prototype, with the prototypes projected into it; a prototype selector with its gallery;
  the prototype usage histogram and the prototype-to-prototype cosine similarity heatmap.
- **Collapse**: the fraction of unique prototypes against eps (the paper's Definition 2.1) for the loaded
  model beside its joint-training baseline when the zoo registry names one, or beside any model you pick.

The reference features, embeddings, assignments and 2-D coordinates are computed once per model and cached
as safetensors in ``cache_dir``, under a key hashed from the model's weights and config, the reference set,
the backend and the projection. Later interactions only encode the uploaded image and draw, so they answer
in well under a second on a laptop CPU. The ``onnx`` backend exports the model once into the same cache and
serves it with ONNX Runtime.

Served beyond loopback (``--host 0.0.0.0``), in ``app/app.py``, or with ``--public``, the demo runs in public
mode: visitors load only zoo names, the Hub ids of ``--allow-models`` and the starting model; local folders
only with ``--allow-local``; every refusal reads the same whether a path exists or not. Hub models are
size-checked before download, fetched file by file within a time limit, and at most MAX_SESSIONS models stay
in memory (see SECURITY.md).

Modules: ``access`` (what a visitor may load), ``fetch`` (bounded Hub downloads), ``reference`` (encoders and
the cached reference set), ``figures`` (drawing), ``uploads`` (safe image decoding), ``app`` (sessions and
the events), ``ui`` (the page and serving).

Run it with ``protozoo demo [--model NAME|FOLDER] [--backend torch|onnx] [--public] [--allow-models ID ...]``
or ``python app/app.py``.
"""

try:
    import gradio  # noqa: F401  (used by the submodules)
except ImportError as err:  # gradio is the optional "demo" extra
    raise ImportError("protozoo.demo needs gradio: pip install 'protozoo[demo]'") from err

from protozoo.demo.constants import (
    BACKENDS,
    CURVE_EPS,
    DEFAULT_CACHE_DIR,
    GALLERY_LEN,
    HEATMAP_MAX,
    INVERT_CHOICES,
    MAX_PIXELS,
    MAX_SESSIONS,
    MAX_SIDE,
    MAX_UPLOAD,
    NUM_NEIGHBOURS,
    REFERENCE_SIZE,
    STRIP_LEN,
)
from protozoo.demo.ui import build_demo, launch
from protozoo.demo.uploads import open_upload, prepare_image

__all__ = [
    "BACKENDS",
    "CURVE_EPS",
    "DEFAULT_CACHE_DIR",
    "GALLERY_LEN",
    "HEATMAP_MAX",
    "INVERT_CHOICES",
    "MAX_PIXELS",
    "MAX_SESSIONS",
    "MAX_SIDE",
    "MAX_UPLOAD",
    "NUM_NEIGHBOURS",
    "REFERENCE_SIZE",
    "STRIP_LEN",
    "build_demo",
    "launch",
    "open_upload",
    "prepare_image",
]
