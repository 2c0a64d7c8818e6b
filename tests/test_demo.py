"""The Gradio demo, launched on 127.0.0.1 and driven through gradio_client like any remote user would."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from protozoo import ProtoConfig, ProtoModel, load, registry  # noqa: E402
from protozoo.collapse import EPS_GRID, collapse_report, unique_fractions  # noqa: E402
from protozoo.demo import (  # noqa: E402
    GALLERY_LEN,
    NUM_NEIGHBOURS,
    STRIP_LEN,
    build_demo,
    launch,
    open_upload,
    prepare_image,
)
from protozoo.demo.constants import CURVE_EPS  # noqa: E402
from protozoo.demo.figures import collapse_table  # noqa: E402
from protozoo.demo.reference import reference_images  # noqa: E402
from protozoo.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REFERENCE = 500
K = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(method: str, seed: int) -> ProtoModel:
    torch.manual_seed(seed)
    return ProtoModel(ProtoConfig(num_prototypes=K, embed_dim=16, hidden_dim=32, method=method)).eval()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A decoupled and a joint tiny model saved as folders, the demo serving the first, and a client."""
    root = tmp_path_factory.mktemp("demo")
    model = tiny_model("carp_dec", 0)
    folder = model.save_pretrained(root / "dec")
    joint = tiny_model("carp", 1).save_pretrained(root / "joint")
    with pytest.MonkeyPatch.context() as mp:  # the registry names the joint model as the baseline
        mp.setitem(registry.ZOO, str(folder.resolve()), SimpleNamespace(baseline=str(joint), hub_id=None))
        demo = launch(
            str(folder), port=free_port(), reference_size=REFERENCE, cache_dir=root / "cache", block=False
        )
        try:
            client = Client(demo.local_url, verbose=False, download_files=False)
            yield SimpleNamespace(
                root=root, folder=folder, joint=joint, model=model, demo=demo, client=client
            )
        finally:
            demo.close()


def write(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


@functools.cache
def fmnist_image(index: int = 0) -> Image.Image:
    images, _ = load_fashion_mnist("train")
    return Image.fromarray(images[index].numpy())


def submit(client: Client, *args: Any, api_name: str) -> tuple[Any, list[tuple[str, str]]]:
    """Run one event; its result and the (message, level) pairs that gr.Info / gr.Warning showed."""
    job = client.submit(*args, api_name=api_name)
    result = job.result(timeout=60)
    messages, updates = [], job.communicator.updates
    while not updates.empty():
        log = getattr(updates.get_nowait(), "log", None)
        if log:
            messages.append(log)
    return result, messages


def opened(file: dict[str, Any]) -> Image.Image:
    return Image.open(file["path"])


def expected_top(model: ProtoModel, image: Image.Image, k: int) -> tuple[list[str], np.ndarray]:
    with torch.inference_mode():
        top = torch.topk(model(model.transform(image)[None]).assignments[0], k)
    return [f"prototype {i}" for i in top.indices.tolist()], top.values.numpy()


def test_api_names(served: SimpleNamespace) -> None:
    api = served.client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/assign", "/prototype", "/load_model", "/compare"}


@pytest.mark.parametrize("top_k", [1, 5])
def test_assign_matches_the_model(served: SimpleNamespace, top_k: int, tmp_path: Path) -> None:
    image = fmnist_image(3)
    seen, label, strips, neighbours = served.client.predict(
        handle_file(write(tmp_path / "x.png", image)), top_k, "auto", api_name="/assign"
    )
    assert opened(seen).size == (28 * 4, 28 * 4)
    names, probs = expected_top(served.model, image, top_k)
    assert [c["label"] for c in label["confidences"]] == names
    np.testing.assert_allclose([c["confidence"] for c in label["confidences"]], probs, rtol=1e-4, atol=1e-6)
    assert opened(strips).size == (STRIP_LEN * (28 * 4 + 2) - 2, top_k * (24 + 28 * 4 + 10) - 10)
    assert len(neighbours) == NUM_NEIGHBOURS
    names, cosines = zip(*(n["caption"].split(" · ") for n in neighbours), strict=True)
    assert set(names) <= set(FASHION_MNIST_CLASSES)
    cosines = [float(c) for c in cosines]
    assert cosines == sorted(cosines, reverse=True) and cosines[0] <= 1.0 + 1e-3


def test_prototype(served: SimpleNamespace) -> None:
    atlas, gallery = served.client.predict(7, api_name="/prototype")
    assert opened(atlas).width > 300
    assert len(gallery) == GALLERY_LEN
    probs = [float(g["caption"].split(" · ")[1]) for g in gallery]
    assert probs == sorted(probs, reverse=True)
    with pytest.raises(AppError, match="Value 64 is greater than maximum value 63"):
        served.client.predict(K, api_name="/prototype")


def used_prototypes(folder: Path) -> int:
    """Prototypes that are the top one of at least one reference image, computed here from the model."""
    model, (images, _) = load(str(folder)), reference_images(REFERENCE)
    with torch.inference_mode():
        x = torch.stack([model.transform(Image.fromarray(im.numpy())) for im in images])
        return int(torch.unique(model(x).assignments.argmax(1)).numel())


def live_columns(label: str, used: int, extra: str = "") -> list[str]:
    return [
        f"{label}: all {K}",
        f"{label}: among live (live {used} of {K} (top of a reference image), dead {K - used}{extra})",
    ]


def test_load_model_and_back(served: SimpleNamespace) -> None:
    status, slider, atlas, gallery, usage, heatmap, collapse, table = served.client.predict(
        str(served.joint), api_name="/load_model"
    )
    assert "carp," in status and f"K = {K}" in status and f"{REFERENCE} Fashion-MNIST" in status
    assert slider["maximum"] == K - 1 and 0 <= slider["value"] < K
    for plot in (atlas, usage, heatmap, collapse):
        assert opened(plot).width > 300
    assert len(gallery) == GALLERY_LEN
    used_joint, used_dec = used_prototypes(served.joint), used_prototypes(served.folder)
    assert table["headers"] == ["eps", *live_columns(str(served.joint.resolve()), used_joint)]  # no baseline
    status, *_, table = served.client.predict(str(served.folder), api_name="/load_model")
    assert "carp_dec" in status
    assert table["headers"] == [  # an untrained GMM: no component carries 2 units of mass
        "eps",
        *live_columns(str(served.folder.resolve()), used_dec, "; GMM mass >= 2: 0"),
        *live_columns(f"{served.joint} (joint baseline)", used_joint),
    ]
    assert [row[0] for row in table["data"]] == list(EPS_GRID)
    assert all(0 < v <= 1 for row in table["data"] for v in row[1:])


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "No model given"), ("/nonexistent/model", "Could not load '/nonexistent/model'")],
)
def test_load_model_errors(served: SimpleNamespace, name: str, message: str) -> None:
    with pytest.raises(AppError, match=message):
        served.client.predict(name, api_name="/load_model")


def test_compare(served: SimpleNamespace) -> None:
    plot, table = served.client.predict(str(served.joint), api_name="/compare")
    assert opened(plot).width > 300
    assert table["headers"][-2:] == live_columns(f"{served.joint} (compared)", used_prototypes(served.joint))
    assert len(table["data"]) == len(EPS_GRID)
    _, table = served.client.predict("", api_name="/compare")
    assert table["headers"][-1].startswith(f"{served.joint} (joint baseline): among live")
    with pytest.raises(AppError, match="Could not read prototypes from 'nope'"):
        served.client.predict("nope", api_name="/compare")


def test_the_shipped_decoupled_model_is_compared_with_its_joint_twin(served: SimpleNamespace) -> None:
    name = "dp-resnet18q-fmnist"
    if registry.shipped_folder(name) is None or registry.shipped_folder(registry.ZOO[name].baseline) is None:
        pytest.skip("the collapse-regime pair is not shipped in this checkout")
    status, *_, table = served.client.predict(name, api_name="/load_model")
    assert "carp_dec" in status
    joint = [h for h in table["headers"] if h.startswith("joint-carp-resnet18q-fmnist (joint baseline): all")]
    column = table["headers"].index(joint[0])
    at_half = next(row for row in table["data"] if row[0] == 0.5)
    assert at_half[column] < 0.5  # the joint twin's collapse shows in the default comparison


