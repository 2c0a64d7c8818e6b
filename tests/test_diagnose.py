"""``protozoo diagnose`` on the checkpoint layouts of DINO, CARP, SwAV, lightly, solo-learn and protozoo.

Each file is built here the way its project writes it: the same module names (so torch itself produces the
state-dict keys, weight norm included), the same nesting (``student`` / ``teacher``, ``state_dict``) and the
same neighbours (optimizer state, epoch, DINO's argparse ``args``).
"""

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from protozoo import ProtoConfig, ProtoModel
from protozoo.cli import main
from protozoo.model import load_prototype_file, load_prototypes
from protozoo.prototype_files import find_prototypes, read_prototype_file

K, D = 12, 6
# torch.nn.utils.weight_norm on purpose: it is what DINO, CARP, lightly and solo-learn call
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")


def weight_norm_linear(seed: int, parametrized: bool = False) -> nn.Module:
    """A (D -> K) weight-normalised last layer with g != 1, so that dropping g would show."""
    torch.manual_seed(seed)
    layer = nn.Linear(D, K, bias=False)
    if parametrized:  # newer PyTorch: parametrizations.weight.original0 / original1
        layer = nn.utils.parametrizations.weight_norm(layer)
        layer.parametrizations.weight.original0.data.uniform_(0.5, 2.0)
    else:  # what DINO, CARP, lightly and solo-learn call
        layer = nn.utils.weight_norm(layer)
        layer.weight_g.data.uniform_(0.5, 2.0)
    return layer


def naive_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w_k = g_k * v_k / ||v_k||, one row at a time, straight from the definition."""
    rows = []
    for k in range(v.shape[0]):
        norm = math.sqrt(sum(x * x for x in v[k].tolist()))
        rows.append([g.flatten()[k].item() * x / norm for x in v[k].tolist()])
    return torch.tensor(rows)


class DINOHead(nn.Module):
    """DINO / CARP / solo-learn's head: an MLP, then the weight-normalised last layer."""

    def __init__(self, seed: int, parametrized: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, D))
        self.last_layer = weight_norm_linear(seed, parametrized)


class MultiCropWrapper(nn.Module):
    """DINO's wrapper: backbone and head."""

    def __init__(self, seed: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
        self.head = DINOHead(seed)


class DDP(nn.Module):
    """Stands in for DistributedDataParallel's key prefix (``module.``), which needs a process group."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def wn_matrix(layer: nn.Module) -> torch.Tensor:
    layer(torch.zeros(1, D))  # the old weight_norm recomputes .weight in a forward pre-hook
    return layer.weight.detach()


def save_dino(path, teacher_ddp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """main_dino.py / main_carp.py: the student under DDP; the teacher under DDP only with batch norms."""
    student, teacher = MultiCropWrapper(0), MultiCropWrapper(1)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    torch.save(
        {
            "student": DDP(student).state_dict(),
            "teacher": (DDP(teacher) if teacher_ddp else teacher).state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": 3,
            "args": argparse.Namespace(arch="vit_small", out_dim=K, norm_last_layer=False, lr=0.0005),
            "dino_loss": {"center": torch.zeros(1, K)},
        },
        path,
    )
    return wn_matrix(student.head.last_layer), wn_matrix(teacher.head.last_layer)


@pytest.mark.parametrize("teacher_ddp, teacher_key", [(False, "teacher.head.last_layer"),
                                                      (True, "teacher.module.head.last_layer")])  # fmt: skip
def test_dino_and_carp_take_the_teachers_weight_normalised_last_layer(tmp_path, teacher_ddp, teacher_key):
    student, teacher = save_dino(tmp_path / "checkpoint.pth", teacher_ddp)
    found = read_prototype_file(tmp_path / "checkpoint.pth")
    assert found.key == teacher_key
    assert found.candidates == (teacher_key, "student.module.head.last_layer")
    assert found.masses is None
    torch.testing.assert_close(found.prototypes, teacher)
    sd = torch.load(tmp_path / "checkpoint.pth", weights_only=False)["teacher"]
    prefix = teacher_key.removeprefix("teacher.")
    g, v = sd[f"{prefix}.weight_g"], sd[f"{prefix}.weight_v"]
    torch.testing.assert_close(found.prototypes, naive_weight_norm(g, v))
    assert not torch.allclose(found.prototypes.norm(dim=1), torch.ones(K))  # g was applied
    # --key picks the student's instead
    picked = read_prototype_file(tmp_path / "checkpoint.pth", key="student.module.head.last_layer")
    torch.testing.assert_close(picked.prototypes, student)


def test_weight_norm_as_parametrization(tmp_path):
    head = DINOHead(2, parametrized=True)
    save_file(head.state_dict(), tmp_path / "head.safetensors")
    found = read_prototype_file(tmp_path / "head.safetensors")
    assert found.key == "last_layer"
    torch.testing.assert_close(found.prototypes, head.last_layer.weight.detach())


class SwAVResNet(nn.Module):
    """SwAV's src/resnet50.py tail: projection head, then ``prototypes`` (a Linear or MultiPrototypes)."""

    def __init__(self, nmb_prototypes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.projection_head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, D))
        if isinstance(nmb_prototypes, list):
            self.prototypes = nn.Module()
            for i, k in enumerate(nmb_prototypes):
                self.prototypes.add_module(f"prototypes{i}", nn.Linear(D, k, bias=False))
        else:
            self.prototypes = nn.Linear(D, nmb_prototypes, bias=False)


