"""keel: the Python SDK of the keel model lifecycle platform.

Feels like MLflow::

    import keel
    keel.set_tracking_uri("grpc://127.0.0.1:50051")
    with keel.start_run():
        keel.log_param("lr", 0.01)
        keel.log_metric("loss", 0.3, step=1)

Names are exported lazily so ``import keel`` stays fast and never imports the KServe v2 stubs
(package ``inference``), which would clash with ``tritonclient`` in the same process.

Layers (a module imports only from its own layer or the ones before it)::

    keel.exceptions (and keel.extras)
    < the shared grammar and format: keel.shared (URI grammar, tensor codec, chunk framing,
      page caps), keel.models (MLmodel, signatures, schemas, model URIs), the generated stubs
    < the flavors: keel.sklearn, keel.pytorch
    < keel.pyfunc (with keel.models.flavor_registry, its allowlist of flavor loaders)
    < keel.evaluation and keel.autologging
    < keel.Client and the fluent API (keel.fluent, keel.artifacts, keel.registry, keel._*)
    < keel.cli

An import inside a function may point upward only where ``tests/unit/test_import_rules.py``
lists it with its reason (``keel.sklearn.autolog`` is ``keel.autologging.sklearn.autolog``;
autologging logs to the active run), and the module-level imports form no cycle. The format
layer never reaches a server itself: loading a remote model URI goes through the seam
``keel.shared.remote``, into which this package plugs the SDK's downloader below. The server
(``keel_server``) imports only the stubs, ``keel.exceptions``, ``keel.shared``, ``keel.models``,
``keel.pyfunc`` and the flavors, never ``keel._*``; see ``docs/architecture-layers.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel._model_download import download_model as _download_model
from keel._transport import get_tracking_uri, set_tracking_uri
from keel.exceptions import KeelError
from keel.shared import remote as _remote

# The composition root: remote model URIs loaded by the format layer come through the SDK.
_remote.plug_in(_download_model)

__version__ = "0.1.0"

# The exports keel's own modules call through the package root (`import keel` in a function, so a
# test can patch them), typed for mypy; nothing is imported at run time.
if TYPE_CHECKING:  # (re-exported through __all__ and __getattr__, which ruff cannot see)
    from keel.artifacts import log_artifact, log_artifacts  # noqa: F401
    from keel.fluent import active_run, end_run, log_metrics, log_params, set_tags, start_run  # noqa: F401
    from keel.registry import register_model  # noqa: F401

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Client": "keel.client",
    "MlflowClient": "keel.client",  # MLflow's name for keel.Client
    # the bearer token every call sends (MLflow's MLFLOW_TRACKING_TOKEN; env KEEL_TRACKING_TOKEN)
    "set_tracking_token": "keel._transport",
    "get_tracking_token": "keel._transport",
    # where the registry's calls go (MLflow's names)
    "set_registry_uri": "keel._routing",
    "get_registry_uri": "keel._routing",
    # fluent tracking
    "set_experiment": "keel.fluent",
    "get_experiment_by_name": "keel.fluent",
    "get_experiment": "keel.fluent",
    "delete_run": "keel.fluent",
    "create_experiment": "keel.fluent",
    "start_run": "keel.fluent",
    "end_run": "keel.fluent",
    "active_run": "keel.fluent",
    "last_active_run": "keel.fluent",
    "log_param": "keel.fluent",
    "log_params": "keel.fluent",
    "log_metric": "keel.fluent",
    "log_metrics": "keel.fluent",
    "set_tag": "keel.fluent",
    "set_tags": "keel.fluent",
    "delete_tag": "keel.fluent",
    "search_runs": "keel.fluent",
    "get_run": "keel.fluent",
    "flush_async_logging": "keel.fluent",
    # fluent artifacts
    "log_artifact": "keel.artifacts",
    "log_artifacts": "keel.artifacts",
    "log_text": "keel.artifacts",
    "log_dict": "keel.artifacts",
    "log_figure": "keel.artifacts",
    "log_image": "keel.artifacts",
    "get_artifact_uri": "keel.artifacts",
    # registry
    "register_model": "keel.registry",
    # evaluation and autologging
    "evaluate": "keel.evaluation",
    "MetricThreshold": "keel.evaluation",
    "EvaluationResult": "keel.evaluation",
    "ModelValidationFailedException": "keel.evaluation",
    "autolog": "keel.autologging",
}

_SUBMODULES = {"entities", "fluent", "artifacts", "models", "pyfunc", "sklearn", "pytorch", "exceptions", "registry", "evaluation"}
_SUBMODULES |= {"client", "tracking", "projects"}  # keel.client.MlflowClient, keel.projects.run, ...

__all__ = ["KeelError", "get_tracking_uri", "set_tracking_uri", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is not None:
        value = getattr(importlib.import_module(module_name), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"keel.{name}")
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
