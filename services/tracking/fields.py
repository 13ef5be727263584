"""What the tracking service's searches accept: the filter and ``order_by`` schemas of runs and
experiments (checked by ``common/filters.py``), and the column each searchable attribute reads
(compiled by ``tracking/search.py``)."""

from __future__ import annotations

import peewee as pw

from keel_server.common.db import Experiment, Run
from keel_server.common.filters import (
    KEY_VALUE_OPS,
    NULL_OPS,
    NUMBER,
    NUMBER_OPS,
    STRING_IN_OPS,
    STRING_OR_NUMBER,
    FieldSpec,
    FilterSchema,
)

RUNS_SCHEMA = FilterSchema(
    resource="runs",
    attributes={
        "run_id": FieldSpec(STRING_IN_OPS),
        "run_name": FieldSpec(STRING_IN_OPS),
        "status": FieldSpec(STRING_IN_OPS),
        "user_id": FieldSpec(STRING_IN_OPS),
        "artifact_uri": FieldSpec(STRING_IN_OPS),
        "lifecycle_stage": FieldSpec(STRING_IN_OPS),
        "start_time": FieldSpec(NUMBER_OPS, NUMBER),
        "end_time": FieldSpec(NUMBER_OPS | NULL_OPS, NUMBER),
        # nested runs: the children of a run (indexed), or top-level runs with IS NULL
        "parent_run_id": FieldSpec(STRING_IN_OPS | NULL_OPS),
    },
    entities={
        "metric": FieldSpec(NUMBER_OPS, NUMBER),
        "param": FieldSpec(KEY_VALUE_OPS),
        "tag": FieldSpec(KEY_VALUE_OPS),
    },
    aliases={"created": "start_time", "run name": "run_name", "runname": "run_name"},
    unsupported={
        "dataset": "dataset filters (datasets.name, datasets.digest, datasets.context) are not supported by keel yet",
    },
)

EXPERIMENTS_SCHEMA = FilterSchema(
    resource="experiments",
    attributes={
        "name": FieldSpec(STRING_IN_OPS),
        "experiment_id": FieldSpec(frozenset({"=", "!=", "IN", "NOT IN"}), STRING_OR_NUMBER),
        "creation_time": FieldSpec(NUMBER_OPS, NUMBER),
        "last_update_time": FieldSpec(NUMBER_OPS, NUMBER),
    },
    entities={"tag": FieldSpec(KEY_VALUE_OPS)},
)

# The column of each attribute of the schemas above (the same names).
RUN_ATTRIBUTE_COLUMNS: dict[str, pw.Field] = {
    "run_id": Run.run_id,
    "run_name": Run.run_name,
    "status": Run.status,
    "user_id": Run.user_id,
    "artifact_uri": Run.artifact_uri,
    "lifecycle_stage": Run.lifecycle_stage,
    "start_time": Run.start_time,
    "end_time": Run.end_time,
    "parent_run_id": Run.parent_run_id,
}

EXPERIMENT_ATTRIBUTE_COLUMNS: dict[str, pw.Field] = {
    "name": Experiment.name,
    "experiment_id": Experiment.experiment_id,
    "creation_time": Experiment.creation_time,
    "last_update_time": Experiment.last_update_time,
}
