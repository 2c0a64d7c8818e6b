"""ProtoModel: a timm backbone, a projection head and a prototype source, with one output type."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import timm
import torch
import torch.nn.functional as F
from timm.models import get_pretrained_cfg_value
from torch import Tensor, nn

from protozoo import checkpoint, registry
from protozoo.backbones import timm_equivalent
from protozoo.config import ProtoConfig
from protozoo.heads import ProjectionHead
from protozoo.hub import check_repo_id, resolve_folder, upload_files, upload_folder
from protozoo.prototype_files import PrototypeFile, read_prototype_file
from protozoo.prototypes import LearnablePrototypes, OnlineGMM

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

logger = logging.getLogger(__name__)
# the parts of a ProtoModel's state dict, as the card names them when they change after loading
# (the classifier, when there is one, is the fourth part)
_PARTS = {"backbone": "backbone", "head": "projection head", "prototype_source": "prototypes"}


@dataclass
class ProtoOutput:
    """What a ProtoModel returns.

    Attributes:
        features: (B, F) pooled backbone features, what downstream tasks use.
        embeddings: (B, D) L2-normalised projection, the space of the prototypes.
        assignments: (B, K) probabilities over prototypes; rows sum to 1.
        logits: (B, num_classes) classifier output when the model has a classifier, else None.
        projection: (B, D) the unnormalised projection z (what training uses).
        scores: (B, K) prototype scores before the temperature (what the SSL losses take).
    """

    features: Tensor
    embeddings: Tensor
    assignments: Tensor
    logits: Tensor | None = None
    projection: Tensor | None = None
    scores: Tensor | None = None


class ProtoModel(nn.Module):
    """Backbone + projection head + prototypes (+ an optional classifier for fine-tuning).

    The backbone is any timm model created with ``num_classes=0``, so its state dict uses timm's
    own key names; a variant that stock timm expresses with model_args (the small-image ViTs) is
    built as that stock architecture, so its saved config.json loads in plain timm. The prototypes
    are an :class:`OnlineGMM` for decoupled methods (``*_dec``) and :class:`LearnablePrototypes`
    for the joint baselines.

    ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` follow huggingface_hub's hub mixin;
    a loaded model remembers where it came from (``provenance``), so saving it again keeps its name,
    recipe and results, and saving it after fine-tuning records what changed.

    Args:
        config: architecture, method and preprocessing.
        num_classes: when > 0, a fresh linear classifier on the pooled features.

    Example:
        >>> model = ProtoModel(ProtoConfig(num_prototypes=64, hidden_dim=128, embed_dim=32))
        >>> out = model(torch.randn(2, 1, 28, 28))
        >>> out.features.shape, out.embeddings.shape, out.assignments.shape
        (torch.Size([2, 512]), torch.Size([2, 32]), torch.Size([2, 64]))
    """

    def __init__(self, config: ProtoConfig, num_classes: int = 0) -> None:
        super().__init__()
        self.config = config
        if not timm.is_model(config.architecture):
            close = difflib.get_close_matches(config.architecture, timm.list_models(), n=5)
            raise ValueError(
                f"Unknown backbone {config.architecture!r}: not a timm model name; close names: {close}"
            )
        name, kwargs = timm_equivalent(config.architecture)
        kwargs.update(config.backbone_kwargs)
        if get_pretrained_cfg_value(config.architecture, "fixed_input_size"):
            kwargs.setdefault("img_size", config.img_size)
        backbone: Any = timm.create_model(
            name, pretrained=False, num_classes=0, in_chans=config.in_chans, **kwargs
        )
        self.backbone = backbone
        self.num_features: int = backbone.num_features
        self.head = ProjectionHead(
            self.num_features,
            config.hidden_dim,
            config.embed_dim,
            config.head_layers,
            batch_norm=config.family == "carp",
        )
        if config.decoupled:
            self.prototype_source: OnlineGMM | LearnablePrototypes = OnlineGMM(
                config.num_prototypes,
                config.embed_dim,
                eta=config.gmm_eta,
                var_floor=config.gmm_var_floor,
                init=config.gmm_init,
                init_samples=config.gmm_init_samples,
                split_every=config.gmm_split_every,
                split_min_mass=config.gmm_split_min_mass,
                covariance=config.gmm_covariance,
                relocate=config.gmm_relocate,
                merge_eps=config.gmm_merge_eps,
                relocate_order=config.gmm_relocate_order,
                relocate_mass=config.gmm_relocate_mass,
                uniform_weights=config.gmm_uniform_weights,
            )
        else:
            self.prototype_source = LearnablePrototypes(config.num_prototypes, config.embed_dim)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else None
        # set by from_pretrained: name, hub_id, recipe, results, base_model and the weights' fingerprint
        self.provenance: dict[str, Any] = {}

    @property
    def prototypes(self) -> Tensor:
        """(K, D) unit-norm prototype matrix."""
        return self.prototype_source.prototypes

    @property
    def transform(self) -> Callable[[Any], Tensor]:
        """Eval preprocessing from the config: PIL image or uint8 tensor -> normalised (C, H, W)."""
        from protozoo.transforms import eval_transform

        c = self.config
        return eval_transform(c.img_size, c.mean, c.std, c.in_chans, c.crop_pct, c.interpolation)

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled backbone features (timm's forward_features)."""
        return self.backbone.forward_features(x)

    def prototype_logits(self, z: Tensor) -> Tensor:
        """(B, K) scores against the prototypes: z Cᵀ for CARP, normalize(z) Cᵀ for DINO.

        Decoupled prototypes are buffers, so no gradient reaches them; learnable ones get one.
        """
        if self.config.family == "dino":
            z = F.normalize(z, dim=-1)
        return z @ self.prototypes.to(z.dtype).T

    def forward(self, x: Tensor | list[Tensor]) -> ProtoOutput:
        """Images (B, C, H, W), normalised as ``transform`` does, -> :class:`ProtoOutput`.

        A list of views (multi-crop, possibly of two sizes) runs the backbone once per size and
        the head once on the concatenation, like DINO's MultiCropWrapper; outputs are then
        (V·B, ...) in view order.

        Raises:
            ValueError: when x is not a float tensor of shape (B, in_chans, H, W) with B >= 1
                (and H = W = img_size for fixed-size backbones such as ViTs).
        """
        features, z = self._features_and_projection(x)
        scores = self.prototype_logits(z)
        return ProtoOutput(
            features=features,
            embeddings=F.normalize(z, dim=-1),
            assignments=torch.softmax(scores.float() / self.config.temperature, dim=-1),
            logits=self.classifier(features) if self.classifier is not None else None,
            projection=z,
            scores=scores,
        )

    def project(self, x: Tensor | list[Tensor]) -> Tensor:
        """The head's unnormalised projections z, (B, D) or (V·B, D), without scoring the prototypes.

        Takes what :meth:`forward` takes; the training teacher uses it, since the prototypes it would
        score against change in the GMM update that follows.
        """
        return self._features_and_projection(x)[1]

    def _features_and_projection(self, x: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        views = x if isinstance(x, (list, tuple)) else [x]
        for v in views:
            self._check_input(v)
        features = torch.cat([self.backbone(torch.cat(group)) for group in _same_size_groups(views)])
        return features, self.head(features)

    def _check_input(self, x: Tensor) -> None:
        c = self.config
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] == 0 or x.shape[1] != c.in_chans:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"Expected images of shape (B, {c.in_chans}, H, W) with B >= 1, got {shape}; "
                f"preprocess PIL images with model.transform"
            )
        if not x.is_floating_point():
            raise ValueError(f"Expected a float tensor normalised with model.transform, got dtype {x.dtype}")
        fixed = get_pretrained_cfg_value(c.architecture, "fixed_input_size")
        if fixed and tuple(x.shape[-2:]) != (c.img_size, c.img_size):
            raise ValueError(
                f"{c.architecture} takes {c.img_size}x{c.img_size} inputs, got {x.shape[-2]}x{x.shape[-1]}; "
                f"resize with model.transform"
            )

    # ====== the Hub mixin: from_pretrained, save_pretrained, push_to_hub ======
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        num_classes: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> Self:
        """Load a pretrained model from a zoo name, a Hub id or a local folder, in eval mode.

        ``protozoo.load`` is this method. A zoo name (``protozoo.list_models()``) loads the copy
        shipped in the package when there is one, else its Hub repo; "org/name" goes through
        huggingface_hub (its cache, revision pinning, HF_HUB_OFFLINE; a zoo model's own Hub id falls
        back to the shipped copy when offline); an existing folder loads directly. Loading is strict.

        Args:
            name_or_path: zoo name, Hub id "org/name" or a Hub-layout folder.
            revision: Hub branch, tag or commit to pin (Hub ids and zoo names only).
            num_classes: when given, replace any saved classifier with a fresh
                ``nn.Linear(num_features, num_classes)`` on the pooled features (0 removes it);
                None keeps the checkpoint's.
            device: where to move the model (default: CPU).
            dtype: the model's dtype, "float32" (default), "bfloat16" or "float16" or the torch dtype.
            cache_dir: the Hugging Face cache folder (default: huggingface_hub's).
            force_download: download again even when cached or shipped.
            local_files_only: use the Hugging Face cache and the shipped copies only, never the network.
            token: Hub token for private repos (default: the logged-in one).

        Returns:
            The model in eval mode.

        Raises:
            TypeError: an option passed by position (every option is keyword-only).
            ValueError: unknown name (with close zoo names), bad num_classes or dtype, an unknown checkpoint
                format, missing / unexpected keys, wrong shapes, or a corrupt or truncated file (each named).
            FileNotFoundError: a missing folder or file, or weights neither shipped, cached nor downloadable.
        """
        if num_classes is not None and (type(num_classes) is not int or num_classes < 0):
            raise ValueError(
                f"num_classes must be an int >= 0 (or None to keep the checkpoint's), got {num_classes!r}"
            )
        torch_dtype = _torch_dtype(dtype)
        folder = resolve_folder(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        model = cls._from_folder(folder, str(name_or_path)).to(torch_dtype)
        model.provenance["fingerprint"] = model._fingerprint()  # what the checkpoint holds
        if num_classes is not None:
            fresh = nn.Linear(model.num_features, num_classes, dtype=torch_dtype) if num_classes else None
            model.classifier = fresh
            model.num_classes = num_classes
        return model.to(device).eval()

    @classmethod
    def _from_folder(cls, folder: Path, source: str) -> Self:
        """Build the model saved in ``folder``, checking its config and weights first."""
        config_path = folder / "config.json"
        block = checkpoint.read_config(config_path)["protozoo"]
        num_classes = block.get("num_classes", 0)
        try:
            if type(num_classes) is not int or num_classes < 0:
                raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
            model = cls(ProtoConfig.from_dict(block["config"]), num_classes=num_classes)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{config_path}: invalid protozoo block ({e}); re-save the checkpoint") from e
        expected_backbone, expected_rest = checkpoint.split_state(model.state_dict())
        backbone = checkpoint.read_weights(folder / "model.safetensors")
        rest = checkpoint.read_weights(folder / "head.safetensors")
        checkpoint.check_weights(expected_backbone, backbone, folder / "model.safetensors")
        checkpoint.check_weights(expected_rest, rest, folder / "head.safetensors")
        model.load_state_dict({**{f"backbone.{k}": v for k, v in backbone.items()}, **rest}, strict=True)
        local = Path(source).expanduser().is_dir()
        entry = None if local else registry.ZOO.get(source) or registry.by_hub_id(source)
        hub_id = entry.hub_id if entry else None if local else source
        model.provenance = {
            "name": block.get("name") or (entry.name if entry else Path(hub_id or folder).name),
            "hub_id": hub_id,
            "recipe": block.get("recipe"),
            "results": block.get("results"),
            "base_model": block.get("base_model"),
        }
        return model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        results: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        dtype: str = "float32",
        name: str | None = None,
    ) -> Path:
        """Write the model as a Hub-layout folder: weights, config.json and the model card.

        The folder is built in a temporary folder beside the target and renamed into place, so a
        reader never sees half a checkpoint; an existing checkpoint folder is replaced as a whole
        (including a stale model.onnx). A model from :meth:`from_pretrained` keeps its provenance:
        unchanged, its name, recipe and results (the card's model-index and datasets) are saved
        again; changed since loading (fine-tuned), config.json and the card name the model it came
        from, what changed, and that model's results, and report only the ``results`` given here.

        Args:
            save_directory: the target folder; created, or replaced when it holds a checkpoint.
            results: the run's metrics for config.json and the card: ``dataset``, ``eval_split``,
                ``knn_top1`` / ``linear_top1`` (fractions), ``unique`` (eps string -> fraction),
                ``perplexity``. Only the numbers present appear in the card.
            recipe: the resolved training config, shown as the card's recipe table.
            dtype: storage dtype of the backbone and head weights: "float32", "bfloat16" (half the
                size; what the zoo ships) or "float16", GMM means and variances included (its masses
                and log-weights stay fp32). Load casts everything back to fp32.
            name: the model's name for the card (title and ``hub_cards/<name>.yaml`` prose); default
                the loaded model's name, else the folder's name. A zoo name makes the card's usage
                lines use the zoo name.

        Returns:
            The folder written.

        Raises:
            TypeError: results / recipe that are not JSON-serialisable.
            ValueError: an unknown dtype, or a target that is a file or holds other files.
        """
        if dtype not in checkpoint.DTYPES:
            valid = ", ".join(checkpoint.DTYPES)
            raise ValueError(f"Unknown dtype {dtype!r}; valid storage dtypes are {valid}")
        folder = Path(save_directory).expanduser().resolve()
        checkpoint.check_replaceable(folder)
        block = {
            "format_version": checkpoint.FORMAT_VERSION,
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "dtype": dtype,
            **self._lineage(results, recipe, name),
        }
        try:
            json.dumps(block)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"results and recipe must be JSON-serialisable dicts ({e}); convert paths to str"
            ) from e
        block["name"] = block["name"] or folder.name
        c = self.config
        data_config = {
            "input_size": (c.in_chans, c.img_size, c.img_size),
            "mean": c.mean,
            "std": c.std,
            "interpolation": c.interpolation,
            "crop_pct": c.crop_pct,
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            checkpoint.write_checkpoint(
                self.state_dict(), self.backbone, tmp, block, data_config, checkpoint.DTYPES[dtype]
            )
            from protozoo.card import render_card

            zoo = registry.ZOO.get(block["name"])
            card = render_card(
                json.loads((tmp / "config.json").read_text()),
                name=block["name"],
                load_name=block["name"] if zoo else str(save_directory),
                hub_id=zoo.hub_id if zoo else None,
                head=tmp / "head.safetensors",
                weights=tmp / "model.safetensors",
            )
            card.save(tmp / "README.md")
            checkpoint.swap_in(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("saved %s (%s weights) to %s", c.architecture, dtype, folder)
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload protozoo model",
        results: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        dtype: str = "float32",
    ) -> CommitInfo:
        """Save the model to a temporary folder and publish it to the Hub repo ``repo_id``.

        The commit replaces the checkpoint files and deletes optional files (model.onnx,
        preprocessor.json, ...) that an earlier upload left, since they belong to other weights.

        Args:
            repo_id: "org/name"; created when missing.
            token: Hub token with write access (default: the logged-in one).
            private: create the repo private (an existing repo keeps its visibility).
            revision: branch to commit to, created from main when missing (default main).
            commit_message: the commit's summary.
            results: run metrics for config.json and the card (see :meth:`save_pretrained`).
            recipe: the resolved training config (see :meth:`save_pretrained`).
            dtype: weight storage dtype (see :meth:`save_pretrained`).

        Returns:
            The huggingface_hub CommitInfo of the upload.

        Raises:
            ValueError: a malformed repo id, or as :meth:`save_pretrained`.
        """
        check_repo_id(repo_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(
                Path(tmp) / "model", results=results, recipe=recipe, dtype=dtype, name=repo_id.split("/")[1]
            )
            return upload_folder(
                folder,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                commit_message=commit_message,
            )

    def _fingerprint(self) -> dict[str, str]:
        """A sha256 of each part's tensors (backbone, head, prototypes, classifier), to see what changed."""
        hashes: dict[str, Any] = {}
        for key, value in self.state_dict().items():
            h = hashes.setdefault(key.split(".")[0], hashlib.sha256())
            h.update(key.encode())
            h.update(value.detach().float().cpu().contiguous().numpy())  # the buffer itself, no copy
        return {part: h.hexdigest() for part, h in hashes.items()}

    def _lineage(
        self, results: dict[str, Any] | None, recipe: dict[str, Any] | None, name: str | None
    ) -> dict[str, Any]:
        """name, recipe, results and base_model of the protozoo block, from the arguments and provenance."""
        p = self.provenance
        if not p:
            return {"name": name, "recipe": recipe, "results": results, "base_model": None}
        before, now = p["fingerprint"], self._fingerprint()
        changed = [_PARTS[part] for part in _PARTS if before.get(part) != now.get(part)]
        if before.get("classifier") != now.get("classifier"):
            new = "classifier" not in before or self.classifier is None
            changed.append(f"new classifier ({self.num_classes} classes)" if new else "classifier")
        if not changed:
            return {
                "name": name or p["name"],
                "recipe": recipe if recipe is not None else p["recipe"],
                "results": results if results is not None else p["results"],
                "base_model": p["base_model"],
            }
        base = {k: p[k] for k in ("name", "hub_id", "recipe", "results")} | {"changed": changed}
        return {"name": name, "recipe": recipe, "results": results, "base_model": base}


load = ProtoModel.from_pretrained  # protozoo.load


def _torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The torch dtype of a dtype option (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in checkpoint.DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in checkpoint.DTYPES:
        return checkpoint.DTYPES[dtype]
    valid = ", ".join(checkpoint.DTYPES)
    raise ValueError(f"Unknown dtype {dtype!r}; valid dtypes are {valid} or their torch dtypes")


def publish(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload protozoo model",
) -> list[str]:
    """Upload a saved checkpoint folder to the Hub (``protozoo publish``).

    The folder must load strictly first. The weights, config.json, and the ONNX files when present,
    go up as they are; README.md is rendered afresh from config.json for ``repo_id``. Optional files
    the repo holds but the folder lacks are deleted (see :func:`protozoo.hub.upload_folder`).

    Args:
        folder: a Hub-layout folder (save_pretrained output or a training run's ``model/``).
        repo_id: "org/name"; created when missing.
        token: Hub token with write access (default: the logged-in one).
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main when missing (default main).
        dry_run: only check the folder and list what would be uploaded.
        commit_message: the commit's summary.

    Returns:
        The file names uploaded (or that would be, with dry_run).

    Raises:
        ValueError: a malformed repo id, or a folder that does not load strictly.
        FileNotFoundError: a missing folder or checkpoint file.
    """
    check_repo_id(repo_id)
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"No model folder at {str(path)!r}; pass a save_pretrained output folder")
    ProtoModel._from_folder(path, str(path))
    files = upload_files(path)
    if not dry_run:
        upload_folder(
            path, repo_id, token=token, private=private, revision=revision, commit_message=commit_message
        )
    return files


def load_prototypes(source: str | os.PathLike[str], key: str | None = None) -> Tensor:
    """A (K, D) prototype matrix: the ``prototypes`` of :func:`load_prototype_file`."""
    return load_prototype_file(source, key).prototypes


def load_prototype_file(source: str | os.PathLike[str], key: str | None = None) -> PrototypeFile:
    """The prototype layer of a model or checkpoint file, with the GMM's masses when it has them.

    Args:
        source: a zoo name, Hub id or model folder (its head's unit-norm prototypes and masses), or a
            checkpoint or matrix file (``.safetensors``, ``.npy``, ``.pt``, ``.pth``, ``.pth.tar``,
            ``.ckpt``; read without pickle) in which :func:`protozoo.prototype_files.find_prototypes` finds
            the DINO, CARP, SwAV, lightly, solo-learn or protozoo prototype layer.
        key: the tensor or layer name to take inside a file, instead of searching (files only).

    Returns:
        A :class:`~protozoo.prototype_files.PrototypeFile`: prototypes, masses (or None) and the key used.

    Raises:
        ValueError: an unknown suffix, no prototype layer or an unknown key (the error lists the 2-D
            tensors), a tensor that is not 2-d, a key given for a model, or as
            :meth:`ProtoModel.from_pretrained`.
        FileNotFoundError: as :meth:`ProtoModel.from_pretrained`.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return read_prototype_file(path, key)
    if key is not None:
        raise ValueError(f"key={key!r} selects a tensor inside a file, but {str(source)!r} is a model")
    return read_prototype_file(resolve_folder(source) / "head.safetensors")


def _same_size_groups(views: list[Tensor] | tuple[Tensor, ...]) -> list[list[Tensor]]:
    """Consecutive views of the same spatial size, so each group is one backbone call."""
    groups: list[list[Tensor]] = []
    for v in views:
        if groups and groups[-1][0].shape[-2:] == v.shape[-2:]:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups
