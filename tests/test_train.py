import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from train.__main__ import RECIPES_DIR
from train.config import TrainConfig, load_config
from train.engine import Trainer, cosine, resolve_precision

TINY = [
    "backbone=vit_tiny_patch4_28",
    "backbone_kwargs.depth=1",
    "backbone_kwargs.embed_dim=32",
    "backbone_kwargs.num_heads=2",
    "hidden_dim=32",
    "embed_dim=16",
    "num_prototypes=64",
    "block_size=32",
    "batch_size=32",
    "eval_bank_size=200",
    "eval_val_size=200",
    "warmup_steps=1",
    "final_eval=false",
    "log_every=1",
    "channels_last=false",
]


def tiny(tmp_path, *extra: str) -> TrainConfig:
    return load_config(None, [*TINY, f"output_dir={tmp_path}", *extra])


@pytest.mark.parametrize("method", ["carp", "carp_kp", "carp_dec", "dino", "dino_dec"])
def test_each_method_trains_and_writes_a_loadable_model(tmp_path, method):
    import protozoo

    results = Trainer(tiny(tmp_path, f"method={method}", "max_steps=2", "eval_every=2", "save_every=2")).fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2]
    evals = [r for r in lines if "knn_top1" in r]
    assert [r["step"] for r in evals] == [0, 2]
    assert set(evals[-1]["unique"]) == {"0.025", "0.1", "0.25", "0.5"}
    # live = used by at least one held-out image; unique_live counts among those alone
    assert 1 <= evals[-1]["live"] == round((1 - evals[-1]["dead"]) * 64)
    assert set(evals[-1]["unique_live"]) == {"0.025", "0.1", "0.25", "0.5"}
    assert (evals[-1]["carrying"] is None) == (not method.endswith("_dec"))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r)
    assert (tmp_path / "collapse.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").exists()
    model = protozoo.load(tmp_path / "model")
    assert model.config.method == method
    views = [torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)]
    out = model(views)
    assert out.assignments.shape == (6, 64)
    torch.testing.assert_close(model.project(views), out.projection)  # what the teacher runs in a step
    assert results["knn_top1"] == evals[-1]["knn_top1"]


def test_decoupled_prototypes_get_no_gradient_and_the_gmm_moves(tmp_path):
    trainer = Trainer(tiny(tmp_path, "method=carp_dec", "max_steps=1"))
    gmm = trainer.model.prototype_source
    before = gmm.means.clone()
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_sampler=trainer._micro_batches(0, 0)[:1])
    views, _ = next(iter(loader))
    trainer.train_step([views])
    assert not torch.equal(before, gmm.means)
    assert trainer.teacher.prototype_source is gmm  # one shared prototype set
    assert all(not b.requires_grad for b in gmm.buffers())


@pytest.mark.parametrize(("fit", "points"), [("views", 64), ("mean", 32), ("clean", 32)])
def test_the_gmm_fits_each_global_view_or_each_image(tmp_path, fit, points):
    overrides = ("method=carp_dec", "max_steps=1", f"gmm_fit={fit}", "gmm_split_every=100")
    trainer = Trainer(tiny(tmp_path, *overrides))
    gmm = trainer.model.prototype_source
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_sampler=trainer._micro_batches(0, 0)[:1])
    views, _ = next(iter(loader))
    with torch.no_grad(), trainer.accelerator.autocast():  # as the step computes them
        h = torch.nn.functional.normalize(trainer.teacher.project(views[:2]).float(), dim=-1)  # (2B, D)
        if fit == "clean":  # the third view
            h = torch.nn.functional.normalize(trainer.teacher.project(views[2:]).float(), dim=-1)  # (B, D)
    expected = torch.nn.functional.normalize(h[:32] + h[32:], dim=-1) if fit == "mean" else h
    fed, seen = [], []
    update = gmm.update
    gmm.update = lambda h, beta: fed.append(h) or update(h, beta=beta)
    trainer.student.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    trainer.train_step([views])
    torch.testing.assert_close(fed[0], expected)  # batch 32
    torch.testing.assert_close(gmm.recent_mass.sum(), torch.tensor(float(points)))  # one unit per point
    assert seen == [2]  # the student trains on the two global views alone
    if fit == "clean":  # the third view is each image as evaluation sees it (the k-NN bank's transform)
        first = trainer._micro_batches(0, 0)[0][0]
        torch.testing.assert_close(views[2][0], trainer.bank_set.dataset[first][0])


