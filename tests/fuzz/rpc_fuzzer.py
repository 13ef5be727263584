"""A descriptor-driven gRPC fuzzer for every keel service (issue #20).

Every RPC is found by walking the generated proto descriptors, so a new RPC (or a new field) is
fuzzed without a code change here. Requests are built by walking the request's message
descriptor: each field gets a random value of its type, often a hostile one (empty, ~1 MB,
unicode, NUL, negative, int64 extremes, NaN/inf, thousands of repeated items, nested messages,
unknown enum numbers), sometimes an id of real data seeded first (so calls get past NOT_FOUND),
and sometimes the serialised bytes are corrupted (invalid UTF-8 in a string, a truncated
message, random bytes). Calls go through generic channel methods with the right stream kind.

The KServe v2 stubs (package ``inference``) are imported here, in the test process only: never
together with tritonclient (both register the same proto symbols).
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory, text_format
from google.protobuf.message import Message

SERVICE_MODULES = (
    "keel.tracking.v1.tracking_pb2",
    "keel.registry.v1.registry_pb2",
    "keel.artifacts.v1.artifacts_pb2",
    "keel.inference.v1.inference_pb2",
    "keel.discovery.v1.discovery_pb2",
)
# KServe v2 comes from the inference server's private descriptor pool: importing its generated
# module would put 'inference.*' in protobuf's default pool, where tritonclient (used by other
# tests in the same process) registers the same symbols.

# Status codes a keel server documents; anything else (UNKNOWN, INTERNAL, DEADLINE_EXCEEDED,
# CANCELLED from the server, UNIMPLEMENTED) fails the fuzz test.
ALLOWED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
    }
)
TRACEBACK_MARKERS = ("Traceback", 'File "')

FD = _descriptor.FieldDescriptor
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1
MB = 1024 * 1024


@dataclass(frozen=True)
class Rpc:
    """One RPC of one service, with everything needed to call it generically."""

    path: str  # "/pkg.Service/Method"
    method: _descriptor.MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def kind(self) -> str:
        cs, ss = self.method.client_streaming, self.method.server_streaming
        return {(False, False): "unary_unary", (True, False): "stream_unary",
                (False, True): "unary_stream", (True, True): "stream_stream"}[(cs, ss)]  # fmt: skip


def all_rpcs() -> list[Rpc]:
    """Every RPC of every service in :data:`SERVICE_MODULES` and of KServe v2, in declaration order."""
    from keel_server.inference import kserve

    services = [
        service
        for name in SERVICE_MODULES
        for service in importlib.import_module(name).DESCRIPTOR.services_by_name.values()
    ]
    services.append(kserve.private_pool().FindServiceByName(kserve.SERVICE))
    rpcs: list[Rpc] = []
    for service in services:
        for method in service.methods:
            rpcs.append(
                Rpc(
                    path=f"/{service.full_name}/{method.name}",
                    method=method,
                    request_class=message_factory.GetMessageClass(method.input_type),
                    response_class=message_factory.GetMessageClass(method.output_type),
                )
            )
    return rpcs


# ------------------------------------------------------------------------------ values

HOSTILE_STRINGS = (
    "",
    " ",
    "a",
    "0",
    "-1",
    "null",
    "None",
    "\x00",
    "a\x00b",
    "é漢字🙂",
    "\u202e\u200b\ufeff",
    "\ud7ff\ue000\U0010ffff",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "a/../../b",
    "C:\\windows\\system32",
    "%s%n%x",
    "'; DROP TABLE runs; --",
    "\" OR 1=1 --",
    "metrics.rmse < 0.8 and params.model = 'cnn'",
    "name = 'x' OR (tags.a LIKE '%' AND NOT run_id IN ('a', 'b'))",
    "((((((((((((((((((((((((((((((((((((x = 1))))))))))))))))))))))))))))))))))",
    "metrics.x = 99999999999999999999999999",
    "metrics.rmse DESC",
    "attributes.start_time ASC",
    "runs:/",
    "runs://x",
    "models:/",
    "models:/x/1",
    "models:/x/latest",
    "models:/x/Production",
    "models:/x@champion",
    "models:/x/-1",
    "models:/x/99999999999999999999",
    "file:///etc/passwd",
    "file://../../x",
    "s3://",
    "s3://bucket/../x",
    "http://127.0.0.1:1/x",
    "mlflow-artifacts:/x",
    "Production",
    "Staging",
    "Archived",
    "FINISHED",
    "RUNNING",
    "ACTIVE",
    "DELETED",
    "latest",
    "champion",
    "1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e309",
    "nan",
    "FP32",
    "INT64",
    "BYTES",
    "BOOL",
    "FP16",
    "x" * 300,
    "\n\r\t",
)


@dataclass
class Corpus:
    """Real values seeded before fuzzing, keyed by what a field name hints at."""

    values: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, kind: str, *values: Any) -> None:
        self.values.setdefault(kind, []).extend(v for v in values if v not in self.values.get(kind, []))

    def for_field(self, name: str) -> list[Any]:
        """Real values whose kind a field name mentions (``run_id``, ``experiment_ids``,
        ``model_uri``, ``name``, ``version``, ``alias``, ``path`` ...)."""
        out: list[Any] = []
        n = name.lower()
        for kind, values in self.values.items():
            if kind in n:
                out.extend(values)
        return out


class RequestGenerator:
    """Random, often hostile, requests for a message descriptor."""

    def __init__(self, rng: random.Random, corpus: Corpus, max_depth: int = 4, budget: int = 6 * MB) -> None:
        self.rng = rng
        self.corpus = corpus
        self.max_depth = max_depth
        self.max_budget = budget
        self.budget = budget  # bytes a request may still grow by with hostile sizes
        self.hostile = 1.0  # chance that one value is hostile (request() lowers it for "plausible" requests)

    def _mild(self) -> bool:
        return self.rng.random() >= self.hostile

    def _spend(self, n: int) -> bool:
        if n > self.budget:
            return False
        self.budget -= n
        return True

    # -- scalars
    def string(self, name: str) -> str:
        r = self.rng.random()
        real = self.corpus.for_field(name)
        if self._mild():
            if "token" in name.lower():
                return ""
            return str(self.rng.choice(real)) if real and r < 0.8 else self.rng.choice(["a", "fuzz", "x1", "b.c", "1"])
        if real and r < 0.45:
            value = str(self.rng.choice(real))
            if self.rng.random() < 0.15:  # near-miss of a real id
                value = self.rng.choice([value + "x", value.upper(), value[:-1], value + "/..", " " + value])
            return value
        if r < 0.5:
            n = self.rng.choice([MB, MB + 1, 64 * 1024 + 1, 4 * MB - 64])
            if self._spend(n):
                return "x" * n
            return "x" * 1025
        if r < 0.6:
            alphabet = "ab/._-:@%'\"`()=<>!\\ \x00é漢🙂\u2028"
            return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 40)))
        return self.rng.choice(HOSTILE_STRINGS)

    def bytes_(self, name: str) -> bytes:
        r = self.rng.random()
        if r < 0.2:
            return b""
        if r < 0.3:
            n = self.rng.choice([MB, 2 * MB])
            return b"\x00" * (n if self._spend(n) else 1025)
        if r < 0.5:
            return self.rng.choice([b"\xff\xfe\xfd", b"not a tensor", b"\x00\x00\x80\x7f", b'{"a": 1}', b"PK\x03\x04"])
        return self.rng.randbytes(self.rng.randint(1, 256))

    def integer(self, fd: FD, name: str) -> int:
        real = [v for v in self.corpus.for_field(name) if isinstance(v, int) or (isinstance(v, str) and v.isdigit())]
        if real and self.rng.random() < 0.4:
            return int(self.rng.choice(real))
        if self._mild():
            return self.rng.choice([0, 1, 2, 3, 10])
        unsigned = fd.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
        wide = fd.type in (FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64)
        if unsigned:
            hi = UINT64_MAX if wide else UINT32_MAX
            return self.rng.choice([0, 1, 2, 7, 100, 1000, hi, hi - 1, 2**31, 2**53 + 1, self.rng.randint(0, hi)])
        lo, hi = (INT64_MIN, INT64_MAX) if wide else (INT32_MIN, INT32_MAX)
        return self.rng.choice([0, 1, -1, 2, 7, 100, 1001, -1000, lo, hi, lo + 1, hi - 1, 2**31, -(2**31),
                                2**53 + 1, self.rng.randint(lo, hi)]) if wide else self.rng.choice(
            [0, 1, -1, 2, 100, lo, hi, self.rng.randint(lo, hi)])  # fmt: skip

    def floating(self) -> float:
        if self._mild():
            return self.rng.choice([0.0, 0.5, 1.0, 2.5, 100.0])
        return self.rng.choice(
            [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 3.4028235e38,
             1e39, 2.0**63, self.rng.uniform(-1e6, 1e6)]
        )  # fmt: skip

    def scalar(self, fd: FD) -> Any:
        t = fd.type
        if t == FD.TYPE_STRING:
            return self.string(fd.name)
        if t == FD.TYPE_BYTES:
            return self.bytes_(fd.name)
        if t == FD.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            v = self.floating()
            if t == FD.TYPE_FLOAT and math.isfinite(v) and abs(v) > 3.4028235e38:
                v = math.copysign(math.inf, v)
            return v
        if t == FD.TYPE_ENUM:
            numbers = [v.number for v in fd.enum_type.values]
            if not self._mild() and self.rng.random() < 0.25 and not _closed_enum(fd):
                return self.rng.choice([-1, max(numbers) + 1, 999, INT32_MAX, INT32_MIN])
            return self.rng.choice(numbers)
        return self.integer(fd, fd.name)

    # -- messages
    def message(self, desc: _descriptor.Descriptor, depth: int = 0) -> Message:
        msg = message_factory.GetMessageClass(desc)()
        if depth > self.max_depth:
            return msg
        fill = 0.95 if self.hostile < 1.0 else 0.85 if depth == 0 else 0.6
        chosen_oneof: dict[str, str] = {}
        for oneof in desc.oneofs:
            if oneof.fields and self.rng.random() < 0.8:
                chosen_oneof[oneof.name] = self.rng.choice(oneof.fields).name
        for fd in desc.fields:
            oneof = fd.containing_oneof
            if oneof is not None and not _synthetic(oneof):
                if chosen_oneof.get(oneof.name) != fd.name:
                    continue
            elif self.rng.random() > fill:
                continue
            try:
                self._set_field(msg, fd, depth)
            except (ValueError, TypeError, OverflowError):
                pass  # a value the client library itself refuses (never reaches the server)
        return msg

    def _count(self) -> int:
        r = self.rng.random()
        if self._mild():
            return self.rng.randint(1, 3)
        if r < 0.1:
            return 0
        if r < 0.85:
            return self.rng.randint(1, 4)
        if r < 0.95:
            return self.rng.choice([50, 101, 1001])
        return self.rng.choice([5000, 20000])

    def _set_field(self, msg: Message, fd: FD, depth: int) -> None:
        target = getattr(msg, fd.name)
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            val_fd = fd.message_type.fields_by_name["value"]
            n = self._count()
            if n > 4:
                n = min(n, 2000, self.budget // 256)
                self._spend(n * 256)
            for _ in range(n):
                key = self.scalar(key_fd)
                if isinstance(key, str) and len(key) > 1024 and self.rng.random() < 0.9:
                    key = key[:64]
                if val_fd.type == FD.TYPE_MESSAGE:
                    target[key].CopyFrom(self.message(val_fd.message_type, depth + 1))
                else:
                    target[key] = self.scalar(val_fd)
            return
        repeated = fd.is_repeated
        if fd.type == FD.TYPE_MESSAGE:
            if repeated:
                n = self._count()
                if n > 200:  # large repeated messages: copies of one, cheap to build, within budget
                    one = self.message(fd.message_type, depth + 1)
                    n = min(n, self.budget // max(16, one.ByteSize()))
                    self._spend(n * max(16, one.ByteSize()))
                    for _ in range(n):
                        target.add().CopyFrom(one)
                else:
                    for _ in range(n):
                        target.add().CopyFrom(self.message(fd.message_type, depth + 1))
            else:
                target.CopyFrom(self.message(fd.message_type, depth + 1))
            return
        if repeated:
            n = self._count()
            if n > 200:
                big = [self.scalar(fd) for _ in range(8)]
                big = [v[:32] if isinstance(v, (str, bytes)) else v for v in big]
                n = min(n, self.budget // 40)
                self._spend(n * 40)
                target.extend(big[i % len(big)] for i in range(n))
            else:
                values = [self.scalar(fd) for _ in range(n)]
                # keep a repeated field's total under ~4 MB (the server's message limit is higher;
                # the point is hostile values, not the transport limit)
                if sum(len(v) for v in values if isinstance(v, (str, bytes))) > 3 * MB:
                    values = [v[:1024] if isinstance(v, (str, bytes)) else v for v in values]
                target.extend(values)
            return
        setattr(msg, fd.name, self.scalar(fd))

    # -- whole request, possibly corrupted on the wire
    def request(self, rpc: Rpc, desc: _descriptor.Descriptor | None = None) -> tuple[Message, bytes, str]:
        """A request message, its wire bytes and a note on how the bytes were mangled ("" if not)."""
        desc = desc or rpc.method.input_type
        self.budget = self.max_budget
        # 40%: a plausible request (real ids, ordinary values) with a few hostile values in it,
        # which gets past validation into the stores; otherwise hostile throughout.
        self.hostile = 0.08 if self.rng.random() < 0.4 else 1.0
        msg = self.message(desc)
        data = msg.SerializeToString()
        r = self.rng.random()
        if self.hostile < 1.0:
            r = 1.0  # plausible requests stay well-formed on the wire
        if r < 0.08:
            bad = _with_invalid_utf8(msg, desc, self.rng)
            if bad is not None:
                return msg, bad, "invalid UTF-8 in a string field"
        elif r < 0.11 and len(data) > 1:
            return msg, data[: self.rng.randint(1, len(data) - 1)], "truncated"
        elif r < 0.13:
            return msg, self.rng.randbytes(self.rng.randint(1, 64)), "random bytes"
        return msg, data, ""


def _synthetic(oneof: _descriptor.OneofDescriptor) -> bool:
    """proto3 ``optional`` fields live in a synthetic one-field oneof named ``_<field>``."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _closed_enum(fd: FD) -> bool:
    closed = getattr(fd.enum_type, "is_closed", None)
    return bool(closed) if closed is not None else fd.file.syntax == "proto2"


