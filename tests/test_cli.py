import json

import numpy as np
import pytest
import torch

from protozoo import ProtoConfig, ProtoModel
from protozoo.cli import main

TINY = ProtoConfig(
    architecture="vit_tiny_patch4_28",
    backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    num_prototypes=32,
    embed_dim=8,
    hidden_dim=16,
)


def test_diagnose_a_bare_prototype_matrix(tmp_path, capsys):
    base = np.eye(8, dtype=np.float32)
    np.save(tmp_path / "protos.npy", np.concatenate([base, base + 1e-4]))  # 8 unique of 16
    assert main(["diagnose", str(tmp_path / "protos.npy"), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["unique"]["0.025"] == 0.5
    assert "0.025" in capsys.readouterr().out


def test_diagnose_a_model_folder_with_plot(tmp_path):
    model = ProtoModel(TINY)
    model.save_pretrained(tmp_path / "m")
    assert main(["diagnose", str(tmp_path / "m"), "--plot", str(tmp_path / "nn.png")]) == 0
    assert (tmp_path / "nn.png").stat().st_size > 0


def test_eval_prints_knn_accuracy(tmp_path, capsys):
    torch.manual_seed(0)
    ProtoModel(TINY).save_pretrained(tmp_path / "m")
    assert main(["eval", str(tmp_path / "m")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.1 < result["knn_top1"] <= 1.0  # even random features beat chance (0.1) on Fashion-MNIST


@pytest.mark.parametrize(
    "argv, match",
    [
        (["diagnose", "no-such-model"], "no-such-model"),
        (["eval", "dp-resnet18-fmnistt"], "dp-resnet18-fmnist"),
    ],
)
def test_bad_input_is_one_clear_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"protozoo {argv[0]}: error:")
    assert match in err
    assert "Traceback" not in err
