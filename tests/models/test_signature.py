"""Signatures: inference, serialization, and every enforcement rule with its error message."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import keel.pyfunc
from keel.exceptions import InvalidArgument
from keel.models import (
    ColSpec,
    DataType,
    ModelSignature,
    ParamSchema,
    ParamSpec,
    Schema,
    TensorSpec,
    infer_signature,
)
from keel.models.enforcement import enforce_params, enforce_schema

# -- inference ---------------------------------------------------------------------------


def test_infer_from_dataframe_columns_and_types() -> None:
    df = pd.DataFrame(
        {
            "i32": np.array([1, 2], dtype=np.int32),
            "i64": [1, 2],
            "f32": np.array([1.0, 2.0], dtype=np.float32),
            "f64": [1.5, 2.5],
            "s": ["a", "b"],
            "b": [True, False],
            "raw": [b"x", b"y"],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    )
    sig = infer_signature(df, np.array([0, 1]))
    assert sig.inputs == Schema(
        [
            ColSpec("integer", "i32"),
            ColSpec("long", "i64"),
            ColSpec("float", "f32"),
            ColSpec("double", "f64"),
            ColSpec("string", "s"),
            ColSpec("boolean", "b"),
            ColSpec("binary", "raw"),
            ColSpec("datetime", "t"),
        ]
    )
    assert sig.outputs == Schema([TensorSpec(np.int64, (-1,))])
    assert sig.params is None


def test_infer_from_dict_of_columns_and_list_of_dicts() -> None:
    expected = Schema([ColSpec("long", "a"), ColSpec("string", "b")])
    assert infer_signature({"a": [1, 2], "b": ["x", "y"]}).inputs == expected
    assert infer_signature([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]).inputs == expected


def test_infer_marks_columns_with_missing_values_optional() -> None:
    sig = infer_signature(pd.DataFrame({"a": [1.0, None], "b": [1.0, 2.0]}))
    assert sig.inputs is not None
    assert [c.required for c in sig.inputs.inputs if isinstance(c, ColSpec)] == [False, True]


def test_infer_tensors_numpy_torch_and_named() -> None:
    assert infer_signature(np.zeros((8, 1, 28, 28), np.float32)).inputs == Schema(
        [TensorSpec(np.float32, (-1, 1, 28, 28))]
    )
    assert infer_signature(torch.zeros(4, 3, dtype=torch.float64)).inputs == Schema(
        [TensorSpec(np.float64, (-1, 3))]
    )
    named = infer_signature({"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), np.bool_)}).inputs
    assert named == Schema([TensorSpec(np.int64, (-1, 5), "ids"), TensorSpec(np.bool_, (-1, 5), "mask")])


def test_infer_params() -> None:
    sig = infer_signature(
        np.zeros((1, 2)), params={"temperature": 0.5, "top_k": 3, "stop": ["a", "b"], "greedy": True}
    )
    assert sig.params == ParamSchema(
        [
            ParamSpec("temperature", "double", 0.5),
            ParamSpec("top_k", "long", 3),
            ParamSpec("stop", "string", ["a", "b"], shape=(-1,)),
            ParamSpec("greedy", "boolean", True),
        ]
    )


def test_signature_dict_round_trip_matches_mlflow_format() -> None:
    sig = ModelSignature(
        inputs=Schema([TensorSpec("float64", (-1, 4))]),
        outputs=Schema([TensorSpec("int64", (-1,))]),
        params=ParamSchema([ParamSpec("k", DataType.long, 1)]),
    )
    d = sig.to_dict()
    # the exact strings MLflow stores in MLmodel
    assert json.loads(d["inputs"] or "") == [
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}
    ]
    assert json.loads(d["params"] or "") == [{"name": "k", "type": "long", "default": 1, "shape": None}]
    assert ModelSignature.from_dict(d) == sig
    cols = ModelSignature(inputs=Schema([ColSpec("double", "a"), ColSpec("string", "b", required=False)]))
    assert json.loads(cols.to_dict()["inputs"] or "") == [
        {"type": "double", "name": "a", "required": True},
        {"type": "string", "name": "b", "required": False},
    ]
    assert ModelSignature.from_dict(cols.to_dict()) == cols


def test_invalid_schemas_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="mix columns and tensors"):
        Schema([ColSpec("double", "a"), TensorSpec(np.float32, (-1,), "b")])
    with pytest.raises(InvalidArgument, match="either every input of a schema is named or none"):
        Schema([ColSpec("double", "a"), ColSpec("double")])
    with pytest.raises(InvalidArgument, match="unsupported data type 'decimal'"):
        ColSpec("decimal", "a")


# -- enforcement through pyfunc -----------------------------------------------------------


class Echo(keel.pyfunc.PythonModel):
    """Returns what it receives, so tests see exactly what enforcement hands the model."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input if params is None else (model_input, params)


