"""The one table that says, for every RPC keel serves, what it touches and which level it needs.

The interceptor looks a call up here before the handler runs: no entry, no call (a test walks
every service descriptor and fails on an RPC without one). Each ``Need`` names a request field
and how to find the experiment or registered model behind it; ``guard.Guard`` resolves it and
compares levels. Resources that do not exist get the default permission, exactly like ones the
caller has no grant on, so a refused caller cannot tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel_server.auth.store import EDIT, MANAGE, READ, USE

# How a Need finds its resource from the request field it names.
EXPERIMENT = "experiment"  # an experiment id
EXPERIMENT_NAME = "experiment_name"  # an experiment name
RUN = "run"  # a run id
RUNS = "runs"  # a repeated field of run ids
LOGGED_MODEL = "logged_model"  # a logged model id (m-...): the experiment it belongs to
MODEL = "model"  # a registered model name
MODEL_URI = "model_uri"  # models:/... or runs:/...
ARTIFACT_REF = "artifact_ref"  # a keel.artifacts.v1.ArtifactRef (run id or artifact URI)
ARTIFACT_URI = "artifact_uri"  # runs:/..., or a store URI (a run's artifacts or a registry snapshot)
DEPLOYMENT = "deployment"  # a deployment name (its model URI decides)
GRANT_RESOURCE = "grant_resource"  # a keel.auth.v1.Resource
TRANSITION_REQUEST = "transition_request"  # a transition request id: the model it is about
# A transition request id: nothing to check for its requester, its model for anyone else.
TRANSITION_REQUEST_OF_OTHERS = "transition_request_of_others"
# These two resolve to nothing to check for the caller itself, and to an administrators-only
# scope otherwise (their level is then never reached by a non-admin).
SELF_OR_ADMIN = "self_or_admin"  # a user name: the caller itself, or any for an admin
TOKEN_OWNER = "token_owner"  # a token id: its owner, or an admin


@dataclass(frozen=True)
class Need:
    kind: str
    field: str
    level: int = READ


@dataclass(frozen=True)
class Rule:
    """What a call needs. ``needs`` are all required; ``admin`` means administrators only;
    ``public`` means no credentials at all (health checks, reflection). ``mutates`` marks the
    calls the audit log records. ``filtered``: a search or list whose results the store narrows
    to what the caller can read (``visibility.py``). ``create``: a creation that needs no level
    (any authenticated identity) and gives its creator MANAGE."""

    needs: tuple[Need, ...] = ()
    mutates: bool = False
    admin: bool = False
    public: bool = False
    filtered: bool = False
    create: bool = False
    # For streaming requests: check every message (PredictStream names a deployment in each)
    # instead of the first only (an upload's header).
    each_message: bool = False
    # The audit log's resource type for this call (default: the first need's kind).
    resource_type: str = ""
    # The request field naming the resource for the audit log when no need names it.
    resource_field: str = ""


def _r(*needs: Need, **flags: object) -> Rule:
    return Rule(needs=needs, **flags)  # type: ignore[arg-type]


def _w(*needs: Need, **flags: object) -> Rule:
    return Rule(needs=needs, mutates=True, **flags)  # type: ignore[arg-type]


AUTHENTICATED = Rule()
TRACKING = "/keel.tracking.v1.TrackingService/"
REGISTRY = "/keel.registry.v1.ModelRegistryService/"
ARTIFACTS = "/keel.artifacts.v1.ArtifactService/"
INFERENCE = "/keel.inference.v1.InferenceService/"
KSERVE = "/inference.GRPCInferenceService/"
AUTH = "/keel.auth.v1.AuthService/"
AUDIT = "/keel.audit.v1.AuditService/"
DISCOVERY = "/keel.discovery.v1.DiscoveryService/"

# Services no one needs credentials for (probes and tooling must work before any token exists).
PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")

POLICY: dict[str, Rule] = {
    # ---------------------------------------------------------------- tracking
    TRACKING + "CreateExperiment": _w(create=True, resource_type="experiment", resource_field="name"),
    TRACKING + "GetExperiment": _r(Need(EXPERIMENT, "experiment_id", READ)),
    TRACKING + "GetExperimentByName": _r(Need(EXPERIMENT_NAME, "name", READ)),
    # Creates when absent (creator gets MANAGE); an existing experiment needs READ.
    TRACKING + "GetOrCreateExperiment": _w(Need(EXPERIMENT_NAME, "name", READ), create=True),
    TRACKING + "SearchExperiments": _r(filtered=True),
    TRACKING + "UpdateExperiment": _w(Need(EXPERIMENT, "experiment_id", EDIT)),
    TRACKING + "DeleteExperiment": _w(Need(EXPERIMENT, "experiment_id", MANAGE)),
    TRACKING + "RestoreExperiment": _w(Need(EXPERIMENT, "experiment_id", MANAGE)),
    TRACKING + "SetExperimentTag": _w(Need(EXPERIMENT, "experiment_id", EDIT)),
    TRACKING + "DeleteExperimentTag": _w(Need(EXPERIMENT, "experiment_id", EDIT)),
    TRACKING + "CreateRun": _w(Need(EXPERIMENT, "experiment_id", EDIT), resource_type="run"),
    TRACKING + "GetRun": _r(Need(RUN, "run_id", READ)),
    TRACKING + "UpdateRun": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "DeleteRun": _w(Need(RUN, "run_id", MANAGE)),
    TRACKING + "RestoreRun": _w(Need(RUN, "run_id", MANAGE)),
    TRACKING + "LogParam": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "LogMetric": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "SetTag": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "DeleteTag": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "LogBatch": _w(Need(RUN, "run_id", EDIT)),
    TRACKING + "GetMetricHistory": _r(Need(RUN, "run_id", READ)),
    TRACKING + "GetMetricHistoryBulk": _r(Need(RUNS, "run_ids", READ)),
    TRACKING + "GetMetricRanges": _r(Need(RUNS, "run_ids", READ)),
    # Narrowed in the store to the experiments the caller may read (as SearchRuns).
    TRACKING + "ListRunDataKeys": _r(filtered=True),
    TRACKING + "SearchRuns": _r(filtered=True),
    # Logged models: scoped by their experiment (creating one from a run writes to that run).
    TRACKING + "CreateLoggedModel": _w(
        Need(EXPERIMENT, "experiment_id", EDIT), Need(RUN, "source_run_id", EDIT), resource_type="logged_model"
    ),
    TRACKING + "GetLoggedModel": _r(Need(LOGGED_MODEL, "model_id", READ)),
    TRACKING + "UpdateLoggedModel": _w(Need(LOGGED_MODEL, "model_id", EDIT)),
    TRACKING + "DeleteLoggedModel": _w(Need(LOGGED_MODEL, "model_id", MANAGE)),
    TRACKING + "SearchLoggedModels": _r(filtered=True),
    TRACKING + "SetLoggedModelTags": _w(Need(LOGGED_MODEL, "model_id", EDIT)),
    TRACKING + "DeleteLoggedModelTag": _w(Need(LOGGED_MODEL, "model_id", EDIT)),
    TRACKING + "LogLoggedModelParams": _w(Need(LOGGED_MODEL, "model_id", EDIT)),
    # ---------------------------------------------------------------- registry
    REGISTRY + "CreateRegisteredModel": _w(create=True, resource_type="model", resource_field="name"),
    REGISTRY + "GetRegisteredModel": _r(Need(MODEL, "name", READ)),
    REGISTRY + "UpdateRegisteredModel": _w(Need(MODEL, "name", EDIT)),
    REGISTRY + "RenameRegisteredModel": _w(Need(MODEL, "name", MANAGE)),
    REGISTRY + "DeleteRegisteredModel": _w(Need(MODEL, "name", MANAGE)),
    REGISTRY + "SearchRegisteredModels": _r(filtered=True),
    REGISTRY + "SetRegisteredModelTag": _w(Need(MODEL, "name", EDIT)),
    REGISTRY + "DeleteRegisteredModelTag": _w(Need(MODEL, "name", EDIT)),
    # Registering reads the source: READ on the run (or model, or snapshot) it names.
    REGISTRY + "CreateModelVersion": _w(
        Need(MODEL, "name", EDIT), Need(ARTIFACT_URI, "source", READ), Need(RUN, "run_id", READ),
        resource_type="model_version",
    ),
    REGISTRY + "GetModelVersion": _r(Need(MODEL, "name", READ)),
    REGISTRY + "UpdateModelVersion": _w(Need(MODEL, "name", EDIT), resource_type="model_version"),
    REGISTRY + "DeleteModelVersion": _w(Need(MODEL, "name", MANAGE), resource_type="model_version"),
    REGISTRY + "SetModelVersionTag": _w(Need(MODEL, "name", EDIT), resource_type="model_version"),
    REGISTRY + "DeleteModelVersionTag": _w(Need(MODEL, "name", EDIT), resource_type="model_version"),
    REGISTRY + "SearchModelVersions": _r(filtered=True),
    REGISTRY + "GetModelVersionDownloadUri": _r(Need(MODEL, "name", READ)),
    # Every stage move (Production included) is MANAGE.
    REGISTRY + "TransitionModelVersionStage": _w(Need(MODEL, "name", MANAGE), resource_type="model_version"),
    REGISTRY + "GetLatestVersions": _r(Need(MODEL, "name", READ)),
    REGISTRY + "SetRegisteredModelAlias": _w(Need(MODEL, "name", MANAGE), resource_type="model_alias"),
    REGISTRY + "DeleteRegisteredModelAlias": _w(Need(MODEL, "name", MANAGE), resource_type="model_alias"),
    REGISTRY + "GetModelVersionByAlias": _r(Need(MODEL, "name", READ)),
    REGISTRY + "ListModelHistory": _r(Need(MODEL, "name", READ)),
    REGISTRY + "ResolveModelUri": _r(Need(MODEL_URI, "model_uri", READ)),
    # Review and approval: asking is EDIT, deciding MANAGE (the store refuses self-approval);
    # the requester may withdraw its own request, anyone else needs MANAGE.
    REGISTRY + "SetRegisteredModelPolicy": _w(Need(MODEL, "name", MANAGE)),
    REGISTRY + "CreateTransitionRequest": _w(Need(MODEL, "name", EDIT), resource_type="model_version"),
    REGISTRY + "ListTransitionRequests": _r(Need(MODEL, "name", READ)),
    REGISTRY + "ApproveTransitionRequest": _w(Need(TRANSITION_REQUEST, "id", MANAGE), resource_type="model_version"),
    REGISTRY + "RejectTransitionRequest": _w(Need(TRANSITION_REQUEST, "id", MANAGE), resource_type="model_version"),
    REGISTRY + "CancelTransitionRequest": _w(
        Need(TRANSITION_REQUEST, "id", READ), Need(TRANSITION_REQUEST_OF_OTHERS, "id", MANAGE),
        resource_type="model_version",
    ),
    # ---------------------------------------------------------------- artifacts
    ARTIFACTS + "UploadArtifact": _w(Need(ARTIFACT_REF, "header.ref", EDIT), resource_type="artifact"),
    ARTIFACTS + "DownloadArtifact": _r(Need(ARTIFACT_REF, "ref", READ)),
    ARTIFACTS + "ListArtifacts": _r(Need(ARTIFACT_REF, "ref", READ)),
    ARTIFACTS + "StatArtifact": _r(Need(ARTIFACT_REF, "ref", READ)),
    ARTIFACTS + "DeleteArtifact": _w(Need(ARTIFACT_REF, "ref", MANAGE), resource_type="artifact"),
    # A presigned GET needs READ, a PUT EDIT (guard.Guard checks the method field).
    ARTIFACTS + "CreatePresignedUrl": _r(Need(ARTIFACT_REF, "ref", READ)),
    ARTIFACTS + "ResolveArtifactUri": _r(Need(ARTIFACT_URI, "uri", READ)),
    ARTIFACTS + "CopyArtifacts": _w(
        Need(ARTIFACT_REF, "source", READ), Need(ARTIFACT_REF, "destination", EDIT), resource_type="artifact"
    ),
    # ---------------------------------------------------------------- inference
    INFERENCE + "CreateDeployment": _w(Need(MODEL_URI, "model_uri", USE), resource_type="deployment"),
    INFERENCE + "GetDeployment": _r(Need(DEPLOYMENT, "name", READ)),
    INFERENCE + "ListDeployments": _r(filtered=True),
    INFERENCE + "DeleteDeployment": _w(Need(DEPLOYMENT, "name", MANAGE)),
    INFERENCE + "Predict": _r(Need(DEPLOYMENT, "deployment", USE)),
    INFERENCE + "PredictStream": _r(Need(DEPLOYMENT, "deployment", USE), each_message=True),
    KSERVE + "ServerLive": AUTHENTICATED,
    KSERVE + "ServerReady": AUTHENTICATED,
    KSERVE + "ServerMetadata": AUTHENTICATED,
    KSERVE + "ModelReady": _r(Need(DEPLOYMENT, "name", READ)),
    KSERVE + "ModelMetadata": _r(Need(DEPLOYMENT, "name", READ)),
    KSERVE + "ModelInfer": _r(Need(DEPLOYMENT, "model_name", USE)),
    # ---------------------------------------------------------------- discovery
    DISCOVERY + "GetServiceAddresses": AUTHENTICATED,
    # ---------------------------------------------------------------- auth
    AUTH + "WhoAmI": AUTHENTICATED,
    AUTH + "CreateUser": _w(admin=True, resource_type="user", resource_field="name"),
    AUTH + "ListUsers": _r(admin=True),
    AUTH + "DisableUser": _w(admin=True, resource_type="user", resource_field="name"),
    AUTH + "CreateGroup": _w(admin=True, resource_type="group", resource_field="name"),
    AUTH + "AddGroupMember": _w(admin=True, resource_type="group", resource_field="group"),
    AUTH + "RemoveGroupMember": _w(admin=True, resource_type="group", resource_field="group"),
    AUTH + "ListGroups": _r(admin=True),
    AUTH + "CreateToken": _w(Need(SELF_OR_ADMIN, "user", MANAGE), resource_type="token"),
    AUTH + "ListTokens": _r(Need(SELF_OR_ADMIN, "user", MANAGE)),
    AUTH + "RevokeToken": _w(Need(TOKEN_OWNER, "id", MANAGE), resource_type="token"),
    AUTH + "GrantPermission": _w(Need(GRANT_RESOURCE, "resource", MANAGE), resource_type="permission"),
    AUTH + "RevokePermission": _w(Need(GRANT_RESOURCE, "resource", MANAGE), resource_type="permission"),
    AUTH + "ListPermissions": _r(Need(GRANT_RESOURCE, "resource", MANAGE)),
    # The caller's own levels only (default permission on what does not exist: nothing leaks).
    AUTH + "GetCallerPermissions": AUTHENTICATED,
    # ---------------------------------------------------------------- audit
    AUDIT + "ListEvents": _r(filtered=True),
    AUDIT + "WatchEvents": _r(filtered=True),
}


def rule_for(method: str) -> Rule | None:
    """The rule of a full method name (``/package.Service/Method``); None when it has none."""
    found = POLICY.get(method)
    if found is not None:
        return found
    if method.startswith(PUBLIC_SERVICES):
        return Rule(public=True)
    return None
