"""Drawing for the demo's views: figures rendered with Agg, image tiles and strips, the collapse table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from protozoo.collapse import EPS_GRID, CollapseReport
from protozoo.config import ProtoConfig
from protozoo.demo.constants import CURVE_EPS, HEATMAP_MAX, STRIP_LEN
from protozoo.fashion_mnist import FASHION_MNIST_CLASSES

_SCALE = 4  # 28 px images are shown at 112 px
# One prototype set on the Collapse tab: its label, its unique fractions over all K at each eps of
# CURVE_EPS, and its collapse report (live and dead prototypes, the unique fractions among the live ones)
Curve = tuple[str, dict[str, float], CollapseReport]


def render(fig: Figure) -> Image.Image:
    """Draw a matplotlib figure with Agg (no pyplot, no global state) into an RGB image."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def tile(images: Tensor, scale: int = _SCALE, gap: int = 2) -> Image.Image:
    """(M, H, W) uint8 images side by side, upscaled ``scale`` times, on white."""
    m, h, w = images.shape
    out = torch.full((h * scale, m * (w * scale + gap) - gap), 255, dtype=torch.uint8)
    big = images.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (M, H*s, W*s)
    for i in range(m):
        x = i * (w * scale + gap)
        out[:, x : x + w * scale] = big[i]
    return Image.fromarray(out.numpy())


def strips(rows: list[tuple[str, Tensor]], band: int = 24, space: int = 10) -> Image.Image:
    """Captioned strips in one image: per (caption, (M, H, W) uint8 images) a line of text, then the tiles."""
    tiles = [tile(images) for _, images in rows]
    out = Image.new(
        "L", (max(t.width for t in tiles), sum(band + t.height + space for t in tiles) - space), 255
    )
    draw, font, y = ImageDraw.Draw(out), ImageFont.load_default(size=15), 0
    for (caption, _), row in zip(rows, tiles, strict=True):
        draw.text((2, y + 3), caption, fill=0, font=font)
        out.paste(row, (0, y + band))
        y += band + row.height + space
    return out


def model_view(x: Tensor, config: ProtoConfig) -> Image.Image:
    """The normalised model input (C, H, W) turned back into an image: what the model actually sees."""
    mean, std = torch.tensor(config.mean).view(-1, 1, 1), torch.tensor(config.std).view(-1, 1, 1)
    x = (x * std + mean).clamp(0, 1).mul(255).round().byte()  # (C, H, W)
    x = x.repeat_interleave(_SCALE, 1).repeat_interleave(_SCALE, 2)
    return Image.fromarray(x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy())


def atlas_figure(
    coords: Tensor,
    proto_coords: Tensor,
    winners: Tensor,
    counts: Tensor,
    members: Tensor,
    selected: int,
    projection: str,
) -> Figure:
    """The 2-D map of the reference set coloured by top prototype, with one prototype highlighted.

    Args:
        coords: (N, 2) positions of the reference embeddings.
        proto_coords: (K, 2) positions of the prototypes in the same map.
        winners: (N,) top prototype of each reference image.
        counts: (K,) reference images whose top prototype each one is.
        members: (K, M) reference images most assigned to each prototype, most first.
        selected: the prototype to highlight.
        projection: the map's method ("umap" or "pca"), for the title.
    """
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    (x, y), (px, py) = coords.numpy().T, proto_coords.numpy().T
    ax.scatter(x, y, c=winners.numpy() % 20, cmap="tab20", vmin=0, vmax=19, s=7, alpha=0.6, linewidths=0)
    used = (counts > 0).numpy()
    ax.scatter(px[used], py[used], marker="x", c="black", s=20, linewidths=0.8, label="prototype")
    if not used.all():
        ax.scatter(px[~used], py[~used], marker="x", c="0.65", s=14, linewidths=0.6, label="never a top one")
    m = members[selected, :STRIP_LEN].numpy()
    ax.scatter(x[m], y[m], facecolors="none", edgecolors="red", s=60, linewidths=1.2, label="its top images")
    ax.scatter(
        px[selected],
        py[selected],
        marker="*",
        c="red",
        edgecolors="black",
        s=260,
        label=f"prototype {selected}",
    )
    ax.set(
        xticks=[],
        yticks=[],
        title=f"{projection.upper()} of the reference embeddings, coloured by top prototype",
    )
    ax.legend(loc="best", fontsize=8)
    return fig


