"""Tests for protozoo.onnx: export, parity with eager PyTorch, OnnxModel inputs and errors, the gpu extra."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from packaging.requirements import Requirement
from PIL import Image
from torch import nn

from protozoo.config import ProtoConfig
from protozoo.fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist
from protozoo.model import ProtoModel
from protozoo.onnx import OnnxModel, export_onnx

TINY: dict[str, Any] = {"num_prototypes": 64, "embed_dim": 16, "hidden_dim": 32}
CONFIGS = {
    "resnet": ProtoConfig(architecture="resnet18_small", **TINY),
    "vit": ProtoConfig(architecture="vit_tiny_patch4_28", backbone_kwargs={"depth": 2}, **TINY),
}


def tiny_model(name: str, num_classes: int = 0) -> ProtoModel:
    """A tiny model in eval mode with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(0)
    model = ProtoModel(CONFIGS[name], num_classes=num_classes)
    for m in model.modules():  # timm zero-inits the last BN of each block, which would hide the branch
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 28, 28) * 1.5 + 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def export_once(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """name -> (name, model, path, OnnxModel), exporting each tiny model once per module."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            model = tiny_model(name)
            path = export_onnx(model, tmp_path_factory.mktemp(name) / "model.onnx")
            cache[name] = (name, model, path, OnnxModel(path))
        return cache[name]

    return get


@pytest.fixture(params=["resnet", "vit"])
def exported(request: pytest.FixtureRequest, export_once: Any) -> Any:
    return export_once(request.param)


@pytest.fixture
def resnet(export_once: Any) -> Any:
    return export_once("resnet")


def eager(model: ProtoModel, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        return model(x)


def assert_parity(out: Any, ref: Any) -> None:
    assert np.abs(out.features - ref.features.numpy()).max() <= 1e-4
    assert np.abs(out.embeddings - ref.embeddings.numpy()).max() <= 1e-4
    assert np.abs(out.assignments - ref.assignments.numpy()).max() <= 1e-4
    np.testing.assert_array_equal(out.assignments.argmax(1), ref.assignments.argmax(1).numpy())


def test_export_writes_checked_graph_and_preprocessor(exported: Any) -> None:
    name, model, path, _ = exported
    assert {p.name for p in path.parent.iterdir()} == {
        "model.onnx",
        "preprocessor.json",
        "preprocessor_config.json",
    }
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    (inp,) = graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "pixel_values" and isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    assert [o.name for o in graph.output] == ["features", "embeddings", "assignments"]
    pre = json.loads((path.parent / "preprocessor.json").read_text())
    c = model.config
    assert (pre["mean"], pre["std"], pre["size"], pre["in_chans"]) == ([0.286], [0.353], [28, 28], 1)
    assert (pre["interpolation"], pre["crop_pct"], pre["resize_shorter_side"]) == ("bicubic", 1.0, 28)
    assert (pre["architecture"], pre["num_prototypes"], pre["embed_dim"]) == (c.architecture, 64, 16)
    assert pre["num_features"] == model.num_features and pre["opset"] == 18


def test_vit_graph_has_no_position_embedding_resize(exported: Any) -> None:
    ops = Counter(n.op_type for n in onnx.load(str(exported[2])).graph.node)
    assert "Resize" not in ops and "Upsample" not in ops
    if exported[0] == "vit":
        assert ops["LayerNormalization"] >= 5  # 2 blocks x 2 + the final norm: really the ViT graph


@pytest.mark.parametrize("batch", [1, 5])
def test_parity_random_images_one_graph_any_batch(exported: Any, batch: int) -> None:
    _, model, _, onnx_model = exported
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    assert_parity(onnx_model(x), eager(model, x))


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")
def test_parity_fashion_mnist(exported: Any) -> None:
    _, model, _, onnx_model = exported
    images, _ = load_fashion_mnist("test")
    images = images[:32]  # (32, 28, 28) uint8
    x = torch.stack([model.transform(image) for image in images])
    ref = eager(model, x)
    assert_parity(onnx_model(x), ref)
    assert_parity(onnx_model(images.numpy()[..., None]), ref)  # raw uint8 (N, H, W, 1)


def test_input_forms_agree(resnet: Any) -> None:
    _, model, _, onnx_model = resnet
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    ref = eager(model, torch.stack([model.transform(torch.from_numpy(i)) for i in images]))
    forms = [
        [Image.fromarray(i) for i in images],
        [Image.fromarray(i).convert("RGB") for i in images],  # converted to gray like model.transform
        images[..., None],  # (N, H, W, 1)
        torch.from_numpy(images)[:, None],  # (N, 1, H, W) uint8 tensor
        list(images),  # uint8 (H, W) arrays
        torch.stack([model.transform(torch.from_numpy(i)) for i in images]).numpy(),  # normalised float
        torch.stack([model.transform(torch.from_numpy(i)) for i in images]).double(),  # cast to float32
    ]
    for form in forms:
        assert_parity(onnx_model(form), ref)
    single = onnx_model(images[0])  # one (H, W) image
    assert single.features.shape == (1, model.num_features)
    assert_parity(single, eager(model, model.transform(torch.from_numpy(images[0]))[None]))


def test_raw_images_are_resized_like_model_transform(resnet: Any) -> None:
    _, model, _, onnx_model = resnet
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert_parity(onnx_model(image), eager(model, model.transform(image)[None]))


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (
            np.zeros((2, 3, 28, 28), np.float32),
            ValueError,
            r"takes 1 channel\(s\), got shape \(2, 3, 28, 28\)",
        ),
        (torch.zeros(2, 1, 32, 32), ValueError, r"takes 28x28 images, got shape \(2, 1, 32, 32\)"),
        (np.zeros((2, 1, 28, 28), np.int64), TypeError, "got dtype int64"),
        (np.zeros((0, 1, 28, 28), np.float32), ValueError, "empty batch"),
        ([], ValueError, "got no images"),
        (np.zeros((0, 28, 28, 1), np.uint8), ValueError, "got no images"),
        (np.zeros((4, 28, 28), np.uint8), ValueError, r"needs a channel axis: images\[\.\.\., None\]"),
        (np.zeros((28, 28, 2), np.uint8), ValueError, r"with C in 1, 3, 4, got shape \(28, 28, 2\)"),
        (torch.zeros(1, 28, 28), ValueError, r"must be a batch \(N, 1, 28, 28\)"),
        ([np.zeros((28, 28), np.float32)], TypeError, "must be uint8, got float32"),
        ("shoe.png", TypeError, "got str"),
        ([None], TypeError, "in the list, got NoneType"),
    ],
)
def test_bad_input(resnet: Any, images: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        resnet[3](images)


def copy_export(path: Path, dest: Path, preprocessor: bool = True) -> Path:
    dest.mkdir()
    shutil.copy(path, dest / "model.onnx")
    if preprocessor:
        shutil.copy(path.parent / "preprocessor.json", dest / "preprocessor.json")
    return dest / "model.onnx"


def test_missing_files(resnet: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ONNX file at .*nothing.onnx"):
        OnnxModel(tmp_path / "nothing.onnx")
    path = copy_export(resnet[2], tmp_path / "bare", preprocessor=False)
    with pytest.raises(FileNotFoundError, match="preprocessor.json' is missing.*re-export"):
        OnnxModel(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: {**p, "size": [32, 32]}, r"describes input 'pixel_values' \(B, 1, 32, 32\)"),
        (lambda p: {**p, "num_prototypes": 128}, "'assignments': 128}, but the graph"),
        (lambda p: {**p, "export_id": "0" * 32}, "belongs to another export"),
        (lambda p: {k: v for k, v in p.items() if k != "mean"}, r"lacks the keys \['mean'\]"),
        (lambda p: "{not json", "is not valid JSON"),
    ],
)
def test_mismatched_preprocessor(resnet: Any, tmp_path: Path, edit: Any, match: str) -> None:
    path = copy_export(resnet[2], tmp_path / "copy")
    edited = edit(json.loads((path.parent / "preprocessor.json").read_text()))
    (path.parent / "preprocessor.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(ValueError, match=match):
        OnnxModel(path)


def test_providers(resnet: Any) -> None:
    default = OnnxModel(resnet[2]).providers
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert default[0] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")
    assert OnnxModel(resnet[2], providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    options = OnnxModel(resnet[2], intra_op_threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1


def test_export_overwrites_atomically_adds_logits_and_keeps_mode(tmp_path: Path) -> None:
    model = tiny_model("resnet", num_classes=3).train()
    (tmp_path / "model.onnx").write_bytes(b"stale")
    (tmp_path / "preprocessor.json").write_text("stale")
    path = export_onnx(model, tmp_path / "model.onnx")
    assert model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx",
        "preprocessor.json",
        "preprocessor_config.json",
    ]
    onnx_model = OnnxModel(path)
    names = [o.name for o in onnx_model.session.get_outputs()]
    assert names == ["features", "embeddings", "assignments", "logits"]
    x = torch.randn(2, 1, 28, 28)
    assert_parity(onnx_model(x), eager(model.eval(), x))
    (logits,) = onnx_model.session.run(["logits"], {"pixel_values": x.numpy()})
    np.testing.assert_allclose(logits, model(x).logits.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "opset", "name", "error", "match"),
    [
        ("resnet", 17, "model.onnx", ValueError, "opset must be between 18 and"),
        ("resnet", 10_000, "model.onnx", ValueError, "got 10000"),
        ("resnet", 18, "model.pt", ValueError, r"must end in .onnx, got '.*model.pt'"),
        ("bf16", 18, "model.onnx", ValueError, r"float32 model \(call model.float\(\) first\)"),
        ("plain", 18, "model.onnx", TypeError, "takes a ProtoModel, got Linear"),
    ],
)
def test_export_errors(
    tmp_path: Path, model: str, opset: int, name: str, error: type[Exception], match: str
) -> None:
    m: Any = {
        "resnet": lambda: ProtoModel(CONFIGS["resnet"]),
        "bf16": lambda: ProtoModel(CONFIGS["resnet"]).to(torch.bfloat16),
        "plain": lambda: nn.Linear(2, 2),
    }[model]()
    with pytest.raises(error, match=match):
        export_onnx(m, tmp_path / name, opset=opset)
    assert list(tmp_path.iterdir()) == []


def extra_requirements(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Names of the distributions an extra of the installed protozoo pulls in, self-references expanded."""
    names: set[str] = set()
    for line in requires("protozoo") or []:
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        if req.name == "protozoo":
            for sub in req.extras - seen:
                names |= extra_requirements(sub, seen | {extra})
        else:
            names.add(req.name)
    return names


def test_gpu_extra_installs_onnxruntime_gpu_alone() -> None:
    gpu, cpu, everything = extra_requirements("gpu"), extra_requirements("onnx"), extra_requirements("all")
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" not in everything
    assert {"onnx", "onnxscript"} <= gpu & cpu


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protozoo.cli import main
    from protozoo.model import load

    tiny_model("vit").save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "onnx" / "model.onnx"
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(out), "--opset", "20"]) == 0
    assert "preprocessor.json" in capsys.readouterr().out
    assert OnnxModel(out).preprocessor["opset"] == 20
    x = torch.randn(3, 1, 28, 28)
    assert_parity(OnnxModel(out)(x), eager(load(tmp_path / "ckpt"), x))