def test_swav_training_checkpoint_and_released_weights(tmp_path):
    model = DDP(SwAVResNet(K))
    expected = model.module.prototypes.weight.detach()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save({"epoch": 5, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
               tmp_path / "checkpoint.pth.tar")  # fmt: skip
    torch.save(model.state_dict(), tmp_path / "swav_800ep_pretrain.pth.tar")  # released: the bare state dict
    for name, key in [("checkpoint.pth.tar", "state_dict.module.prototypes"),
                      ("swav_800ep_pretrain.pth.tar", "module.prototypes")]:  # fmt: skip
        found = read_prototype_file(tmp_path / name)
        assert (found.key, found.candidates) == (key, (key,))
        assert torch.equal(found.prototypes, expected)


def test_swav_several_prototype_sets_take_the_first(tmp_path):
    model = DDP(SwAVResNet([K, 7]))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "multi.pth")
    found = read_prototype_file(tmp_path / "multi.pth")
    assert found.candidates == (
        "state_dict.module.prototypes.prototypes0",
        "state_dict.module.prototypes.prototypes1",
    )
    assert torch.equal(found.prototypes, model.module.prototypes.prototypes0.weight.detach())
    second = read_prototype_file(tmp_path / "multi.pth", key="state_dict.module.prototypes.prototypes1")
    assert second.prototypes.shape == (7, D)


class LightlySwaV(nn.Module):
    """lightly's examples/pytorch/swav.py: ``prototypes = SwaVPrototypes(...)``, whose Linear layers are
    ``heads`` (``layers`` before multi-prototype support); they have a bias, which is not a prototype."""

    def __init__(self, attribute: str):
        super().__init__()
        self.projection_head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, D))
        self.prototypes = nn.Module()
        linear = nn.Linear(D, K)
        setattr(self.prototypes, attribute, nn.ModuleList([linear]) if attribute == "heads" else linear)


@pytest.mark.parametrize("attribute, key", [("heads", "prototypes.heads.0"), ("layers", "prototypes.layers")])
def test_lightly_swav_prototypes(tmp_path, attribute, key):
    model = LightlySwaV(attribute)
    save_file(model.state_dict(), tmp_path / "swav.safetensors")
    found = read_prototype_file(tmp_path / "swav.safetensors")
    assert found.key == key
    assert torch.equal(found.prototypes, model.state_dict()[f"{key}.weight"])


class LightlyDINO(nn.Module):
    """lightly's examples/pytorch/dino.py: ``student_head`` and ``teacher_head`` (DINOProjectionHead)."""

    def __init__(self):
        super().__init__()
        self.student_backbone = nn.Linear(4, 4)
        self.student_head = DINOHead(3)
        self.teacher_backbone = nn.Linear(4, 4)
        self.teacher_head = DINOHead(4)


def test_lightly_dino_prefers_the_teacher_head(tmp_path):
    model = LightlyDINO()
    torch.save(model.state_dict(), tmp_path / "dino.pt")
    found = read_prototype_file(tmp_path / "dino.pt")
    assert found.candidates == ("teacher_head.last_layer", "student_head.last_layer")
    torch.testing.assert_close(found.prototypes, wn_matrix(model.teacher_head.last_layer))


