"""Seed 001: a custom PythonModel with an artifact, saved, logged, registered and loaded back.

python examples/custom_pyfunc.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import pandas as pd

import keel
import keel.pyfunc


class SalaryBandModel(keel.pyfunc.PythonModel):
    """Maps years of experience to a salary band, with thresholds read from an artifact."""

    def load_context(self, context: keel.pyfunc.PythonModelContext) -> None:
        with open(context.artifacts["bands"]) as f:
            self.bands = json.load(f)

    def predict(
        self, context: keel.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> list[str]:
        scale = (params or {}).get("scale", 1.0)
        out = []
        for years in model_input["years"]:
            band = "junior"
            for name, minimum in self.bands.items():
                if years * scale >= minimum:
                    band = name
            out.append(band)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    parser.add_argument("--model-name", default="salary-band")
    args = parser.parse_args(argv)
    keel.set_tracking_uri(args.tracking_uri)
    keel.set_experiment("custom-pyfunc")

    data = pd.DataFrame({"years": [0.5, 3.0, 8.0]})
    with tempfile.TemporaryDirectory() as scratch:
        bands = os.path.join(scratch, "bands.json")
        with open(bands, "w") as f:
            json.dump({"junior": 0, "mid": 2, "senior": 6}, f)

        # Save locally and load back.
        local = os.path.join(scratch, "my_model")
        keel.pyfunc.save_model(path=local, python_model=SalaryBandModel(), artifacts={"bands": bands})
        print("local model predicts", keel.pyfunc.load_model(local).predict(data))

        # Log to a run and register.
        with keel.start_run():
            info = keel.pyfunc.log_model(
                "model",
                python_model=SalaryBandModel(),
                artifacts={"bands": bands},
                registered_model_name=args.model_name,
            )
    loaded = keel.pyfunc.load_model(f"models:/{args.model_name}/{info.registered_model_version}")
    predictions = loaded.predict(data)
    print(f"models:/{args.model_name}/{info.registered_model_version} predicts {list(predictions)}")
    print("with params scale=2:", list(loaded.predict(data, params={"scale": 2.0})))
    assert list(predictions) == ["junior", "mid", "senior"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
