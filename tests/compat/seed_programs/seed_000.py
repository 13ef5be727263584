"""Seed 000 (PyTorch: save, log, register, load, versions and stages), as MLflow code.

Derived from /work/shared/seeds/000_e5ab8dba79410ebb.txt: the code of each section in order,
with the seed's scripts (train_and_register_model.py, load_and_use_models.py) written out and
synthetic 8x8 images in place of a downloaded data set. ``log_model`` gets an input example and a
signature (MLflow 3's default "pt2" format needs them) and ``pytorch_model=`` where the seed wrote
``model=`` (not a parameter of ``mlflow.pytorch.log_model``). Prints one JSON summary line.
"""

import json
import os
import tempfile

import mlflow
import mlflow.artifacts
import mlflow.pytorch
import numpy as np
import torch
import torch.nn as nn
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

mlflow.set_tracking_uri("http://127.0.0.1:5000")

EXPERIMENT_NAME = "production-models"
RUN_NAME = "cnn-v1"
MODEL_NAME = "simple-cnn-classifier"
EPOCHS, BATCH_SIZE, LR = 2, 32, 0.001
summary = {"seed": "000", "run_ids": [], "model_name": MODEL_NAME}


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.flatten(1))


def synthetic_images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def train_one_epoch(model, optimizer, images, labels):
    model.train()
    losses, correct = [], 0
    for start in range(0, len(images), BATCH_SIZE):
        x, y = images[start : start + BATCH_SIZE], labels[start : start + BATCH_SIZE]
        optimizer.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        correct += int((out.argmax(1) == y).sum())
    return float(np.mean(losses)), 100.0 * correct / len(images)


def evaluate(model, images, labels):
    model.eval()
    with torch.no_grad():
        out = model(images)
    return float(nn.functional.cross_entropy(out, labels)), 100.0 * float(
        (out.argmax(1) == labels).float().mean()
    )


workdir = tempfile.mkdtemp(prefix="seed000-")
os.chdir(workdir)
torch.manual_seed(0)
train_x, train_y = synthetic_images(128, 1)
val_x, val_y = synthetic_images(32, 2)

