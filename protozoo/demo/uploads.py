"""Uploaded files to model inputs: safe decoding of any image, then conversion to a Fashion-MNIST look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from protozoo.demo.constants import INVERT_CHOICES, MAX_PIXELS, MAX_SIDE

_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def open_upload(
    path: str | Path, name: str = "upload", max_side: int = MAX_SIDE
) -> tuple[Image.Image, list[str]]:
    """Open an uploaded file as an image, refusing what is not one or is too large to decode safely.

    The pixel count is read from the header before anything is decoded; JPEGs are decoded at a reduced
    scale when that suffices, EXIF rotation is applied, and an image larger than ``max_side`` is downscaled.

    Args:
        path: the uploaded file.
        name: the name to quote in messages (the user's file name).
        max_side: longest side kept; larger images are downscaled to it.

    Returns:
        The decoded image (any PIL mode) and the notes to show the user (e.g. that it was downscaled).

    Raises:
        ValueError: the file is not an image PIL can read, is corrupt or truncated, or has more than
            MAX_PIXELS pixels.
    """
    try:
        image: Image.Image = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(
            f"{name!r} is not an image this demo can read; upload a PNG, JPEG, WebP or BMP file"
        ) from None
    except Image.DecompressionBombError:
        raise ValueError(
            f"{name!r} is far too large to decode; downscale it below {MAX_PIXELS:,} pixels"
        ) from None
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise ValueError(
            f"{name!r} is {w}x{h} = {w * h / 1e6:.0f} megapixels; the demo accepts up to "
            f"{MAX_PIXELS / 1e6:.0f} MP, so downscale it first (the model reads 28x28 images)"
        )
    image.draft(image.mode, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when enough
    try:
        image = ImageOps.exif_transpose(image)
        image.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ValueError(
            f"{name!r} could not be decoded ({e}); re-save it as PNG or JPEG and retry"
        ) from None
    notes = []
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        notes.append(f"{name} is {w}x{h}; it was downscaled to {image.width}x{image.height} first.")
    return image, notes


def prepare_image(image: Image.Image, in_chans: int, invert: str = "auto") -> tuple[Image.Image, list[str]]:
    """Bring any PIL image to what a Fashion-MNIST model expects: a light item on black, 1 or 3 channels.

    Transparent pixels are filled with black (the Fashion-MNIST background), 16-bit and float images are
    scaled to 8 bits, colour is reduced to gray for 1-channel models and gray repeated for 3-channel ones.
    With ``invert="auto"`` an image whose border is mostly light (an item photographed on white) is
    inverted.

    Args:
        image: a decoded image of any mode.
        in_chans: the model's input channels, 1 or 3.
        invert: "auto", "yes" or "no".

    Returns:
        The image in mode "L" (in_chans 1) or "RGB" (in_chans 3), and the notes to show the user.

    Raises:
        ValueError: ``invert`` is not one of INVERT_CHOICES, or the image mode cannot be converted.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    notes = []
    colour = image.mode not in _GRAY_MODES
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # more than 8 bits: scale, never clip
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if image.mode == "F" else (65535.0 if values.max() > 255 else 255.0)
        image = Image.fromarray((values.clip(0, None) / max(peak, 1e-12) * 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba.getchannel("A")).min() < 255:
            notes.append("The image has transparent pixels; they were filled with black.")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), rgba)
    if in_chans == 1 and colour:
        notes.append("The model reads grayscale images; the colours were converted to gray.")
    elif in_chans == 3 and not colour:
        notes.append("The image is grayscale; it was repeated over the model's 3 colour channels.")
    try:
        image = image.convert("L" if in_chans == 1 else "RGB")
    except ValueError:
        raise ValueError(f"cannot convert a {image.mode} image; save it as RGB or grayscale") from None
    gray = np.asarray(image.convert("L"))
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert == "yes" or (invert == "auto" and np.median(border) > 127):
        image = ImageOps.invert(image)
        if invert == "auto":
            notes.append(
                "The background looks light, so the image was inverted (Fashion-MNIST shows light items "
                "on black); set Invert to 'no' to keep it as it is."
            )
    return image, notes