def usage_figure(counts: Tensor, stats: dict[str, float]) -> Figure:
    """Bars of the (K,) top-prototype counts, most used first, titled with usage statistics."""
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(counts)), np.sort(counts.numpy())[::-1], width=1.0, color="tab:blue")
    ax.set(xlim=(-0.5, len(counts) - 0.5), xlabel="prototypes, most used first", ylabel="reference images")
    ax.set_title(
        f"Usage: perplexity / K = {stats['perplexity']:.3f}; never a top prototype: {stats['dead']:.1%}"
    )
    return fig


def heatmap_figure(prototypes: Tensor, counts: Tensor, mean_assignment: Tensor) -> Figure:
    """Cosine similarity of the (K, D) prototypes, the HEATMAP_MAX most used, similar ones adjacent."""
    order = torch.argsort(counts.double() + mean_assignment.double(), descending=True)[:HEATMAP_MAX]
    c = F.normalize(prototypes[order], dim=1)  # (k, D)
    if len(order) > 2:  # similar prototypes next to each other: sort along the first principal direction
        _, _, vh = torch.linalg.svd(c - c.mean(0), full_matrices=False)
        perm = torch.argsort((c - c.mean(0)) @ vh[0])
        order, c = order[perm], c[perm]
    fig = Figure(figsize=(6.5, 5.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow((c @ c.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")  # (k, k)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    names = [str(i) for i in order.tolist()] if len(order) <= 32 else []
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    which = "all" if len(order) == len(prototypes) else f"the {len(order)} most used of"
    ax.set_title(f"Prototype cosine similarity ({which} {len(prototypes)})")
    return fig


def live_label(report: CollapseReport) -> str:
    """ "live N of K, dead M" and what live means there, or that neither is known."""
    k = report.num_prototypes
    if report.used is not None:
        text = f"live {report.used} of {k} (top of a reference image), dead {k - report.used}"
        return text + (f"; GMM mass >= 2: {report.carrying}" if report.carrying is not None else "")
    if report.carrying is not None:
        return f"live {report.carrying} of {k} (GMM mass >= 2), dead {k - report.carrying}"
    return f"live and dead of {k} unknown (no reference set, no GMM masses)"


def _all_label(label: str, report: CollapseReport) -> str:
    """The name of a curve over all K; it says live and dead there when no curve among the live follows."""
    name = f"{label}: all {report.num_prototypes}"
    return name if report.unique_live else f"{name} ({live_label(report)})"


def collapse_figure(curves: list[Curve]) -> Figure:
    """Unique fraction against eps for each curve: over all K (solid) and among the live prototypes (dashed).

    A prototype that no data uses stays far from the others and counts as unique, so the dashed curve,
    at the paper's eps, shows what the live prototypes alone do.
    """
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for (label, curve, report), colour in zip(curves, ("tab:blue", "tab:red"), strict=False):
        among = report.unique_live
        name = _all_label(label, report)
        ax.plot(CURVE_EPS, [curve[str(e)] for e in CURVE_EPS], "-", color=colour, label=name)
        ax.plot(EPS_GRID, [curve[str(e)] for e in EPS_GRID], "o", color=colour)
        if among:
            ax.plot(EPS_GRID, [among[str(e)] for e in EPS_GRID], "s--", color=colour,
                    label=f"{label}: among live ({live_label(report)})")  # fmt: skip
    ax.set(
        xlabel="eps (larger merges more prototypes: stricter)",
        ylabel="unique prototypes / K (dashed: / live)",
        ylim=(0, 1.05),
    )
    ax.set_title("Partial prototype collapse")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    return fig


def collapse_table(curves: list[Curve]) -> pd.DataFrame:
    """The curves at the paper's eps values: per curve a column over all K, and one among the live ones."""
    columns, values = ["eps"], []
    for label, curve, report in curves:
        among = report.unique_live
        columns.append(_all_label(label, report))
        values.append([curve[str(e)] for e in EPS_GRID])
        if among:
            columns.append(f"{label}: among live ({live_label(report)})")
            values.append([among[str(e)] for e in EPS_GRID])
    rows = [[e] + [round(v[i], 4) for v in values] for i, e in enumerate(EPS_GRID)]
    return pd.DataFrame(rows, columns=columns)


def class_name(label: Tensor | int) -> str:
    """The Fashion-MNIST class name of a label."""
    return FASHION_MNIST_CLASSES[int(label)]