# ---- inference without torch: onnx_runtime, and the Hugging Face preprocessor config ----
def test_hf_preprocessor_config_describes_the_same_preprocessing(resnet: Any) -> None:
    _, _, path, onnx_model = resnet
    hf = json.loads((path.parent / "preprocessor_config.json").read_text())
    assert hf["image_processor_type"] == "BitImageProcessor" and hf["do_convert_rgb"] is False

    def naive(image: Image.Image) -> np.ndarray:  # the steps the config names, one by one
        image = image.convert("L")
        w, h = image.size
        short = hf["size"]["shortest_edge"]
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize(size, resample=hf["resample"])
        ch, cw = hf["crop_size"]["height"], hf["crop_size"]["width"]
        top, left = round((size[1] - ch) / 2), round((size[0] - cw) / 2)
        x = np.asarray(image.crop((left, top, left + cw, top + ch)), np.float32) * hf["rescale_factor"]
        return ((x - hf["image_mean"][0]) / hf["image_std"][0])[None]

    rng = np.random.default_rng(2)
    for shape in [(40, 50, 3), (28, 28), (61, 33)]:
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        assert np.abs(onnx_model.preprocess(image)[0] - naive(image)).max() < 1e-5


def test_torch_transform_and_onnx_runtime_see_the_same_pixels(resnet: Any) -> None:
    _, model, _, onnx_model = resnet
    rng = np.random.default_rng(3)
    for shape in [(40, 50, 3), (30, 30), (28, 28, 3), (97, 61, 4)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        tensor = torch.from_numpy(array).permute(2, 0, 1) if array.ndim == 3 else torch.from_numpy(array)
        expected = model.transform(tensor).numpy()
        assert np.abs(onnx_model.preprocess(array)[0] - expected).max() < 1e-5
        assert np.abs(onnx_model.preprocess(Image.fromarray(array))[0] - expected).max() < 1e-5


TORCH_FREE = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("onnx_runtime", sys.argv[1])
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
model = runtime.OnnxModel(sys.argv[2])
data = np.load(sys.argv[3])
raw, normalised = model(list(data["raw"])), model(data["normalised"])
np.savez(sys.argv[4], raw=raw.features, raw_assign=raw.assignments, norm=normalised.features)
try:
    import torch  # noqa: F401
    sys.exit("torch is importable in the torch-free venv")
except ImportError:
    pass
assert not {m.split(".")[0] for m in sys.modules} & {"torch", "protozoo", "timm", "torchvision"}
"""


@pytest.mark.slow
def test_onnx_runtime_runs_in_a_venv_without_torch(resnet: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    _, model, path, _ = resnet
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # no system site-packages
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy", "pillow"], check=True, timeout=300
    )
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, (3, 40, 36), dtype=np.uint8)
    normalised = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "in.npz", raw=raw, normalised=normalised)
    runtime = Path(__file__).parents[1] / "protozoo" / "onnx_runtime.py"
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # no PYTHONPATH: nothing from this env
    subprocess.run(
        [
            str(python),
            "-c",
            TORCH_FREE,
            str(runtime),
            str(path),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out"),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    out = np.load(tmp_path / "out.npz")
    expected = eager(model, torch.stack([model.transform(torch.from_numpy(i)) for i in raw]))
    assert np.abs(out["raw"] - expected.features.numpy()).max() <= 1e-4
    assert np.abs(out["raw_assign"] - expected.assignments.numpy()).max() <= 1e-4
    assert np.abs(out["norm"] - eager(model, torch.from_numpy(normalised)).features.numpy()).max() <= 1e-4