def test_dino_dec_targets_go_uniform_with_the_centre_and_not_with_the_gmm_posteriors(tmp_path):
    # DINO's centred, sharpened targets over prototypes that follow the embeddings flatten to uniform,
    # so the loss sits at log K; the GMM's own posteriors stay peaked, so the student can fit them.
    late = {}
    for centering in ("ema", "posterior"):
        out = tmp_path / centering
        gmm = ["lr=4e-3", "gmm_init=first_batch", "gmm_split_every=5", "gmm_split_min_mass=0.1"]
        cfg = tiny(out, "method=dino_dec", f"centering={centering}", "max_steps=16", "eval_every=100", *gmm)
        Trainer(cfg).fit()
        losses = [json.loads(x).get("loss") for x in (out / "metrics.jsonl").read_text().splitlines()]
        late[centering] = torch.tensor([x for x in losses if x is not None][-6:]).mean().item()
    log_k = torch.tensor(64.0).log().item()
    assert late["ema"] > 0.9 * log_k, late
    assert late["posterior"] < 0.6 * log_k, late


def test_feature_koleo_reaches_the_backbone_gradient(tmp_path):
    backbones = []
    for weight in (0.0, 1.0):  # Trainer seeds itself, so both start from the same weights and views
        trainer = Trainer(tiny(tmp_path / str(weight), "max_steps=2", f"koleo_weight={weight}"))
        batch = trainer._micro_batches(0, 0)[:1]
        views, _ = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_sampler=batch)))
        torch.manual_seed(1)  # the same CARP partitions in both
        for _ in range(2):  # the lr warms up from 0 at step 0
            logs = trainer.train_step([views])
        assert ("koleo_features" in logs) == bool(weight)
        backbones.append(torch.cat([p.flatten() for p in trainer.model.backbone.parameters()]))
    assert torch.isfinite(torch.tensor(logs["koleo_features"]))
    assert not torch.allclose(*backbones)


def test_long_tailed_final_eval_reports_knn_per_class_group(tmp_path):
    trainer = Trainer(tiny(tmp_path, "long_tail=100", "max_steps=1", "final_eval=true", "eval_every=100"))
    assert len(trainer.train_set) < 15_000  # 55 000 balanced images thinned to an exponential profile
    trainer.fit()
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["split"] == "test" and list(final["knn_groups"]) == ["head", "medium", "tail"]
    assert all(0.0 <= v <= 1.0 for v in final["knn_groups"].values())


def _state(folder):
    ckpt = sorted((folder / "checkpoints").glob("step_*"))[-1]
    return load_file(ckpt / "model.safetensors"), load_file(ckpt / "teacher.safetensors")


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ("method=carp_dec", "max_steps=4", "save_every=2", "eval_every=2", "keep_checkpoints=5")
    Trainer(tiny(full, *args)).fit()
    Trainer(tiny(cut, *args)).fit()
    # simulate a kill after the step-2 checkpoint: drop what came later
    import shutil

    shutil.rmtree(cut / "checkpoints" / "step_0000004")
    shutil.rmtree(cut / "model")
    Trainer(tiny(cut, *args, "resume=true")).fit()
    for a, b in zip(_state(full), _state(cut), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("full", "cut")]
    full_m, cut_m = ([json.loads(x) for x in m] for m in metrics)
    assert [r["step"] for r in full_m] == [r["step"] for r in cut_m]
    for a, b in zip(full_m, cut_m, strict=True):
        if "loss" in a:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_two_processes_agree_with_one_on_the_gmm(tmp_path):
    # torchrun starts fresh interpreters (forking a process that already ran OpenMP kernels can hang).
    # A ViT with DINO's BN-free head: per-sample outputs do not depend on how the batch is split
    # (CARP's head has BatchNorm, which only SyncBatchNorm on GPUs makes split-independent).
    args = [*TINY, "method=dino_dec", "max_steps=2", "eval_every=100", "save_every=2"]
    Trainer(load_config(None, [*args, f"output_dir={tmp_path / 'one'}"])).fit()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "train",
    ]
    run = subprocess.run(
        [*cmd, *args, f"output_dir={tmp_path / 'two'}"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = _state(tmp_path / "one")[1], _state(tmp_path / "two")[1]
    for k in one:
        if k.startswith("prototype_source."):
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["method=swav"], ValueError, "Unknown method 'swav'"),
        (["backbone=resnet9000"], ValueError, "Unknown backbone 'resnet9000'"),
        (["num_prototypes=100", "block_size=32"], ValueError, "not divisible by block_size=32"),
        (["dataset=imagefolder:/nonexistent/images"], FileNotFoundError, "nonexistent"),
        (["data_root=/nonexistent"], FileNotFoundError, "dataset-fashion-mnist"),
        (["max_stepz=3"], ValueError, "did you mean \\['max_steps'\\]"),
        (["max_steps"], ValueError, "not key=value"),
        (["max_steps=abc"], ValueError, "max_steps='abc'"),
        (["eval_every=0"], ValueError, "eval_every must be a positive integer, got 0"),
        (["max_steps=-5"], ValueError, "max_steps must be a positive integer, got -5"),
        (["mixed_precision=fp8"], ValueError, "mixed_precision must be auto, bf16, fp16 or no"),
        (["method=carp_dec", "centering=posterior"], ValueError, "posteriors as targets; for dino_dec only"),
        (["centering=mean"], ValueError, "centering must be ema, sinkhorn or posterior, got 'mean'"),
        (["koleo_space=pixels"], ValueError, "koleo_space must be features or embeddings, got 'pixels'"),
        (["gmm_covariance=full"], ValueError, "Unknown covariance 'full'"),
    ],
)
def test_bad_recipes_stop_at_start_with_a_clear_message(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        Trainer(tiny(tmp_path, *overrides))


def test_cli_reports_a_bad_recipe_without_a_traceback(capsys):
    from train.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["method=swav"])
    assert exit_info.value.code == 2
    assert "Unknown method 'swav'" in capsys.readouterr().err


