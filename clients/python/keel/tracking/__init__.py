"""``keel.tracking``: the tracking service's generated stubs (``keel.tracking.v1``) and, as in
MLflow (``from mlflow.tracking import MlflowClient``), the client facade under its MLflow name.

The facade is imported on first use only: the stubs below this package are imported by the server
and by the facade itself, which must not pull the SDK in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.client import Client as MlflowClient

__all__ = ["MlflowClient"]


def __getattr__(name: str) -> Any:
    if name == "MlflowClient":
        from keel.client import Client

        return Client
    raise AttributeError(f"module 'keel.tracking' has no attribute {name!r}")