_PLACEHOLDER = "\x01QZJ\x01"


def _with_invalid_utf8(msg: Message, desc: _descriptor.Descriptor, rng: random.Random) -> bytes | None:
    """``msg`` with one top-level singular string field holding bytes that are not UTF-8."""
    fields = [f for f in desc.fields if f.type == FD.TYPE_STRING and not f.is_repeated]
    if not fields:
        return None
    copy = type(msg)()
    copy.CopyFrom(msg)
    setattr(copy, rng.choice(fields).name, _PLACEHOLDER)
    data = copy.SerializeToString()
    if data.count(_PLACEHOLDER.encode()) != 1:
        return None
    return data.replace(_PLACEHOLDER.encode(), rng.choice([b"\xff\xfe\xfd\xfc\xfb", b"\xc0\x80QZJ\x01", b"\xed\xa0\x80ab"]))


# ------------------------------------------------------------------------------ calls


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: int = 0


def _identity(b: bytes) -> bytes:
    return b


def call(channel: grpc.Channel, rpc: Rpc, payloads: Sequence[bytes], timeout: float, max_responses: int = 20) -> Outcome:
    """Sends ``payloads`` (already serialised) with the RPC's stream kind; the status it ends with.

    Server-streaming replies are consumed up to ``max_responses`` messages, then the call is
    cancelled on the client side (counted as OK)."""
    kind = rpc.kind
    method: Callable[..., Any] = getattr(channel, kind)(rpc.path, request_serializer=_identity, response_deserializer=None)
    try:
        if kind == "unary_unary":
            method(payloads[0], timeout=timeout)
            return Outcome(grpc.StatusCode.OK, "", 1)
        if kind == "stream_unary":
            method(iter(payloads), timeout=timeout)
            return Outcome(grpc.StatusCode.OK, "", 1)
        it = method(payloads[0], timeout=timeout) if kind == "unary_stream" else method(iter(payloads), timeout=timeout)
        n = 0
        for _ in it:
            n += 1
            if n >= max_responses:
                it.cancel()
                return Outcome(grpc.StatusCode.OK, "", n)
        return Outcome(grpc.StatusCode.OK, "", n)
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else str(err)) or ""
        return Outcome(code, details)


