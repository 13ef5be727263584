"""List, load, predict with and promote the seed's registered PyTorch models.

python examples/pytorch_cnn/load_and_use_models.py list
python examples/pytorch_cnn/load_and_use_models.py versions simple-cnn-classifier
python examples/pytorch_cnn/load_and_use_models.py from-run <RUN_ID> --predict
python examples/pytorch_cnn/load_and_use_models.py from-registry simple-cnn-classifier [--version N | --stage Production | --alias champion] --predict
python examples/pytorch_cnn/load_and_use_models.py transition simple-cnn-classifier 1 Production
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_def import synthetic_images  # noqa: E402

import keel  # noqa: E402
import keel.pytorch  # noqa: E402


def list_models(client: keel.Client, args: argparse.Namespace) -> int:
    print("Registered Models in keel Model Registry")
    print("=" * 45)
    for model in client.search_registered_models():
        latest = max(model.latest_versions, key=lambda v: int(v.version), default=None)
        print(f"\nModel: {model.name}")
        print(f"   Description: {model.description or '-'}")
        print(f"   Latest Version: {latest.version if latest else '-'}")
        print(f"   Latest Stage: {latest.current_stage if latest else '-'}")
    return 0


def list_versions(client: keel.Client, args: argparse.Namespace) -> int:
    print(f"Versions of Model: {args.name}")
    print("=" * 40)
    versions = client.search_model_versions(f"name = '{args.name}'")
    for version in sorted(versions, key=lambda v: int(v.version)):
        print(f"\nVersion {version.version}:")
        print(f"  Stage: {version.current_stage}")
        print(f"  Status: {version.status}")
        print(f"  Description: {version.description or '-'}")
        print(f"  Run ID: {version.run_id}")
    return 0


def predict(model: torch.nn.Module) -> None:
    images, labels = synthetic_images(8, seed=7)
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    accuracy = (predicted == labels).float().mean().item() * 100
    print(f"Predictions: {predicted.tolist()}")
    print(f"Labels:      {labels.tolist()}")
    print(f"Accuracy on 8 synthetic images: {accuracy:.1f}%")


def from_run(client: keel.Client, args: argparse.Namespace) -> int:
    uri = f"runs:/{args.run_id}/{args.artifact_path}"
    print(f"Loading {uri}")
    model = keel.pytorch.load_model(uri)
    if args.predict:
        predict(model)
    return 0


def from_registry(client: keel.Client, args: argparse.Namespace) -> int:
    if args.version:
        uri = f"models:/{args.name}/{args.version}"
    elif args.stage:
        uri = f"models:/{args.name}/{args.stage}"
    elif args.alias:
        uri = f"models:/{args.name}@{args.alias}"
    else:
        uri = f"models:/{args.name}/latest"
    print(f"Loading {uri}")
    model = keel.pytorch.load_model(uri)
    if args.predict:
        predict(model)
    return 0


def transition(client: keel.Client, args: argparse.Namespace) -> int:
    version = client.transition_model_version_stage(
        name=args.name,
        version=args.version,
        stage=args.stage,
        archive_existing_versions=args.archive_existing,
    )
    print(f"Model {version.name} version {version.version} is now in stage {version.current_stage}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Use models registered in keel")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list registered models").set_defaults(func=list_models)
    versions = sub.add_parser("versions", help="list the versions of a model")
    versions.add_argument("name")
    versions.set_defaults(func=list_versions)
    run = sub.add_parser("from-run", help="load a model from a run")
    run.add_argument("run_id")
    run.add_argument("--artifact-path", default="pytorch_model")
    run.add_argument("--predict", action="store_true")
    run.set_defaults(func=from_run)
    registry = sub.add_parser("from-registry", help="load a registered model")
    registry.add_argument("name")
    choice = registry.add_mutually_exclusive_group()
    choice.add_argument("--version")
    choice.add_argument("--stage")
    choice.add_argument("--alias")
    registry.add_argument("--predict", action="store_true")
    registry.set_defaults(func=from_registry)
    move = sub.add_parser("transition", help="move a version to a stage")
    move.add_argument("name")
    move.add_argument("version")
    move.add_argument("stage")
    move.add_argument("--archive-existing", action="store_true")
    move.set_defaults(func=transition)
    args = parser.parse_args(argv)
    keel.set_tracking_uri(args.tracking_uri)
    return args.func(keel.Client(), args)


if __name__ == "__main__":
    sys.exit(main())
