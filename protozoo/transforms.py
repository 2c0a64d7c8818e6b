"""Image transforms: DINO-style multi-crop augmentation for training and the eval preprocessing.

Both accept a PIL image or a uint8 tensor (C, H, W) / (H, W) and convert it once to a uint8 tensor with
the model's number of channels (RGBA -> RGB drops alpha, RGB -> gray uses ITU-R 601 luma, gray -> RGB
repeats the channel); there are no PIL round trips after that. Outputs are normalised float32. The eval
path resizes and crops with PIL (:func:`protozoo.onnx_runtime.resize_and_crop`, torchvision's Resize +
CenterCrop arithmetic), the very code the torch-free ONNX runtime runs, so both see the same pixels; the
multi-crop views are written with plain tensor ops (the v2 classes' per-call overhead made them ~3x
slower on 28 px images).

Multi-crop follows DINO (Caron et al. 2021, facebookresearch/dino `DataAugmentationDINO`): global view 1
is always blurred, global view 2 is rarely blurred and sometimes solarised, local views are blurred half
of the time. Blur kernels scale with the crop (about a tenth of its side, odd, at least 3); grayscale
models get brightness/contrast jitter instead of colour jitter and a 3-pixel blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from protozoo.onnx_runtime import RESAMPLE, resize_and_crop, to_mode

DINO_BLUR_PROB = (1.0, 0.1, 0.5)  # Gaussian blur: global view 1, global view 2, local views
DINO_SOLARIZE_PROB = 0.2  # solarisation of global view 2
# DINO's ColorJitter(0.4, 0.4, 0.2, 0.1): each factor drawn from 1 ± strength, the hue shift from ± 0.1
JITTER_RANGES = {
    "brightness": (0.6, 1.4),
    "contrast": (0.6, 1.4),
    "saturation": (0.8, 1.2),
    "hue": (-0.1, 0.1),
}


def to_uint8_image(image: Image.Image | Tensor, in_chans: int) -> Tensor:
    """Convert a PIL image or uint8 tensor to a uint8 tensor (in_chans, H, W).

    Args:
        image: PIL image of any mode, or uint8 tensor (H, W) or (C, H, W) with C in {1, 3, 4}.
        in_chans: 1 (grayscale) or 3 (RGB).

    Returns:
        uint8 tensor (in_chans, H, W); may share memory with a tensor input.

    Raises:
        TypeError: the input is neither a PIL image nor a uint8 tensor.
        ValueError: the image is empty (zero width or height) or a tensor has an unsupported shape.
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"empty image of size {image.width}x{image.height} (width x height)")
        mode = "L" if in_chans == 1 else "RGB"
        return F.pil_to_tensor(image if image.mode == mode else image.convert(mode))
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a PIL image or a uint8 tensor (C, H, W), got {type(image).__name__}")
    if image.dtype != torch.uint8:
        raise TypeError(
            f"expected a uint8 tensor, got {image.dtype}; convert [0, 1] floats with (x * 255).round().byte()"
        )
    x = image.unsqueeze(0) if image.ndim == 2 else image
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"expected a (H, W) or (C, H, W) tensor with C in 1, 3, 4, got shape {tuple(image.shape)}"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"empty image of shape {tuple(image.shape)}")
    x = x[:3]  # drop alpha
    if in_chans == 1 and x.shape[0] == 3:  # PIL's integer ITU-R 601 luma, as Image.convert("L")
        r, g, b = x.int()
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]
    if in_chans == 3 and x.shape[0] == 1:
        return x.expand(3, -1, -1)
    return x