def problems(outcome: Outcome) -> list[str]:
    """What is wrong with an outcome (empty when it is a documented one)."""
    out = []
    if outcome.code not in ALLOWED_CODES:
        out.append(f"status {outcome.code.name} is not a documented outcome")
    if any(m in outcome.details for m in TRACEBACK_MARKERS):
        out.append("the error message carries a traceback")
    return out


def _first_field_number(msg: Message) -> int:
    fields = msg.ListFields()
    return min((fd.number for fd, _ in fields), default=0)


def describe_request(messages: Sequence[Message], note: str, limit: int = 2000) -> str:
    parts = []
    for m in messages:
        text = text_format.MessageToString(m, as_utf8=True)
        if len(text) > limit:
            text = text[:limit] + f"... ({len(text):,} characters)"
        parts.append(f"{type(m).DESCRIPTOR.name} {{{text}}}")
    return ("[" + note + "] " if note else "") + " | ".join(parts)


def iter_payloads(gen: RequestGenerator, rpc: Rpc) -> Iterator[tuple[list[Message], list[bytes], str]]:
    """Endless requests for ``rpc``: one message for unary requests, 1..4 for client streams."""
    while True:
        if rpc.method.client_streaming:
            n = gen.rng.randint(0, 4) if gen.rng.random() < 0.2 else gen.rng.randint(1, 4)
            msgs, datas, notes = [], [], []
            for _ in range(n):
                m, d, note = gen.request(rpc)
                msgs.append(m)
                datas.append(d)
                if note:
                    notes.append(note)
            if gen.rng.random() < 0.5:  # in field order: header first, then chunks, then the trailer
                order = sorted(range(len(msgs)), key=lambda i: _first_field_number(msgs[i]))
                msgs, datas = [msgs[i] for i in order], [datas[i] for i in order]
            yield msgs, datas, "; ".join(notes)
        else:
            m, d, note = gen.request(rpc)
            yield [m], [d], note


# ------------------------------------------------------------------------------ seeds

FIXED_SEED = 20  # issue #20: the same requests on every CI run ...


def _run_seed() -> int:
    import os

    env = os.environ.get("KEEL_FUZZ_SEED", "").strip()
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


RUN_SEED = _run_seed()
STATS: dict[str, dict[str, int]] = {}  # RPC path -> status name -> calls (KEEL_FUZZ_STATS=1 prints it)  # ... plus fresh ones each run (printed; KEEL_FUZZ_SEED replays them)


def rng_for(seed: int, rpc: Rpc) -> random.Random:
    """One generator per (seed, RPC): replaying one RPC needs neither the others nor their order."""
    return random.Random(f"{seed}:{rpc.path}")
