"""The shared layer (``keel.shared``) on its own, and the one place its errors become the server's.

The URI grammar's agreement between the SDK and the server runs against real servers in
``tests/registry/test_uri_agreement.py``; chunk framing in ``tests/artifacts/test_fast_paths.py``.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from keel import exceptions as kx
from keel.inference.v1 import inference_pb2
from keel.shared import pages, tensors, uris
from keel_server.common import errors
from keel_server.common.interceptors import translate
from keel_server.common.uris import parse_models_uri as server_parse_models_uri

# -- tensors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", [d for d in tensors.DATATYPES if d != "BYTES"])
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    arr = np.arange(6).astype(tensors.DATATYPES[datatype]).reshape(2, 3)
    got_type, shape, raw = tensors.array_to_raw(arr)
    assert (got_type, shape) == (datatype, [2, 3])
    np.testing.assert_array_equal(tensors.array_from_raw("'x'", datatype, shape, raw), arr)


def test_bytes_round_trip_and_strings_travel_as_utf8() -> None:
    arr = np.array([["a", "é"], ["", "xyz"]], dtype=object)
    datatype, shape, raw = tensors.array_to_raw(arr)
    assert datatype == "BYTES" and shape == [2, 2]
    back = tensors.array_from_raw("'s'", datatype, shape, raw)
    assert back.tolist() == [[b"a", "é".encode()], [b"", b"xyz"]]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "reason", "needle"),
    [
        ("FP128", [1], b"", "INVALID_DATATYPE", "unknown datatype 'FP128'"),
        ("FP32", [-1, 2], b"", "INVALID_SHAPE", "has a negative dimension"),
        ("FP32", [2, 2], b"\x00" * 15, "INVALID_TENSOR_DATA", "needs 16 bytes (4 elements of 4), got 15"),
        ("INT64", [2**40, 2**40], b"\x00" * 8, "INVALID_TENSOR_DATA", "needs"),  # no allocation first
        ("BYTES", [1], b"\x05\x00\x00", "INVALID_TENSOR_DATA", "length prefix is cut off at byte 0"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "INVALID_TENSOR_DATA", "runs past the end"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "INVALID_TENSOR_DATA", "needs 2 BYTES elements, got 1"),
    ],
)
def test_decoding_checks_every_bound(datatype: str, shape: list[int], raw: bytes, reason: str, needle: str) -> None:
    with pytest.raises(kx.InvalidArgument) as err:
        tensors.array_from_raw("'x'", datatype, shape, raw)
    assert err.value.reason == reason and needle in err.value.message
    assert err.value.message.startswith("input 'x': ")


def test_typed_contents_are_counted_against_the_shape() -> None:
    holder = type("Contents", (), {"fp32_contents": [1.0, 2.0, 3.0]})()  # InferTensorContents' field
    assert tensors.array_from_contents("'x'", "FP32", [3], holder).dtype == np.float32
    with pytest.raises(kx.InvalidArgument, match=r"needs 4 values in contents.fp32_contents, got 3"):
        tensors.array_from_contents("'x'", "FP32", [2, 2], holder)
    with pytest.raises(kx.InvalidArgument, match="FP16 has no typed contents field"):
        tensors.array_from_contents("'x'", "FP16", [1], holder)
    with pytest.raises(kx.InvalidArgument) as err:
        tensors.datatype_of(np.dtype("complex64"))
    assert err.value.reason == "UNSUPPORTED_DATATYPE"


def test_the_sdk_decodes_a_malformed_server_output_as_an_error() -> None:
    from keel._inference_client import prediction_of

    response = inference_pb2.PredictResponse()
    response.tensors.tensors.add(name="y", datatype="FP64", shape=[3], data=b"\x00" * 16)
    with pytest.raises(kx.InvalidArgument, match=r"^output 'y': shape \[3\] of FP64 needs 24 bytes"):
        prediction_of(response)


# -- page caps -------------------------------------------------------------------------------


def test_the_server_pages_by_the_shared_caps() -> None:
    from keel_server.artifacts import store as artifacts_store
    from keel_server.registry import store as registry_store
    from keel_server.tracking import store as tracking_store

    assert registry_store.MODELS_PAGE == pages.REGISTERED_MODELS
    assert registry_store.VERSIONS_PAGE == pages.MODEL_VERSIONS
    assert registry_store.HISTORY_PAGE == pages.MODEL_HISTORY
    assert (tracking_store.SEARCH_RUNS_DEFAULT_PAGE, tracking_store.SEARCH_RUNS_MAX_PAGE) == pages.SEARCH_RUNS
    assert (artifacts_store.LIST_DEFAULT_PAGE, artifacts_store.LIST_MAX_PAGE) == pages.LIST_ARTIFACTS


# -- SDK errors in the server: translate() -----------------------------------------------------


@pytest.mark.parametrize(
    "sdk_class",
    [
        kx.NotFound,
        kx.AlreadyExists,
        kx.InvalidArgument,
        kx.FailedPrecondition,
        kx.Aborted,
        kx.Unavailable,
        kx.PermissionDenied,
        kx.Unauthenticated,
        kx.Unimplemented,
        kx.DataLoss,
        kx.ResourceExhausted,
        kx.DeadlineExceeded,
        kx.Internal,
    ],
)
def test_translate_keeps_code_reason_field_and_metadata_of_sdk_errors(sdk_class: type[kx.KeelError]) -> None:
    sdk = sdk_class("what went wrong", reason="SOME_REASON", field="model_uri", metadata={"name": "m"})
    error = translate(sdk)
    assert isinstance(error, errors.KeelError)
    assert (error.code, error.reason, error.field, error.metadata) == (
        sdk_class.code,
        "SOME_REASON",
        "model_uri",
        {"name": "m"},
    )
    assert error.message == "what went wrong"


def test_translate_never_answers_unknown_and_clips_what_it_carries() -> None:
    error = translate(kx.KeelError("x" * 5000))
    assert error is not None and error.code == grpc.StatusCode.INTERNAL and error.field is None
    assert len(error.message) < 1100  # the server's bound on messages applies
    missing = translate(kx.MissingExtra("scikit-learn is not installed", extra="sklearn", package="sklearn"))
    assert missing is not None and missing.code == grpc.StatusCode.FAILED_PRECONDITION
    assert missing.reason == "MISSING_EXTRA" and missing.metadata["extra"] == "sklearn"


def test_server_code_gets_the_grammar_with_its_own_error_type() -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        server_parse_models_uri("models:/m/1/")
    assert err.value.reason == uris.INVALID_MODEL_URI and err.value.field == "model_uri"
    assert server_parse_models_uri("models:/m@champion") == uris.ModelsUri("m", alias="champion")


def test_huge_uris_are_quoted_in_bounded_messages() -> None:
    uri = "models:/" + "n" * 100_000 + "/1"
    with pytest.raises(kx.InvalidArgument) as err:
        uris.parse_models_uri(uri)
    assert len(err.value.message) < 600 and f"{len(uri):,} characters in all" in err.value.message
    assert "the model name is 100,000 characters long; the limit is 256" in err.value.message
