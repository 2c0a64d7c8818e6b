"""The default recipe's screens: GMM relocation, and the recipe that fits the 10-minute budget.

python benchmarks/screens.py                  # the GMM screens at 360 steps (tables/gmm_default)
python benchmarks/screens.py --screen 600     # the GMM screens at 600 steps (tables/gmm_live)
python benchmarks/screens.py --screen budget  # the 10-minute recipe screens (tables/budget)
python benchmarks/screens.py --screen relocation  # the default's GMM relocation (tables/relocation)
python benchmarks/screens.py --screen changes  # the default with one change each (tables/changes)

The GMM screens are the 360-step ResNet-18 recipe (train/configs/resnet18-360.yaml, the default when
they ran) with one GMM or DINO setting; joint CARP is the same recipe with ``method=carp``. The budget
screens are the default recipe (train/configs/default.yaml) with one change each, in fp32 with AVX2
kernels as README's main job runs on a 2-core AVX2 machine, each sized by its step time to about 10
minutes; an entry may name another recipe with ``--config``. The relocation screens are the
default with KoLeo 0.1 and one relocation setting each (overrides name the earlier settings they return
to). The changes screens are the default itself (shared variance, KoLeo 0.5) and the default with
one change each (DINO's blur or solarisation of the global views lightened, the GMM's step size, the
mass a relocated component starts with, how often the relocation checks, mixture weights held at
1/K), in fp32 with this CPU's own kernels. The command of every run is in ``SCREENS``. Writes a
markdown table (last val evaluation and final test metrics), the figure docs/figures/<folder>.png
(live fraction = prototypes that are some val image's argmax, val k-NN and unique@0.025 among the live
over steps) and benchmarks/results/<folder>.json. A run whose last evaluation comes before its length
was stopped there, to free the CPU: the step column says where.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, ROOT, evaluations, table, write_json

HALF = "backbone_kwargs.channels=[32,64,128,256] backbone_kwargs.stem_width=32"  # the default is a quarter
ADAMW = (
    "optimizer=adamw lr=4e-3 min_lr=1e-6 warmup_steps=100 weight_decay=0.04 weight_decay_end=0.04 "
    "clip_grad=3.0 teacher_momentum_end=1.0"
)
# screen -> (folder under docs/tables, the base command, {run: (overrides, label)})
SCREENS = {
    "gmm": (
        "gmm_default",
        "python -m train --config resnet18-360 output_dir=runs/gmm_default/<run>",
        {
            "split10": ("gmm_split_min_mass=1 koleo_weight=0", "split every 10 steps, dead below 1 unit"),
            "s50": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_split_every=50",
                "split every 50 steps, dead below 1 unit",
            ),
            "kpp50": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_split_every=50 gmm_init=kmeans++",
                "k-means++ seeding, split every 50 steps",
            ),
            "shared": (
                "gmm_split_min_mass=1 koleo_weight=0 gmm_covariance=shared",
                "split10 with one shared variance",
            ),
            "min01": ("koleo_weight=0", "split every 10 steps, dead below 0.1 unit"),
            "min01ko": ("", "the same + KoLeo 0.1 on the embeddings (kept)"),
            "min01ko5": (
                "koleo_weight=0.5",
                "KoLeo 0.5 on the embeddings",
            ),
            "dinopost": (
                "method=dino_dec centering=posterior gmm_split_min_mass=1 koleo_weight=0",
                "DINO + decoupling, GMM posteriors as targets",
            ),
        },
    ),
    "600": (
        "gmm_live",
        "python -m train --config resnet18-360 max_steps=600 eval_every=150 save_every=150 "
        "gmm_split_min_mass=1 koleo_weight=0 output_dir=runs/gmm_live/<run>",
        {
            "old_gmm": ("gmm_init=random gmm_split_every=0", "GMM, random init, no relocation (the paper's)"),
            "split10": ("", "GMM, first-batch init, split every 10 steps"),
            "carp": ("method=carp", "joint CARP (learnable prototypes)"),
        },
    ),
    "budget": (
        "budget",
        "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m train --config default "
        "mixed_precision=no final_eval=false save_every=100000 output_dir=runs/budget/<run> "
        "gmm_split_every=10 gmm_split_min_mass=0.1 gmm_relocate=split gmm_merge_eps=0 koleo_weight=0.1",
        {
            "full360": ("--config resnet18-360", "full width, AdamW, 360 steps (the earlier default)"),
            "q_adamw_2400": (
                f"{ADAMW} max_steps=2400 eval_every=400",
                "quarter width, AdamW, 2400 steps",
            ),
            "q_sgd_2400": ("max_steps=2400 eval_every=400", "quarter width, SGD, 2400 steps"),
            "q_sgd_2000": ("", "quarter width, SGD, 2000 steps (default)"),
            "h_sgd_900": (f"{HALF} max_steps=900 eval_every=300", "half width, SGD, 900 steps"),
            "q_sgd_crops05_2000": ("global_crops_scale=[0.5,1.0]", "the default with crops 0.5-1"),
            "split5": ("gmm_split_every=5", "the default, GMM split check every 5 steps"),
            "min05": ("gmm_split_min_mass=0.5", "the default, dead below 0.5 unit"),
        },
    ),
    "relocation": (
        "relocation",
        "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m train --config default "
        "mixed_precision=no final_eval=false save_every=100000 output_dir=runs/budget/<run> koleo_weight=0.1",
        {
            "split10": (
                "gmm_split_every=10 gmm_split_min_mass=0.1 gmm_relocate=split gmm_merge_eps=0",
                "split, every 10 steps, dead below 0.1 unit (the earlier default)",
            ),
            "emb": (
                "gmm_split_every=10 gmm_split_min_mass=0.1 gmm_merge_eps=0",
                "onto embeddings, every 10 steps, dead below 0.1 unit",
            ),
            "w100": (
                "gmm_split_every=100 gmm_split_min_mass=2 gmm_relocate=split gmm_merge_eps=0",
                "split, every 100 steps, dead below 2 units",
            ),
            "w100emb": (
                "gmm_split_every=100 gmm_split_min_mass=2 gmm_merge_eps=0",
                "onto embeddings, every 100 steps, dead below 2 units",
            ),
            "w100emb_m025": (
                "gmm_split_every=100 gmm_split_min_mass=2",
                "the same, merged (within 0.025) moved too",
            ),
            "w50emb_m025": ("", "onto embeddings, every 50 steps, dead below 1 unit, merged within 0.025"),
            "w50emb_m1": ("gmm_merge_eps=0.1", "the same, merged within 0.1"),
            "ko5": (
                "koleo_weight=0.5",
                "every 50 steps, merged within 0.025, KoLeo 0.5 on the embeddings (diagonal variances)",
            ),
            "ko5_m1": ("koleo_weight=0.5 gmm_merge_eps=0.1", "KoLeo 0.5, merged within 0.1"),
            "ko5_m05": ("koleo_weight=0.5 gmm_merge_eps=0.05", "KoLeo 0.5, merged within 0.05"),
            "ko5_min2": ("koleo_weight=0.5 gmm_split_min_mass=2", "KoLeo 0.5, dead below 2 units"),
            "ko5_sampled": (
                "koleo_weight=0.5 gmm_relocate=sampled",
                "KoLeo 0.5, onto embeddings drawn by squared distance",
            ),
            "ko5_sampled_s1": ("koleo_weight=0.5 gmm_relocate=sampled seed=1", "the same, seed 1"),
            "ko75": ("koleo_weight=0.75", "KoLeo 0.75, merged within 0.025"),
            "ko75_s1": ("koleo_weight=0.75 seed=1", "the same, seed 1"),
            "busiest": (
                "koleo_weight=0.5 gmm_relocate=busiest",
                "KoLeo 0.5, onto the farthest embedding in the busiest region",
            ),
            "busiest_s1": ("koleo_weight=0.5 gmm_relocate=busiest seed=1", "the same, seed 1"),
            "busiest_min2": (
                "koleo_weight=0.5 gmm_relocate=busiest gmm_split_min_mass=2",
                "the same, dead below 2 units",
            ),
            "busiest_min2_s1": (
                "koleo_weight=0.5 gmm_relocate=busiest gmm_split_min_mass=2 seed=1",
                "the same, seed 1",
            ),
            "sk3": (
                "koleo_weight=0.5 sinkhorn_iterations=3",
                "KoLeo 0.5, equipartitioned teacher targets (Sinkhorn, 3 iterations)",
            ),
            "sk3_s1": ("koleo_weight=0.5 sinkhorn_iterations=3 seed=1", "the same, seed 1"),
            "sk3_s2": ("koleo_weight=0.5 sinkhorn_iterations=3 seed=2", "the same, seed 2"),
            "fitmean": ("koleo_weight=0.5 gmm_fit=mean", "KoLeo 0.5, the GMM fits each image's mean view"),
            "fitmean_kpp": (
                "koleo_weight=0.5 gmm_fit=mean gmm_init=kmeans++",
                "the same, means seeded by k-means++ from 4096 embeddings",
            ),
            "fitmean_kpp_w100": (
                "koleo_weight=0.5 gmm_fit=mean gmm_init=kmeans++ gmm_split_every=100",
                "the same, checked every 100 steps",
            ),
            "fitmean_kpp_min05": (
                "koleo_weight=0.5 gmm_fit=mean gmm_init=kmeans++ gmm_split_min_mass=0.5",
                "the same, every 50 steps, dead below 0.5 unit",
            ),
            "fitmean_w25": (
                "koleo_weight=0.5 gmm_fit=mean gmm_split_every=25 gmm_split_min_mass=0.25",
                "KoLeo 0.5, the GMM fits each image's mean view, every 25 steps, dead below 0.25 unit",
            ),
            "sk3_fitmean_w25": (
                "koleo_weight=0.5 gmm_fit=mean gmm_split_every=25 gmm_split_min_mass=0.25 "
                "sinkhorn_iterations=3",
                "the same with Sinkhorn targets",
            ),
            "clean": (
                "koleo_weight=0.5 gmm_fit=clean",
                "KoLeo 0.5, the GMM fits each image as evaluation sees it",
            ),
            "clean_sk3": (
                "koleo_weight=0.5 gmm_fit=clean sinkhorn_iterations=3",
                "the same with Sinkhorn targets",
            ),
            "split50": (
                "koleo_weight=0.5 gmm_relocate=split",
                "KoLeo 0.5, split a busy one (merged within 0.025)",
            ),
            "split100": (
                "koleo_weight=0.5 gmm_relocate=split gmm_split_every=100 gmm_split_min_mass=2",
                "the same, every 100 steps, dead below 2 units",
            ),
            "shared": (
                "koleo_weight=0.5 gmm_covariance=shared",
                "KoLeo 0.5, one shared isotropic variance (the default)",
            ),
            "shared_s1": ("koleo_weight=0.5 gmm_covariance=shared seed=1", "the same, seed 1"),
            "shared_s2": ("koleo_weight=0.5 gmm_covariance=shared seed=2", "the same, seed 2"),
            "shared_sk3": (
                "koleo_weight=0.5 gmm_covariance=shared sinkhorn_iterations=3",
                "the same, seed 0, with Sinkhorn targets",
            ),
            "shared_lightest": (
                "koleo_weight=0.5 gmm_covariance=shared gmm_relocate_order=lightest",
                "the same, seed 0, the lightest movers first",
            ),
            "shared_lightest_s1": (
                "koleo_weight=0.5 gmm_covariance=shared gmm_relocate_order=lightest seed=1",
                "the same, seed 1",
            ),
            "shared_merge10": (
                "koleo_weight=0.5 gmm_covariance=shared gmm_merge_eps=0.1",
                "the default, seed 0, merged within 0.1",
            ),
            "shared_merge10_lightest": (
                "koleo_weight=0.5 gmm_covariance=shared gmm_merge_eps=0.1 gmm_relocate_order=lightest",
                "the same, the lightest movers first",
            ),
        },
    ),
    "changes": (
        "changes",
        "python -m train --config default mixed_precision=no final_eval=false save_every=100000 "
        "output_dir=runs/budget/<run>",
        {
            "default_views": ("", "the default (DINO's views), seed 0"),
            "default_views_s1": ("seed=1", "the same, seed 1"),
            "default_lightviews": (
                "blur_prob=[0.1,0.1,0.5] solarize_prob=0.0",
                "the default, global view 1 blurred one time in ten (DINO: always) and no solarisation",
            ),
            "default_lightviews_s1": ("blur_prob=[0.1,0.1,0.5] solarize_prob=0.0 seed=1", "the same, seed 1"),
            "default_lightblur": (
                "blur_prob=[0.1,0.1,0.5]",
                "the default, global view 1 blurred one time in ten",
            ),
            "default_nosolarize": ("solarize_prob=0.0", "the default, no solarisation"),
            "default_nosolarize_s1": ("solarize_prob=0.0 seed=1", "the same, seed 1"),
            "default_eta3e3": ("gmm_eta=3e-3", "the default, the GMM's step size 3e-3 (1e-3)"),
            "least_s0": (
                "gmm_relocate_mass=least seed=0",
                "the default, a moved component takes the least mass",
            ),
            "least_s1": ("gmm_relocate_mass=least seed=1", "the same, seed 1"),
            "fresh_s0": (
                "gmm_relocate_mass=fresh seed=0",
                "the default, a moved component starts from one unit",
            ),
            "fresh_s1": ("gmm_relocate_mass=fresh seed=1", "the same, seed 1"),
            "fresh_w100_s0": (
                "gmm_relocate_mass=fresh gmm_split_every=100 seed=0",
                "the default, a moved component starts from one unit, checked every 100 steps",
            ),
            "fresh_w100_s1": ("gmm_relocate_mass=fresh gmm_split_every=100 seed=1", "the same, seed 1"),
            "fresh_w100_lightest_s0": (
                "gmm_relocate_mass=fresh gmm_split_every=100 gmm_relocate_order=lightest seed=0",
                "the same, seed 0, the lightest movers first",
            ),
            "fresh_w100_kpp_s0": (
                "gmm_relocate_mass=fresh gmm_split_every=100 gmm_init=kmeans++ seed=0",
                "the same, seed 0, means seeded by k-means++",
            ),
            "uniform_s0": (
                "gmm_uniform_weights=true seed=0",
                "the default, mixture weights held at 1/K",
            ),
            "uniform_s1": ("gmm_uniform_weights=true seed=1", "the same, seed 1"),
        },
    ),
}


def command(base: str, overrides: str) -> str:
    """A run's command: the screen's base and the run's overrides, whose leading ``--config X`` replaces
    the base's recipe."""
    if overrides.startswith("--config "):
        _, recipe, *rest = overrides.split(" ", 2)
        base, overrides = base.replace("--config default", f"--config {recipe}"), " ".join(rest)
    return f"{base} {overrides}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screen", choices=list(SCREENS), default="gmm")
    name_of_folder, base, runs_of = SCREENS[parser.parse_args().screen]
    folder = ROOT / "docs" / "tables" / name_of_folder
    runs = {
        name: evaluations(folder / f"{name}.jsonl") for name in runs_of if (folder / f"{name}.jsonl").exists()
    }
    rows, summary = [], {}
    for name, (evals, final) in runs.items():
        last = evals[-1]
        live = last.get("live") or round((1 - last["dead"]) * 1024)
        unique_live = last.get("unique_live") or {}
        summary[name] = {
            "command": command(base, runs_of[name][0]),
            "step": last["step"],
            "val_knn": last["knn_top1"],
            "test_knn": final.get("knn_top1"),
            "test_live": final.get("live"),
            "live": live,
            "carrying": last.get("carrying"),
            "dead": last["dead"],
            "perplexity": last["perplexity"],
            "unique": last["unique"],
            "unique_live": unique_live,
        }
        test = f"{final['knn_top1']:.4f}" if final else ("" if "final_eval=false" in base else "(stopped)")
        rows.append(
            [runs_of[name][1], str(last["step"]), f"{last['knn_top1']:.4f}", test, f"{live}",
             str(last.get("carrying", "")), f"{last['perplexity']:.3f}",
             " / ".join(f"{unique_live[k]:.3f}" for k in ("0.025", "0.1")) if unique_live else ""]
        )  # fmt: skip
    header = [
        "run",
        "step",
        "val k-NN",
        "test k-NN",
        "live (val)",
        "carrying",
        "perplexity/K",
        "unique@0.025/0.1 live",
    ]
    print(table(header, rows))
    legend_rows = -(-len(runs) // 2)  # two columns under the panels
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8 + 0.2 * legend_rows), layout="constrained")
    for i, (name, (evals, _)) in enumerate(runs.items()):
        steps = [r["step"] for r in evals]
        live = [(r.get("live") or round((1 - r["dead"]) * 1024)) / 1024 for r in evals]
        style = {"color": plt.cm.tab20(i % 20), "linestyle": ("-", "--")[i // 20 % 2], "marker": "o"}
        axes[0].plot(steps, live, label=runs_of[name][1], **style)
        axes[1].plot(steps, [r["knn_top1"] for r in evals], **style)
        among = [(r.get("unique_live") or r["unique"])["0.025"] for r in evals]
        axes[2].plot(steps, among, **style)
    titles = ("live prototypes / K (val argmax)", "val k-NN", "unique@0.025 among the live")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    out = ROOT / "docs" / "figures" / f"{name_of_folder}.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    write_json(RESULTS / f"{name_of_folder}.json", summary)
    print(f"wrote {out} and {RESULTS / f'{name_of_folder}.json'}")


if __name__ == "__main__":
    main()