def test_compare_a_prototype_file_counts_live_by_gmm_mass(served: SimpleNamespace, tmp_path: Path) -> None:
    head = load_file(served.folder / "head.safetensors")
    save_file(head, tmp_path / "untrained.safetensors")  # every component at its one pseudo-count of mass
    _, table = served.client.predict(str(tmp_path / "untrained.safetensors"), api_name="/compare")
    assert table["headers"][-1] == f"{tmp_path / 'untrained.safetensors'} (compared): all {K} " + (
        f"(live 0 of {K} (GMM mass >= 2), dead {K})"
    )  # dead random vectors, never shown as unique prototypes among live ones
    head["prototype_source.mass"][:10] = 5.0
    save_file(head, tmp_path / "ten.safetensors")
    _, table = served.client.predict(str(tmp_path / "ten.safetensors"), api_name="/compare")
    assert table["headers"][-1] == f"{tmp_path / 'ten.safetensors'} (compared): among live " + (
        f"(live 10 of {K} (GMM mass >= 2), dead {K - 10})"
    )


def test_collapse_table_counts_uniques_among_the_live_prototypes() -> None:
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.001], [-1.0, 0.0]])  # rows 0 and 2 coincide
    curve = unique_fractions(prototypes, CURVE_EPS)
    used = collapse_report(prototypes, assignments=torch.tensor([0, 0, 2, 1]))  # row 3 is dead
    table = collapse_table([("m", curve, used)])
    assert list(table.columns) == [
        "eps",
        "m: all 4",
        "m: among live (live 3 of 4 (top of a reference image), dead 1)",
    ]
    assert table.iloc[0].tolist() == [0.025, 0.75, 0.6667]  # the dead row 3 no longer counts as unique
    table = collapse_table([("m", curve, collapse_report(prototypes))])
    assert list(table.columns) == [
        "eps",
        "m: all 4 (live and dead of 4 unknown (no reference set, no GMM masses))",
    ]


def bad_file(kind: str, tmp_path: Path) -> Path:
    if kind == "text":
        path = tmp_path / "notes.png"
        path.write_text("not an image at all")
    elif kind == "empty-file":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "truncated":
        write(tmp_path / "full.png", fmnist_image().resize((300, 300)))
        path = tmp_path / "truncated.png"
        path.write_bytes((tmp_path / "full.png").read_bytes()[:400])
    else:  # "huge": 45 megapixels of black, a few kB as PNG
        path = write(tmp_path / "huge.png", Image.new("L", (9000, 5000)))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "'notes.png' is not an image this demo can read"),
        ("empty-file", "'empty.png' is not an image"),
        ("truncated", "'truncated.png' could not be decoded"),
        ("huge", "'huge.png' is 9000x5000 = 45 megapixels; the demo accepts up to 40 MP"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(
    served: SimpleNamespace, tmp_path: Path, kind: str, message: str
) -> None:
    with pytest.raises(AppError, match=message):
        served.client.predict(handle_file(bad_file(kind, tmp_path)), 5, "auto", api_name="/assign")
    ok = served.client.predict(
        handle_file(write(tmp_path / "ok.png", fmnist_image())), 2, "auto", api_name="/assign"
    )
    assert len(ok[1]["confidences"]) == 2  # the server still answers


def test_empty_upload(served: SimpleNamespace) -> None:
    with pytest.raises(AppError, match="No image: upload one"):
        served.client.predict(None, 5, "auto", api_name="/assign")


def light_photo() -> Image.Image:
    return Image.fromarray(255 - np.asarray(fmnist_image())).convert("RGB")


def transparent() -> Image.Image:
    rgba = fmnist_image().convert("RGBA")
    rgba.putalpha(Image.fromarray((np.asarray(fmnist_image()) > 0).astype(np.uint8) * 255))
    return rgba


@pytest.mark.parametrize(
    ("make", "level", "message"),
    [
        (lambda: fmnist_image(), "info", "the model sees it at 28x28"),
        (lambda: fmnist_image().convert("RGB"), "warning", "colours were converted to gray"),
        (transparent, "warning", "transparent pixels; they were filled with black"),
        (light_photo, "warning", "background looks light, so the image was inverted"),
        (
            lambda: fmnist_image().resize((2400, 1800)),
            "warning",
            "is 2400x1800; it was downscaled to 1024x768",
        ),
    ],
)
def test_uploads_are_converted_with_a_message(
    served: SimpleNamespace, tmp_path: Path, make: Any, level: str, message: str
) -> None:
    (seen, label, strips, neighbours), messages = submit(
        served.client, handle_file(write(tmp_path / "in.png", make())), 3, "auto", api_name="/assign"
    )
    assert any(lvl == level and message in text for text, lvl in messages), messages
    assert (
        len(label["confidences"]) == 3
        and opened(strips).height > 3 * 28
        and len(neighbours) == NUM_NEIGHBOURS
    )


def test_invert_choices(tmp_path: Path) -> None:
    light = light_photo().convert("L")
    assert np.asarray(prepare_image(light, 1, "auto")[0]).mean() < 128
    assert np.asarray(prepare_image(light, 1, "no")[0]).mean() > 128
    assert np.asarray(prepare_image(fmnist_image(), 1, "yes")[0]).mean() > 128
    with pytest.raises(ValueError, match=r"invert must be one of \('auto', 'yes', 'no'\), got 'maybe'"):
        prepare_image(light, 1, "maybe")


@pytest.mark.parametrize(
    ("image", "in_chans", "mode", "note"),
    [
        (Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)), 1, "L", None),
        (Image.new("L", (8, 8)), 3, "RGB", "repeated over the model's 3 colour channels"),
        (Image.new("LA", (8, 8), (200, 0)), 1, "L", "transparent pixels"),
    ],
)
def test_prepare_image_modes(image: Image.Image, in_chans: int, mode: str, note: str | None) -> None:
    out, notes = prepare_image(image, in_chans, "no")
    assert out.mode == mode and out.size == (8, 8)
    assert (note is None and not notes) or any(note in n for n in notes)
    if image.mode == "LA":  # fully transparent: black, not the hidden gray value
        assert np.asarray(out).max() == 0


