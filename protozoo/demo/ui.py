"""The Gradio page: example images, the Blocks layout wired to the app's events, and serving it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from protozoo.demo.access import Access, is_loopback
from protozoo.demo.app import DemoApp
from protozoo.demo.constants import (
    DEFAULT_CACHE_DIR,
    INVERT_CHOICES,
    LOAD_TIMEOUT,
    MAX_MODEL_BYTES,
    MAX_UPLOAD,
    REFERENCE_SIZE,
)
from protozoo.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

_CSS = "#prototype-strips img, #neighbours img, #prototype-gallery img {image-rendering: pixelated;}"


def _write_examples(folder: Path) -> list[tuple[str, str]]:
    """One Fashion-MNIST training image per class (none is in the reference set), and a dark one on white."""
    images, labels = load_fashion_mnist("train", download=True)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for c, class_name in enumerate(FASHION_MNIST_CLASSES):
        path = folder / f"{c}-{class_name.replace('/', '-').replace(' ', '-').lower()}.png"
        if not path.is_file():
            Image.fromarray(images[int(torch.nonzero(labels == c)[0])].numpy()).save(path)
        examples.append((str(path), class_name))
    path = folder / "sneaker-on-white.png"  # a dark item on white, like a product photo: auto-invert at work
    if not path.is_file():
        Image.fromarray(255 - images[int(torch.nonzero(labels == 7)[1])].numpy()).save(path)
    return examples + [(str(path), "Sneaker on white")]


def build_demo(
    model: str | Path | None = None,
    backend: str = "torch",
    reference_size: int = REFERENCE_SIZE,
    cache_dir: str | Path | None = None,
    *,
    public: bool = False,
    allow_models: tuple[str, ...] | list[str] = (),
    allow_local: bool = False,
    max_model_bytes: int = MAX_MODEL_BYTES,
    load_timeout: float = LOAD_TIMEOUT,
) -> gr.Blocks:
    """Build the Gradio app around one model; its model selector loads others.

    The model is loaded and the reference set encoded (or read from the disk cache) before this returns,
    so the first page view is as fast as every later one. In public mode visitors load only zoo names,
    ``allow_models`` and ``model`` itself (local folders and prototype files only with ``allow_local``), and
    every refusal reads the same whether a path exists or not (:class:`~protozoo.demo.access.Access`).

    Args:
        model: zoo name, Hub id "org/name" or local model folder; None takes the first zoo model.
        backend: "torch" (PyTorch) or "onnx" (exported once into ``cache_dir``, served by ONNX Runtime).
        reference_size: how many Fashion-MNIST test images form the reference set (a fixed random subset).
        cache_dir: where reference encodings, ONNX exports and example images are kept; defaults to
            ``~/.cache/protozoo/demo``.
        public: restrict what visitors may load, as above.
        allow_models: Hub ids visitors may load in public mode.
        allow_local: let visitors load local folders and prototype files by path in public mode.
        max_model_bytes: Hub models whose files weigh more are refused before downloading.
        load_timeout: seconds allowed for a Hub model's size check and download.

    Returns:
        The Blocks app with its queue configured (2 events at a time); serve it with :func:`launch` or
        ``.launch()``.

    Raises:
        ValueError: an unknown backend or model name, a bad reference_size, or an allow_models entry that
            is not a Hub id.
        FileNotFoundError: a missing model folder or weights, or missing Fashion-MNIST files.
    """
    from protozoo.hub import list_models

    zoo = list_models()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    access = Access(public, allow_models, allow_local)
    app = DemoApp(backend, reference_size, cache, access, max_model_bytes, load_timeout)
    home = Access(public=False).source(str(model if model is not None else zoo[0]))  # the operator's choice
    s = app.session(home)  # raises the loader's own errors here, gr.Error only inside events
    access.allow(home)
    _, status0, _, atlas0, gallery0, usage0, heatmap0, collapse0, table0 = app.load_model(home.name)
    examples = _write_examples(cache / "examples")

    with gr.Blocks(title="protozoo: decoupled prototypes", delete_cache=(3600, 3600)) as demo:
        state = gr.State(home)
        gr.Markdown(
            "# protozoo: what the prototypes of a self-supervised model see\n"
            "Prototypes fitted by an online Gaussian mixture instead of learned with the encoder "
            "(Arteaga et al., *Why Prototypes Collapse*, ICLR 2026); reference set: Fashion-MNIST."
        )
        with gr.Row(equal_height=True):
            zoo_choice = gr.Dropdown(
                zoo, value=home.name if home.kind == "zoo" else None, label="Zoo model", scale=2
            )
            folder = gr.Textbox(
                label="...or a zoo name, Hub id or model folder" if not public else "...or an allowed Hub id",
                placeholder="runs/x/model"
                if not public or allow_local
                else ", ".join(m for m, source in access.allowed.items() if source.kind == "hub") or None,
                scale=3,
            )
            load_button = gr.Button("Load", scale=1)
        status = gr.Markdown(status0, elem_id="model-status")
        with gr.Tab("Assign"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="Image",
                        height=240,
                        elem_id="input-image",
                    )
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k prototypes")
                    invert = gr.Radio(
                        list(INVERT_CHOICES),
                        value="auto",
                        label="Invert",
                        info="Fashion-MNIST shows light items on black",
                    )
                    assign_button = gr.Button("Assign", variant="primary", elem_id="assign-button")
                    gr.Examples(
                        [[path] for path, _ in examples],
                        inputs=[image],
                        example_labels=[c for _, c in examples],
                        label="Examples (not in the reference set)",
                        examples_per_page=12,
                    )
                    seen = gr.Image(label="What the model sees", interactive=False, height=140)
                with gr.Column(scale=2):
                    label = gr.Label(label="Top prototypes", num_top_classes=10, elem_id="top-prototypes")
                    gr.Markdown("**Reference images most assigned to each of these prototypes**")
                    strips = gr.Image(show_label=False, interactive=False, elem_id="prototype-strips")
                    neighbours = gr.Gallery(
                        label="Nearest neighbours in feature space",
                        columns=4,
                        height="auto",
                        elem_id="neighbours",
                    )
        with gr.Tab("Atlas"):
            with gr.Row():
                atlas = gr.Image(atlas0, show_label=False, interactive=False, scale=3)
                with gr.Column(scale=2):
                    proto = gr.Slider(
                        0,
                        s.num_prototypes - 1,
                        value=int(s.counts.argmax()),
                        step=1,
                        label="Prototype",
                        info="starts at the most used one",
                    )
                    gallery = gr.Gallery(
                        gallery0,
                        label="Its most assigned reference images",
                        columns=4,
                        height="auto",
                        elem_id="prototype-gallery",
                    )
            with gr.Row():
                usage_plot = gr.Image(usage0, show_label=False, interactive=False)
                heatmap = gr.Image(heatmap0, show_label=False, interactive=False)
        with gr.Tab("Collapse"):
            gr.Markdown(
                "A prototype is *unique* at eps when no earlier prototype lies within cosine distance eps "
                "of it (the paper's Definition 2.1). Jointly trained prototypes tend to collapse onto few "
                "directions; decoupled ones should stay near 1 at every eps. A prototype that no data uses "
                "stays where it started, far from the others, and counts as unique too; so each curve also "
                "says how many prototypes are live (the top prototype of a reference image, or for a file "
                "alone, a GMM component holding at least 2 units of mass) and dead, and the dashed curve "
                "counts the unique ones among the live alone."
            )
            with gr.Row(equal_height=True):
                other = gr.Textbox(
                    label="Compare with (zoo name, Hub id, model folder or prototype file)",
                    scale=4,
                    placeholder="empty: the zoo's joint-training baseline, when there is one",
                )
                compare_button = gr.Button("Compare", scale=1)
            collapse_plot = gr.Image(collapse0, show_label=False, interactive=False)
            collapse_table = gr.Dataframe(
                table0,
                label="Unique fraction at the paper's eps, over all K and among the live",
                interactive=False,
            )

        views = [state, status, proto, atlas, gallery, usage_plot, heatmap, collapse_plot, collapse_table]
        load_button.click(app.load_model, folder, views, api_name="load_model")
        folder.submit(app.load_model, folder, views, api_visibility="private")
        zoo_choice.input(app.load_model, zoo_choice, views, api_visibility="private")
        proto.release(app.prototype, [proto, state], [atlas, gallery], api_name="prototype")
        compare_button.click(app.compare, [other, state], [collapse_plot, collapse_table], api_name="compare")
        other.submit(app.compare, [other, state], [collapse_plot, collapse_table], api_visibility="private")
        inputs, outputs = [image, top_k, invert, state], [seen, label, strips, neighbours]
        # preprocess=False: the upload arrives as gradio's file record and open_upload decodes it, so a bad
        # file gets a clear message instead of a failure inside gradio's own image decoding
        assign_button.click(app.assign, inputs, outputs, api_name="assign", preprocess=False)
        for event in (image.change, top_k.release, invert.input):
            event(app.assign_on_change, inputs, outputs, api_visibility="private", preprocess=False)
    demo.queue(default_concurrency_limit=2)
    return demo


def launch(
    model: str | Path | None = None,
    backend: str = "torch",
    port: int = 7860,
    host: str = "127.0.0.1",
    *,
    reference_size: int = REFERENCE_SIZE,
    cache_dir: str | Path | None = None,
    public: bool | None = None,
    allow_models: tuple[str, ...] | list[str] = (),
    allow_local: bool = False,
    block: bool = True,
) -> gr.Blocks:
    """Build the demo (see :func:`build_demo`) and serve it on ``host:port``.

    Public mode is on whenever ``host`` is reachable from other machines, unless ``public=False`` says
    otherwise. A public demo shows visitors only the messages of its own errors, never a traceback's.

    Args:
        model: zoo name, Hub id or local model folder; None takes the first zoo model.
        backend: "torch" or "onnx".
        port: TCP port.
        host: interface to listen on; "0.0.0.0" opens the demo to the network.
        reference_size: Fashion-MNIST test images in the reference set.
        cache_dir: the cache folder of :func:`build_demo`.
        public: public mode (see :func:`build_demo`); None: on unless ``host`` is a loopback address.
        allow_models: Hub ids visitors may load in public mode.
        allow_local: let visitors load local folders by path in public mode.
        block: serve until interrupted; False returns at once with the server running in the background
            (stop it with ``.close()``).

    Returns:
        The running Blocks app.

    Raises:
        ValueError, FileNotFoundError: as :func:`build_demo`.
    """
    public = not is_loopback(host) if public is None else public
    demo = build_demo(
        model,
        backend,
        reference_size,
        cache_dir,
        public=public,
        allow_models=allow_models,
        allow_local=allow_local,
    )
    demo.launch(
        server_name=host,
        server_port=port,
        theme=gr.themes.Soft(),
        css=_CSS,
        max_file_size=MAX_UPLOAD,
        show_error=not public,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo
