"""The scikit-learn flavor: any estimator or pipeline.

Directory layout and MLmodel keys are MLflow's (``model.pkl``, flavor ``sklearn`` with
``pickled_model``, ``serialization_format``, ``sklearn_version``), so ``mlflow.sklearn``
loads keel models and keel loads MLflow's cloudpickle/pickle sklearn models, and MLflow 3's
skops ones (``load_skops``: skops' trusted-type check, no unpickling).

Security: loading a cloudpickle/pickle model unpickles it; only load models from a trusted
registry or path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

from keel.exceptions import InvalidArgument
from keel.extras import require
from keel.models import serialization
from keel.models.environment import installed_version, pinned
from keel.models.model import (
    PYFUNC_FLAVOR,
    Model,
    ModelInfo,
    add_code_to_sys_path,
    add_pyfunc_flavor,
    copy_code_paths,
    create_model_dir,
    finish_model_dir,
    locate_model,
    model_path_of,
)
from keel.models.model import log_model as _log_model
from keel.models.signature import ModelSignature
from keel.models.uri import resolve_model_uri
from keel.models.utils import is_dataframe

FLAVOR_NAME = "sklearn"
# The python_function flavor names MLflow's loader: keel reads it (keel.models.flavor_registry maps
# it to keel's own loader, never importing it), and a model keel saves then loads with
# mlflow.pyfunc.load_model in a venv that has mlflow but not keel.
LOADER_MODULE = "mlflow.sklearn"
PICKLE_FILE = "model.pkl"
# what keel saves; both are read with the standard unpickler
SERIALIZATION_FORMATS = ("cloudpickle", "pickle")
# MLflow 3's default for sklearn: read (never written) by ``load_skops``, through skops' type check
SKOPS_FORMAT = "skops"


def _require_sklearn(purpose: str) -> None:
    """scikit-learn, or ``MissingExtra``: "scikit-learn is not installed (...): pip install
    'keel-ml[sklearn]'" (a pickled estimator would otherwise fail deep inside the unpickler)."""
    require("sklearn", "sklearn", purpose=purpose)


def _pickled_objects(sk_model: Any) -> list[Any]:
    """The estimator and its nested params (steps, FunctionTransformer functions...), whose
    defining modules may need pickling by value."""
    objs = [sk_model]
    get_params = getattr(sk_model, "get_params", None)
    if callable(get_params):
        try:
            objs.extend(get_params(deep=True).values())
        except Exception:  # a third-party estimator with a broken get_params still saves
            pass
    return objs


def save_model(
    sk_model: Any,
    path: str,
    code_paths: Sequence[str] | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    metadata: dict[str, Any] | None = None,
    predict_method: str | None = None,
    pyfunc_predict_fn: str | None = None,
    serialization_format: str = "cloudpickle",
    mlmodel: Model | None = None,
) -> Model:
    """Save an estimator to the directory ``path`` (which must not exist or be empty).

    ``predict_method`` (MLflow's name: ``pyfunc_predict_fn``) picks what pyfunc ``predict``
    calls, e.g. ``"predict_proba"``.
    """
    _require_sklearn("needed to save scikit-learn models")
    if predict_method and pyfunc_predict_fn and predict_method != pyfunc_predict_fn:
        raise InvalidArgument("give predict_method or pyfunc_predict_fn, not both", reason="INVALID_ARGUMENT")
    method = predict_method or pyfunc_predict_fn or "predict"
    if not callable(getattr(sk_model, method, None)):
        raise InvalidArgument(
            f"the model has no method {method!r} for pyfunc predict", reason="INVALID_ARGUMENT"
        )
    if serialization_format not in SERIALIZATION_FORMATS:
        raise InvalidArgument(
            f"serialization_format {serialization_format!r} is not supported; use one of {SERIALIZATION_FORMATS}",
            reason="INVALID_ARGUMENT",
        )
    path = create_model_dir(path)
    model = mlmodel or Model()
    model.metadata = metadata if metadata is not None else model.metadata
    code = copy_code_paths(path, code_paths)
    serialization.dump(
        sk_model, os.path.join(path, PICKLE_FILE), by_value_for=_pickled_objects(sk_model), by_value=not code
    )
    model.add_flavor(
        FLAVOR_NAME,
        pickled_model=PICKLE_FILE,
        sklearn_version=installed_version("scikit-learn"),
        serialization_format=serialization_format,
        code=code,
    )
    add_pyfunc_flavor(model, LOADER_MODULE, code, model_path=PICKLE_FILE, predict_fn=method)
    return finish_model_dir(
        path,
        model,
        signature=signature,
        input_example=input_example,
        predict=getattr(sk_model, method),
        default_requirements=[pinned("scikit-learn"), pinned("cloudpickle")],
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
    )


def log_model(
    sk_model: Any,
    artifact_path: str | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    registered_model_name: str | None = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    code_paths: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    predict_method: str | None = None,
    pyfunc_predict_fn: str | None = None,
    serialization_format: str = "cloudpickle",
    name: str | None = None,
) -> ModelInfo:
    """Save the estimator into the active run (starting one if needed) under ``name`` (MLflow 3's
    keyword; ``artifact_path`` is MLflow 2's, default "model") and, with
    ``registered_model_name``, register it in the same call."""
    return _log_model(
        save_model,
        model_path_of(artifact_path, name),
        registered_model_name,
        sk_model=sk_model,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
        code_paths=code_paths,
        metadata=metadata,
        predict_method=predict_method,
        pyfunc_predict_fn=pyfunc_predict_fn,
        serialization_format=serialization_format,
    )


