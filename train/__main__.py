"""Entry point: ``python -m train --config train/configs/<recipe>.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import sys

from train.config import ANCHORS, load_config


def main(argv: list[str] | None = None) -> None:
    """Parse the recipe and overrides, train, print the collapse report and k-NN accuracy."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument(
        "--config", default=None, help="YAML recipe in train/configs/ (default: built-in defaults)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value recipe overrides, e.g. max_steps=100 resume=true"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        from train.engine import Trainer

        if cfg.method in ANCHORS:
            from train.anchors import AnchorTrainer

            trainer: Trainer = AnchorTrainer(cfg)
        else:
            trainer = Trainer(cfg)
    except (ValueError, FileNotFoundError, ImportError) as e:
        parser.exit(2, f"python -m train: error: {e}\n")
    results = trainer.fit()
    if trainer.accelerator.is_main_process:
        unique = results.get("unique") or {}
        print("\n== collapse report (unique prototypes / K) ==")
        for eps, frac in unique.items():
            print(f"  eps {eps:>6}: {frac:.4f}")
        print(f"usage perplexity / K: {results.get('perplexity')}")
        split = results.get("eval_split")
        print(f"k-NN top-1 ({cfg.dataset} {split}): {results.get('knn_top1')}")
        if cfg.method not in ANCHORS:  # lightly's heads are not a ProtoModel: weights stay in checkpoints/
            print(f"model written to {cfg.output_dir}/model")


if __name__ == "__main__":
    main(sys.argv[1:])
