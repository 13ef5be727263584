"""The seed's salary_model: a linear salary ~ years-of-experience model trained by gradient
descent, logged to the run that `keel run` created (keel.start_run() continues it)."""

import argparse

import numpy as np

import keel

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
args = parser.parse_args()

rng = np.random.default_rng(0)
years = rng.uniform(0, 20, size=200)
salary = 30_000 + 2_500 * years + rng.normal(0, 2_000, size=200)
x = (years - years.mean()) / years.std()
y = (salary - salary.mean()) / salary.std()

slope, intercept = 0.0, 0.0
with keel.start_run() as run:
    for _step in range(100):
        error = slope * x + intercept - y
        slope -= args.lr * 2 * float(np.mean(error * x))
        intercept -= args.lr * 2 * float(np.mean(error))
    rmse = float(np.sqrt(np.mean((slope * x + intercept - y) ** 2))) * salary.std()
    keel.log_metric("rmse", rmse)
    keel.set_tag("trained_in", run.info.run_id)
    print(f"trained: lr={args.lr} rmse={rmse:.1f}", flush=True)
