"""keel.inference.v1.InferenceService: deployments and keel's own Predict (thin: decode the
request, ask the runtime, encode the answer). ``add_to_server`` also puts the KServe v2
service on the same gRPC server and starts the MLflow-compatible HTTP port when one is set."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from keel.inference.v1 import inference_pb2, inference_pb2_grpc
from keel_server.common.app import App
from keel_server.common.errors import InvalidArgument, KeelError
from keel_server.common.interceptors import translate
from keel_server.inference import codecs
from keel_server.inference.model import ServedModel
from keel_server.inference.resolver import StoreResolver
from keel_server.inference.runtime import InferenceRuntime
from keel_server.inference.store import BatchingConfig, DatabaseDeployments

log = logging.getLogger("keel.inference")

_STATES = {
    "PENDING": inference_pb2.DEPLOYMENT_STATE_PENDING,
    "LOADING": inference_pb2.DEPLOYMENT_STATE_LOADING,
    "READY": inference_pb2.DEPLOYMENT_STATE_READY,
    "FAILED": inference_pb2.DEPLOYMENT_STATE_FAILED,
}


def _deployment(view: Any) -> inference_pb2.Deployment:
    return inference_pb2.Deployment(
        name=view.name,
        model_uri=view.model_uri,
        state=_STATES[view.state],
        state_message=view.message,
        model_name=view.model_name,
        model_version=view.version,
        creation_timestamp=view.creation_time,
        last_updated_timestamp=view.updated_time,
        flavors=view.flavors,
        max_batch_size=view.batching.max_batch_size,
        max_batch_delay_ms=view.batching.max_batch_delay_ms,
    )


def decode_predict_input(
    request: inference_pb2.PredictRequest, served: ServedModel
) -> tuple[Any, dict[str, Any] | None]:
    """A PredictRequest's input as the model takes it, plus its params."""
    params = codecs.parse_params_json(request.params_json)
    kind = request.WhichOneof("input")
    if kind == "json":
        data, json_params = codecs.parse_json(request.json, served.input_schema)
        if json_params:
            params = {**(params or {}), **json_params}
    elif kind == "csv":
        data = codecs.parse_csv(request.csv)
    elif kind == "tensors":
        if len(request.tensors.tensors) > codecs.MAX_TENSORS:
            raise InvalidArgument(
                f"at most {codecs.MAX_TENSORS} tensors, got {len(request.tensors.tensors)}",
                reason="TOO_MANY_TENSORS",
            )
        named = [
            (
                t.name or f"input_{i}",
                codecs.array_from_raw(repr(t.name or i), t.datatype, list(t.shape), t.data),
            )
            for i, t in enumerate(request.tensors.tensors)
        ]
        data = codecs.tensors_to_model_input(named, served.input_schema)
    else:
        raise InvalidArgument(
            "the request has no input: set json, csv or tensors", reason="MISSING_INPUT", field="input"
        )
    return data, params


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime

    def CreateDeployment(
        self, request: inference_pb2.CreateDeploymentRequest, context: grpc.ServicerContext
    ) -> Any:
        batching = BatchingConfig.checked(request.max_batch_size, request.max_batch_delay_ms)
        return _deployment(self.runtime.create(request.name, request.model_uri, batching))

    def GetDeployment(
        self, request: inference_pb2.GetDeploymentRequest, context: grpc.ServicerContext
    ) -> Any:
        return _deployment(self.runtime.describe(request.name))

    def ListDeployments(
        self, request: inference_pb2.ListDeploymentsRequest, context: grpc.ServicerContext
    ) -> Any:
        views, token = self.runtime.list_page(request.page_size, request.page_token)
        return inference_pb2.ListDeploymentsResponse(
            deployments=[_deployment(v) for v in views], next_page_token=token
        )

    def DeleteDeployment(
        self, request: inference_pb2.DeleteDeploymentRequest, context: grpc.ServicerContext
    ) -> Any:
        self.runtime.delete(request.name)
        return empty_pb2.Empty()

    def Predict(self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:
        return self._predict(request)

    def PredictStream(
        self, request_iterator: Iterator[inference_pb2.PredictRequest], context: grpc.ServicerContext
    ) -> Any:
        for request in request_iterator:
            try:
                yield inference_pb2.PredictStreamResponse(response=self._predict(request))
            except Exception as exc:  # noqa: BLE001 - reported in this message; the stream goes on
                error = translate(exc)
                if error is None:
                    log.exception("PredictStream request failed")
                    error = KeelError("internal error; the server log has the details")
                yield inference_pb2.PredictStreamResponse(
                    error_code=error.code.value[0], error_message=error.message
                )

    def _predict(self, request: inference_pb2.PredictRequest) -> inference_pb2.PredictResponse:
        if request.model_version < 0:
            raise InvalidArgument(
                "model_version must be >= 0 (0 = current)", reason="INVALID_VERSION", field="model_version"
            )
        dep, served = self.runtime.model_for(request.deployment, request.model_version)
        data, params = decode_predict_input(request, served)
        output = self.runtime.predict(dep, served, data, params)
        response = inference_pb2.PredictResponse(model_name=served.model_name, model_version=served.version)
        if request.WhichOneof("input") == "tensors":
            for name, arr in codecs.output_arrays(output, served.output_names()):
                datatype, shape, raw = codecs.array_to_raw(arr)
                response.tensors.tensors.add(name=name, datatype=datatype, shape=shape, data=raw)
        else:
            response.json = codecs.predictions_json(output)
        return response


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    """Registers keel.inference.v1 and KServe v2 on ``server``; starts the HTTP port if set.

    ``keel models serve`` passes an app that already carries its runtime (one static
    deployment); ``keel server`` builds one over the deployments table.
    """
    from keel_server.auth.gate import Gate
    from keel_server.common.tls import ssl_context
    from keel_server.inference import http, kserve

    runtime: InferenceRuntime | None = getattr(app, "inference_runtime", None)
    if runtime is None:
        runtime = InferenceRuntime(
            DatabaseDeployments(), StoreResolver(app), app.settings.registry_poll_seconds
        )
        runtime.start()
    app.shutdown_hooks.append(runtime.close)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(runtime), server)
    names = [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]
    names.append(kserve.add_to_server(server, runtime))
    if app.settings.http_port:
        scoring = http.start_http_server(
            runtime,
            app.settings.host,
            app.settings.http_port,
            app.settings.max_message_bytes,
            app.settings.reuse_port,
            ssl_context(app.settings),
            Gate(app.settings) if app.settings.auth else None,
        )
        app.shutdown_hooks.append(scoring.stop)
    return names
