"""What the registry's searches accept: the filter and ``order_by`` schemas of registered models and
model versions (checked by ``common/filters.py``), and the column each searchable attribute reads."""

from __future__ import annotations

from typing import Any

from keel_server.common.db import ModelVersion, RegisteredModel
from keel_server.common.filters import (
    IN_OPS,
    KEY_VALUE_OPS,
    NUMBER,
    NUMBER_OPS,
    ORDER_ONLY,
    STRING_IN_OPS,
    STRING_OPS,
    FieldSpec,
    FilterSchema,
)

REGISTERED_MODELS_SCHEMA = FilterSchema(
    resource="registered models",
    attributes={
        "name": FieldSpec(STRING_IN_OPS),
        "creation_timestamp": ORDER_ONLY,
        "last_updated_timestamp": ORDER_ONLY,
    },
    entities={"tag": FieldSpec(KEY_VALUE_OPS, orderable=False)},
)

MODEL_VERSIONS_SCHEMA = FilterSchema(
    resource="model versions",
    attributes={
        "name": FieldSpec(STRING_IN_OPS),
        "run_id": FieldSpec(STRING_IN_OPS),
        "version_number": FieldSpec(NUMBER_OPS | IN_OPS, NUMBER),
        "source_path": FieldSpec(STRING_OPS),
        "creation_timestamp": ORDER_ONLY,
        "last_updated_timestamp": ORDER_ONLY,
    },
    entities={"tag": FieldSpec(KEY_VALUE_OPS, orderable=False)},
)

# The column of each attribute of the schemas above (the same names).
MODEL_ATTRIBUTE_COLUMNS: dict[str, Any] = {
    "name": RegisteredModel.name,
    "creation_timestamp": RegisteredModel.creation_time,
    "last_updated_timestamp": RegisteredModel.last_updated_time,
}
VERSION_ATTRIBUTE_COLUMNS: dict[str, Any] = {
    "name": RegisteredModel.name,
    "run_id": ModelVersion.run_id,
    "source_path": ModelVersion.source,
    "version_number": ModelVersion.version,
    "creation_timestamp": ModelVersion.creation_time,
    "last_updated_timestamp": ModelVersion.last_updated_time,
}
# Attributes compared as numbers (the others as strings).
NUMERIC_ATTRIBUTES = frozenset({"version_number", "creation_timestamp", "last_updated_timestamp"})
