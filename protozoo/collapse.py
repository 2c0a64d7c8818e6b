"""Measuring partial prototype collapse (method.md §7).

The central metric is the number of *unique prototypes* of Arteaga et al., "Why Prototypes Collapse"
(arXiv 2510.20108), Definition 2.1: a greedy cover of the L2-normalised prototype rows in index order,
where a representative covers every still-uncovered row with ``1 - cos < eps``. Around it sit the usage
statistics (perplexity of the mean assignment, dead prototypes), the nearest-neighbour cosine of each
prototype and the plots that track them during training.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # matplotlib is imported by the plotting functions only: it is slow to import
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

EPS_GRID = (0.025, 0.1, 0.25, 0.5)  # the paper's thresholds; a larger eps merges more, so it is stricter

_MAX_BLOCK_ELEMENTS = 2**22  # similarity block size (16 MiB fp32) when covering later rows; cache-friendly


def _as_unit_rows(prototypes: Tensor | np.ndarray) -> Tensor:
    """Validate a (K, d) prototype matrix and return its L2-normalised rows (fp32, or fp64 if given)."""
    if not isinstance(prototypes, Tensor | np.ndarray):
        raise TypeError(
            "prototypes must be a torch.Tensor or numpy.ndarray of shape (K, d), "
            f"got {type(prototypes).__name__}"
        )
    x = torch.as_tensor(prototypes).detach()  # stays on its device: a GPU does the matmuls far faster
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"prototypes must have shape (K, d) with K >= 1 and d >= 1, got shape {tuple(x.shape)}; "
            "pass one prototype per row"
        )
    if not (x.is_floating_point() and x.dtype == torch.float64):
        x = x.float()
    if not torch.isfinite(x).all():
        bad = torch.nonzero(~torch.isfinite(x).all(1)).flatten()[:5].tolist()
        raise ValueError(
            f"prototypes contain NaN or Inf values (rows {bad} ...); check the checkpoint or GMM state"
        )
    norms = x.norm(dim=1)
    if (norms == 0).any():
        bad = torch.nonzero(norms == 0).flatten()[:5].tolist()
        raise ValueError(
            f"prototypes contain all-zero rows (rows {bad} ...), which have no direction to normalise; "
            "drop them before measuring collapse"
        )
    return x / norms[:, None]


def greedy_cover(close: np.ndarray) -> list[int]:
    """Representatives of a greedy cover in row order, the scan of the paper's Definition 2.1: row i is
    kept unless an earlier kept row is close to it.

    Args:
        close: (n, n) bool, ``close[i, j]`` when rows i and j lie within the threshold of each other.

    Returns:
        The kept rows' indices, ascending.
    """
    taken = np.zeros(len(close), dtype=bool)
    reps = []
    for i in range(len(close)):
        if not taken[i]:
            reps.append(i)
            taken[i + 1 :] |= close[i, i + 1 :]  # earlier rows are already representatives or covered
    return reps


def unique_prototypes(prototypes: Tensor | np.ndarray, eps: float = 0.025, chunk_size: int = 1024) -> int:
    """Count the unique prototypes of a prototype matrix (the paper's Definition 2.1).

    The rows are L2-normalised and scanned in index order; the first row not yet covered becomes a
    representative and covers every uncovered row j with ``1 - cos(c_i, c_j) < eps``. The result is the
    number of representatives, so ``K`` means no two prototypes are within ``eps`` and ``1`` means full
    collapse. The scan runs over chunks of ``chunk_size`` rows: inside a chunk the greedy pass walks the
    chunk's own similarity block, then the chunk's representatives cover the later uncovered rows with
    one batched matmul, so no K x K matrix is ever held. The answer does not depend on ``chunk_size``.

    Args:
        prototypes: Prototype matrix of shape (K, d), a tensor or array; rows need not be normalised.
        eps: Cosine-distance threshold, > 0. Larger eps merges more rows and is the stricter test.
        chunk_size: Rows per chunk; trades memory (chunk_size x K floats) for fewer Python steps.

    Returns:
        The number of unique prototypes, between 1 and K.

    Raises:
        TypeError: If ``prototypes`` is not a tensor or array.
        ValueError: If the matrix is not 2-D with K >= 1, holds NaN/Inf or all-zero rows, or if
            ``eps`` or ``chunk_size`` is not positive.
    """
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}; the paper uses {EPS_GRID}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    x = _as_unit_rows(prototypes)
    k = x.shape[0]
    threshold = 1.0 - eps  # covered  <=>  1 - cos < eps  <=>  cos > 1 - eps
    covered = torch.zeros(k, dtype=torch.bool, device=x.device)
    count = 0
    for start in range(0, k, chunk_size):
        stop = min(start + chunk_size, k)
        todo = start + torch.nonzero(~covered[start:stop]).flatten()  # uncovered rows of this chunk
        if todo.numel() == 0:
            continue
        xc = x[todo]  # (c, d)
        reps = greedy_cover((xc @ xc.T > threshold).cpu().numpy())  # inside the chunk
        count += len(reps)
        covered[todo] = True
        later = stop + torch.nonzero(~covered[stop:]).flatten()  # uncovered rows after this chunk
        if later.numel() == 0:
            continue
        xr = xc[torch.as_tensor(reps, device=x.device)]  # (R, d)
        for piece in later.split(max(1, _MAX_BLOCK_ELEMENTS // len(reps))):
            hit = (x[piece] @ xr.T).amax(dim=1) > threshold  # (L,); amax is far cheaper than (> t).any
            covered[piece[hit]] = True
    return count


def unique_fractions(
    prototypes: Tensor | np.ndarray, eps_grid: tuple[float, ...] = EPS_GRID
) -> dict[str, float]:
    """Fraction of unique prototypes at each threshold of a grid.

    This is the quantity logged as ``unique`` in a run's metrics.jsonl and plotted by
    :func:`plot_unique_over_steps`: the count of :func:`unique_prototypes` divided by K.

    Args:
        prototypes: Prototype matrix of shape (K, d).
        eps_grid: Thresholds to evaluate; defaults to the paper's (0.025, 0.1, 0.25, 0.5).

    Returns:
        A map from ``str(eps)`` (e.g. ``"0.025"``) to the unique fraction in (0, 1].

    Raises:
        TypeError: If ``prototypes`` is not a tensor or array.
        ValueError: As :func:`unique_prototypes`, or if ``eps_grid`` is empty.
    """
    if len(eps_grid) == 0:
        raise ValueError(f"eps_grid must hold at least one threshold, got {eps_grid!r}; try {EPS_GRID}")
    k = _as_unit_rows(prototypes).shape[0]
    return {str(eps): unique_prototypes(prototypes, eps) / k for eps in eps_grid}


def nearest_neighbour_cosine(prototypes: Tensor | np.ndarray, chunk_size: int = 1024) -> Tensor:
    """Cosine similarity of each prototype to its nearest other prototype.

    A value near 1 means the prototype has a near-duplicate; its histogram shows how collapse spreads
    over the whole set rather than at one threshold. Computed in row chunks of at most ``chunk_size`` x K,
    over the upper block-triangle of the similarity matrix only.

    Args:
        prototypes: Prototype matrix of shape (K, d) with K >= 2.
        chunk_size: Rows per chunk.

    Returns:
        A (K,) float tensor, on the prototypes' device, with each row's maximum cosine to any other row.

    Raises:
        TypeError: If ``prototypes`` is not a tensor or array.
        ValueError: If K < 2, the matrix is invalid as in :func:`unique_prototypes`, or ``chunk_size`` < 1.
    """
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    x = _as_unit_rows(prototypes)
    k = x.shape[0]
    if k < 2:
        raise ValueError(f"nearest_neighbour_cosine needs at least 2 prototypes, got shape {tuple(x.shape)}")
    out = torch.full((k,), -math.inf, dtype=x.dtype, device=x.device)
    for start in range(0, k, chunk_size):
        stop = min(start + chunk_size, k)
        # only the upper block-triangle: the chunk against itself and all later rows, used both ways
        sim = x[start:stop] @ x[start:].T  # (c, K - start)
        rows = torch.arange(stop - start, device=x.device)
        sim[rows, rows] = -math.inf  # a prototype is not its own neighbour
        out[start:stop] = torch.maximum(out[start:stop], sim.amax(dim=1))
        out[start:] = torch.maximum(out[start:], sim.amax(dim=0))
    return out


def usage(assignments: Tensor, num_prototypes: int | None = None) -> dict[str, float]:
    """How evenly a reference set uses the prototypes.

    ``perplexity`` is ``exp(H(p_mean)) / K`` where ``p_mean`` is the mean assignment over the set (for
    argmax indices, their normalised histogram): 1 when every prototype is used equally, 1/K when all
    samples pick one. ``dead`` is the fraction of prototypes that are never the argmax of any sample.

    Args:
        assignments: Either (N, K) probabilities (rows sum to 1) or (N,) integer argmax indices.
        num_prototypes: K. Required for indices; for probabilities it must match the second dimension
            when given.

    Returns:
        ``{"perplexity": float, "dead": float}``.

    Raises:
        TypeError: If ``assignments`` is not a tensor.
        ValueError: If the shape is wrong, N == 0, probabilities are negative, non-finite or do not sum
            to 1 per row, indices are out of range, or ``num_prototypes`` is missing or inconsistent.
    """
    if not isinstance(assignments, Tensor):
        raise TypeError(f"assignments must be a torch.Tensor, got {type(assignments).__name__}")
    a = assignments.detach().cpu()
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise ValueError(
            f"assignments must be (N, K) probabilities or (N,) argmax indices with N >= 1, "
            f"got shape {tuple(a.shape)}"
        )
    if num_prototypes is not None and not (isinstance(num_prototypes, int) and num_prototypes >= 1):
        raise ValueError(f"num_prototypes must be a positive int, got {num_prototypes!r}")
    if a.ndim == 2:
        k = a.shape[1]
        if num_prototypes is not None and num_prototypes != k:
            raise ValueError(
                f"num_prototypes={num_prototypes} does not match assignments of shape {tuple(a.shape)}"
            )
        a = a.double()
        if not torch.isfinite(a).all() or (a < 0).any():
            raise ValueError(
                "assignment probabilities must be finite and >= 0; apply softmax to logits first"
            )
        row_sums = a.sum(1)
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-3):
            raise ValueError(
                f"assignment rows must sum to 1 (got sums from {row_sums.min().item():.4g} to "
                f"{row_sums.max().item():.4g}); apply softmax to logits first"
            )
        mean = a.mean(0)
        winners = a.argmax(1)
    else:
        if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
            raise ValueError(f"1-D assignments must be integer argmax indices, got dtype {a.dtype}")
        if num_prototypes is None:
            raise ValueError("num_prototypes is required with (N,) argmax indices; pass num_prototypes=K")
        k = num_prototypes
        if a.min() < 0 or a.max() >= k:
            raise ValueError(
                f"argmax indices must lie in [0, {k}), got values from {a.min().item()} to {a.max().item()}"
            )
        winners = a.long()
        mean = torch.bincount(winners, minlength=k).double() / a.shape[0]
    entropy = -torch.special.xlogy(mean, mean).sum()  # 0 * log 0 = 0
    counts = torch.bincount(winners, minlength=k)
    return {"perplexity": math.exp(entropy.item()) / k, "dead": (counts == 0).double().mean().item()}


def _used_rows(assignments: Tensor, k: int) -> Tensor:
    """(K,) bool: which prototypes are the argmax of at least one sample (inputs checked by :func:`usage`)."""
    winners = assignments.argmax(1) if assignments.ndim == 2 else assignments
    return torch.bincount(winners.detach().cpu().long(), minlength=k) > 0


def _check_masses(masses: Tensor | np.ndarray, k: int, min_mass: float) -> Tensor:
    """Validate the GMM's (K,) masses and the threshold; return the masses as a CPU float64 tensor."""
    if not isinstance(masses, Tensor | np.ndarray):
        raise TypeError(
            f"masses must be a torch.Tensor or numpy.ndarray of shape (K,), got {type(masses).__name__}"
        )
    m = torch.as_tensor(masses).detach().cpu().double()
    if m.shape != (k,):
        raise ValueError(
            f"masses must have shape ({k},), one per prototype, got {tuple(m.shape)}; "
            "pass the GMM's prototype_source.mass"
        )
    if not torch.isfinite(m).all() or (m < 0).any():
        raise ValueError("masses must be finite and >= 0; pass the GMM's prototype_source.mass")
    if not (isinstance(min_mass, int | float) and math.isfinite(min_mass) and min_mass > 0):
        raise ValueError(f"min_mass must be a finite number > 0, got {min_mass!r}; the default is 2.0")
    return m


@dataclass
class CollapseReport:
    """Collapse diagnostics of one prototype matrix (see :func:`collapse_report`).

    Attributes:
        num_prototypes: K.
        unique: Unique fraction per eps over all K rows, keyed ``str(eps)``.
        unique_count: Unique count per eps, keyed ``str(eps)``.
        nn_cosine_mean: Mean over prototypes of the cosine to the nearest other prototype.
        nn_cosine_max: Largest such cosine (1.0 means an exact duplicate exists).
        perplexity: Usage perplexity / K on the reference assignments, or None without them.
        dead: Fraction of prototypes never the argmax on the reference set (1 - used / K), or None.
        used: Number of prototypes that are the argmax of at least one reference sample, or None.
        carrying: Number of GMM components holding at least ``min_mass`` units of mass, or None
            without masses.
        min_mass: The mass threshold of ``carrying``, or None without masses.
        live: The prototypes that carry data: ``used`` when assignments are given, else ``carrying``,
            else None (unknown).
        unique_live: Unique count among the live rows / live, per eps; None when live is unknown or 0.
        unique_live_count: Unique count among the live rows, per eps; None likewise.
    """

    num_prototypes: int
    unique: dict[str, float]
    unique_count: dict[str, int]
    nn_cosine_mean: float
    nn_cosine_max: float
    perplexity: float | None = None
    dead: float | None = None
    used: int | None = None
    carrying: int | None = None
    min_mass: float | None = None
    live: int | None = None
    unique_live: dict[str, float] | None = None
    unique_live_count: dict[str, int] | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the report as a JSON-serialisable dict."""
        return asdict(self)

    def __str__(self) -> str:
        k = self.num_prototypes
        header = f"{'eps':>8}  {'unique':>8}  {'fraction':>8}"
        if self.unique_live is not None:
            header += f"  {'unique among live':>17}  {'fraction':>8}"
        lines = [f"prototypes: {k}", header]
        for key, frac in self.unique.items():
            line = f"{key:>8}  {self.unique_count[key]:>8d}  {frac:>8.3f}"
            if self.unique_live is not None and self.unique_live_count is not None:
                line += f"  {self.unique_live_count[key]:>17d}  {self.unique_live[key]:>8.3f}"
            lines.append(line)
        lines.append(
            f"nearest-neighbour cosine: mean {self.nn_cosine_mean:.3f}, max {self.nn_cosine_max:.3f}"
        )
        mass = f"carrying >= {self.min_mass:g} units of GMM mass" if self.min_mass is not None else ""
        if self.used is not None:
            lines.append(f"live prototypes: {self.used} of {k} (used by data)")
            lines.append(f"dead prototypes: {k - self.used} of {k} (never the argmax of a reference sample)")
            if self.carrying is not None:
                lines.append(f"{mass}: {self.carrying} of {k}")
        elif self.carrying is not None:
            lines.append(f"live prototypes: {self.carrying} of {k} ({mass})")
            lines.append(f"dead prototypes: {k - self.carrying} of {k} (less mass: perhaps never moved)")
        else:
            lines += [
                "caveat: live and dead prototypes are unknown (no GMM masses, no reference data):",
                "  the unique fractions may count prototypes that no data uses, such as random vectors that",
                "  never moved; pass masses or assignments (a protozoo model's head.safetensors has masses)",
            ]
        if self.perplexity is not None and self.dead is not None:
            lines.append(f"usage perplexity / K: {self.perplexity:.3f}, dead: {self.dead:.3f}")
        return "\n".join(lines)


def collapse_report(
    prototypes: Tensor | np.ndarray,
    assignments: Tensor | None = None,
    masses: Tensor | np.ndarray | None = None,
    min_mass: float = 2.0,
) -> CollapseReport:
    """Compute every collapse diagnostic of a prototype matrix.

    Unique prototypes at each eps of :data:`EPS_GRID` and the nearest-neighbour cosine summary. With
    reference assignments: the usage perplexity, the ``used`` prototypes (the argmax of at least one
    sample) and the dead fraction. With the GMM's masses: the components ``carrying`` at least
    ``min_mass`` units of mass. The live prototypes are the used ones, else the carrying ones, and the
    unique fractions are also counted among them alone (``unique_live``), so that prototypes no data uses,
    which stay far apart where they were initialised, cannot pass as unique ones.

    Args:
        prototypes: Prototype matrix of shape (K, d) with K >= 2.
        assignments: Optional (N, K) probabilities or (N,) argmax indices on a reference set.
        masses: Optional (K,) mass A of each GMM component (``prototype_source.mass`` in a model's
            head.safetensors).
        min_mass: Mass a component must hold to count as carrying data; > 0 (one unit is one sample's
            worth of responsibility, and every component starts with one pseudo-count).

    Returns:
        A :class:`CollapseReport`; ``print`` it for a small table.

    Raises:
        TypeError: If an input has the wrong type.
        ValueError: If an input is invalid (see :func:`unique_prototypes` and :func:`usage`), the masses
            are not K finite values >= 0, or ``min_mass`` is not positive.
    """
    x = _as_unit_rows(prototypes)
    k = x.shape[0]
    counts = {str(eps): unique_prototypes(x, eps) for eps in EPS_GRID}
    nn = nearest_neighbour_cosine(x)
    use = usage(assignments, num_prototypes=k) if assignments is not None else None
    used_rows = _used_rows(assignments, k) if assignments is not None else None
    carrying_rows = _check_masses(masses, k, min_mass) >= min_mass if masses is not None else None
    live_rows = used_rows if used_rows is not None else carrying_rows
    live_counts = None
    if live_rows is not None and live_rows.any():
        live_x = x[live_rows.to(x.device)]  # index order kept, as Definition 2.1 scans it
        live_counts = {str(eps): unique_prototypes(live_x, eps) for eps in EPS_GRID}
    live = int(live_rows.sum()) if live_rows is not None else None
    return CollapseReport(
        num_prototypes=k,
        unique={key: count / k for key, count in counts.items()},
        unique_count=counts,
        nn_cosine_mean=nn.mean().item(),
        nn_cosine_max=nn.max().item(),
        perplexity=use["perplexity"] if use else None,
        dead=use["dead"] if use else None,
        used=int(used_rows.sum()) if used_rows is not None else None,
        carrying=int(carrying_rows.sum()) if carrying_rows is not None else None,
        min_mass=float(min_mass) if masses is not None else None,
        live=live,
        unique_live={key: c / live for key, c in live_counts.items()} if live_counts and live else None,
        unique_live_count=live_counts,
    )


def _save_atomic(fig: Figure, path: str | Path) -> None:
    """Render ``fig`` with Agg next to ``path`` and move it into place, so readers never see half a file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # no pyplot: no global state and no interactive backend
    fmt = path.suffix.lstrip(".") or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt, dpi=120)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)


