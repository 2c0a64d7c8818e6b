"""The ``protozoo`` command line: list, train, eval, diagnose, export, publish, demo."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from protozoo import __version__

# Each subcommand imports what it needs when it runs (torch, timm, gradio...), so --help answers at once.


def _list(args: argparse.Namespace) -> None:
    from protozoo.registry import format_zoo_table

    print(format_zoo_table())


def _eval(args: argparse.Namespace) -> None:
    from protozoo.eval import evaluate_model
    from protozoo.model import load

    model = load(args.model, device=args.device)
    result = evaluate_model(model, dataset=args.dataset, linear=args.linear, device=args.device)
    print(json.dumps(result, indent=2))


def _diagnose(args: argparse.Namespace) -> None:
    from protozoo.collapse import collapse_report, plot_nn_cosine_histogram
    from protozoo.model import load_prototype_file

    found = load_prototype_file(args.source, key=args.key)
    report = collapse_report(found.prototypes, masses=found.masses)
    others = [c for c in found.candidates if c != found.key]
    print(f"prototype layer: {found.key or '(the file holds one matrix)'}")
    if others:
        print(f"also found: {', '.join(others)} (pick one with --key)")
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"key": found.key, **report.to_dict()}, indent=2))
    if args.plot:
        plot_nn_cosine_histogram(found.prototypes, args.plot)


def _export(args: argparse.Namespace) -> None:
    from protozoo.model import load
    from protozoo.onnx import export_onnx

    path = export_onnx(load(args.model), args.out, opset=args.opset)
    print(f"wrote {path} and {path.parent / 'preprocessor.json'}")


def _publish(args: argparse.Namespace) -> None:
    from protozoo.model import publish

    files = publish(
        args.folder,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
    )
    print(("would upload" if args.dry_run else "uploaded") + f" to {args.repo_id}:")
    for name in files:
        print(f"  {name}")


def _demo(args: argparse.Namespace) -> None:
    from protozoo.demo import launch

    launch(
        model=args.model,
        backend=args.backend,
        port=args.port,
        host=args.host,
        public=args.public,
        allow_models=args.allow_models,
        allow_local=args.allow_local,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``protozoo`` command."""
    parser = argparse.ArgumentParser(prog="protozoo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the zoo models with their headline numbers")
    p.set_defaults(func=_list)

    # listed for --help only: main() hands everything after "train" to the training module untouched
    sub.add_parser(
        "train", help="train from a recipe: protozoo train --config default|recipe.yaml [key=value ...]"
    )
    # likewise for "finetune", handed to the fine-tuning module
    sub.add_parser("finetune", help="fine-tune: protozoo finetune --model NAME_OR_PATH [key=value ...]")

    p = sub.add_parser("eval", help="k-NN (and linear-probe) accuracy of a model's frozen features")
    p.add_argument("model", help="zoo name, Hub id org/name or local folder")
    p.add_argument(
        "--dataset", default="fashion_mnist", help="dataset name as in protozoo.data.build_dataset"
    )
    p.add_argument("--linear", action="store_true", help="also train a linear probe (slower)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)

    p = sub.add_parser("diagnose", help="collapse report of a checkpoint or any prototype matrix")
    p.add_argument(
        "source",
        help="zoo name, Hub id, model folder, a checkpoint of DINO, CARP, SwAV, lightly or solo-learn "
        "(.pth, .pth.tar, .ckpt, .safetensors; read without pickle), or a .npy/.pt (K, D) matrix",
    )
    p.add_argument(
        "--key",
        default=None,
        help="the layer or 2-D tensor to take inside a file (dotted, e.g. student.module.head.last_layer) "
        "when the prototype layer is not found by its usual name, or to pick the student's",
    )
    p.add_argument("--json", default=None, help="also write the report as JSON to this path")
    p.add_argument("--plot", default=None, help="also write the nearest-neighbour cosine histogram (PNG)")
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("export", help="export a model to ONNX with its preprocessor.json")
    p.add_argument("model", help="zoo name, Hub id org/name or local folder")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, default=18)
    p.set_defaults(func=_export)

    p = sub.add_parser("publish", help="upload a model folder to the Hugging Face Hub")
    p.add_argument("folder", help="a Hub-layout model folder (save_pretrained output or a run's model/)")
    p.add_argument("--repo-id", required=True, help="org/name on the Hub")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to upload to")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    p.set_defaults(func=_publish)

    p = sub.add_parser("demo", help="the Gradio demo on 127.0.0.1")
    p.add_argument("--model", default=None, help="zoo name or local folder (default: the first zoo model)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves the network (and turns --public on)")
    p.add_argument(
        "--public",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="visitors load only zoo models and --allow-models (default: on unless --host is loopback)",
    )
    p.add_argument(
        "--allow-models", nargs="+", default=[], metavar="ORG/NAME", help="Hub ids visitors may load"
    )
    p.add_argument(
        "--allow-local",
        action="store_true",
        help="let visitors load local model folders by path (their errors then show which paths exist)",
    )
    p.set_defaults(func=_demo)
    return parser


def training_main(module: str = "__main__") -> Callable[[list[str] | None], None]:
    """``main`` of a training module (``__main__`` or ``finetune``): a checkout's own train/, else the
    installed ``protozoo.train``.

    In a checkout (protozoo/ next to train/ and pyproject.toml, imported from there) ``train`` is the
    sibling folder; in a wheel it is ``protozoo.train``, so a user's own ``train.py`` is never picked.
    """
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.find_spec("train") if (root / "pyproject.toml").is_file() else None
    in_checkout = spec is not None and spec.origin == str(root / "train" / "__init__.py")
    return importlib.import_module(f"train.{module}" if in_checkout else f"protozoo.train.{module}").main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``protozoo`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[:1] == ["train"]:  # pass everything after "train" through untouched
        training_main()(argv[1:])
        return 0
    if argv[:1] == ["finetune"]:  # likewise: everything after "finetune" goes to the fine-tuning module
        training_main("finetune")(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"protozoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