class _Normalize:
    """Image (C, H, W) in [0, 255] (uint8 or float) -> float32 (x / 255 - mean) / std in one fused op."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        if len(mean) != in_chans or len(std) != in_chans or min(std) <= 0:
            raise ValueError(
                f"need {in_chans} mean and {in_chans} positive std values for in_chans={in_chans}, got "
                f"mean={tuple(mean)}, std={tuple(std)}; e.g. repeat a grayscale mean: mean * 3"
            )
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)  # (C, 1, 1)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t  # (C, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


def _check_scale(name: str, scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)}")
    return scale[0], scale[1]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _crop_box(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """Inception-style random crop (top, left, h, w): area fraction in `scale`, aspect ratio in [3/4, 4/3]."""
    for _ in range(10):
        area = height * width * _uniform(*scale)
        aspect = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, ()).item())
            left = int(torch.randint(width - w + 1, ()).item())
            return top, left, h, w
    side = min(height, width)  # rare fallback: the central square
    return (height - side) // 2, (width - side) // 2, side, side


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma of a float (3, H, W) image, as (1, H, W)."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _jitter(x: Tensor, kind: str, factor: float) -> Tensor:
    """Colour jitter of a (C, H, W) image in [0, 255]: a factor around 1, or a hue shift in [-0.5, 0.5]."""
    if kind == "brightness":
        return (x * factor).clamp_(0, 255)
    if kind == "contrast":  # blend with the mean gray level
        mean = (_gray(x) if x.shape[0] == 3 else x).mean()
        return ((x - mean) * factor + mean).clamp_(0, 255)
    if kind == "saturation":  # blend with the gray image
        gray = _gray(x)
        return ((x - gray) * factor + gray).clamp_(0, 255)
    return F.adjust_hue(x / 255, factor) * 255


class _RandomView:
    """One augmented view, written with plain tensor ops on a float image in [0, 255].

    Same augmentations as torchvision's RandomResizedCrop, RandomHorizontalFlip, ColorJitter (random order),
    RandomGrayscale, GaussianBlur and RandomSolarize, but about three times faster on small images: the v2
    transform classes spend most of their time on dispatch, not on pixels.
    """

    def __init__(
        self, size: int, scale: tuple[float, float], color: bool, blur_p: float, solarize_p: float
    ) -> None:
        self.size, self.scale, self.color = size, scale, color
        self.blur_p, self.solarize_p = blur_p, solarize_p
        # colour: DINO's jitter (JITTER_RANGES) and blur sigma 0.1-2 with a kernel of ~size / 10;
        # grayscale: brightness / contrast 0.4 and a 3-pixel blur with sigma 0.1-1
        self.jitter = ("brightness", "contrast", "saturation", "hue") if color else ("brightness", "contrast")
        self.kernel = max(3, int(0.1 * size) | 1) if color else 3
        self.sigma = (0.1, 2.0) if color else (0.1, 1.0)

    def __call__(self, x: Tensor) -> Tensor:
        top, left, h, w = _crop_box(x.shape[1], x.shape[2], self.scale)
        crop = x[None, :, top : top + h, left : left + w].float()  # (1, C, h, w)
        x = torch.nn.functional.interpolate(
            crop, size=(self.size, self.size), mode="bilinear", antialias=True
        )
        x = x[0].clamp_(0, 255)  # (C, size, size)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if torch.rand(()) < 0.8:
            for i in torch.randperm(len(self.jitter)).tolist():
                kind = self.jitter[i]
                x = _jitter(x, kind, _uniform(*JITTER_RANGES[kind]))
        if self.color and torch.rand(()) < 0.2:
            x = _gray(x).expand(3, -1, -1)
        if torch.rand(()) < self.blur_p:
            x = self._blur(x, _uniform(*self.sigma))
        if torch.rand(()) < self.solarize_p:
            x = torch.where(x >= 128, 255 - x, x)  # 128 = mid-range of uint8
        return x

    def _blur(self, x: Tensor, sigma: float) -> Tensor:
        """Separable Gaussian blur with reflect padding."""
        k, channels = self.kernel, x.shape[0]
        taps = torch.exp(-((torch.arange(k, dtype=torch.float32) - k // 2) ** 2) / (2 * sigma**2))
        taps = (taps / taps.sum()).expand(channels, 1, 1, k)  # (C, 1, 1, k), depthwise
        x = torch.nn.functional.pad(x[None], (k // 2,) * 4, mode="reflect")  # (1, C, H + k - 1, W + k - 1)
        x = torch.nn.functional.conv2d(x, taps, groups=channels)
        return torch.nn.functional.conv2d(x, taps.transpose(2, 3), groups=channels)[0]

    def __repr__(self) -> str:
        return (
            f"RandomView(size={self.size}, scale={self.scale}, jitter={self.jitter}, blur=(p={self.blur_p}, "
            f"kernel={self.kernel}, sigma={self.sigma}), solarize_p={self.solarize_p})"
        )


class MultiCropTransform:
    """DINO-style multi-crop: two global views, then `num_local` smaller local views.

    Each view is a RandomResizedCrop plus horizontal flip and photometric noise. RGB (color=True):
    colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale with p 0.2, Gaussian blur sigma 0.1-2 (by
    default p 1.0 for view 1, 0.1 for view 2, 0.5 for locals), solarisation (by default p 0.2) on view 2.
    Grayscale: brightness and contrast jitter 0.4 with p 0.8 and a kernel-3 blur of sigma 0.1-1, with the
    same probabilities.

    Args:
        global_size: side of the global views in pixels.
        local_size: side of the local views; required when num_local > 0.
        num_local: number of local views.
        global_scale: (low, high) area fraction of the global crops.
        local_scale: (low, high) area fraction of the local crops.
        mean: per-channel mean, in_chans values.
        std: per-channel std, in_chans values.
        in_chans: channels of the output, 1 or 3; inputs are converted.
        color: RGB colour augmentations (needs in_chans=3); defaults to in_chans == 3.
        blur_prob: probability of the Gaussian blur for global view 1, global view 2 and local views.
        solarize_prob: probability of solarising global view 2.

    Raises:
        ValueError: bad sizes, scales, probabilities, channels, color with in_chans=1, or mean/std lengths.

    Example:
        >>> t = MultiCropTransform(28, 14, num_local=2, mean=(0.286,), std=(0.353,), in_chans=1)
        >>> [v.shape for v in t(torch.zeros(1, 28, 28, dtype=torch.uint8))]
        [torch.Size([1, 28, 28]), torch.Size([1, 28, 28]), torch.Size([1, 14, 14]), torch.Size([1, 14, 14])]
    """

    def __init__(
        self,
        global_size: int,
        local_size: int = 0,
        num_local: int = 0,
        global_scale: Sequence[float] = (0.25, 1.0),
        local_scale: Sequence[float] = (0.05, 0.25),
        *,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int,
        color: bool | None = None,
        blur_prob: Sequence[float] = DINO_BLUR_PROB,
        solarize_prob: float = DINO_SOLARIZE_PROB,
    ) -> None:
        if len(blur_prob) != 3 or not all(0 <= p <= 1 for p in (*blur_prob, solarize_prob)):
            raise ValueError(
                f"blur_prob needs three probabilities (global view 1, global view 2, local views) and "
                f"solarize_prob one, all in [0, 1]; got blur_prob={tuple(blur_prob)}, "
                f"solarize_prob={solarize_prob}"
            )
        if global_size <= 0 or num_local < 0 or (num_local > 0 and local_size <= 0):
            raise ValueError(
                f"need global_size > 0, num_local >= 0 and local_size > 0 when num_local > 0, got "
                f"global_size={global_size}, local_size={local_size}, num_local={num_local}"
            )
        global_scale = _check_scale("global_scale", global_scale)
        local_scale = _check_scale("local_scale", local_scale)
        self.normalize = _Normalize(mean, std, in_chans)
        self.in_chans, self.num_local = in_chans, num_local
        self.color = in_chans == 3 if color is None else color
        if self.color and in_chans != 3:
            raise ValueError(f"color=True needs in_chans=3, got in_chans={in_chans}; pass color=False")
        blur1, blur2, blur_local = blur_prob
        self.global1 = _RandomView(global_size, global_scale, self.color, blur1, 0.0)
        self.global2 = _RandomView(global_size, global_scale, self.color, blur2, solarize_prob)
        self.local = _RandomView(local_size, local_scale, self.color, blur_local, 0.0) if num_local else None

    def __call__(self, image: Image.Image | Tensor) -> list[Tensor]:
        """Augment one image.

        Args:
            image: PIL image or uint8 tensor (C, H, W) / (H, W).

        Returns:
            2 + num_local float tensors: the global views (in_chans, global_size, global_size), then the
            local views (in_chans, local_size, local_size).
        """
        x = to_uint8_image(image, self.in_chans)
        views = [self.global1(x), self.global2(x)]
        if self.local is not None:
            views += [self.local(x) for _ in range(self.num_local)]
        return [self.normalize(v) for v in views]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_local={self.num_local}, global={self.global1}, local={self.local})"


def multicrop_preset(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
    num_local: int = 0,
    global_scale: Sequence[float] | None = None,
    local_scale: Sequence[float] | None = None,
    blur_prob: Sequence[float] = DINO_BLUR_PROB,
    solarize_prob: float = DINO_SOLARIZE_PROB,
) -> MultiCropTransform:
    """The multi-crop settings used for the zoo, scaled to the image size.

    Small images (img_size <= 64, e.g. Fashion-MNIST 28, CIFAR 32): global views at img_size with crop
    scale (0.3, 1), local views at round(img_size / 2) (28 -> 14) with scale (0.1, 0.3). Large images
    follow DINO: local views at round(img_size * 96 / 224) (224 -> 96) with scale (0.05, 0.4), global
    scale (0.4, 1) with local views and (0.14, 1) without.

    Args:
        img_size: side of the training images (and of the global views).
        mean: per-channel mean, in_chans values.
        std: per-channel std, in_chans values.
        in_chans: 1 or 3; RGB colour augmentations are used when 3.
        num_local: number of local views.
        global_scale: (low, high) area fraction of the global crops, replacing the preset's.
        local_scale: (low, high) area fraction of the local crops, replacing the preset's.
        blur_prob: blur probabilities of global view 1, global view 2 and the local views (DINO's).
        solarize_prob: solarisation probability of global view 2 (DINO's).

    Returns:
        The configured MultiCropTransform.

    Raises:
        ValueError: as MultiCropTransform.
    """
    if img_size <= 64:
        local_size, preset_global, preset_local = round(img_size / 2), (0.3, 1.0), (0.1, 0.3)
    else:
        local_size, preset_local = round(img_size * 96 / 224), (0.05, 0.4)
        preset_global = (0.4, 1.0) if num_local else (0.14, 1.0)
    return MultiCropTransform(
        img_size,
        local_size,
        num_local,
        global_scale or preset_global,
        local_scale or preset_local,
        mean=mean,
        std=std,
        in_chans=in_chans,
        blur_prob=blur_prob,
        solarize_prob=solarize_prob,
    )


class EvalTransform:
    """Eval preprocessing: resize the shorter side to img_size / crop_pct, center crop, normalise.

    Args:
        img_size: side of the output.
        mean: per-channel mean, in_chans values.
        std: per-channel std, in_chans values.
        in_chans: 1 or 3; inputs are converted (RGBA -> RGB, RGB -> gray, gray -> RGB).
        crop_pct: fraction of the resized image kept by the center crop, in (0, 1] (timm's convention).
        interpolation: "bicubic", "bilinear" or "nearest".

    Raises:
        ValueError: bad img_size, crop_pct, interpolation, channels or mean/std lengths.
    """

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int,
        crop_pct: float = 1.0,
        interpolation: str = "bicubic",
    ) -> None:
        if img_size <= 0 or not 0 < crop_pct <= 1:
            raise ValueError(f"need img_size > 0 and 0 < crop_pct <= 1, got {img_size} and {crop_pct}")
        if interpolation not in RESAMPLE:
            raise ValueError(f"unknown interpolation {interpolation!r}; use one of {list(RESAMPLE)}")
        self.normalize = _Normalize(mean, std, in_chans)
        self.img_size, self.in_chans, self.crop_pct, self.interpolation = (
            img_size,
            in_chans,
            crop_pct,
            interpolation,
        )
        self.resize_to = math.floor(img_size / crop_pct)  # the shorter side before the center crop

    def __call__(self, image: Image.Image | Tensor) -> Tensor:
        """Preprocess one image.

        Args:
            image: PIL image or uint8 tensor (C, H, W) / (H, W).

        Returns:
            float32 tensor (in_chans, img_size, img_size), normalised.

        Raises:
            TypeError: not a PIL image or uint8 tensor.
            ValueError: an empty image.
        """
        x = to_uint8_image(image, self.in_chans)
        if x.shape[1:] != (self.resize_to, self.resize_to) or self.resize_to != self.img_size:
            # PIL's resampling and luma, exactly as protozoo.onnx_runtime.OnnxModel preprocesses
            pil = image if isinstance(image, Image.Image) else _to_pil(image)
            pil = to_mode(pil, self.in_chans)
            x = F.pil_to_tensor(resize_and_crop(pil, self.img_size, self.crop_pct, self.interpolation))
        return self.normalize(x)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(img_size={self.img_size}, in_chans={self.in_chans}, "
            f"crop_pct={self.crop_pct}, interpolation={self.interpolation!r})"
        )


def eval_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
    crop_pct: float = 1.0,
    interpolation: str = "bicubic",
) -> EvalTransform:
    """Build the eval preprocessing (PIL or uint8 tensor -> normalised float (in_chans, img_size, img_size)).

    Args:
        img_size: side of the output.
        mean: per-channel mean, in_chans values.
        std: per-channel std, in_chans values.
        in_chans: 1 or 3.
        crop_pct: fraction kept by the center crop after resizing the shorter side to img_size / crop_pct.
        interpolation: "bicubic", "bilinear" or "nearest".

    Returns:
        A picklable EvalTransform.

    Raises:
        ValueError: as EvalTransform.
    """
    return EvalTransform(img_size, mean, std, in_chans, crop_pct=crop_pct, interpolation=interpolation)


def _to_pil(image: Tensor) -> Image.Image:
    """A checked uint8 tensor (H, W) or (C, H, W), C in 1, 3, 4 -> PIL image (alpha dropped)."""
    x = image.unsqueeze(0) if image.ndim == 2 else image
    x = x[:3].permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
