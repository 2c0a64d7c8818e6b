"""Tests for protozoo.transforms: multi-crop views, presets, eval preprocessing, channel conversion."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from protozoo import transforms
from protozoo.transforms import (
    EvalTransform,
    MultiCropTransform,
    _jitter,
    _RandomView,
    eval_transform,
    multicrop_preset,
    to_uint8_image,
)

GRAY = {"mean": (0.2860,), "std": (0.3530,), "in_chans": 1}
RGB = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "in_chans": 3}


def gray_image(size: int = 28) -> torch.Tensor:
    return torch.randint(
        0, 256, (1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_multicrop_28px_gray() -> None:
    t = multicrop_preset(28, **GRAY, num_local=3)
    views = t(gray_image())
    assert [tuple(v.shape) for v in views] == [(1, 28, 28)] * 2 + [(1, 14, 14)] * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    lo, hi = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530  # normalised range of [0, 1] pixels
    assert all(v.min() >= lo - 1e-5 and v.max() <= hi + 1e-5 for v in views)


def test_multicrop_224px_rgb_from_pil() -> None:
    image = Image.fromarray(torch.randint(0, 256, (240, 320, 3), dtype=torch.uint8).numpy())
    views = multicrop_preset(224, **RGB, num_local=2)(image)
    assert [tuple(v.shape) for v in views] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 2


@pytest.mark.parametrize(
    ("image", "in_chans", "shape"),
    [
        (Image.new("RGBA", (30, 20), (10, 200, 30, 0)), 3, (3, 20, 30)),
        (Image.new("RGBA", (30, 20), (10, 200, 30, 0)), 1, (1, 20, 30)),
        (Image.new("L", (9, 7), 77), 3, (3, 7, 9)),
        (Image.new("P", (9, 7)), 1, (1, 7, 9)),
        (torch.zeros(5, 6, dtype=torch.uint8), 3, (3, 5, 6)),
        (torch.zeros(4, 5, 6, dtype=torch.uint8), 3, (3, 5, 6)),
        (torch.zeros(3, 5, 6, dtype=torch.uint8), 1, (1, 5, 6)),
    ],
)
def test_to_uint8_image_channels(
    image: Image.Image | torch.Tensor, in_chans: int, shape: tuple[int, ...]
) -> None:
    x = to_uint8_image(image, in_chans)
    assert tuple(x.shape) == shape and x.dtype == torch.uint8


def test_channel_conversion_values() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 200, 30, 0))
    assert to_uint8_image(rgba, 3)[:, 0, 0].tolist() == [10, 200, 30]  # alpha dropped, not composited
    gray = to_uint8_image(torch.full((1, 2, 2), 50, dtype=torch.uint8), 3)
    assert gray.unique().tolist() == [50]
    luma = to_uint8_image(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1), 1)
    assert luma.item() == 76  # 0.299 * 255


@pytest.mark.parametrize("in_chans", [1, 3])
def test_multicrop_accepts_all_inputs(in_chans: int) -> None:
    stats = GRAY if in_chans == 1 else RGB
    t = multicrop_preset(28, **stats, num_local=1)
    for image in (Image.new("RGBA", (28, 28)), Image.new("L", (32, 30)), gray_image(), gray_image()[0]):
        views = t(image)
        assert [v.shape[0] for v in views] == [in_chans] * 3 and views[2].shape[-1] == 14


def test_multicrop_deterministic_under_seed() -> None:
    t = multicrop_preset(28, **RGB, num_local=2)
    image = gray_image()
    torch.manual_seed(0)
    first = t(image)
    torch.manual_seed(0)
    again = t(image)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], t(image)[0])


@pytest.mark.parametrize(
    ("img_size", "num_local", "local_size", "global_scale", "local_scale"),
    [
        (28, 2, 14, (0.3, 1.0), (0.1, 0.3)),
        (32, 0, None, (0.3, 1.0), None),
        (224, 0, None, (0.14, 1.0), None),
        (224, 6, 96, (0.4, 1.0), (0.05, 0.4)),
    ],
)
def test_multicrop_preset(
    img_size: int,
    num_local: int,
    local_size: int | None,
    global_scale: tuple[float, float],
    local_scale: tuple[float, float] | None,
) -> None:
    t = multicrop_preset(img_size, **RGB, num_local=num_local)
    assert (t.global1.size, t.global1.scale, t.num_local) == (img_size, global_scale, num_local)
    local = (t.local.size, t.local.scale) if t.local is not None else (None, None)
    assert local == (local_size, local_scale)
    assert t.global1.blur_p == 1.0 and (t.global2.blur_p, t.global2.solarize_p) == (0.1, 0.2)


def test_blur_kernels() -> None:
    assert multicrop_preset(28, **GRAY).global1.kernel == 3
    assert multicrop_preset(224, **RGB, num_local=1).global1.kernel == 23
    assert multicrop_preset(224, **RGB, num_local=1).local.kernel == 9


@pytest.mark.parametrize(("channels", "kernel", "sigma"), [(1, 3, 0.7), (3, 9, 1.6)])
def test_blur_matches_torchvision(channels: int, kernel: int, sigma: float) -> None:
    view = _RandomView(96 if kernel == 9 else 28, (0.5, 1.0), color=channels == 3, blur_p=1.0, solarize_p=0.0)
    x = torch.rand(channels, 20, 17) * 255
    expected = F.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    assert torch.allclose(view._blur(x, sigma), expected, atol=1e-3)


@pytest.mark.parametrize(
    ("kind", "factor", "reference"),
    [
        ("brightness", 1.3, F.adjust_brightness),
        ("contrast", 0.7, F.adjust_contrast),
        ("saturation", 1.4, F.adjust_saturation),
        ("hue", -0.08, F.adjust_hue),
    ],
)
def test_jitter_matches_torchvision(kind: str, factor: float, reference: object) -> None:
    x = torch.rand(3, 8, 8)
    got = _jitter(x * 255, kind, factor) / 255
    assert torch.allclose(got, reference(x, factor), atol=1e-4)  # type: ignore[operator]
    if kind == "contrast":
        gray = x[:1]
        assert torch.allclose(
            _jitter(gray * 255, kind, factor) / 255, F.adjust_contrast(gray, factor), atol=1e-4
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"global_size": 28, "num_local": 2},
            r"local_size > 0 when num_local > 0, .*local_size=0, num_local=2",
        ),
        ({"global_size": 28, "global_scale": (0.5, 0.2)}, r"global_scale .* got \(0.5, 0.2\)"),
        ({"global_size": 28, "global_scale": [0.5, 0.8, 1.0]}, r"global_scale must be \(low, high\)"),
        ({"global_size": 28, "local_scale": (0.0, 0.2)}, r"local_scale must be \(low, high\)"),
        ({"global_size": 28, "in_chans": 2}, r"in_chans must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
        ({"global_size": 28, "mean": (0.5, 0.5, 0.5)}, r"need 1 mean and 1 positive std .* mean \* 3"),
        ({"global_size": 28, "std": (0.0,)}, r"positive std"),
        ({"global_size": 28, "color": True}, r"color=True needs in_chans=3"),
    ],
)
def test_multicrop_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiCropTransform(**{**GRAY, **kwargs})


def test_eval_transform_resize_and_crop() -> None:
    t = eval_transform(224, **RGB, crop_pct=0.875)
    assert isinstance(t, EvalTransform) and t.resize_to == 256
    image = Image.new("RGBA", (400, 300), (255, 128, 0, 10))
    out = t(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(RGB["mean"])) / torch.tensor(RGB["std"])
    assert torch.allclose(out[:, 100, 100], expected, atol=1e-5)
    assert torch.equal(out, t(image.convert("RGB")))


@pytest.mark.parametrize(
    ("image", "in_chans", "shape"),
    [
        (Image.new("L", (28, 28), 200), 1, (1, 28, 28)),
        (Image.new("L", (28, 28), 200), 3, (3, 28, 28)),
        (torch.full((3, 40, 30), 9, dtype=torch.uint8), 1, (1, 28, 28)),
        (torch.full((28, 28), 9, dtype=torch.uint8), 3, (3, 28, 28)),
    ],
)
def test_eval_transform_channels(
    image: Image.Image | torch.Tensor, in_chans: int, shape: tuple[int, ...]
) -> None:
    stats = GRAY if in_chans == 1 else RGB
    out = eval_transform(28, **stats, interpolation="bilinear")(image)
    assert out.shape == shape and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (Image.new("RGB", (0, 10)), ValueError, r"empty image of size 0x10"),
        (torch.zeros(3, 0, 5, dtype=torch.uint8), ValueError, r"empty image of shape \(3, 0, 5\)"),
        (torch.zeros(2, 5, 5, dtype=torch.uint8), ValueError, r"C in 1, 3, 4, got shape \(2, 5, 5\)"),
        (
            torch.zeros(3, 5, 5),
            TypeError,
            r"expected a uint8 tensor, got torch.float32; .*round\(\).byte\(\)",
        ),
        ([[0, 1]], TypeError, r"expected a PIL image or a uint8 tensor .* got list"),
    ],
)
def test_eval_transform_bad_inputs(image: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        eval_transform(28, **RGB)(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interpolation": "lanczos"}, r"unknown interpolation 'lanczos'; use one of \['bicubic'"),
        ({"crop_pct": 1.5}, r"0 < crop_pct <= 1, got 28 and 1.5"),
        ({"in_chans": 1}, r"need 1 mean and 1 positive std values for in_chans=1"),
    ],
)
def test_eval_transform_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        eval_transform(**{"img_size": 28, **RGB, **kwargs})


def test_photometric_probabilities() -> None:
    t = multicrop_preset(28, **GRAY, num_local=1, blur_prob=(0.0, 0.0, 0.0), solarize_prob=0.0)
    assert (t.global1.blur_p, t.global2.blur_p, t.local.blur_p, t.global2.solarize_p) == (0, 0, 0, 0)
    x = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    views = t(x)
    assert len(views) == 3
    with pytest.raises(ValueError, match="blur_prob needs three probabilities"):
        multicrop_preset(28, **GRAY, blur_prob=(1.0, 0.1))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        multicrop_preset(28, **GRAY, solarize_prob=1.5)


@pytest.mark.parametrize(
    ("color", "expected"),
    [
        (
            True,
            {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2), "hue": (-0.1, 0.1)},
        ),
        (False, {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4)}),  # grayscale: no saturation or hue
    ],
)
def test_jitter_draws_dino_ranges(color: bool, expected: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """DINO's ColorJitter(0.4, 0.4, 0.2, 0.1): factors 1 ± strength, hue ± 0.1, each range filled."""
    drawn: dict[str, list[float]] = {}

    def record(x: torch.Tensor, kind: str, factor: float) -> torch.Tensor:
        drawn.setdefault(kind, []).append(factor)
        return x

    monkeypatch.setattr(transforms, "_jitter", record)
    view = _RandomView(8, (0.5, 1.0), color=color, blur_p=0.0, solarize_p=0.0)
    torch.manual_seed(0)
    for _ in range(300):
        view(torch.rand(3 if color else 1, 8, 8) * 255)
    assert set(drawn) == set(expected)
    for kind, (low, high) in expected.items():
        values = torch.tensor(drawn[kind])
        margin = 0.05 * (high - low)
        assert low <= values.min() < low + margin and high - margin < values.max() <= high, kind
