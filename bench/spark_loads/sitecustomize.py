"""Counts model loads in every Python process of ``bench/bench_batch.py``'s Spark runs.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that has
one; the benchmark puts this folder on ``PYTHONPATH`` of both Spark sessions (keel's and
MLflow's), so the driver, Spark's Python daemon and every worker it forks run this. When
``KEEL_BENCH_LOAD_LOG`` names a file, the public loaders that the two UDFs call in their
workers, ``keel.pyfunc.pyfunc_model.load_model`` and ``mlflow.pyfunc.load_model``, are
wrapped as their modules are imported: each call appends ``<pid> <keel|mlflow> <path>`` to the
file, before loading. Without the variable nothing is installed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_LOG = os.environ.get("KEEL_BENCH_LOAD_LOG")
_TARGETS = {"keel.pyfunc.pyfunc_model": "keel", "mlflow.pyfunc": "mlflow"}


def _wrap(module: Any, loader: str) -> None:
    original = module.load_model

    def load_model(model_uri: Any, *args: Any, **kwargs: Any) -> Any:
        with open(str(_LOG), "a") as log:  # one short append per load: lines do not interleave
            log.write(f"{os.getpid()} {loader} {model_uri}\n")
        return original(model_uri, *args, **kwargs)

    module.load_model = load_model


class _WrapOnImport:
    """A meta-path finder that lets the real finders find the two modules, then wraps
    ``load_model`` right after the module has run (before anyone imports the name from it)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _wrap(module, _TARGETS[fullname])

        spec.loader.exec_module = exec_module
        return spec


if _LOG:
    sys.meta_path.insert(0, _WrapOnImport())