def _load_from_dir(model_dir: str, meta: Model) -> Any:
    conf = meta.flavor_conf(FLAVOR_NAME, model_dir)
    fmt = conf.get("serialization_format", "pickle")
    if fmt not in (*SERIALIZATION_FORMATS, SKOPS_FORMAT):
        raise InvalidArgument(
            f"the model at {model_dir!r} is serialized as {fmt!r}; keel reads {(*SERIALIZATION_FORMATS, SKOPS_FORMAT)}",
            reason="UNSUPPORTED_FORMAT",
        )
    _require_sklearn("needed to load scikit-learn models")
    add_code_to_sys_path(model_dir, conf)
    path = os.path.join(model_dir, conf.get("pickled_model", PICKLE_FILE))
    if fmt == SKOPS_FORMAT:
        return load_skops(path, conf.get("skops_trusted_types"))
    return serialization.load(path)


def load_skops(path: str, trusted_types: Sequence[str] | None = None) -> Any:
    """An estimator MLflow 3 saved in the skops format (``model.skops``), read with
    ``skops.io.load``: skops rebuilds only the types it knows to be safe plus ``trusted_types``
    (the ``skops_trusted_types`` the saver wrote into MLmodel, with which MLflow checked at save
    time that the file loads) and refuses a file holding anything else, so the file is never
    unpickled. Needs ``skops`` (the sklearn extra)."""
    require("skops", "sklearn", purpose="needed to load scikit-learn models saved in the skops format")
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.load(path, trusted=list(trusted_types) if trusted_types else None)
    except UntrustedTypesFoundException as exc:
        raise InvalidArgument(
            f"the skops model {path!r} holds types neither skops nor its MLmodel trusts: {exc}",
            reason="UNTRUSTED_TYPES",
        ) from exc


def load_model(model_uri: str) -> Any:
    """The estimator saved at ``model_uri`` (any form: path, runs:/, models:/, s3://).

    Security: this unpickles the model; only load models from a trusted source.
    """
    model_dir = resolve_model_uri(model_uri)
    return _load_from_dir(model_dir, Model.load(model_dir))


# Estimators whose predict methods only turn a DataFrame into an array after checking its
# feature names; meta-estimators (pipelines, column transformers) may select columns by name
# and always get the DataFrame.
_ARRAY_SAFE_MODULES = (
    "sklearn.linear_model.",
    "sklearn.tree.",
    "sklearn.ensemble._forest",
    "sklearn.ensemble._gb",
    "sklearn.svm.",
    "sklearn.naive_bayes",
    "sklearn.neighbors.",
)


def _array_method(raw_model: Any, method: str) -> tuple[Callable[..., Any], list[str]] | None:
    """``method`` of a shallow copy without ``feature_names_in_``, taking a numpy array, and the
    fitted column order; None when the estimator is not a plain one fitted on named columns.

    pyfunc has already checked the input against the signature; scikit-learn's own DataFrame
    checks (names, per-column dtypes) cost more than a small prediction. The copy lets the
    array through without scikit-learn warning about a missing header; the loaded estimator
    is untouched.
    """
    fitted = getattr(raw_model, "feature_names_in_", None)
    if fitted is None or not type(raw_model).__module__.startswith(_ARRAY_SAFE_MODULES):
        return None
    try:
        clone = copy.copy(raw_model)
        delattr(clone, "feature_names_in_")
        return getattr(clone, method), [str(name) for name in fitted]
    except Exception:  # noqa: BLE001 - any surprise: keep the DataFrame path
        return None


class SklearnImpl:
    def __init__(self, raw_model: Any, method: str) -> None:
        self.raw_model = raw_model
        predict = getattr(raw_model, method, None)
        if not callable(predict):
            raise InvalidArgument(f"the model has no method {method!r}", reason="INVALID_ARGUMENT")
        self._predict: Callable[..., Any] = predict
        array_method = _array_method(raw_model, method)
        # pyfunc's array protocol: checked arrays in these columns go to predict_array
        self.array_columns: list[str] | None = array_method[1] if array_method else None
        self._predict_array = array_method[0] if array_method else predict

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        if self.array_columns is not None and is_dataframe(data) and list(data.columns) == self.array_columns:
            if all(dtype.kind in "biuf" for dtype in data.dtypes):
                return self._predict_array(data.to_numpy())
        return self._predict(data)

    def predict_array(self, array: Any) -> Any:
        """A checked 2-D array whose columns are ``array_columns``, in order."""
        return self._predict_array(array)


def _load_pyfunc(
    model_dir: str, meta: Model | None = None, model_config: dict[str, Any] | None = None
) -> SklearnImpl:
    model_dir, meta = locate_model(model_dir, meta)
    conf = meta.flavor_conf(PYFUNC_FLAVOR, model_dir)
    # the method can be overridden at load time: load_model(uri, model_config={"predict_method": ...})
    method = (model_config or {}).get("predict_method") or conf.get("predict_fn") or "predict"
    return SklearnImpl(_load_from_dir(model_dir, meta), method)


def __getattr__(name: str) -> Any:
    """``keel.sklearn.autolog()``, as MLflow users call it, is ``keel.autologging.sklearn.autolog``.
    Autologging sits above the flavors (it logs models with this one), so it is imported on
    first use, never when this module is: the one upward import of a flavor, listed in
    tests/unit/test_import_rules.py."""
    if name == "autolog":
        from keel.autologging.sklearn import autolog

        return autolog
    raise AttributeError(f"module 'keel.sklearn' has no attribute {name!r}")
