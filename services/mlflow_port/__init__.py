"""MLflow's REST API over keel's services (``keel server --mlflow-port``): the unmodified ``mlflow``
client works against keel. See docs/mlflow-port.md."""
