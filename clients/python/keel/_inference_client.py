"""Inference methods of ``keel.Client``: deployments and predictions over keel.inference.v1.

``predict`` sends what MLflow users send: a DataFrame (as ``dataframe_split``), a dict in one
of MLflow's scoring formats, a list (as ``inputs``), or numpy arrays / torch tensors (as typed
tensors, answered with arrays). KServe v2 clients (tritonclient) work against the same server
unchanged; keel never imports its own v2 stubs here (they clash with tritonclient's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel._transport import Transport, map_errors
from keel.exceptions import InvalidArgument
from keel.inference.v1 import inference_pb2, inference_pb2_grpc
from keel.paging import Pager
from keel.shared.tensors import SCORING_JSON_KEYS, array_from_raw, array_to_raw

_STATE_NAMES = {v: k.removeprefix("DEPLOYMENT_STATE_") for k, v in inference_pb2.DeploymentState.items()}


@dataclass(frozen=True)
class Deployment:
    name: str
    model_uri: str
    state: str  # PENDING, LOADING, READY or FAILED
    state_message: str
    model_name: str
    model_version: int
    flavors: list[str] = field(default_factory=list)
    creation_timestamp: int = 0
    last_updated_timestamp: int = 0
    max_batch_size: int = 0
    max_batch_delay_ms: float = 0.0

    @classmethod
    def from_proto(cls, d: inference_pb2.Deployment) -> Deployment:
        return cls(
            name=d.name,
            model_uri=d.model_uri,
            state=_STATE_NAMES.get(d.state, "UNSPECIFIED"),
            state_message=d.state_message,
            model_name=d.model_name,
            model_version=d.model_version,
            flavors=list(d.flavors),
            creation_timestamp=d.creation_timestamp,
            last_updated_timestamp=d.last_updated_timestamp,
            max_batch_size=d.max_batch_size,
            max_batch_delay_ms=d.max_batch_delay_ms,
        )


@dataclass(frozen=True)
class Prediction:
    """``predictions`` as MLflow's scoring server returns them (JSON values), or numpy arrays
    (one array, or a dict by output name) for tensor inputs; plus the version that answered."""

    predictions: Any
    model_name: str
    model_version: int


def predict_request(
    deployment: str, data: Any, params: dict[str, Any] | None = None, model_version: int = 0
) -> Any:
    """The PredictRequest for ``data`` (see the module docstring for the accepted shapes)."""
    request = inference_pb2.PredictRequest(deployment=deployment, model_version=model_version)
    if params:
        request.params_json = json.dumps(params)
    module = type(data).__module__
    if module.startswith("torch"):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray) and data.dtype.kind != "O":
        datatype, shape, raw = array_to_raw(data)
        request.tensors.tensors.add(datatype=datatype, shape=shape, data=raw)
    elif isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        for name, arr in data.items():
            datatype, shape, raw = array_to_raw(arr)
            request.tensors.tensors.add(name=str(name), datatype=datatype, shape=shape, data=raw)
    elif module.startswith("pandas") and type(data).__name__ == "DataFrame":
        request.json = (
            '{"dataframe_split":' + data.to_json(orient="split", index=False, date_format="iso") + "}"
        )
    elif isinstance(data, dict) and any(k in data for k in SCORING_JSON_KEYS):
        request.json = json.dumps(data)
    elif isinstance(data, str):
        request.csv = data  # CSV text with a header row
    elif isinstance(data, list | tuple):
        request.json = json.dumps({"inputs": list(data)})
    elif isinstance(data, dict):
        request.json = json.dumps({"inputs": data})
    else:
        raise InvalidArgument(
            f"cannot send input of type {type(data).__name__}: use a DataFrame, numpy arrays, a list, CSV text or "
            f"a dict in one of MLflow's formats ({', '.join(SCORING_JSON_KEYS)})",
            reason="UNSUPPORTED_INPUT",
        )
    return request


def prediction_of(response: inference_pb2.PredictResponse) -> Prediction:
    if response.WhichOneof("output") == "tensors":
        arrays = {
            t.name: array_from_raw(repr(t.name), t.datatype, list(t.shape), t.data, role="output")
            for t in response.tensors.tensors
        }
        value: Any = next(iter(arrays.values())) if len(arrays) == 1 else arrays
    else:
        value = json.loads(response.json)["predictions"]
    return Prediction(value, response.model_name, response.model_version)


class InferenceClientMixin:
    _service_transport: Callable[[str], Transport]

    @property
    def _inference_transport(self) -> Transport:
        return self._service_transport("inference")

    def _inference(self) -> inference_pb2_grpc.InferenceServiceStub:
        return self._inference_transport.stub(inference_pb2_grpc.InferenceServiceStub)

    def create_deployment(
        self,
        name: str,
        model_uri: str,
        max_batch_size: int = 0,
        max_batch_delay_ms: float = 0.0,
        wait_ready: bool = True,
        timeout: float = 300.0,
    ) -> Deployment:
        """Serves ``model_uri`` as deployment ``name``; with ``wait_ready`` returns once it is
        READY or FAILED (check ``state``) or ``timeout`` seconds have passed."""
        request = inference_pb2.CreateDeploymentRequest(
            name=name,
            model_uri=model_uri,
            max_batch_size=max_batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
        )
        deployment = Deployment.from_proto(
            self._inference_transport.call(self._inference().CreateDeployment, request, idempotent=False)
        )
        return self.wait_deployment(name, timeout) if wait_ready else deployment

    def wait_deployment(self, name: str, timeout: float = 300.0) -> Deployment:
        """Polls GetDeployment until the deployment is READY or FAILED, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            deployment = self.get_deployment(name)
            if deployment.state in ("READY", "FAILED") or time.monotonic() >= deadline:
                return deployment
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def get_deployment(self, name: str) -> Deployment:
        request = inference_pb2.GetDeploymentRequest(name=name)
        return Deployment.from_proto(
            self._inference_transport.call(self._inference().GetDeployment, request, idempotent=True)
        )

    def list_deployments(self, max_results: int | None = None) -> list[Deployment]:
        def fetch(token: str) -> tuple[list[Deployment], str]:
            request = inference_pb2.ListDeploymentsRequest(page_token=token)
            reply = self._inference_transport.call(self._inference().ListDeployments, request, idempotent=True)
            return [Deployment.from_proto(d) for d in reply.deployments], reply.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    def delete_deployment(self, name: str) -> None:
        request = inference_pb2.DeleteDeploymentRequest(name=name)
        self._inference_transport.call(self._inference().DeleteDeployment, request, idempotent=True)

    def predict(
        self,
        deployment: str,
        data: Any,
        params: dict[str, Any] | None = None,
        model_version: int = 0,
        timeout: float = 60.0,
    ) -> Prediction:
        """One prediction; signature violations raise ``InvalidArgument`` (reason SIGNATURE_MISMATCH)."""
        request = predict_request(deployment, data, params, model_version)
        return prediction_of(
            self._inference_transport.call(self._inference().Predict, request, idempotent=True, timeout=timeout)
        )

    def predict_stream(
        self, deployment: str, inputs: Iterable[Any], params: dict[str, Any] | None = None
    ) -> Iterator[Prediction | Exception]:
        """Many predictions over one bidirectional stream, in order; a failed one yields its
        typed error (``keel.exceptions``) instead of a Prediction and the stream goes on."""
        import grpc

        from keel.exceptions import _BY_CODE, KeelError

        codes = {c.value[0]: c for c in grpc.StatusCode}
        requests = (predict_request(deployment, data, params) for data in inputs)
        for reply in map_errors(self._inference().PredictStream(requests)):
            if reply.error_code:
                code = codes.get(reply.error_code, grpc.StatusCode.UNKNOWN)
                yield _BY_CODE.get(code, KeelError)(reply.error_message)
            else:
                yield prediction_of(reply.response)
