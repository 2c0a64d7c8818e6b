"""The ``protozoo`` command line: list, train, eval, diagnose, export, publish, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _list(args: argparse.Namespace) -> None:
    from protozoo.hub import format_zoo_table

    print(format_zoo_table())


def _eval(args: argparse.Namespace) -> None:
    from protozoo.eval import evaluate_model
    from protozoo.hub import load

    model = load(args.model, device=args.device)
    result = evaluate_model(model, dataset=args.dataset, linear=args.linear, device=args.device)
    print(json.dumps(result, indent=2))


def _diagnose(args: argparse.Namespace) -> None:
    from protozoo.collapse import collapse_report, plot_nn_cosine_histogram
    from protozoo.hub import load_prototypes

    prototypes = load_prototypes(args.source, key=args.key)
    report = collapse_report(prototypes)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    if args.plot:
        plot_nn_cosine_histogram(prototypes, args.plot)


def _export(args: argparse.Namespace) -> None:
    from protozoo.hub import load
    from protozoo.onnx import export_onnx

    path = export_onnx(load(args.model), args.out, opset=args.opset)
    print(f"wrote {path} and {path.parent / 'preprocessor.json'}")


def _publish(args: argparse.Namespace) -> None:
    from protozoo.hub import publish

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

    launch(model=args.model, backend=args.backend, port=args.port, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``protozoo`` command."""
    parser = argparse.ArgumentParser(prog="protozoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the zoo models with their headline numbers")
    p.set_defaults(func=_list)

    # listed for --help only: main() hands everything after "train" to train.__main__ untouched
    sub.add_parser("train", help="train from a recipe: protozoo train --config recipe.yaml [key=value ...]")
    # likewise for "finetune", handed to train.finetune
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
        help="zoo name, Hub id, model folder, or a .safetensors/.npy/.pt file holding a (K, D) matrix",
    )
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors file with several tensors")
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
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``protozoo`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[:1] == ["train"]:  # pass everything after "train" through untouched
        from train.__main__ import main as train_main

        train_main(argv[1:])
        return 0
    if argv[:1] == ["finetune"]:  # likewise: everything after "finetune" goes to train.finetune
        from train.finetune import main as finetune_main

        finetune_main(argv[1:])
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