def plot_unique_over_steps(
    curves: dict[str, tuple[list[int], list[dict[str, float]]]],
    path: str | Path,
    title: str = "Unique prototypes during training",
    live: dict[str, list[float | None]] | None = None,
) -> None:
    """Plot the unique-prototype fraction against the training step, one panel per eps.

    Each curve is one line in every panel: a run passes one curve, a method comparison one per method.
    With ``live``, each curve's live fraction (live prototypes / K) is drawn dashed in the curve's colour
    in every panel, so a high unique fraction over mostly dead prototypes shows as such.

    Args:
        curves: Map from curve name to ``(steps, uniques)``, where ``uniques[i]`` maps ``str(eps)`` to
            the unique fraction at ``steps[i]`` (the ``unique`` field of metrics.jsonl).
        path: Output image path; the format follows the suffix (PNG by default). Written atomically.
        title: Figure title.
        live: Optional map from curve name (a subset of ``curves``) to the live fraction in [0, 1] at each
            of that curve's steps, None where unknown.

    Raises:
        ValueError: If ``curves`` is empty, a curve's steps and uniques differ in length or are empty,
            an entry lacks one of the :data:`EPS_GRID` keys, or ``live`` names an unknown curve, has the
            wrong length or a value outside [0, 1].
    """
    if not curves:
        raise ValueError("curves is empty; pass {name: (steps, uniques)} with at least one curve")
    for name, (steps, uniques) in curves.items():
        if len(steps) == 0 or len(steps) != len(uniques):
            raise ValueError(
                f"curve {name!r} has {len(steps)} steps and {len(uniques)} unique entries; "
                "they must be equal and non-zero"
            )
        for entry in uniques:
            missing = [str(eps) for eps in EPS_GRID if str(eps) not in entry]
            if missing:
                raise ValueError(f"curve {name!r} has an entry {entry!r} without the eps keys {missing}")
    live = live or {}
    for name, fractions in live.items():
        if name not in curves:
            raise ValueError(f"live has a curve {name!r} that curves lacks; its curves are {list(curves)}")
        if len(fractions) != len(curves[name][0]):
            raise ValueError(
                f"live curve {name!r} has {len(fractions)} values for {len(curves[name][0])} steps; "
                "pass one per step (None where unknown)"
            )
        bad = [f for f in fractions if f is not None and not 0.0 <= f <= 1.0]
        if bad:
            raise ValueError(f"live curve {name!r} has values {bad} outside [0, 1]; pass live count / K")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(EPS_GRID), 3.0), layout="constrained")
    axes = fig.subplots(1, len(EPS_GRID), sharey=True)
    for ax, eps in zip(axes, EPS_GRID, strict=True):
        for name, (steps, uniques) in curves.items():
            fractions = [u[str(eps)] for u in uniques]
            marker = "." if len(steps) < 30 else None
            (line,) = ax.plot(steps, fractions, marker=marker, label=name)
            known = [(s, f) for s, f in zip(steps, live.get(name, []), strict=False) if f is not None]
            if known:
                xs, ys = zip(*known, strict=True)
                ax.plot(xs, ys, linestyle="--", marker=marker, color=line.get_color(), label=f"{name} (live)")
        ax.set_title(f"eps = {eps}")
        ax.set_xlabel("training step")
        ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("unique fraction" + (" (dashed: live / K)" if live else ""))
    axes[-1].legend(fontsize="small")
    fig.suptitle(title)
    _save_atomic(fig, path)


