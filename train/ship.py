"""Ship a finished run's model inside the package, where ``protozoo.load(name)`` finds it offline.

    python -m train.ship runs/dp-resnet18-fmnist/model dp-resnet18-fmnist

The weights are stored in bfloat16 (the GMM masses stay fp32) so each zoo model stays small; the
run's recipe and results travel along in config.json and the model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from protozoo.model import ProtoModel
from protozoo.registry import ZOO, ZOO_DIR


def main(argv: list[str] | None = None) -> None:
    """Load the run's model folder strictly and rewrite it under protozoo/zoo/<name>/."""
    parser = argparse.ArgumentParser(prog="python -m train.ship", description=__doc__)
    parser.add_argument("folder", help="a run's model/ folder")
    parser.add_argument("name", choices=sorted(ZOO), help="the zoo name")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    args = parser.parse_args(argv)
    block = json.loads((Path(args.folder) / "config.json").read_text())["protozoo"]
    target = ProtoModel.from_pretrained(args.folder).save_pretrained(
        ZOO_DIR / args.name, results=block.get("results"), recipe=block.get("recipe"),
        dtype=args.dtype, name=args.name,
    )  # fmt: skip
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    print(f"shipped {args.name} to {target} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