# ## 1. Training and Logging Models (train_and_register_model.py)
mlflow.set_experiment(EXPERIMENT_NAME)
model = SimpleCNN()
optimizer = torch.optim.Adam(model.parameters(), lr=LR)
with mlflow.start_run(run_name=RUN_NAME) as run:
    run_id = run.info.run_id
    # 1. Hyperparameters
    mlflow.log_params(
        {
            "model": "SimpleCNN",
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "learning_rate": LR,
            "total_parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    # 2. Performance metrics (per epoch)
    best = None
    for epoch in range(EPOCHS):
        train_loss, train_accuracy = train_one_epoch(model, optimizer, train_x, train_y)
        val_loss, val_accuracy = evaluate(model, val_x, val_y)
        mlflow.log_metrics(
            {
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            },
            step=epoch,
        )
        if best is None or val_loss < best:
            best = val_loss
            torch.save(model.state_dict(), "best_model.pt")
    # 3. Models using MLflow's PyTorch integration (with an example and a signature: MLflow 3's
    # default "pt2" format traces the model with them)
    example = val_x[:2].numpy()
    model.eval()
    signature = infer_signature(example, model(val_x[:2]).detach().numpy())
    mlflow.pytorch.log_model(model, "pytorch_model", input_example=example, signature=signature)
    # 4. Checkpoint artifact
    mlflow.log_artifact("best_model.pt")
    # 5. Model metadata
    with open("model_metadata.json", "w") as f:
        json.dump({"model": "SimpleCNN", "best_val_loss": best, "classes": 10}, f)
    mlflow.log_artifact("model_metadata.json")
summary["run_ids"].append(run_id)

# ### Model Registration
model_uri = f"runs:/{run_id}/pytorch_model"
model_version = mlflow.register_model(model_uri, MODEL_NAME)
client = mlflow.MlflowClient()
client.update_model_version(
    name=MODEL_NAME,
    version=model_version.version,
    description=f"SimpleCNN trained with lr={LR}",
)
summary["registered_version"] = str(model_version.version)

# ## 2. Loading Models from Runs
input_tensor = val_x[:4]
loaded = mlflow.pytorch.load_model(model_uri)
predictions = loaded(input_tensor)
summary["run_prediction_shape"] = list(predictions.shape)
model.eval()
summary["run_prediction_matches"] = bool(torch.allclose(predictions, model(input_tensor), atol=1e-5))

# ## 3. Loading Registered Models: list, latest, a version
listed = {}
for registered in client.search_registered_models():
    latest = registered.latest_versions[-1] if registered.latest_versions else None
    print(
        f"Model: {registered.name}  Description: {registered.description}  "
        f"Latest Version: {latest.version if latest else None}  Latest Stage: {latest.current_stage if latest else None}"
    )
    listed[registered.name] = registered.description
summary["listed_models"] = sorted(listed)
mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/latest")
mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{model_version.version}")

# ## 4. Model Versioning and Stages
for v in client.search_model_versions(f"name = '{MODEL_NAME}'"):
    print(f"Version {v.version}: Stage: {v.current_stage} Status: {v.status} Run ID: {v.run_id}")
client.transition_model_version_stage(name=MODEL_NAME, version=model_version.version, stage="Staging")
client.transition_model_version_stage(name=MODEL_NAME, version=model_version.version, stage="Production")
production = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/Production")
summary["production_prediction_matches"] = bool(
    torch.allclose(production(input_tensor), predictions, atol=1e-5)
)
# "Archive a version": the seed's version 0 does not exist, which the registry reports
try:
    client.transition_model_version_stage(name=MODEL_NAME, version=0, stage="Archived")
    summary["archive_version_0"] = "ok"
except MlflowException as e:
    summary["archive_version_0"] = e.error_code

# ## 7. Advanced: Custom Model Saving (log with a custom conda environment)
conda_env = {
    "name": "mlflow-env",
    "channels": ["pytorch", "conda-forge"],
    "dependencies": [
        "python=3.10",
        "pytorch::pytorch",
        "pytorch::torchvision",
        "pip",
        {"pip": ["mlflow==2.10.2"]},
    ],
}
with mlflow.start_run(run_name="cnn-custom-env") as run2:
    custom_info = mlflow.pytorch.log_model(
        pytorch_model=model,
        artifact_path="pytorch_model",
        conda_env=conda_env,
        input_example=example,
        signature=signature,
    )
summary["run_ids"].append(run2.info.run_id)
# the files of the logged model (MLflow 3 keeps them with the logged model, not the run)
summary["custom_env_files"] = sorted(os.listdir(mlflow.artifacts.download_artifacts(custom_info.model_uri)))

# ### Load Model Without MLflow: the checkpoint, downloaded from the run
os.makedirs(workdir + "/download")
local = client.download_artifacts(run_id, "best_model.pt", workdir + "/download")
checkpoint = torch.load(local)
plain = SimpleCNN()
plain.load_state_dict(checkpoint)
summary["checkpoint_loaded"] = True

# ## 8. Common Issues: "Model already exists" -> a new version of the same name
try:
    again = mlflow.register_model(model_uri, MODEL_NAME)
    summary["second_version"] = str(again.version)
except Exception as e:
    if "already exists" in str(e):
        models = client.search_model_versions(f"name = '{MODEL_NAME}'")
        print(f"Model {MODEL_NAME} exists with {len(models)} versions")
    raise
# "Transition invalid": check the current stage first
versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
for v in versions:
    print(f"Version {v.version}: Stage = {v.current_stage}")
    if v.current_stage != "Production":
        client.transition_model_version_stage(name=MODEL_NAME, version=v.version, stage="Production")
summary["stages"] = {
    str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{MODEL_NAME}'")
}

# ## 9. Key takeaways: the artifacts of the run
summary["run_artifacts"] = sorted(f.path for f in client.list_artifacts(run_id))
print(json.dumps(summary))
