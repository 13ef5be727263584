"""Train the seed's SimpleCNN on synthetic 28x28 images, log everything to keel, register it.

    python examples/pytorch_cnn/train_and_register_model.py \
        --experiment-name production-models --run-name cnn-v1 --model-name image-classifier \
        --epochs 3 --batch-size 32 --lr 0.001

Logs params, per-epoch metrics, the model (keel.pytorch.log_model), a checkpoint and a metadata
JSON, then registers the model and describes the version. Needs a running `keel server`
(KEEL_TRACKING_URI, default grpc://127.0.0.1:50051).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_def import SimpleCNN, synthetic_images  # noqa: E402

import keel  # noqa: E402
import keel.pytorch  # noqa: E402
from keel.models import infer_signature  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    parser.add_argument("--experiment-name", default="pytorch-cnn")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--model-name", default="simple-cnn-classifier")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--train-size", type=int, default=1024)
    return parser.parse_args(argv)


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module
) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(images)
        loss = loss_fn(logits, labels).item()
        accuracy = (logits.argmax(1) == labels).float().mean().item() * 100
    return loss, accuracy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    keel.set_tracking_uri(args.tracking_uri)
    keel.set_experiment(args.experiment_name)

    train_x, train_y = synthetic_images(args.train_size, seed=1)
    val_x, val_y = synthetic_images(args.train_size // 4, seed=2)
    model = SimpleCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    with keel.start_run(run_name=args.run_name) as run:
        keel.log_params(
            {
                "model": "SimpleCNN",
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "total_parameters": sum(p.numel() for p in model.parameters()),
            }
        )
        best_accuracy = -1.0
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = os.path.join(scratch, "best_model.pt")
            for epoch in range(args.epochs):
                model.train()
                order = torch.randperm(len(train_x))
                correct, total_loss = 0, 0.0
                for start in range(0, len(train_x), args.batch_size):
                    batch = order[start : start + args.batch_size]
                    optimizer.zero_grad()
                    logits = model(train_x[batch])
                    loss = loss_fn(logits, train_y[batch])
                    loss.backward()
                    optimizer.step()
                    total_loss += loss.item() * len(batch)
                    correct += (logits.argmax(1) == train_y[batch]).sum().item()
                val_loss, val_accuracy = evaluate(model, val_x, val_y, loss_fn)
                metrics = {
                    "train_loss": total_loss / len(train_x),
                    "train_accuracy": correct / len(train_x) * 100,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                }
                keel.log_metrics(metrics, step=epoch)
                print(
                    f"epoch {epoch + 1}/{args.epochs}: "
                    + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items())
                )
                if val_accuracy > best_accuracy:
                    best_accuracy = val_accuracy
                    torch.save(model.state_dict(), checkpoint)

            keel.log_artifact(checkpoint)
            metadata = os.path.join(scratch, "model_metadata.json")
            with open(metadata, "w") as f:
                json.dump(
                    {
                        "architecture": "SimpleCNN",
                        "input_shape": [1, 28, 28],
                        "best_val_accuracy": best_accuracy,
                    },
                    f,
                )
            keel.log_artifact(metadata)

        example = val_x[:4].numpy()
        model.eval()
        with torch.no_grad():
            signature = infer_signature(example, model(val_x[:4]).numpy())
        keel.pytorch.log_model(
            model,
            "pytorch_model",
            signature=signature,
            input_example=example,
            code_paths=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_def.py")],
        )
        run_id = run.info.run_id

    model_uri = f"runs:/{run_id}/pytorch_model"
    version = keel.register_model(model_uri, args.model_name)
    client = keel.Client()
    client.update_model_version(
        name=args.model_name,
        version=version.version,
        description=f"SimpleCNN trained with lr={args.lr}, batch_size={args.batch_size}",
    )
    print(f"Run ID: {run_id}")
    print(f"Model Name: {args.model_name}")
    print(f"Model Version: {version.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
