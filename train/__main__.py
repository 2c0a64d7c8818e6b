"""Entry point: ``python -m train --config <recipe> [key=value ...]``.

``<recipe>`` is a YAML file, or the name of a shipped recipe (``default``, ``dp-resnet18-fmnist``, ...).
From a checkout ``python -m train``; from a wheel ``python -m protozoo.train`` or ``protozoo train``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ANCHORS, load_config

RECIPES_DIR = Path(__file__).resolve().parent / "configs"  # the shipped recipes (package data in a wheel)


def resolve_recipe(recipe: str) -> Path:
    """The recipe file: ``recipe`` itself when it is a file, else the shipped recipe of that name.

    ``default``, ``default.yaml`` and ``train/configs/default.yaml`` all name the shipped
    ``configs/default.yaml`` when no such file exists where the command runs.

    Raises:
        FileNotFoundError: when it is neither a file nor a shipped recipe; the message lists the recipes.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"Recipe {recipe!r} not found: give a YAML file or one of the shipped recipes {names}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the recipe and overrides, train, print the collapse report and k-NN accuracy."""
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__)
    parser.add_argument(
        "--config",
        default=None,
        help="YAML recipe file, or a shipped recipe's name such as 'default' (default: built-in defaults)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value recipe overrides, e.g. max_steps=100 resume=true"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        recipe = resolve_recipe(args.config) if args.config is not None else None
        cfg = load_config(recipe, args.overrides)
        from .engine import Trainer

        if cfg.method in ANCHORS:
            from .anchors import AnchorTrainer

            trainer: Trainer = AnchorTrainer(cfg)
        else:
            trainer = Trainer(cfg)
    except (ValueError, FileNotFoundError, ImportError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    results = trainer.fit()
    if trainer.accelerator.is_main_process:
        k, live = cfg.num_prototypes, results.get("live")
        print("\n== collapse report ==")
        if live is not None:
            print(
                f"live prototypes (the argmax of at least one held-out image): {live} of {k}; dead {k - live}"
            )
        print(f"  {'eps':>6}  {'unique / K':>10}  {'unique among live':>17}")
        for eps, frac in (results.get("unique") or {}).items():
            among = (results.get("unique_live") or {}).get(eps)
            print(f"  {eps:>6}  {frac:>10.4f}  {among if among is None else f'{among:.4f}':>17}")
        print(f"usage perplexity / K: {results.get('perplexity')}")
        if trainer.train_seconds is not None:
            minutes, seconds = divmod(round(trainer.train_seconds), 60)
            print(f"training loop: {minutes} min {seconds} s to step {trainer.step} (evaluations included)")
        split = results.get("eval_split")
        print(f"k-NN top-1 ({cfg.dataset} {split}): {results.get('knn_top1')}")
        if trainer.knn_pixels is not None:
            print(f"k-NN top-1 of raw pixels on the same split: {trainer.knn_pixels}")
        if cfg.method not in ANCHORS:  # lightly's heads are not a ProtoModel: weights stay in checkpoints/
            print(f"model written to {cfg.output_dir}/model")
            print(f'load it with: model = protozoo.load("{cfg.output_dir}/model")')


if __name__ == "__main__":
    main(sys.argv[1:])
