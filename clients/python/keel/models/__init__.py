"""keel's model format: MLmodel, signatures, input examples and model URIs.

Importing this package imports neither pandas, torch nor scikit-learn; those load when a
function needs them.
"""

from keel.models.input_example import load_input_example, save_input_example
from keel.models.model import MLMODEL_FILE, PYFUNC_FLAVOR, Model, ModelInfo
from keel.models.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec
from keel.models.signature import ModelSignature, infer_signature
from keel.models.uri import resolve_model_uri

__all__ = [
    "MLMODEL_FILE",
    "PYFUNC_FLAVOR",
    "ColSpec",
    "DataType",
    "Model",
    "ModelInfo",
    "ModelSignature",
    "ParamSchema",
    "ParamSpec",
    "Schema",
    "TensorSpec",
    "infer_signature",
    "load_input_example",
    "resolve_model_uri",
    "save_input_example",
]
