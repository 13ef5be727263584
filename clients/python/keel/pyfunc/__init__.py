"""The python_function ("pyfunc") interface: load any model and call ``predict``.

>>> model = keel.pyfunc.load_model("models:/churn/Production")
>>> model.predict(df)

Custom models subclass ``PythonModel`` and are saved with ``save_model`` / ``log_model``.
Loading unpickles the model: only load models from a trusted registry or path.
"""

from keel.pyfunc.model import PythonModel, PythonModelContext, log_model, save_model
from keel.pyfunc.pyfunc_model import PyFuncModel, load_model
from keel.pyfunc.spark import spark_udf

FLAVOR_NAME = "python_function"

__all__ = [
    "FLAVOR_NAME",
    "PyFuncModel",
    "PythonModel",
    "PythonModelContext",
    "load_model",
    "log_model",
    "save_model",
    "spark_udf",
]