def plot_nn_cosine_histogram(
    prototypes: Tensor | np.ndarray, path: str | Path, title: str = "Nearest-neighbour cosine"
) -> None:
    """Plot the histogram of each prototype's cosine to its nearest other prototype.

    Vertical lines mark ``1 - eps`` for each eps of :data:`EPS_GRID`: prototypes to the right of a line
    have a neighbour within that eps.

    Args:
        prototypes: Prototype matrix of shape (K, d) with K >= 2.
        path: Output image path; the format follows the suffix (PNG by default). Written atomically.
        title: Figure title.

    Raises:
        TypeError: If ``prototypes`` is not a tensor or array.
        ValueError: If the matrix is invalid (see :func:`nearest_neighbour_cosine`).
    """
    from matplotlib.figure import Figure

    nn = nearest_neighbour_cosine(prototypes).cpu().numpy()
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    low = min(float(nn.min()), 0.4)  # keep every 1 - eps marker in view
    ax.hist(nn, bins=100, range=(low, 1.0), color="tab:blue")
    for eps in EPS_GRID:
        ax.axvline(1.0 - eps, color="gray", linestyle="--", linewidth=0.8)
        ax.text(1.0 - eps, 1.0, f" {eps}", transform=ax.get_xaxis_transform(), fontsize="x-small", va="top")
    ax.set_xlabel("cosine to nearest other prototype")
    ax.set_ylabel("prototypes")
    ax.set_title(f"{title} (K = {len(nn)})")
    _save_atomic(fig, path)