def _echo(tmp_path, signature: ModelSignature) -> keel.pyfunc.PyFuncModel:
    path = tmp_path / "echo"
    keel.pyfunc.save_model(str(path), python_model=Echo(), signature=signature, pip_requirements=[])
    return keel.pyfunc.load_model(str(path))


COLUMNS = ModelSignature(
    inputs=Schema([ColSpec("long", "a"), ColSpec("double", "b"), ColSpec("string", "c")])
)


def _mismatch(excinfo: pytest.ExceptionInfo[InvalidArgument]) -> str:
    assert excinfo.value.reason == "SIGNATURE_MISMATCH"
    return excinfo.value.message


def test_missing_column_is_named(tmp_path) -> None:
    model = _echo(tmp_path, COLUMNS)
    with pytest.raises(InvalidArgument) as e:
        model.predict(pd.DataFrame({"a": [1], "c": ["x"]}))
    assert (
        _mismatch(e) == "missing input column 'b': the model expects columns ['a', 'b', 'c'], got ['a', 'c']"
    )


def test_extra_columns_are_ignored_and_columns_matched_by_name(tmp_path) -> None:
    model = _echo(tmp_path, COLUMNS)
    out = model.predict(pd.DataFrame({"zzz": [0], "c": ["x"], "b": [1.5], "a": [7]}))
    assert list(out.columns) == ["a", "b", "c"]
    assert out.iloc[0].tolist() == [7, 1.5, "x"]


def test_dict_and_records_inputs(tmp_path) -> None:
    model = _echo(tmp_path, COLUMNS)
    assert model.predict({"a": 1, "b": 2.0, "c": "x"}).shape == (1, 3)
    assert model.predict([{"a": 1, "b": 2.0, "c": "x"}, {"a": 2, "b": 3.0, "c": "y"}]).shape == (2, 3)


def test_positional_matching_when_schema_has_no_names(tmp_path) -> None:
    model = _echo(tmp_path, ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("long")])))
    out = model.predict(pd.DataFrame({"x": [1.0], "y": [np.int32(2)]}))
    assert out.dtypes.tolist() == [np.float64, np.int64]
    with pytest.raises(InvalidArgument) as e:
        model.predict(pd.DataFrame({"x": [1.0]}))
    assert _mismatch(e) == "the model expects 2 input columns (matched by position), got 1"


@pytest.mark.parametrize(
    ("given", "expected", "result_dtype"),
    [
        (np.int32, "long", np.int64),  # int -> long
        (np.int32, "double", np.float64),  # int -> double
        (np.int64, "double", np.float64),  # long -> double
        (np.float32, "double", np.float64),  # float -> double
        (np.int8, "integer", np.int32),
    ],
)
def test_safe_column_conversions(tmp_path, given, expected, result_dtype) -> None:
    out = enforce_schema(pd.DataFrame({"x": np.array([1, 2], dtype=given)}), Schema([ColSpec(expected, "x")]))
    assert out["x"].dtype == result_dtype


@pytest.mark.parametrize(
    ("values", "expected", "message"),
    [
        (np.array([1.5]), "long", "input column 'x': expected long, got float64"),
        (np.array([1.0]), "integer", "input column 'x': expected integer, got float64"),
        (np.array([1], dtype=np.int64), "integer", "input column 'x': expected integer, got int64"),
        (np.array([1.0]), "float", "input column 'x': expected float, got float64"),
        (np.array([True]), "long", "input column 'x': expected long, got bool"),
        (np.array([1]), "string", "input column 'x': expected string, got int64"),
        (np.array(["a"], dtype=object), "double", "input column 'x': expected double, got string"),
    ],
)
def test_unsafe_column_conversions_are_refused(tmp_path, values, expected, message) -> None:
    with pytest.raises(InvalidArgument) as e:
        enforce_schema(pd.DataFrame({"x": values}), Schema([ColSpec(expected, "x")]))
    assert _mismatch(e) == message


