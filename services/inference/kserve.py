"""KServe Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``), so Triton
and KServe clients (``tritonclient[grpc]``) talk to keel unchanged.

``model_name`` is a deployment name; ``model_version`` is a registered version, or empty for
the deployment's current one. Inputs may come in ``raw_input_contents`` or the typed
``contents`` fields; outputs always go back in ``raw_output_contents`` (public clients decode
only raw outputs).

The protocol's messages are built in a private descriptor pool, never in protobuf's default
one: ``tritonclient`` registers the same ``inference.*`` symbols there, and two definitions in
one pool fail with "duplicate symbol". So a process may hold this server and tritonclient in
any order. The descriptor comes from keel's generated ``grpc_predict_v2_pb2.py``, read as text
(importing that module would register it in the default pool).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import keel
from keel_server.common.errors import InvalidArgument
from keel_server.inference import codecs
from keel_server.inference.runtime import READY, InferenceRuntime

SERVICE = "inference.GRPCInferenceService"
_V2_MODULE = "keel.inference.v2.grpc_predict_v2_pb2"


@functools.cache
def private_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool of its own holding the v2 protocol (service and messages)."""
    spec = importlib.util.find_spec(_V2_MODULE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find {_V2_MODULE}: regenerate the stubs with `make proto`")
    with open(spec.origin) as f:
        tree = ast.parse(f.read())
    serialized = next(
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "AddSerializedFile"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, bytes)
    )
    assert isinstance(serialized, bytes)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
    return pool


@functools.cache
def messages() -> dict[str, Any]:
    """The v2 message classes by short name, from the private descriptor pool."""
    service = private_pool().FindServiceByName(SERVICE)
    types = [t for m in service.methods for t in (m.input_type, m.output_type)]
    return {t.name: message_factory.GetMessageClass(t) for t in types}


class KServeServicer:
    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime
        self.m = messages()

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.m["ServerLiveResponse"](live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        # OIP: ready when every model is ready (a FAILED deployment makes the replica not ready).
        return self.m["ServerReadyResponse"](ready=self.runtime.all_ready())

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        view = self.runtime.describe(request.name)
        version = _version(request.version)
        ready = view.state == READY and (not version or version == view.version)
        return self.m["ModelReadyResponse"](ready=ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.m["ServerMetadataResponse"](name="keel", version=keel.__version__, extensions=[])

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        _, served = self.runtime.model_for(request.name, _version(request.version))
        response = self.m["ModelMetadataResponse"](
            name=request.name, versions=[served.version_label or "1"], platform=served.platform
        )
        for t in served.inputs_metadata():
            response.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        for t in served.outputs_metadata():
            response.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        return response

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        dep, served = self.runtime.model_for(request.model_name, _version(request.model_version))
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: send one per input, in order",
                reason="INVALID_TENSOR_DATA",
            )
        named = []
        for i, t in enumerate(request.inputs):
            label = repr(t.name)
            if raw:
                if t.HasField("contents"):
                    raise InvalidArgument(
                        f"input {label} sets contents while the request uses raw_input_contents: use one or the other",
                        reason="INVALID_TENSOR_DATA",
                    )
                arr = codecs.array_from_raw(label, t.datatype, list(t.shape), raw[i])
            else:
                arr = codecs.array_from_contents(label, t.datatype, list(t.shape), t.contents)
            named.append((t.name, arr))
        params = {k: _param(v) for k, v in request.parameters.items()} or None
        data = codecs.tensors_to_model_input(named, served.input_schema)
        output = self.runtime.predict(dep, served, data, _model_params(params, served))
        outputs = codecs.output_arrays(output, served.output_names())
        wanted = [o.name for o in request.outputs]
        if wanted:
            by_name = dict(outputs)
            unknown = [w for w in wanted if w not in by_name]
            if unknown:
                raise InvalidArgument(
                    f"requested output(s) {unknown} do not exist; the model's outputs are {list(by_name)}",
                    reason="UNKNOWN_OUTPUT",
                )
            outputs = [(w, by_name[w]) for w in wanted]
        response = self.m["ModelInferResponse"](
            model_name=request.model_name, model_version=served.version_label, id=request.id
        )
        for name, arr in outputs:
            datatype, shape, data_bytes = codecs.array_to_raw(arr)
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(data_bytes)
        return response


def _version(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidArgument(
            f"model_version {text!r} is not a version number: give a registered version or leave it empty",
            reason="INVALID_VERSION",
        )
    return int(text)


def _param(value: Any) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _model_params(params: dict[str, Any] | None, served: Any) -> dict[str, Any] | None:
    """Request parameters go to the model only when its signature declares them (Triton clients
    add their own, such as ``sequence_id``)."""
    if not params or served.params_schema is None:
        return None
    known = {p.name for p in served.params_schema}
    return {k: v for k, v in params.items() if k in known} or None


def add_to_server(server: grpc.Server, runtime: InferenceRuntime) -> str:
    servicer = KServeServicer(runtime)
    m = servicer.m

    def unary(name: str) -> grpc.RpcMethodHandler:
        behavior: Callable[..., Any] = getattr(servicer, name)
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=m[f"{name}Request"].FromString,
            response_serializer=lambda msg: msg.SerializeToString(),
        )

    rpcs = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {n: unary(n) for n in rpcs}),)
    )
    return SERVICE
