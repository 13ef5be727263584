"""The registry contract's URI table: every ``models:/`` URI gets the same answer everywhere.

Each URI goes to the SDK's parser (``keel.models.uri.parse_models_uri``, what ``load_model``
checks before any call), the server's ``ResolveModelUri``, ``CreateModelVersion`` (as the
source) and ``CreateDeployment``. All four must agree: the URI is refused (INVALID_ARGUMENT) by
all of them, or by none (a well-formed URI may still name nothing: NOT_FOUND is an answer about
the registry, not about the URI). Runs on every backend, like the rest of the contract suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from registry_helpers import make_source, unique

import keel
from keel import exceptions as kx
from keel.models.uri import parse_models_uri
from keel.shared.uris import MAX_ALIAS, MAX_MODEL_NAME, MAX_VERSION

OK, BAD = "accepted", "INVALID_ARGUMENT"

# (URI with {m} for the table's model, what every side must answer). {m} has a READY version 1
# in Production with alias "champion".
TABLE: list[tuple[str, str]] = [
    ("models:/{m}/1", OK),
    ("models:/{m}/0001", OK),  # leading zeros still name version 1
    (f"models:/{{m}}/{MAX_VERSION}", OK),  # the largest version: well formed, names nothing
    ("models:/{m}/latest", OK),
    ("models:/{m}/LATEST", OK),
    ("models:/{m}/Production", OK),
    ("models:/{m}/staging", OK),
    ("models:/{m}/None", OK),
    ("models:/{m}/archived", OK),
    ("models:/{m}@champion", OK),
    ("models:/{m}@no-such_alias", OK),
    ("models:/no-such-model/1", OK),
    ("models:/a model with spaces/1", OK),
    (f"models:/{'n' * MAX_MODEL_NAME}/1", OK),
    (f"models:/{{m}}@{'a' * MAX_ALIAS}", OK),
    # malformed: every side refuses them
    ("models:/{m}/1/", BAD),  # the registry's own parser used to accept a trailing '/'
    ("models:/{m}@a.b", BAD),  # ... and any character in an alias
    ("models:/{m}@a/b", BAD),
    ("models:/{m}@", BAD),
    ("models:/@champion", BAD),
    ("models:/{m}@latest", BAD),  # reserved: names versions, never an alias
    ("models:/{m}@V7", BAD),
    (f"models:/{{m}}@{'a' * (MAX_ALIAS + 1)}", BAD),
    (f"models:/{'n' * (MAX_MODEL_NAME + 1)}/1", BAD),
    ("models:/", BAD),
    ("models:", BAD),
    ("models:{m}/1", BAD),
    ("models://host/{m}/1", BAD),
    ("Models:/{m}/1", BAD),
    ("models:/{m}", BAD),
    ("models:/{m}/", BAD),
    ("models:/{m}/1/2", BAD),
    ("models:/{m}/0", BAD),
    ("models:/{m}/-1", BAD),
    (f"models:/{{m}}/{MAX_VERSION + 1}", BAD),
    ("models:/{m}/" + "9" * 5000, BAD),
    ("models:/{m}/\u00b2", BAD),
    ("models:/{m}/Prod", BAD),
    ("models:/{m}/1 ", BAD),
]


@dataclass
class World:
    client: keel.Client
    model: str


@pytest.fixture(scope="module")
def world(keel_server) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """A registered model with a READY version 1 in Production and the alias "champion"."""
    client = keel.Client(keel_server.uri)
    model = unique("agree")
    client.create_registered_model(model)
    source = make_source(client)
    client.create_model_version(model, source.uri, run_id=source.run_id)
    client.transition_model_version_stage(model, 1, "Production")
    client.set_registered_model_alias(model, "champion", 1)
    yield World(client, model)
    client.delete_registered_model(model)


def _answer(call: Callable[[], object]) -> str:
    """OK, or INVALID_ARGUMENT with the reason: the only failure that says the URI is malformed."""
    try:
        call()
    except kx.InvalidArgument as exc:
        return f"{BAD} ({exc.reason}: {exc.message[:300]})"
    except kx.KeelError:
        return OK  # NOT_FOUND, FAILED_PRECONDITION: the URI was read, and named nothing usable
    return OK


def _deploy(client: keel.Client, uri: str) -> None:
    name = unique("agree-dep")
    client.create_deployment(name, uri, wait_ready=False)
    client.delete_deployment(name)


@pytest.mark.parametrize(("template", "expected"), TABLE, ids=[t[:60] for t, _ in TABLE])
def test_every_side_accepts_exactly_the_same_models_uris(world: World, template: str, expected: str) -> None:
    uri = template.replace("{m}", world.model)
    client = world.client
    answers = {
        "SDK parse_models_uri": _answer(lambda: parse_models_uri(uri)),
        "ResolveModelUri": _answer(lambda: client.resolve_model_uri(uri)),
        "CreateModelVersion source": _answer(lambda: client.create_model_version(world.model, uri)),
        "CreateDeployment": _answer(lambda: _deploy(client, uri)),
    }
    verdicts = {side: answer.split(" (")[0] for side, answer in answers.items()}
    assert set(verdicts.values()) == {expected}, f"{uri[:120]!r}: {answers}"


def test_the_sdk_and_the_server_refuse_a_uri_for_the_same_reason(world: World) -> None:
    """One grammar: the same reason, field and message on both sides."""
    uri = f"models:/{world.model}@a.b"
    with pytest.raises(kx.InvalidArgument) as sdk:
        parse_models_uri(uri)
    with pytest.raises(kx.InvalidArgument) as server:
        world.client.resolve_model_uri(uri)
    assert sdk.value.reason == server.value.reason == "INVALID_MODEL_URI"
    assert server.value.field == "model_uri"
    assert sdk.value.message == server.value.message
    assert "the alias 'a.b' may only hold letters, digits, '_' and '-'" in server.value.message
