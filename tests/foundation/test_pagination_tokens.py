"""Page tokens come back from callers: crafted ones are INVALID_ARGUMENT ``INVALID_PAGE_TOKEN``
(never INTERNAL), and every token keel itself writes fits the token size limit and pages on."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from server_fixtures import ServerHandle

import keel
from keel.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from keel.exceptions import from_rpc_error
from keel.registry.v1 import registry_pb2, registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2, tracking_pb2_grpc
from keel_server.common import pagination
from keel_server.common.errors import InvalidArgument
from keel_server.tracking.records import MAX_TAG_VALUE_LENGTH
from keel_server.tracking.store import MAX_ORDER_KEYS

# The token of issue #21: base64url of ten thousand "[" made json.loads recurse until
# RecursionError, which became INTERNAL.
CRAFTED = base64.urlsafe_b64encode(b"[" * 10000).decode()
OVERSIZED = "A" * (pagination.MAX_PAGE_TOKEN_CHARS + 1)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token(data: Any) -> str:
    return _b64(json.dumps(data).encode())


def _refused(token: str, fingerprint: str = "fp") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token, fingerprint)
    error = caught.value
    assert (error.reason, error.field) == ("INVALID_PAGE_TOKEN", "page_token")
    return error


# ------------------------------------------------------------------------------ decode_token


def test_the_crafted_token_is_refused_without_recursing() -> None:
    error = _refused(CRAFTED)
    assert "malformed" in error.message
    assert CRAFTED[:40] not in error.message


@pytest.mark.parametrize(
    "data",
    [
        {"c": [[[["deep"]]]], "f": "fp"},
        {"c": [{"a": 1}], "f": "fp"},
        {"c": ["x"], "f": "fp", "g": {"h": []}},
        [[["c"]]],
    ],
    ids=["nested-list", "object-element", "nested-extra-key", "list-at-the-top"],
)
def test_nesting_beyond_the_token_shape_is_refused(data: Any) -> None:
    _refused(_token(data))


def test_a_deeply_nested_cursor_is_refused() -> None:
    _refused(_b64(b'{"c":' + b"[" * 5000 + b"]" * 5000 + b',"f":"fp"}'))


def test_brackets_and_quotes_inside_strings_are_data() -> None:
    cursor = ['[[[{{{"', "]]}}\\", '\\"[', "x"]
    token = pagination.encode_token(cursor, "fp")
    assert pagination.decode_token(token, "fp") == cursor


def test_an_oversized_token_is_refused_before_decoding() -> None:
    error = _refused(OVERSIZED)
    assert str(pagination.MAX_PAGE_TOKEN_CHARS) in error.message
    assert error.metadata["limit"] == str(pagination.MAX_PAGE_TOKEN_CHARS)
    assert "AAAAAAAAAA" not in error.message


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        "a+b/",  # standard base64, not base64url
        "A",  # not a whole byte
        _b64(b"\xff\xfe not utf-8"),
        _b64(b"not json"),
        _b64(b'{"c":["unterminated'),
        _token({"c": ["x"]}),
        _token({"f": "fp"}),
        _token({"c": "x", "f": "fp"}),
        _token({"c": ["x"], "f": 1}),
        _token({"c": ["x"], "f": "fp", "extra": 1}),
        _token({"c": [None], "f": "fp"}),
        _token({"c": [True], "f": "fp"}),
        _token({"c": [2**63], "f": "fp"}),
        _token({"c": [-(2**63) - 1], "f": "fp"}),
        _b64(b'{"c":["\\ud800"],"f":"fp"}'),  # a lone surrogate
        _b64(b'{"c":[' + b"9" * 5000 + b'],"f":"fp"}'),  # more digits than Python parses
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    error = _refused(token)
    assert error.message == pagination._MALFORMED  # never quotes the token


def test_a_token_of_another_query_is_refused() -> None:
    error = _refused(pagination.encode_token(["x"], "other"))
    assert "different query" in error.message


def test_scalars_round_trip() -> None:
    cursor = [0, -1, 2**63 - 1, -(2**63), 1.5, float("inf"), "", "é\x00\x01😀", "a" * 1000]
    assert pagination.decode_token(pagination.encode_token(cursor, "fp"), "fp") == cursor
    assert pagination.decode_token("", "fp") is None


def test_tokens_written_before_the_limits_still_decode() -> None:
    """Older servers wrote ASCII-only JSON (\\u escapes): such tokens stay valid."""
    cursor = ["é😀", 3, 0.5]
    old = (
        base64.urlsafe_b64encode(json.dumps({"c": cursor, "f": "fp"}, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )
    assert pagination.decode_token(old, "fp") == cursor


def test_decoding_stays_linear_on_hostile_input() -> None:
    """Unterminated strings and runs of escaped quotes: one pass each (a backtracking scan would
    take minutes on a token of this size)."""
    size = pagination.MAX_PAGE_TOKEN_CHARS
    hostile = [
        _b64(b'"\\"' * (size // 4))[:size],
        _b64(b'"' + b"\\\\" * (size // 3))[:size],
        _b64(b'"' * (size * 3 // 4))[:size],
        _b64(b"[" * (size * 3 // 4))[:size],
    ]
    for token in hostile:
        started = time.monotonic()
        _refused(token)
        assert time.monotonic() - started < 5.0


def test_the_longest_cursor_keel_builds_fits() -> None:
    """SearchRuns ordered by MAX_ORDER_KEYS tags of MAX_TAG_VALUE_LENGTH characters, each of the
    kind JSON writes longest (a control character: six bytes) or UTF-8 longest (four bytes)."""
    for char in ("\x01", "😀", '"'):
        cursor: list[Any] = []
        for _ in range(MAX_ORDER_KEYS):
            cursor += [0, char * MAX_TAG_VALUE_LENGTH]
        cursor.append("f" * 32)  # run_id
        token = pagination.encode_token(cursor, pagination.fingerprint("runs", ["1"], "", "", []))
        assert len(token) <= pagination.MAX_PAGE_TOKEN_CHARS
        assert pagination.decode_token(token, pagination.fingerprint("runs", ["1"], "", "", [])) == cursor


def test_a_cursor_too_long_for_a_token_is_refused_when_written() -> None:
    with pytest.raises(InvalidArgument) as caught:
        pagination.encode_token(["\x01" * pagination.MAX_PAGE_TOKEN_CHARS], "fp")
    assert caught.value.reason == "PAGE_TOKEN_TOO_LONG"
    assert caught.value.field == "order_by"


# ------------------------------------------------------------------------------ through the RPCs


class _Seeded:
    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self.channel = grpc.insecure_channel(handle.uri.removeprefix("grpc://"))
        client = keel.Client(handle.uri)
        self.experiment_id = client.create_experiment("paging-tokens")
        client.create_experiment("paging-tokens-2")
        self.run_ids = [client.create_run(self.experiment_id).info.run_id for _ in range(3)]
        for step in range(3):
            client.log_metric(self.run_ids[0], "loss", 1.0 / (step + 1), step=step)
        client.log_text(self.run_ids[0], "a", "a.txt")
        client.log_text(self.run_ids[0], "b", "b.txt")
        client.create_registered_model("paging-tokens-model")
        for run_id in self.run_ids[:2]:
            client.log_text(run_id, "a model", "model/MLmodel")
            client.create_model_version("paging-tokens-model", f"runs:/{run_id}/model", run_id=run_id)
        client.set_registered_model_alias("paging-tokens-model", "champion", 1)
        client.set_registered_model_alias("paging-tokens-model", "champion", 2)
        self.client = client


@pytest.fixture(scope="module")
def seeded(keel_server: ServerHandle) -> Iterator[_Seeded]:
    seeded = _Seeded(keel_server)
    yield seeded
    seeded.channel.close()


def _search_runs(s: _Seeded, token: str) -> Any:
    stub = tracking_pb2_grpc.TrackingServiceStub(s.channel)
    return stub.SearchRuns(
        tracking_pb2.SearchRunsRequest(experiment_ids=[s.experiment_id], page_token=token, page_size=1),
        timeout=30,
    )


def _search_experiments(s: _Seeded, token: str) -> Any:
    stub = tracking_pb2_grpc.TrackingServiceStub(s.channel)
    return stub.SearchExperiments(
        tracking_pb2.SearchExperimentsRequest(page_token=token, page_size=1), timeout=30
    )


def _metric_history(s: _Seeded, token: str) -> Any:
    stub = tracking_pb2_grpc.TrackingServiceStub(s.channel)
    request = tracking_pb2.GetMetricHistoryRequest(
        run_id=s.run_ids[0], metric_key="loss", page_token=token, page_size=1
    )
    return stub.GetMetricHistory(request, timeout=30)


def _search_versions(s: _Seeded, token: str) -> Any:
    stub = registry_pb2_grpc.ModelRegistryServiceStub(s.channel)
    return stub.SearchModelVersions(
        registry_pb2.SearchModelVersionsRequest(page_token=token, page_size=1), timeout=30
    )


def _model_history(s: _Seeded, token: str) -> Any:
    stub = registry_pb2_grpc.ModelRegistryServiceStub(s.channel)
    return stub.ListModelHistory(
        registry_pb2.ListModelHistoryRequest(name="paging-tokens-model", page_token=token, page_size=1),
        timeout=30,
    )


def _list_artifacts(s: _Seeded, token: str) -> Any:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(s.channel)
    request = artifacts_pb2.ListArtifactsRequest(
        ref=artifacts_pb2.ArtifactRef(run_id=s.run_ids[0]), page_token=token, page_size=1
    )
    return stub.ListArtifacts(request, timeout=30)


RPCS: dict[str, Callable[[_Seeded, str], Any]] = {
    "SearchRuns": _search_runs,
    "SearchExperiments": _search_experiments,
    "GetMetricHistory": _metric_history,
    "SearchModelVersions": _search_versions,
    "ListModelHistory": _model_history,
    "ListArtifacts": _list_artifacts,
}


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize("token", [CRAFTED, OVERSIZED], ids=["crafted", "oversized"])
def test_bad_tokens_are_invalid_argument_on_every_paged_rpc(seeded: _Seeded, rpc: str, token: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        RPCS[rpc](seeded, token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = from_rpc_error(caught.value)
    assert (error.reason, error.field) == ("INVALID_PAGE_TOKEN", "page_token")
    assert token[:40] not in str(caught.value.details())


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_real_tokens_page_on_every_paged_rpc(seeded: _Seeded, rpc: str) -> None:
    token, pages = "", 0
    while True:
        response = RPCS[rpc](seeded, token)
        pages += 1
        token = response.next_page_token
        if not token or pages > 20:
            break
    assert not token  # reached the end
    assert pages >= 2  # every RPC had more than one page of one item


def test_the_longest_sort_values_page_through_search_runs(seeded: _Seeded) -> None:
    """Runs ordered by MAX_ORDER_KEYS tags holding MAX_TAG_VALUE_LENGTH characters each, of the
    kind JSON writes longest: the token of the first page fits and gives the second page."""
    client = seeded.client
    experiment_id = client.create_experiment("paging-longest-values")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(2)]
    keys = [f"k{i}" for i in range(MAX_ORDER_KEYS)]
    for index, run_id in enumerate(runs):
        for key in keys:
            client.set_tag(run_id, key, chr(1 + index) * MAX_TAG_VALUE_LENGTH)
    stub = tracking_pb2_grpc.TrackingServiceStub(seeded.channel)
    order_by = [f"tags.{key} ASC" for key in keys]
    request = tracking_pb2.SearchRunsRequest(experiment_ids=[experiment_id], order_by=order_by, page_size=1)
    first = stub.SearchRuns(request, timeout=30)
    assert [r.info.run_id for r in first.runs] == runs[:1]
    assert first.next_page_token
    request.page_token = first.next_page_token
    second = stub.SearchRuns(request, timeout=30)
    assert [r.info.run_id for r in second.runs] == runs[1:]
    assert not second.next_page_token


@pytest.mark.parametrize("cursor", [[-1e18, 0.0, "x"], ["0", 0.0, "x"], [0, "v", "x"], [0, 0.0, 7], [True, 0.0, "x"], [3, 0.0, "x"]])
def test_a_forged_metric_order_cursor_is_refused_not_looped_on(seeded: _Seeded, cursor: list[Any]) -> None:
    """Tokens are not signed: a token rebuilt with another cursor but the right fingerprint must
    be refused at once (a huge float segment used to spin the server's search loop forever)."""
    stub = tracking_pb2_grpc.TrackingServiceStub(seeded.channel)
    request = tracking_pb2.SearchRunsRequest(
        experiment_ids=[seeded.experiment_id], order_by=["metrics.loss ASC"], page_size=1
    )
    real = stub.SearchRuns(request, timeout=30).next_page_token
    assert real
    data = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    forged = _token({"c": cursor, "f": data["f"]})
    request.page_token = forged
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchRuns(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(err.value).reason == "INVALID_PAGE_TOKEN"
