"""``python -m keel ...`` runs the ``keel`` command line (as ``python -m mlflow`` does MLflow's)."""

import sys

from keel.cli import main

if __name__ == "__main__":
    sys.exit(main())