class SoloSwAV(nn.Module):
    """solo-learn's solo/methods/swav.py: weight-normalised ``prototypes`` after the ``projector``."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3))
        self.projector = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, D))
        self.prototypes = weight_norm_linear(5)


class SoloDINO(nn.Module):
    """solo-learn's solo/methods/dino.py: ``head`` and its EMA copy ``momentum_head``."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = DINOHead(6)
        self.momentum_backbone = nn.Linear(4, 4)
        self.momentum_head = DINOHead(7)


class SoloDeepClusterV2(nn.Module):
    """solo-learn's solo/methods/deepclusterv2.py: a ModuleList of ``prototypes``."""

    def __init__(self):
        super().__init__()
        self.projector = nn.Linear(4, D)
        self.prototypes = nn.ModuleList([nn.Linear(D, K, bias=False) for _ in range(3)])


def lightning_checkpoint(model: nn.Module) -> dict:
    """What PyTorch Lightning's trainer.save_checkpoint writes around the state dict."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return {
        "epoch": 9,
        "global_step": 1000,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 10}}}},
        "callbacks": {},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"base_lrs": [0.1], "last_epoch": 9}],
    }


@pytest.mark.parametrize(
    "method, key, expected",
    [
        (SoloSwAV, "state_dict.prototypes", lambda m: wn_matrix(m.prototypes)),
        (SoloDINO, "state_dict.momentum_head.last_layer", lambda m: wn_matrix(m.momentum_head.last_layer)),
        (SoloDeepClusterV2, "state_dict.prototypes.0", lambda m: m.prototypes[0].weight.detach()),
    ],
)
def test_solo_learn_lightning_checkpoints(tmp_path, method, key, expected):
    model = method()
    torch.save(lightning_checkpoint(model), tmp_path / "solo.ckpt")
    found = read_prototype_file(tmp_path / "solo.ckpt")
    assert found.key == key
    torch.testing.assert_close(found.prototypes, expected(model))


def test_a_bare_matrix_or_a_single_tensor_needs_no_name(tmp_path):
    matrix = torch.randn(K, D)
    np.save(tmp_path / "m.npy", matrix.numpy())
    torch.save(matrix, tmp_path / "m.pt")
    torch.save({"centroids": matrix}, tmp_path / "one.pt")
    assert read_prototype_file(tmp_path / "m.npy").key is None
    assert torch.equal(read_prototype_file(tmp_path / "m.pt").prototypes, matrix)
    assert read_prototype_file(tmp_path / "one.pt").key == "centroids"
    with pytest.raises(ValueError, match=r"holds one unnamed tensor, so key='c' does not apply; drop it"):
        read_prototype_file(tmp_path / "m.npy", key="c")


TWO = {"a": torch.ones(4, 3), "b": torch.ones(4)}


@pytest.mark.parametrize(
    "content, key, match",
    [
        ({"encoder.weight": torch.ones(4, 3), "encoder.bias": torch.ones(4), "fc": {"weight": torch.ones(2, 4)}},  # noqa: E501
         None, r"prototype-layer name .* 2-D tensors: encoder\.weight \(4, 3\), fc\.weight \(2, 4\)"),
        (TWO, None, r"holds several tensors \['a', 'b'\]; pass key=NAME"),
        (TWO, "c", r"has no tensor 'c'; its keys are \['a', 'b'\]"),
        (TWO, "b", r"expected a \(K, D\) prototype matrix, got \(4,\)"),
        ({"last_layer.weight_g": torch.ones(3, 1), "last_layer.weight_v": torch.ones(4, 2)}, "last_layer",
         r"weight_g of shape \(3, 1\) and weight_v of shape \(4, 2\); expected \(K, 1\) and \(K, D\)"),
    ],
)  # fmt: skip
def test_find_prototypes_errors(content, key, match):
    with pytest.raises(ValueError, match=match):
        find_prototypes(content, key=key)


class Opaque:
    """Something only pickle can store."""


@pytest.mark.parametrize(
    "name, write, match",
    [
        ("pickled.pth", lambda p: torch.save({"args": Opaque()}, p), "could not be read .* without pickle"),
        # DINO's args are allowed as an argparse.Namespace, not as a carrier for other objects
        ("args.pth", lambda p: torch.save({"args": argparse.Namespace(x=Opaque())}, p), "without pickle"),
        ("objects.npy", lambda p: np.save(p, np.array([Opaque()], dtype=object)), "not a plain numeric"),
        ("m.csv", lambda p: p.write_text("1,2"), r"Unknown prototype file type 'm\.csv'"),
        ("cube.npy", lambda p: np.save(p, np.ones((2, 2, 2))), r"expected a \(K, D\) .* got \(2, 2, 2\)"),
    ],
)
def test_read_prototype_file_refuses(tmp_path, name, write, match):
    write(tmp_path / name)
    with pytest.raises(ValueError, match=match):
        read_prototype_file(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="No file at"):
        read_prototype_file(tmp_path / "absent.pth")


TINY = ProtoConfig(
    architecture="vit_tiny_patch4_28",
    backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    num_prototypes=32,
    embed_dim=8,
    hidden_dim=16,
)


@pytest.fixture
def gmm_folder(tmp_path):
    """A carp_dec model folder whose GMM has 5 components that gathered mass; the other 27 kept the one
    pseudo-count they start with."""
    torch.manual_seed(0)
    model = ProtoModel(TINY)
    model.save_pretrained(tmp_path / "m")
    head = load_file(tmp_path / "m" / "head.safetensors")
    mass = torch.ones(32)
    mass[[0, 3, 9, 20, 31]] = torch.tensor([2.0, 50.0, 7.5, 3.0, 400.0])  # 2.0: the threshold counts
    head["prototype_source.mass"] = mass
    save_file(head, tmp_path / "m" / "head.safetensors")
    return tmp_path / "m", model


def test_a_model_folder_gives_unit_prototypes_and_masses(gmm_folder):
    folder, model = gmm_folder
    found = load_prototype_file(folder)
    assert found.key == "prototype_source"
    assert torch.equal(found.prototypes, model.prototypes)
    assert torch.equal(load_prototypes(folder), model.prototypes)
    assert torch.equal(read_prototype_file(folder / "head.safetensors").masses, found.masses)
    assert found.masses.shape == (32,) and found.masses[31] == 400.0
    with pytest.raises(ValueError, match=r"key='x' selects a tensor inside a file"):
        load_prototype_file(folder, key="x")


def test_a_joint_model_folder_has_no_masses(tmp_path, capsys):
    torch.manual_seed(0)
    model = ProtoModel(dataclasses.replace(TINY, method="carp"))  # learnable prototypes, no GMM
    model.save_pretrained(tmp_path / "joint")
    found = load_prototype_file(tmp_path / "joint")
    assert (found.key, found.masses) == ("prototype_source", None)
    assert torch.equal(found.prototypes, model.prototypes)
    assert main(["diagnose", str(tmp_path / "joint")]) == 0
    assert "caveat: live and dead prototypes are unknown" in capsys.readouterr().out


def test_diagnose_a_model_folder_counts_live_components(gmm_folder, tmp_path, capsys):
    folder, _ = gmm_folder
    assert main(["diagnose", str(folder), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "prototype layer: prototype_source" in out
    assert "live prototypes: 5 of 32 (carrying >= 2 units of GMM mass)" in out
    assert "dead prototypes: 27 of 32" in out and "caveat" not in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["key"], report["carrying"], report["live"], report["used"]) == (
        "prototype_source",
        5,
        5,
        None,
    )
    assert set(report["unique_live"]) == {"0.025", "0.1", "0.25", "0.5"}


def test_diagnose_a_dino_checkpoint_names_the_layer_used(tmp_path, capsys):
    save_dino(tmp_path / "checkpoint.pth")
    assert main(["diagnose", str(tmp_path / "checkpoint.pth"), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "prototype layer: teacher.head.last_layer" in out
    assert "also found: student.module.head.last_layer (pick one with --key)" in out
    assert "caveat: live and dead prototypes are unknown" in out  # no masses, no data
    assert json.loads((tmp_path / "r.json").read_text())["num_prototypes"] == K
    argv = ["diagnose", str(tmp_path / "checkpoint.pth"), "--key", "student.module.head.last_layer"]
    assert main(argv) == 0
    assert "prototype layer: student.module.head.last_layer" in capsys.readouterr().out


def test_diagnose_without_a_prototype_layer_says_how_to_pick_one(tmp_path, capsys):
    torch.save(
        {"state_dict": {"encoder.weight": torch.ones(4, 3), "fc.weight": torch.ones(2, 4)}}, tmp_path / "x.pt"
    )
    assert main(["diagnose", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("protozoo diagnose: error:") and "Traceback" not in err
    assert "--key NAME" in err and "state_dict.encoder.weight (4, 3), state_dict.fc.weight (2, 4)" in err
