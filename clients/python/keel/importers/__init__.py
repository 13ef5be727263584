"""Importers of other tracking servers' data into keel.

``keel.importers.mlflow.import_from(url, ...)`` (and ``keel import mlflow --from URL``) copies a
running ``mlflow server``'s experiments, runs, artifacts and registered models; see
docs/mlflow-import.md.
"""
