"""The demo's public limits and sizes: reference set, uploads, views, sessions, Hub loads."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("torch", "onnx")
DEFAULT_CACHE_DIR = Path("~/.cache/protozoo/demo").expanduser()
REFERENCE_SIZE = 5000  # test images: ~5 per prototype at K = 1024, encoded once in ~10 s on 2 cores
MAX_PIXELS = 40_000_000  # larger uploads are refused before decoding (decompression-bomb territory)
MAX_SIDE = 1024  # larger uploads are downscaled first; the model reads 28-32 px anyway
MAX_UPLOAD = "20mb"  # the server refuses larger files outright
STRIP_LEN = 8  # reference images per prototype in the Assign strips
GALLERY_LEN = 24  # reference images in the Atlas gallery of the selected prototype
NUM_NEIGHBOURS = 8
HEATMAP_MAX = 64  # the heatmap shows at most this many prototypes, the most used ones
CURVE_EPS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)  # contains EPS_GRID
MAX_SESSIONS = 3  # loaded models kept in memory (least recently used dropped); others reload from disk
MAX_MODEL_BYTES = 400_000_000  # Hub models larger than this are refused before download (ViT-B/16: 344 MB)
LOAD_TIMEOUT = 120.0  # seconds for a Hub model's size check and download
INVERT_CHOICES = ("auto", "yes", "no")