def test_cli_prints_the_report_the_readme_promises(tmp_path, capsys):
    from train.__main__ import main

    main([*TINY, "max_steps=2", "eval_every=2", f"output_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "live prototypes (the argmax of at least one held-out image)" in out
    assert re.search(r"training loop: \d+ min \d+ s to step 2 \(evaluations included\)", out)
    assert f'load it with: model = protozoo.load("{tmp_path}/model")' in out


@pytest.mark.parametrize(
    "recipe", sorted(p.name for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("finetune-"))
)
def test_every_shipped_training_recipe_validates(recipe):
    cfg = load_config(RECIPES_DIR / recipe, [])
    assert cfg.max_steps or cfg.epochs  # a length, and load_config's validation passed


def test_missing_recipe_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("train/configs/nope.yaml")


def test_every_recipe_parses():
    from pathlib import Path

    recipes = sorted(Path(__file__).parents[1].glob("train/configs/*.yaml"))
    recipes = [r for r in recipes if not r.name.startswith("finetune-")]  # train.finetune's (test_finetune)
    assert recipes
    for recipe in recipes:
        load_config(recipe)


@pytest.mark.parametrize(
    "override, field, expected",
    [("weight_decay=1e-6", "weight_decay", 1e-6), ("lr=2", "lr", 2.0), ("long_tail=null", "long_tail", None),
     ("trackers=[tensorboard]", "trackers", ["tensorboard"]), ("resume=true", "resume", True)],
)  # fmt: skip
def test_overrides_take_the_field_type(override, field, expected):
    assert getattr(load_config(None, [override]), field) == expected


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in [(False, False, "no"), (True, False, "bf16"), (False, True, "bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto") == expected
        assert resolve_precision("bf16") == "bf16" and resolve_precision("no") == "no"


def test_cosine_schedule():
    assert cosine(0, 100, 1.0, 0.0, warmup=10) == 0.0
    assert cosine(10, 100, 1.0, 0.0, warmup=10) == 1.0
    assert cosine(100, 100, 1.0, 0.0, warmup=10) == pytest.approx(0.0)
    assert cosine(55, 100, 1.0, 0.0, warmup=10) == pytest.approx(0.5)


def test_joint_runs_report_the_students_prototypes_beside_the_teachers(tmp_path):
    trainer = Trainer(tiny(tmp_path / "carp", "method=carp", "max_steps=1"))
    with torch.no_grad():  # every student prototype on one direction; the teacher's EMA copy keeps its own
        trainer.model.prototype_source.weight.copy_(trainer.model.prototype_source.weight[:1].expand(64, -1))
    result = trainer.evaluate()
    assert result["student_unique"] == {"0.025": 1 / 64, "0.1": 1 / 64, "0.25": 1 / 64, "0.5": 1 / 64}
    assert result["student_nn_cosine_mean"] == pytest.approx(1.0)
    assert result["unique"]["0.025"] == 1.0
    assert (
        "student_unique" not in Trainer(tiny(tmp_path / "dec", "method=carp_dec")).evaluate()
    )  # no learnable


@pytest.mark.parametrize("end, expected", [(1.0, 0.975), (0.9, 0.9)])
def test_teacher_momentum_rises_to_its_end_value(tmp_path, end, expected):
    trainer = Trainer(tiny(tmp_path, "max_steps=3", "teacher_momentum=0.9", f"teacher_momentum_end={end}"))
    views, _ = next(
        iter(torch.utils.data.DataLoader(trainer.train_set, batch_sampler=trainer._micro_batches(0, 0)))
    )
    logs = [trainer.train_step([views]) for _ in range(3)]
    assert logs[0]["teacher_momentum"] == pytest.approx(0.9)
    assert logs[2]["teacher_momentum"] == pytest.approx(expected)  # cosine(2, 3, 0.9, end)