def test_16_bit_images_are_scaled_not_clipped() -> None:
    out, _ = prepare_image(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)), 1, "no")
    assert abs(int(np.asarray(out)[0, 0]) - 128) <= 1


def test_open_upload_downscales(tmp_path: Path) -> None:
    image, notes = open_upload(
        write(tmp_path / "big.png", Image.new("RGB", (3000, 1000))), "big.png", max_side=600
    )
    assert image.size == (600, 200) and "downscaled to 600x200" in notes[0]


def test_reference_cache_is_reused(served: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    cache = served.root / "cache"
    files = sorted(p.name for p in cache.glob("reference-*.safetensors"))
    with caplog.at_level(logging.INFO, logger="protozoo.demo"):
        build_demo(served.joint, reference_size=REFERENCE, cache_dir=cache)
    assert "reading the reference set" in caplog.text and "encoding" not in caplog.text
    assert sorted(p.name for p in cache.glob("reference-*.safetensors")) == files


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backend": "tensorflow"}, ValueError, "Unknown backend 'tensorflow'; use one of torch, onnx"),
        ({"reference_size": 0}, ValueError, r"reference_size must be an int in \[1, 10000\], got 0"),
        ({"model": "/nonexistent/model"}, FileNotFoundError, "/nonexistent/model"),
    ],
)
def test_build_demo_errors(
    served: SimpleNamespace, kwargs: dict[str, Any], error: type, message: str
) -> None:
    kwargs = {"model": served.folder, "cache_dir": served.root / "cache", **kwargs}
    with pytest.raises(error, match=message):
        build_demo(**kwargs)


def test_onnx_backend(served: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cache = served.root / "cache"
    demo = launch(served.folder, "onnx", free_port(), reference_size=REFERENCE, cache_dir=cache, block=False)
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        image = fmnist_image(3)
        _, label, _, _ = client.predict(
            handle_file(write(tmp_path / "x.png", image)), 3, "no", api_name="/assign"
        )
        status = client.predict(str(served.folder), api_name="/load_model")[0]
    finally:
        demo.close()
    assert status.endswith("backend: onnx") and len(list(cache.glob("onnx-*/model.onnx"))) == 1
    names, probs = expected_top(served.model, image, 3)
    assert [c["label"] for c in label["confidences"]] == names
    np.testing.assert_allclose([c["confidence"] for c in label["confidences"]], probs, rtol=1e-4, atol=1e-6)
