"""TrainConfig: every recipe field with its default, YAML recipes and key=value overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protozoo.config import METHODS, ProtoConfig
from protozoo.transforms import DINO_BLUR_PROB, DINO_SOLARIZE_PROB

ANCHORS = ("lightly_dino", "lightly_swav")  # lightly's DINO and SwAV on our pipeline (train/anchors.py)


@dataclass
class TrainConfig:
    """One training run. Each comment says when to change the value."""

    # ---- model ----
    method: str = "carp_dec"  # carp | carp_kp | carp_dec | dino | dino_dec | ANCHORS
    backbone: str = "resnet18_small"  # any timm name; *_small / vit_*_patch4_28 for 28-32 px images
    num_prototypes: int = 1024  # K; must be a multiple of block_size for CARP
    embed_dim: int = 256  # D; DINO's bottleneck and CARP's output are 256
    hidden_dim: int = 2048  # projection MLP width; lower it (e.g. 1024) for small CPU models
    head_layers: int = 3
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {drop_path_rate: 0.1} for ViTs
    # ---- data ----
    dataset: str = (
        "fashion_mnist"  # fashion_mnist | cifar10 | cifar100 | stl10 | imagefolder:<path> | hf:<id>
    )
    data_root: str | None = None  # where the dataset lives (default: the dataset's own default)
    img_size: int = 28  # native size; global crops are this size
    in_chans: int = 1  # 1 for Fashion-MNIST, 3 for colour data
    mean: list[float] | None = (
        None  # normalisation; None takes the dataset's own (Fashion-MNIST's, else ImageNet's)
    )
    std: list[float] | None = None
    crop_pct: float = 1.0  # eval centre-crop fraction; 0.875 for ImageNet-style folders
    num_local_crops: int = 0  # DINO-style small crops; more crops help but cost time
    global_crops_scale: list[float] | None = None  # [low, high] area; None: preset (0.3, 1 at 28 px)
    local_crops_scale: list[float] | None = None  # [low, high] area; None: preset (0.1, 0.3 at 28 px)
    blur_prob: list[float] = field(default_factory=lambda: list(DINO_BLUR_PROB))  # views 1, 2, local
    solarize_prob: float = DINO_SOLARIZE_PROB  # global view 2
    long_tail: float | None = None  # imbalance factor for a long-tailed training set (e.g. 100)
    num_workers: int = 0  # data-loading processes; 0 keeps resume bit-exact on CPU
    # ---- optimisation ----
    batch_size: int = 256  # global batch over all processes (and accumulation steps)
    epochs: int = 10
    max_steps: int | None = None  # overrides epochs when set
    optimizer: str = "adamw"  # adamw | lars | sgd; CARP's reference is lars, DINO's adamw
    lr: float = 1e-3  # peak lr for batch 256, scaled linearly with batch_size
    min_lr: float = 1e-6  # end of the cosine decay
    warmup_steps: int = 100  # linear lr warm-up; raise it if the loss spikes early
    weight_decay: float = 0.04  # cosine from weight_decay to weight_decay_end (DINO)
    weight_decay_end: float = 0.04
    momentum: float = 0.9  # for sgd / lars
    clip_grad: float | None = 3.0  # max grad norm; None disables
    freeze_last_layer_steps: int = 0  # DINO: no updates to learnable prototypes for this many steps
    grad_accum_steps: int = 1
    # auto | bf16 | fp16 | no; auto: bf16 where the hardware has it (CUDA, AVX512-BF16 or AMX CPUs),
    # else fp32, since emulated bf16 on an AVX2-only CPU is 13x slower than fp32
    mixed_precision: str = "auto"
    channels_last: bool = True  # faster convolutions on CPU
    teacher_momentum: float = 0.99  # EMA, cosine to teacher_momentum_end; 0.996 for long ImageNet runs
    teacher_momentum_end: float = 1.0  # set it to teacher_momentum for a constant EMA
    # ---- losses ----
    block_size: int = 128  # CARP partition block N_B; 512 at K = 65 536
    sinkhorn_iterations: int = 0  # CARP: SwAV-style equipartitioned teacher targets when > 0 (3 in SwAV)
    kp_weight: float = 0.1  # KoLeo-proto weight (carp_kp)
    koleo_weight: float = 0.0  # DINOv2's KoLeo on the student's backbone features of each global crop
    koleo_space: str = "features"  # features (DINOv2: pooled backbone) | embeddings (the prototypes' space)
    student_temp: float = 0.1  # DINO
    teacher_temp: float = 0.07  # DINO, reached after teacher_temp_warmup_steps
    teacher_temp_start: float = 0.04  # DINO; lower it if training is unstable at the start
    teacher_temp_warmup_steps: int = 0
    center_momentum: float = 0.9  # DINO
    centering: str = "ema"  # DINO teacher targets: ema (DINO's centre) | sinkhorn (DINOv2's Sinkhorn-Knopp)
    # ---- online GMM (decoupled methods) ----
    gmm_eta: float = 1e-3  # forgetting per unit responsibility
    gmm_beta0: float = 0.5  # E-step annealing start, rising to 1 (tuned on val: docs/results.md)
    gmm_anneal_frac: float = 0.1  # fraction of training over which beta reaches 1
    gmm_var_floor: float = 1e-4
    gmm_init: str = "random"  # random | first_batch | kmeans++
    gmm_init_samples: int = 4096  # kmeans++: teacher embeddings buffered before seeding (>= K; 4 K is good)
    gmm_split_every: int = 0  # every this many steps, dead components take half of the busiest ones
    gmm_split_min_mass: float = 1.0  # responsibility since the last check below which a component is dead
    gmm_covariance: str = "diag"  # diag | shared (one isotropic variance, so ownership is by distance)
    gmm_relocate: str = "split"  # split | embeddings | sampled | busiest (method.md §3)
    gmm_merge_eps: float = 0.0  # a prototype this close (1 - cos) to a heavier one moves; 0: never
    gmm_relocate_order: str = "index"  # index | lightest: the movers a check places first (method.md §3)
    gmm_relocate_mass: str = "shared"  # shared | least | fresh: the mass a moved component starts with
    gmm_uniform_weights: bool = False  # π = 1/K: ownership by density alone, not by mass (method.md §3)
    # what the GMM fits: views (each global view, the paper's) | mean (each image's mean over its views) |
    # clean (each image as evaluation sees it: one more teacher forward of B images per step)
    gmm_fit: str = "views"
    # ---- evaluation, logging, checkpoints ----
    eval_every: int = 200  # steps between k-NN + collapse evaluations (also at each epoch end)
    eval_bank_size: int = 10000  # training images in the k-NN memory bank during training
    eval_val_size: int | None = None  # cap on held-out images per evaluation (None: the whole val split)
    final_eval: bool = True  # k-NN on the full test set with the full training set as bank at the end
    linear_probe: bool = False  # also a linear probe at the end (slower)
    log_every: int = 20
    save_every: int = 200  # steps between resumable checkpoints
    keep_checkpoints: int = 2
    trackers: list[str] = field(default_factory=list)  # Accelerate trackers, e.g. [tensorboard]
    output_dir: str = "runs/default"
    name: str | None = (
        None  # model name for the card (a zoo name such as dp-resnet18-fmnist); default: folder
    )
    resume: bool = False  # continue from the last checkpoint in output_dir
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS + ANCHORS:
            raise ValueError(
                f"Unknown method {self.method!r}; valid methods are {', '.join(METHODS + ANCHORS)}"
            )
        if self.optimizer not in ("adamw", "lars", "sgd"):
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; valid choices are adamw, lars, sgd")
        if self.method.startswith("carp") and self.num_prototypes % self.block_size:
            ok = [b for b in (32, 64, 128, 256, 512) if self.num_prototypes % b == 0]
            raise ValueError(
                f"num_prototypes={self.num_prototypes} is not divisible by block_size={self.block_size}; "
                f"choose K as a multiple of the block size (block sizes that divide K: {ok})"
            )
        if self.koleo_space not in ("features", "embeddings"):
            raise ValueError(f"koleo_space must be features or embeddings, got {self.koleo_space!r}")
        if self.gmm_fit not in ("views", "mean", "clean"):
            raise ValueError(f"gmm_fit must be views, mean or clean, got {self.gmm_fit!r}")
        if self.centering not in ("ema", "sinkhorn", "posterior"):
            raise ValueError(f"centering must be ema, sinkhorn or posterior, got {self.centering!r}")
        if self.centering == "posterior" and self.method != "dino_dec":
            raise ValueError("centering=posterior takes the GMM's posteriors as targets; for dino_dec only")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"mixed_precision must be auto, bf16, fp16 or no, got {self.mixed_precision!r}")
        positive = ("batch_size", "epochs", "grad_accum_steps", "eval_every", "log_every", "save_every")
        for key in (*positive, "max_steps"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1) and not (key == "max_steps" and value is None):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")

    def proto_config(self) -> ProtoConfig:
        """The model's ProtoConfig for this run: every field the two configs share, plus the backbone
        as ``architecture`` and DINO's student temperature."""
        mine = {f.name for f in dataclasses.fields(self)}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ProtoConfig) if f.name in mine}
        values["mean"], values["std"] = tuple(self.mean or ()), tuple(self.std or ())
        config = ProtoConfig(architecture=self.backbone, **values)
        if config.family == "dino":
            config = dataclasses.replace(config, temperature=self.student_temp)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


