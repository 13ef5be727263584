"""gRPC servicer of ``keel.artifacts.v1.ArtifactService``: request shape, proto ⇄ domain, and a
call into ``ArtifactRepository`` (store.py). Errors are domain errors; the interceptor maps them."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import grpc

from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.shared.chunks import frame_chunk, parse_message_or_chunk, serialize_message
from keel_server.artifacts.store import ArtifactRepository, Location
from keel_server.artifacts.stores import ObjectInfo
from keel_server.common import metrics
from keel_server.common.app import App
from keel_server.common.errors import InvalidArgument

_PRESIGN_METHODS = {pb.PRESIGN_METHOD_GET: "GET", pb.PRESIGN_METHOD_PUT: "PUT"}


def _file_info(info: ObjectInfo) -> pb.FileInfo:
    return pb.FileInfo(path=info.path, is_dir=info.is_dir, file_size=info.size, sha256=info.sha256)


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, app: App) -> None:
        self._app = app
        self._repo: ArtifactRepository | None = None

    @property
    def repo(self) -> ArtifactRepository:
        if self._repo is None:
            self._repo = ArtifactRepository(self._app.artifact_store)
        return self._repo

    def _locate(self, ref: pb.ArtifactRef, field: str = "ref") -> Location:
        return self.repo.locate(ref.run_id, ref.artifact_uri, ref.path, field=field)

    def UploadArtifact(
        self, request_iterator: Iterator[pb.UploadArtifactRequest | memoryview], context: grpc.ServicerContext
    ) -> pb.FileInfo:
        # Chunk messages arrive as views of the received bytes (see add_to_server), the rest as
        # messages.
        first = next(request_iterator, None)
        if first is None or isinstance(first, memoryview) or first.WhichOneof("message") != "header":
            raise InvalidArgument("the first message of an upload must be its header", reason="MISSING_HEADER", field="header")
        header = first.header
        session = self.repo.begin_upload(
            self._locate(header.ref), header.size if header.HasField("size") else None, header.sha256
        )
        trailer_seen = False
        try:
            for message in request_iterator:
                # The order is header, chunks, at most one trailer: anything after the trailer
                # (a chunk, a second trailer) or a second header fails the upload, nothing stored.
                if trailer_seen:
                    raise InvalidArgument(
                        "the trailer must be the last message of an upload: a message followed it "
                        "(send the header, then the chunks, then at most one trailer)",
                        reason="UNEXPECTED_MESSAGE",
                    )
                if isinstance(message, memoryview):
                    session.write(message)
                    continue
                kind = message.WhichOneof("message")
                if kind == "chunk":
                    session.write(message.chunk)
                elif kind == "trailer":
                    session.expect_sha256(message.trailer.sha256)
                    trailer_seen = True
                elif kind == "header":
                    raise InvalidArgument(
                        "an upload has one header: a second header arrived (send the header, then the "
                        "chunks, then at most one trailer)",
                        reason="UNEXPECTED_MESSAGE",
                    )
                else:
                    raise InvalidArgument(
                        "an upload has one header, then chunks, then at most one trailer", reason="UNEXPECTED_MESSAGE"
                    )
            info = session.commit()
        except BaseException:
            # Client cancelled, stream broke, a check failed: nothing may be left behind.
            session.abort()
            raise
        metrics.artifact_bytes("in", info.size)
        return _file_info(info)

    def DownloadArtifact(  # type: ignore[override]  # chunks go out pre-serialised (see _method_handlers)
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse | bytes]:
        info, chunks = self.repo.download(self._locate(request.ref), request.offset)
        sent = 0
        try:
            yield pb.DownloadArtifactResponse(
                header=pb.DownloadHeader(file_size=info.size, sha256=info.sha256, offset=request.offset)
            )
            for chunk in chunks:
                yield frame_chunk(chunk)  # a serialised DownloadArtifactResponse{chunk}
                sent += len(chunk)  # handed to gRPC (a local sum; the counter moves once a call)
        finally:
            metrics.artifact_bytes("out", sent)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def ListArtifacts(self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext) -> pb.ListArtifactsResponse:
        location = self._locate(request.ref)
        entries, token = self.repo.list(location, request.recursive, request.page_size, request.page_token)
        return pb.ListArtifactsResponse(
            root_uri=location.root, files=[_file_info(e) for e in entries], next_page_token=token
        )

    def StatArtifact(self, request: pb.StatArtifactRequest, context: grpc.ServicerContext) -> pb.FileInfo:
        return _file_info(self.repo.stat(self._locate(request.ref)))

    def DeleteArtifact(self, request: pb.DeleteArtifactRequest, context: grpc.ServicerContext) -> pb.DeleteArtifactResponse:
        return pb.DeleteArtifactResponse(deleted_count=self.repo.delete(self._locate(request.ref)))

    def CreatePresignedUrl(
        self, request: pb.CreatePresignedUrlRequest, context: grpc.ServicerContext
    ) -> pb.CreatePresignedUrlResponse:
        url, expiration = self.repo.presign(
            self._locate(request.ref), _PRESIGN_METHODS.get(request.method, ""), request.expires_in_seconds
        )
        return pb.CreatePresignedUrlResponse(url=url, expiration_time=expiration)

    def ResolveArtifactUri(
        self, request: pb.ResolveArtifactUriRequest, context: grpc.ServicerContext
    ) -> pb.ResolveArtifactUriResponse:
        if not request.uri:
            raise InvalidArgument("uri is required: runs:/<run_id>/<path> or a store URI", reason="INVALID_ARTIFACT_URI", field="uri")
        return pb.ResolveArtifactUriResponse(artifact_uri=self.repo.resolve(request.uri))

    def CopyArtifacts(self, request: pb.CopyArtifactsRequest, context: grpc.ServicerContext) -> pb.CopyArtifactsResponse:
        count, total = self.repo.copy(self._locate(request.source, "source"), self._locate(request.destination, "destination"))
        return pb.CopyArtifactsResponse(file_count=count, total_bytes=total)


def _method_handlers(servicer: ArtifactServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The generated handlers, except that upload chunks are not parsed into messages (the
    servicer gets a view of the received bytes) and download chunks are framed by the servicer:
    each saves two copies of every byte (see keel.shared.chunks)."""
    service = pb.DESCRIPTOR.services_by_name["ArtifactService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        deserialize = request_class.FromString
        serialize = response_class.SerializeToString
        if method.name == "UploadArtifact":
            deserialize = functools.partial(parse_message_or_chunk, pb.UploadArtifactRequest.FromString)
        elif method.name == "DownloadArtifact":
            serialize = serialize_message
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name), request_deserializer=deserialize, response_serializer=serialize
        )
    return handlers


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    # Open the store now: an unknown scheme or incomplete S3 settings stop `keel server` at start.
    _ = app.artifact_store
    service = pb.DESCRIPTOR.services_by_name["ArtifactService"].full_name
    handlers = _method_handlers(ArtifactServicer(app))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(service, handlers)
    return [service]
