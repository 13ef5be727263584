"""The deployments table: what every replica should serve. Domain validation and transactions
live here; what a replica has loaded lives in ``runtime.py``.

Two sources of the same interface: ``DatabaseDeployments`` (``keel server``: rows shared by
replicas) and ``StaticDeployments`` (``keel models serve``: one deployment fixed at start-up,
no database).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

import peewee as pw

from keel_server.auth import visibility
from keel_server.common import pagination
from keel_server.common.db import Deployment, now_ms, write_transaction
from keel_server.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from keel_server.inference.resolver import check_model_uri

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
MAX_BATCH_SIZE = 4096
MAX_BATCH_DELAY_MS = 1000.0
DEFAULT_BATCH_DELAY_MS = 2.0


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 0  # 0/1 = off
    max_batch_delay_ms: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1

    @classmethod
    def checked(cls, max_batch_size: int, max_batch_delay_ms: float) -> BatchingConfig:
        if not 0 <= max_batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgument(
                f"max_batch_size must be 0 (off) .. {MAX_BATCH_SIZE}, got {max_batch_size}",
                reason="INVALID_BATCHING",
                field="max_batch_size",
            )
        if not 0 <= max_batch_delay_ms <= MAX_BATCH_DELAY_MS:
            raise InvalidArgument(
                f"max_batch_delay_ms must be 0 .. {MAX_BATCH_DELAY_MS:g}, got {max_batch_delay_ms:g}",
                reason="INVALID_BATCHING",
                field="max_batch_delay_ms",
            )
        if max_batch_size > 1 and max_batch_delay_ms == 0:
            max_batch_delay_ms = DEFAULT_BATCH_DELAY_MS
        return cls(max_batch_size, max_batch_delay_ms)


@dataclass(frozen=True)
class DeploymentRecord:
    name: str
    model_uri: str
    creation_time: int
    batching: BatchingConfig


class DeploymentSource(Protocol):
    def create(self, name: str, model_uri: str, batching: BatchingConfig) -> DeploymentRecord: ...

    def get(self, name: str) -> DeploymentRecord: ...

    def list_all(self) -> list[DeploymentRecord]: ...

    def list_page(self, page_size: int, page_token: str) -> tuple[list[DeploymentRecord], str]: ...

    def delete(self, name: str) -> None: ...


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"deployment name {name!r} is invalid: use 1..63 lowercase letters, digits and '-', starting with a letter",
            reason="INVALID_DEPLOYMENT_NAME",
            field="name",
        )


def not_found(name: str) -> NotFound:
    return NotFound(
        f"deployment {name!r} does not exist; ListDeployments shows the deployments this server has",
        reason="DEPLOYMENT_NOT_FOUND",
        metadata={"deployment": name},
    )


def _record(row: Deployment) -> DeploymentRecord:
    config = json.loads(row.config or "{}")
    return DeploymentRecord(
        name=row.name,
        model_uri=row.model_uri,
        creation_time=row.creation_time,
        batching=BatchingConfig(
            int(config.get("max_batch_size", 0)), float(config.get("max_batch_delay_ms", 0.0))
        ),
    )


class DatabaseDeployments:
    """Deployments stored in the shared database, so replicas agree on what to serve."""

    def create(self, name: str, model_uri: str, batching: BatchingConfig) -> DeploymentRecord:
        check_name(name)
        check_model_uri(model_uri)
        config = json.dumps(
            {"max_batch_size": batching.max_batch_size, "max_batch_delay_ms": batching.max_batch_delay_ms}
        )
        now = now_ms()
        try:
            with write_transaction():
                row = Deployment.create(
                    name=name, model_uri=model_uri, creation_time=now, last_updated_time=now, config=config
                )
        except pw.IntegrityError:
            raise AlreadyExists(
                f"deployment {name!r} already exists; delete it first or choose another name",
                reason="DEPLOYMENT_ALREADY_EXISTS",
                field="name",
                metadata={"deployment": name},
            ) from None
        return _record(row)

    def get(self, name: str) -> DeploymentRecord:
        row = Deployment.get_or_none(Deployment.name == name)
        if row is None:
            raise not_found(name)
        return _record(row)

    def list_all(self) -> list[DeploymentRecord]:
        return [_record(r) for r in Deployment.select().order_by(Deployment.name)]

    def list_page(self, page_size: int, page_token: str) -> tuple[list[DeploymentRecord], str]:
        size = pagination.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        fp = pagination.fingerprint("deployments")
        cursor = pagination.decode_token(page_token, fp)
        after = str(cursor[0]) if cursor else None
        # Only the deployments of models the caller can read; read on in batches so a page is
        # full whenever more visible deployments exist.
        rows: list[Deployment] = []
        while len(rows) <= size:
            query = Deployment.select().order_by(Deployment.name).limit(size + 1)
            if after is not None:
                query = query.where(Deployment.name > after)
            batch = list(query)
            rows.extend(r for r in batch if visibility.can_read_model_uri(r.model_uri))
            if len(batch) <= size:
                break
            after = batch[-1].name
        rows, token = pagination.trim(rows[: size + 1], size, lambda last: [last.name], fp)
        return [_record(r) for r in rows], token

    def delete(self, name: str) -> None:
        with write_transaction():
            deleted = Deployment.delete().where(Deployment.name == name).execute()
        if not deleted:
            raise not_found(name)


class StaticDeployments:
    """The one deployment of ``keel models serve``; it cannot be created or deleted over the API."""

    def __init__(self, record: DeploymentRecord) -> None:
        self._record = record

    def create(self, name: str, model_uri: str, batching: BatchingConfig) -> DeploymentRecord:
        raise FailedPrecondition(
            "this server (keel models serve) serves one model fixed at start-up; run keel server to manage deployments",
            reason="STATIC_DEPLOYMENTS",
        )

    def get(self, name: str) -> DeploymentRecord:
        if name != self._record.name:
            raise not_found(name)
        return self._record

    def list_all(self) -> list[DeploymentRecord]:
        return [self._record]

    def list_page(self, page_size: int, page_token: str) -> tuple[list[DeploymentRecord], str]:
        pagination.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        pagination.decode_token(page_token, pagination.fingerprint("deployments"))
        return [self._record], ""

    def delete(self, name: str) -> None:
        self.create(name, "", BatchingConfig())
