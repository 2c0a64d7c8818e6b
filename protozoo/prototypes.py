"""Prototype sources: the online Gaussian mixture of decoupled training, and learnable prototypes.

Decoupled training (Arteaga et al., "Why Prototypes Collapse", ICLR 2026) fits the prototypes
with an online EM on the teacher's detached embeddings and holds them fixed in the encoder's
loss. The update follows online EM with weight-based forgetting (Celaya & Agostini, 2015);
the equations are in docs/method.md §3 and the code below reads like them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protozoo.distributed import all_reduce_sum_, broadcast_

INITS = ("random", "first_batch", "kmeans++")
COVARIANCES = ("diag", "shared")
RELOCATIONS = ("split", "embeddings", "sampled", "busiest")
RELOCATE_ORDERS = ("index", "lightest")
RELOCATE_MASSES = ("shared", "least", "fresh")
_SPARSE_GAMMA = 1e-9  # responsibilities at or below this are left out of sparse statistics


class OnlineGMM(nn.Module):
    """Diagonal-covariance Gaussian mixture fitted by online EM with responsibility-based forgetting.

    All state lives in fp32 buffers (so it round-trips through ``state_dict`` and safetensors)
    and nothing in it ever receives a gradient. ``update`` runs one E-step on a batch of
    embeddings, sums the sufficient statistics over processes, forgets old mass in proportion
    to the new responsibility and re-estimates the parameters (M-step):

        logp_ik = log π_k − ½ Σ_d [log(2π σ²_kd) + (h_id − μ_kd)² / σ²_kd]
        γ_ik    = softmax_k(β · logp_ik)
        n_k = Σ_i γ_ik,  s1_k = Σ_i γ_ik h_i,  s2_k = Σ_i γ_ik h_i²      (summed over processes)
        a_k = (1 − η)^{n_k};  A ← aA + n;  S1 ← aS1 + s1;  S2 ← aS2 + s2
        μ = S1 / A;  σ² = max(S2 / A − μ², σ²_min);  π = A / ΣA  (or 1/K, ``uniform_weights``)

    Args:
        num_prototypes: K, the number of mixture components.
        dim: d, the embedding dimension.
        eta: forgetting factor per unit of responsibility. Larger forgets faster.
        var_floor: lower bound on every variance.
        init: "random" (means are random unit vectors), "first_batch" (means are the first
            batch's embeddings, recycled when K > B, plus noise) or "kmeans++" (means are embeddings
            spread out by k-means++ seeding over the first ``init_samples`` ones).
        init_noise: standard deviation of the noise added to first-batch means.
        init_samples: "kmeans++" only: how many teacher embeddings are buffered (the means stay random
            meanwhile) before K of them are chosen by k-means++ and the mixture is fitted to them.
        chunk_size: components per chunk in the E-step; bounds memory at B × chunk_size.
        split_every: every this many updates, each component that got less than ``split_min_mass``
            responsibility since the last check (and, with ``merge_eps``, each one that sits on a heavier
            one) is relocated, as DeepCluster relocates empty clusters; 0 never relocates, as in the paper.
        split_min_mass: the responsibility since the last check below which a component counts as dead.
        relocate: where a relocated component goes: "split" (half of one of the busiest components,
            ``_split``), "embeddings" (onto the batch's embedding that the other means cover worst,
            ``_move_to_embeddings``), "sampled" (onto a batch embedding drawn with probability
            proportional to its squared distance from the nearest mean, as k-means++ seeds) or "busiest"
            (into the region of the prototype that got the most responsibility since the last check, onto
            the batch embedding there farthest from it, as bisecting k-means splits its largest cluster).
        merge_eps: at each check, a component whose prototype lies within this cosine distance of a
            heavier one's counts as merged and is relocated too; 0 never merges.
        relocate_order: which movers a check places first when there are more than it can place (one
            per batch embedding, or per busy donor with "split"): "index" (the lowest-numbered, so while
            more are dead than that the same ones move at every check and the rest wait) or "lightest"
            (the least mass first: a component that waited keeps its small mass, one that moved and
            failed holds its share of its owner's, so every mover gets its turn).
        relocate_mass: the mass a component moved onto an embedding starts with: "shared" (an equal
            share of its owner's, so its weight π matches the owner's, but its mean, worth tens of
            units that it never saw, hardly moves off that one embedding), "least" (the least mass of
            any staying component, as scikit-learn's MiniBatchKMeans resets a reassigned centre's count)
            or "fresh" (one unit, the pseudo-count every component starts with: its mean follows the
            first embeddings it wins, and until it has won a unit it does not count as carrying data).
        uniform_weights: keep every mixture weight at π = 1/K instead of A / ΣA, so that the E-step owns
            embeddings by density alone (by distance to the means with one shared variance, as k-means)
            and a heavy component does not draw more of them for being heavy.

    Example:
        >>> gmm = OnlineGMM(num_prototypes=64, dim=16)
        >>> h = torch.nn.functional.normalize(torch.randn(256, 16), dim=1)
        >>> gmm.update(h, beta=1.0)
        >>> gmm.prototypes.shape
        torch.Size([64, 16])
    """

    # the state, registered as buffers in __init__ (annotated for type checkers)
    mass: Tensor  # (K,) A
    s1: Tensor  # (K, d) S1
    s2: Tensor  # (K, d) S2
    means: Tensor  # (K, d) μ
    variances: Tensor  # (K, d) σ²
    log_weights: Tensor  # (K,) log π
    initialized: Tensor  # () bool
    recent_mass: Tensor  # (K,) responsibility since the last split check
    num_updates: Tensor  # () int64

    def __init__(
        self,
        num_prototypes: int,
        dim: int,
        eta: float = 1e-3,
        var_floor: float = 1e-4,
        init: str = "random",
        init_noise: float = 0.02,
        init_samples: int = 4096,
        chunk_size: int = 4096,
        split_every: int = 0,
        split_min_mass: float = 1.0,
        covariance: str = "diag",
        relocate: str = "split",
        merge_eps: float = 0.0,
        relocate_order: str = "index",
        relocate_mass: str = "shared",
        uniform_weights: bool = False,
    ) -> None:
        super().__init__()
        if num_prototypes < 1 or dim < 1:
            raise ValueError(f"OnlineGMM needs num_prototypes >= 1 and dim >= 1, got {num_prototypes}, {dim}")
        if not 0.0 < eta < 1.0:
            raise ValueError(f"eta must lie in (0, 1), got {eta}; the default 1e-3 suits K around 1-64k")
        if covariance not in COVARIANCES:
            raise ValueError(
                f"Unknown covariance {covariance!r}; valid choices are {', '.join(map(repr, COVARIANCES))}"
            )
        if relocate not in RELOCATIONS:
            raise ValueError(
                f"Unknown relocate {relocate!r}; valid choices are {', '.join(map(repr, RELOCATIONS))}"
            )
        if relocate_order not in RELOCATE_ORDERS:
            raise ValueError(
                f"Unknown relocate_order {relocate_order!r}; valid choices are "
                f"{', '.join(map(repr, RELOCATE_ORDERS))}"
            )
        if relocate_mass not in RELOCATE_MASSES:
            raise ValueError(
                f"Unknown relocate_mass {relocate_mass!r}; valid choices are "
                f"{', '.join(map(repr, RELOCATE_MASSES))}"
            )
        if not 0.0 <= merge_eps < 2.0:
            raise ValueError(f"merge_eps is a cosine distance in [0, 2), got {merge_eps}; 0 never merges")
        if init not in INITS:
            raise ValueError(f"Unknown init {init!r}; valid choices are {', '.join(map(repr, INITS))}")
        if init == "kmeans++" and init_samples < num_prototypes:
            raise ValueError(
                f"init='kmeans++' seeds {num_prototypes} means from init_samples={init_samples} buffered "
                "embeddings; give at least as many samples as prototypes (4 x K is a good choice)"
            )
        self.num_prototypes, self.dim = num_prototypes, dim
        self.eta, self.var_floor, self.init = eta, var_floor, init
        if split_every < 0:
            raise ValueError(f"split_every must be >= 0 (0 never splits), got {split_every}")
        self.init_noise, self.chunk_size = init_noise, chunk_size
        self.split_every, self.split_min_mass = split_every, split_min_mass
        self.covariance, self.relocate, self.merge_eps = covariance, relocate, merge_eps
        self.relocate_order, self.relocate_mass = relocate_order, relocate_mass
        self.uniform_weights = uniform_weights
        mu = F.normalize(torch.randn(num_prototypes, dim), dim=1)
        var = torch.full((num_prototypes, dim), 1.0 / dim)
        # One pseudo-count of mass per component, so the statistics describe the initial guess.
        self.register_buffer("mass", torch.ones(num_prototypes))  # A
        self.register_buffer("s1", mu.clone())  # S1 = A μ
        self.register_buffer("s2", var + mu**2)  # S2 = A (σ² + μ²)
        self.register_buffer("means", mu)  # μ
        self.register_buffer("variances", var)  # σ²
        self.register_buffer("log_weights", torch.full((num_prototypes,), -math.log(num_prototypes)))  # log π
        self.register_buffer("initialized", torch.tensor(init == "random"))
        self.register_buffer("recent_mass", torch.zeros(num_prototypes))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        buffered = init_samples if init == "kmeans++" else 0
        self.register_buffer("init_buffer", torch.zeros(buffered, dim))  # kmeans++: embeddings to seed from
        self.register_buffer("init_filled", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load, rebuilding what a published checkpoint leaves out: S1 = A μ, S2 = A (σ² + μ²), and the
        splitting counters (which restart from zero)."""
        summary = all(prefix + k in state_dict for k in ("mass", "means", "variances"))
        if summary and prefix + "s1" not in state_dict and prefix + "s2" not in state_dict:
            mass = state_dict[prefix + "mass"].float()[:, None]
            mu, var = state_dict[prefix + "means"].float(), state_dict[prefix + "variances"].float()
            state_dict[prefix + "s1"], state_dict[prefix + "s2"] = mass * mu, mass * (var + mu**2)
        if summary:
            for key in ("recent_mass", "num_updates", "init_buffer", "init_filled"):
                state_dict.setdefault(prefix + key, torch.zeros_like(getattr(self, key)))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def weights(self) -> Tensor:
        """Mixture weights π, shape (K,)."""
        return self.log_weights.exp()

    @property
    def prototypes(self) -> Tensor:
        """Unit-norm means C = normalize(μ), shape (K, d): the prototypes the loss uses."""
        return F.normalize(self.means, dim=1)

    def _log_prob_chunks(self, h: Tensor, beta: float = 1.0) -> Iterator[tuple[slice, Tensor]]:
        """Yield (slice, β·logp) with logp (B, Kc) = log π_k + log N(h_i | μ_k, σ²_k), chunk by chunk.

        Σ_d (h − μ)²/σ² is expanded so that β·logp is one matmul per chunk:
        β·logp = [h², h] @ [−β/(2σ²), βμ/σ²]ᵀ + β (log π − ½ Σ_d log(2π σ²) − ½ Σ_d μ²/σ²).
        """
        hh = torch.cat([h * h, h], dim=1)  # (B, 2d)
        for start in range(0, self.num_prototypes, self.chunk_size):
            k = slice(start, start + self.chunk_size)
            var, mu = self.variances[k], self.means[k]  # (Kc, d)
            inv_var = var.reciprocal()
            w = torch.cat([inv_var * (-0.5 * beta), mu * inv_var * beta], dim=1)  # (Kc, 2d)
            const = torch.log(2 * math.pi * var).sum(1) + (mu * mu * inv_var).sum(1)  # (Kc,)
            yield k, torch.addmm(beta * (self.log_weights[k] - 0.5 * const), hh, w.T)  # (B, Kc)

    @torch.no_grad()
    def log_prob(self, h: Tensor, beta: float = 1.0) -> Tensor:
        """β · logp (B, K): β times the joint log-density log π_k + log N(h_i | μ_k, σ²_k)."""
        h = self._check(h)
        with torch.autocast(h.device.type, enabled=False):
            return torch.cat([lp for _, lp in self._log_prob_chunks(h, beta)], dim=1)

    @torch.no_grad()
    def responsibilities(self, h: Tensor, beta: float = 1.0) -> Tensor:
        """E-step for inspection: γ (B, K) = softmax_k(β · logp). Rows sum to 1."""
        return self.log_prob(h, beta).softmax(dim=1)

    @torch.no_grad()
    def update(self, h: Tensor, beta: float = 1.0) -> None:
        """One online EM step on embeddings h (B, d), normally the teacher's L2-normalised ones.

        Memory beyond the state stays at a few B × chunk_size floats: when K fits in one chunk the
        E-step is one softmax; otherwise a first pass over the chunks finds each chunk's normaliser
        and a second one scales each chunk's softmax to the whole mixture. Responsibilities come from
        softmax rather than exp(β logp − lse) because the CPU's exp is several times slower on inputs
        whose result is subnormal, which are most of them here.

        Args:
            h: (B, d) embeddings; detached and cast to fp32 here.
            beta: annealing inverse temperature of the E-step, rising from beta_0 to 1.

        Raises:
            ValueError: when h is not (B, d) with d = dim, is empty, or holds NaN/Inf.
        """
        h = self._check(h)
        with torch.autocast(h.device.type, enabled=False):
            if not bool(self.initialized) and self.init == "kmeans++":
                if self._fill_and_seed(h):  # the buffer is full and the means are seeded: fit them to it
                    for chunk in self.init_buffer.split(len(h)):
                        self._em_step(chunk, beta)
                return  # until then the means stay random
            if not bool(self.initialized):
                self._init_from(h)
            self._em_step(h, beta)

    def _em_step(self, h: Tensor, beta: float) -> None:
        """E-step, all-reduce, forgetting and M-step on h (B, d); then the periodic relocation."""
        # First pass (several chunks only): lse_c = log Σ_{k in c} exp(β logp_ik), read off the
        # softmax at the row maximum; scale_c = exp(lse_c − lse) turns chunk softmaxes into γ.
        scales: list[Tensor | None] = [None]
        if self.num_prototypes > self.chunk_size:
            lse = torch.stack(
                [lp.amax(1) - lp.softmax(dim=1).amax(1).log() for _, lp in self._log_prob_chunks(h, beta)]
            )  # (chunks, B)
            scales = list((lse - lse.logsumexp(0)).exp())
        hh = torch.cat([h * h, h], dim=1)  # (B, 2d): the statistics of both moments in one matmul
        n = torch.empty_like(self.mass)
        stats = torch.empty(self.num_prototypes, 2 * self.dim, device=h.device)  # (K, 2d): [s2, s1]
        for (k, logp), scale in zip(self._log_prob_chunks(h, beta), scales, strict=True):
            gamma = logp.softmax(dim=1)  # (B, Kc)
            if scale is not None:
                gamma.mul_(scale[:, None])
            self._add_statistics(gamma, hh, n[k], stats[k])
        all_reduce_sum_(n)
        all_reduce_sum_(stats)
        s2, s1 = stats.split(self.dim, dim=1)
        # Forgetting: a component that got no responsibility (n_k = 0) keeps its mass.
        a = (1.0 - self.eta) ** n
        self.mass.mul_(a).add_(n)
        self.s1.mul_(a[:, None]).add_(s1)
        self.s2.mul_(a[:, None]).add_(s2)
        self._m_step()
        if self.split_every:
            self.recent_mass.add_(n)
            self.num_updates.add_(1)
            if int(self.num_updates) % self.split_every == 0:
                self._relocate(h)

    @staticmethod
    def _add_statistics(gamma: Tensor, hh: Tensor, n: Tensor, stats: Tensor) -> None:
        """Write n = Σ_i γ_ik (Kc,) and stats = γᵀ [h², h] (Kc, 2d) of one chunk, into the given views.

        Responsibilities are nearly one-hot once the mixture has settled (about one entry of a row
        above 1e-9), so when at most B·Kc / 2d entries count, the statistics are summed over those
        alone, which costs at most 1/2d of the dense (Kc, B) x (B, 2d) matmul and no more memory
        than γ. The entries skipped are below 1e-9, under the fp32 resolution of masses that stay
        near or above 1.
        """
        keep = gamma > _SPARSE_GAMMA  # (B, Kc)
        if int(keep.sum()) * hh.shape[1] > gamma.numel():  # dense enough for the matmul
            torch.sum(gamma, dim=0, out=n)
            torch.mm(gamma.T, hh, out=stats)
            return
        rows, cols = keep.nonzero(as_tuple=True)
        weight = gamma[rows, cols]  # (nnz,)
        n.zero_().index_add_(0, cols, weight)
        stats.zero_().index_add_(0, cols, hh[rows] * weight[:, None])

    def _m_step(self) -> None:
        torch.div(self.s1, self.mass[:, None], out=self.means)
        torch.div(self.s2, self.mass[:, None], out=self.variances)
        self.variances.addcmul_(self.means, self.means, value=-1.0)
        if self.covariance == "shared":  # σ² = Σ_k A_k Σ_d σ²_kd / (d ΣA), one value for all
            pooled = self.mass @ self.variances.sum(1) / (self.dim * self.mass.sum())
            self.variances.copy_(pooled.expand_as(self.variances))
        self.variances.clamp_(min=self.var_floor)
        if not self.uniform_weights:  # otherwise log π stays at −log K
            self.log_weights.copy_(self.mass.log() - self.mass.sum().log())

    def _init_from(self, h: Tensor) -> None:
        """Means from the first batch (rows recycled when K > B) plus noise; same on every process."""
        idx = torch.arange(self.num_prototypes, device=h.device) % h.shape[0]
        mu = F.normalize(h[idx] + self.init_noise * torch.randn_like(h[idx]), dim=1)
        broadcast_(mu)
        self.s1.copy_(mu * self.mass[:, None])
        self.s2.copy_((self.variances + mu**2) * self.mass[:, None])
        self._m_step()
        self.initialized.fill_(True)

    def _fill_and_seed(self, h: Tensor) -> bool:
        """Buffer this process's embeddings; once ``init_samples`` are in, seed the means by k-means++
        (D² sampling on 1 − cos, Arthur & Vassilvitskii 2007) on rank 0's buffer and broadcast them.
        Returns True on the update that seeds."""
        filled = int(self.init_filled)
        take = h[: len(self.init_buffer) - filled]
        self.init_buffer[filled : filled + len(take)] = take
        self.init_filled.add_(len(take))
        if int(self.init_filled) < len(self.init_buffer):
            return False
        x = self.init_buffer
        chosen = [int(torch.randint(len(x), ()))]
        dist = 1.0 - x @ x[chosen[0]]  # (N,) cosine distance to the nearest chosen mean
        for _ in range(1, self.num_prototypes):
            chosen.append(int(torch.multinomial(dist.clamp(min=0.0) + 1e-12, 1)))
            torch.minimum(dist, 1.0 - x @ x[chosen[-1]], out=dist)
        mu = x[chosen].clone()
        broadcast_(mu)
        self.s1.copy_(mu * self.mass[:, None])
        self.s2.copy_((self.variances + mu**2) * self.mass[:, None])
        self._m_step()
        self.initialized.fill_(True)
        return True

    def _movers(self) -> Tensor:
        """(K,) bool: the components a check moves, the dead ones (recent mass below ``split_min_mass``)
        and, with ``merge_eps``, the merged ones (a prototype within ``merge_eps`` of a heavier one's)."""
        move = self.recent_mass < self.split_min_mass
        if self.merge_eps:
            move |= self._merged()
        return move

    def _relocate(self, h: Tensor) -> None:
        """Relocate the components ``_movers`` picks; then restart the window."""
        movers = self._movers().nonzero().squeeze(1)
        if self.relocate_order == "lightest":
            movers = movers[self.mass[movers].argsort(stable=True)]
        if len(movers) and self.relocate == "split":
            self._split(movers)
        elif len(movers):
            self._move_to_embeddings(movers, h)
        self.recent_mass.zero_()

    def _merged(self, chunk_size: int = 1024) -> Tensor:
        """(K,) bool: True where 1 − cos(c_k, c_j) < merge_eps for some heavier component j (mass, then
        lower index, breaks ties). Chunked so that no K x K matrix is held."""
        c, mass = self.prototypes, self.mass
        index = torch.arange(self.num_prototypes, device=c.device)
        merged = torch.zeros_like(mass, dtype=torch.bool)
        for rows in index.split(chunk_size):
            heavier = (mass > mass[rows, None]) | ((mass == mass[rows, None]) & (index < rows[:, None]))
            merged[rows] = ((c[rows] @ c.T > 1.0 - self.merge_eps) & heavier).any(1)
        return merged

    def _split(self, movers: Tensor) -> None:
        """Replace each mover by half of a busy component.

        Donors are the components with the most recent mass, one mover each. A donor of mean μ and
        variances σ² is cut along its largest-variance axis e: the two halves get means μ ± σ_e e, the
        donor's variances and half of its mass (so the mixture's total mass and each half's variance are
        unchanged), and EM then pulls them apart. Every process computes the same split from the
        all-reduced statistics.
        """
        busy = self.recent_mass.index_fill(0, movers, -1.0)  # a merged component is no donor
        donors = busy.argsort(descending=True)[: len(movers)]
        donors = donors[busy[donors] >= 2 * self.split_min_mass]  # only busy ones are cut
        movers = movers[: len(donors)]  # more movers than donors: the rest wait for the next check
        if len(movers) == 0:
            return
        mu, var = self.means[donors], self.variances[donors]  # (n, d)
        spread = self.s2[donors] / self.mass[donors, None] - mu**2  # (n, d): each donor's own variances
        axis = spread.argmax(1, keepdim=True)  # (n, 1): the largest-variance axis of each donor
        step = torch.zeros_like(mu).scatter_(1, axis, spread.gather(1, axis).clamp(min=0).sqrt())  # σ_e e
        mass = self.mass[donors] / 2
        self._set(donors, mass, mu + step, var)
        self._set(movers, mass, mu - step, var)
        self._m_step()

    def _move_to_embeddings(self, movers: Tensor, h: Tensor) -> None:
        """Move each mover onto an embedding of this batch that the staying prototypes cover poorly.

        Over rank 0's batch x, with d_i the distance (1 − cos) of x_i from its nearest staying or already
        placed prototype, the next embedding chosen is the farthest one (farthest-point traversal,
        Gonzalez 1985; ``relocate="embeddings"``), one drawn with probability ∝ d_i² among those with
        d_i > ``merge_eps`` (k-means++ seeding, Arthur & Vassilvitskii 2007; ``relocate="sampled"``, from
        a generator seeded by the update count, so every process draws the same), or, among those, the
        farthest one in the busiest region (``relocate="busiest"``: x_i's region is its nearest staying
        or placed prototype's, whose load is its responsibility since the last check, halved between the
        two when a mover lands in it), until no embedding lies more than ``merge_eps`` away or every
        mover is placed (the rest wait for the next check).
        A mover placed on x_i takes the variances of x_i's owner o (its nearest staying prototype) and,
        with ``relocate_mass="shared"``, shares o's mass: o and the m movers placed in its region hold
        A_o / (1 + m) each, so the mixture's total mass, o's mean and its variances are unchanged; with
        "least" or "fresh" it takes the least staying mass or one unit and o keeps all of its own.
        """
        x = broadcast_(F.normalize(h, dim=1))  # (B, d): every process moves the same way
        stay = torch.ones_like(self.mass, dtype=torch.bool)
        stay[movers] = False
        staying = stay.nonzero().squeeze(1)
        if len(staying) == 0:
            return
        best, nearest = (x @ self.prototypes[staying].T).max(1)  # (B,)
        owners, distance = staying[nearest], 1.0 - best
        chosen = []
        if self.relocate == "sampled":
            draws = torch.Generator(x.device).manual_seed(int(self.num_updates))
        if self.relocate == "busiest":
            region, load = owners.clone(), self.recent_mass.index_fill(0, movers, 0.0)  # (B,), (K,)
        for mover in movers[: len(x)].tolist():
            far = torch.where(distance > self.merge_eps, distance, 0.0)
            if not far.any():
                break
            if self.relocate == "sampled":
                i = int(far.square().multinomial(1, generator=draws))
            elif self.relocate == "busiest":
                busiest = torch.where(far > 0, load[region], -1.0).amax()
                i = int(torch.where(load[region] == busiest, far, 0.0).argmax())
                load[mover] = load[region[i]] = load[region[i]] / 2
                region[1.0 - x @ x[i] < distance] = mover
            else:
                i = int(far.argmax())
            chosen.append(i)
            torch.minimum(distance, 1.0 - x @ x[i], out=distance)
        if not chosen:
            return
        picked, movers = torch.tensor(chosen, device=x.device), movers[: len(chosen)]
        owner = owners[picked]  # (n,)
        var = self.variances[owner]  # (n, d)
        if self.relocate_mass == "least":  # the owners keep all their statistics, as with "fresh"
            moved = self.mass[staying].min().expand(len(movers))
        elif self.relocate_mass == "fresh":
            moved = torch.ones_like(self.mass[movers])
        else:
            share = 1.0 / (1.0 + torch.bincount(owner, minlength=self.num_prototypes).float())  # (K,)
            moved = self.mass[owner] * share[owner]  # (n,): the owner's mass before it is shared
            self.mass.mul_(share)  # owners keep 1 / (1 + m) of their statistics, the others all of theirs
            self.s1.mul_(share[:, None])
            self.s2.mul_(share[:, None])
        self._set(movers, moved, x[picked], var)
        self._m_step()

    def _set(self, index: Tensor, mass: Tensor, mean: Tensor, var: Tensor) -> None:
        """Give components ``index`` mass A, mean μ and variances σ²: S1 = A μ, S2 = A (σ² + μ²)."""
        self.mass[index] = mass
        self.s1[index] = mass[:, None] * mean
        self.s2[index] = mass[:, None] * (var + mean**2)

    def _check(self, h: Tensor) -> Tensor:
        if not isinstance(h, Tensor) or h.dim() != 2 or h.shape[1] != self.dim or h.shape[0] == 0:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(
                f"OnlineGMM.update expects embeddings of shape (B, {self.dim}) with B >= 1, got {shape}"
            )
        h = h.detach().float()
        if not torch.isfinite(h).all():
            raise ValueError(
                "OnlineGMM.update got NaN or Inf embeddings; check the teacher's output (lower the lr?)"
            )
        return h

    def extra_repr(self) -> str:
        return (
            f"num_prototypes={self.num_prototypes}, dim={self.dim}, eta={self.eta}, init={self.init!r}, "
            f"split_every={self.split_every}, split_min_mass={self.split_min_mass}, "
            f"relocate={self.relocate!r}, merge_eps={self.merge_eps}, "
            f"relocate_order={self.relocate_order!r}, relocate_mass={self.relocate_mass!r}, "
            f"uniform_weights={self.uniform_weights}"
        )


class LearnablePrototypes(nn.Module):
    """Prototypes learned jointly with the encoder: a weight-normalised linear layer (CARP, DINO).

    Args:
        num_prototypes: K.
        dim: D, the embedding dimension.

    Example:
        >>> protos = LearnablePrototypes(128, 16)
        >>> protos.prototypes.shape
        torch.Size([128, 16])
    """

    def __init__(self, num_prototypes: int, dim: int) -> None:
        super().__init__()
        if num_prototypes < 1 or dim < 1:
            raise ValueError(
                f"LearnablePrototypes needs num_prototypes >= 1 and dim >= 1, got {num_prototypes}, {dim}"
            )
        self.num_prototypes, self.dim = num_prototypes, dim
        self.weight = nn.Parameter(F.normalize(torch.randn(num_prototypes, dim), dim=1))

    @property
    def prototypes(self) -> Tensor:
        """Unit-norm rows of the weight, shape (K, D), differentiable."""
        return F.normalize(self.weight, dim=1)
