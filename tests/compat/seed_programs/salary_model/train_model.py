"""The seed 001 project's entry point (salary_model/train_model.py): logs its learning rate."""

import argparse

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
args = parser.parse_args()
with mlflow.start_run():
    mlflow.log_param("lr", args.lr)
    mlflow.log_metric("salary_rmse", 1000.0 * (1 - args.lr))