def _typed(value: Any, annotation: Any) -> Any:
    """``value`` as the field type ``annotation``: ints and "1e-3" (YAML reads a number without a dot as a
    string) become floats, list items likewise. Raises TypeError when it does not fit."""
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in hints:
        return None
    for hint in hints:
        origin = typing.get_origin(hint) or hint
        if origin is float and not isinstance(value, bool | list | dict):
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(hint) or (Any,)
            return value if item is Any else [_typed(v, item) for v in value]
        if origin in (int, bool, str, dict) and type(value) is origin:
            return value
    name = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    raise TypeError(f"expected {name}, got {type(value).__name__}")


def _coerce(name: str, text: str, annotation: Any) -> Any:
    """Parse an override's text into the field's type (YAML syntax: 1e-3, true, [a, b], null)."""
    union = isinstance(annotation, types.UnionType)  # str | None; list[str] is not a string field
    if annotation is str or union and str in typing.get_args(annotation) and text != "null":
        return text
    try:
        return _typed(yaml.safe_load(text), annotation)
    except TypeError as e:
        raise ValueError(f"Override {name}={text!r}: {e}") from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML recipe and apply ``key=value`` overrides (``key.sub=value`` for dict fields).

    Raises:
        FileNotFoundError: when the recipe does not exist.
        ValueError: for unknown keys (with the closest valid names), malformed overrides or bad values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Recipe {str(path)!r} not found; recipes live in train/configs/")
        values = yaml.safe_load(path.read_text()) or {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    for key in values:
        _check_key(key, fields)
        try:
            values[key] = _typed(values[key], hints[key])
        except TypeError as e:
            raise ValueError(f"Recipe {str(path)!r}, key {key!r}: {e} {values[key]!r}") from None
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not key=value (e.g. max_steps=100)")
        top, _, sub = key.partition(".")
        _check_key(top, fields)
        if sub:
            if typing.get_origin(hints[top]) is not dict:
                raise ValueError(f"Override {item!r}: {top} is not a dict field, drop the '.{sub}'")
            values[top] = {**values.get(top, {}), sub: yaml.safe_load(text)}
        else:
            values[top] = _coerce(top, text, hints[top])
    return TrainConfig(**values)


def _check_key(key: str, fields: dict[str, Any]) -> None:
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=3)
        raise ValueError(f"Unknown recipe key {key!r}" + (f"; did you mean {close}?" if close else ""))