def test_missing_values_in_int_column_get_a_hint() -> None:
    with pytest.raises(InvalidArgument) as e:
        enforce_schema(pd.DataFrame({"x": [1.0, None]}), Schema([ColSpec("long", "x")]))
    assert "has missing values" in _mismatch(e)


def test_optional_columns_may_be_absent() -> None:
    schema = Schema([ColSpec("double", "a"), ColSpec("double", "b", required=False)])
    assert list(enforce_schema(pd.DataFrame({"a": [1.0]}), schema).columns) == ["a"]


TENSOR = ModelSignature(inputs=Schema([TensorSpec(np.float32, (-1, 1, 4, 4))]))


def test_tensor_free_batch_dimension(tmp_path) -> None:
    model = _echo(tmp_path, TENSOR)
    for batch in (1, 5):
        assert model.predict(np.zeros((batch, 1, 4, 4), np.float32)).shape == (batch, 1, 4, 4)


def test_tensor_dtype_is_strict(tmp_path) -> None:
    model = _echo(tmp_path, TENSOR)
    with pytest.raises(InvalidArgument) as e:
        model.predict(np.zeros((2, 1, 4, 4), np.float64))
    assert (
        _mismatch(e)
        == "input tensor #0: expected dtype float32, got float64 (tensor dtypes are not converted)"
    )


def test_tensor_shape_is_strict(tmp_path) -> None:
    model = _echo(tmp_path, TENSOR)
    with pytest.raises(InvalidArgument) as e:
        model.predict(np.zeros((2, 4, 4), np.float32))
    assert _mismatch(e) == "input tensor #0: expected shape (-1, 1, 4, 4) (-1 = any size), got (2, 4, 4)"
    with pytest.raises(
        InvalidArgument, match=r"expected shape \(-1, 1, 4, 4\) \(-1 = any size\), got \(2, 1, 4, 5\)"
    ):
        model.predict(np.zeros((2, 1, 4, 5), np.float32))


def test_torch_tensors_are_checked_without_conversion() -> None:
    schema = Schema([TensorSpec(np.float32, (-1, 3))])
    t = torch.zeros(2, 3)
    assert enforce_schema(t, schema) is t
    with pytest.raises(InvalidArgument, match="expected dtype float32, got int64"):
        enforce_schema(torch.zeros(2, 3, dtype=torch.int64), schema)


def test_named_tensors(tmp_path) -> None:
    sig = ModelSignature(
        inputs=Schema([TensorSpec(np.int64, (-1, 5), "ids"), TensorSpec(np.bool_, (-1, 5), "mask")])
    )
    model = _echo(tmp_path, sig)
    out = model.predict(
        {"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), bool), "extra": np.zeros(1)}
    )
    assert sorted(out) == ["ids", "mask"]
    with pytest.raises(InvalidArgument) as e:
        model.predict({"ids": np.zeros((2, 5), np.int64)})
    assert _mismatch(e) == "missing input tensor 'mask': the model expects ['ids', 'mask'], got ['ids']"
    with pytest.raises(InvalidArgument, match="input tensor 'mask': expected dtype bool, got int64"):
        model.predict({"ids": np.zeros((2, 5), np.int64), "mask": np.zeros((2, 5), np.int64)})


def test_params_are_converted_defaulted_and_checked(tmp_path) -> None:
    sig = ModelSignature(
        inputs=Schema([ColSpec("double", "a")]),
        params=ParamSchema([ParamSpec("temperature", "double", 0.7), ParamSpec("top_k", "long", 5)]),
    )
    model = _echo(tmp_path, sig)
    _, params = model.predict({"a": 1.0}, params={"temperature": 1, "unknown": "x"})
    assert params == {"temperature": 1.0, "top_k": 5}
    with pytest.raises(InvalidArgument) as e:
        model.predict({"a": 1.0}, params={"top_k": "many"})
    assert _mismatch(e) == "param 'top_k': expected long, got str 'many'"
    assert enforce_params({"x": 1}, None) is None


def test_model_without_signature_is_not_enforced(tmp_path) -> None:
    path = tmp_path / "plain"
    keel.pyfunc.save_model(str(path), python_model=Echo(), pip_requirements=[])
    data = np.zeros((2, 3), np.float64)
    assert keel.pyfunc.load_model(str(path)).predict(data) is not None
