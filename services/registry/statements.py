"""The registry's hot statements, compiled once per database (``common.prepared``).

Registering a version, moving a stage or an alias and reading one version back run only
these small statements, each a few microseconds in the database; built by Peewee on every
call they cost ~100-200 us each, most of such a call's time (profiled: bench/RESULTS.md,
Registry). The SQL is generated from the models in ``common/db.py``; the store decides which
to run (``update_returning``: MySQL/MariaDB have no ``UPDATE ... RETURNING``).
"""

from __future__ import annotations

from keel_server.common.db import (
    ModelHistoryEvent,
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelAlias,
)
from keel_server.common.prepared import Statement, arg, columns, returning_id

MODEL_COLUMNS = columns(RegisteredModel)
VERSION_COLUMNS = columns(ModelVersion)

# ---- registered models ----------------------------------------------------------------------
MODEL_BY_NAME = Statement(
    lambda: RegisteredModel.select(*MODEL_COLUMNS).where(RegisteredModel.name == arg("name"))
)
# The model's row lock and its last-updated time in one statement (PostgreSQL, SQLite).
LOCK_MODEL = Statement(
    lambda: (
        RegisteredModel.update(last_updated_time=arg("now"))
        .where(RegisteredModel.name == arg("name"))
        .returning(*MODEL_COLUMNS)
    )
)
# The same in two (MySQL/MariaDB): the lock, then the time.
MODEL_FOR_UPDATE = Statement(
    lambda: RegisteredModel.select(*MODEL_COLUMNS).where(RegisteredModel.name == arg("name")).for_update()
)
TOUCH_MODEL = Statement(
    lambda: RegisteredModel.update(last_updated_time=arg("now")).where(RegisteredModel.id == arg("id"))
)
# The next version number: incremented under the row lock the UPDATE takes, and read back.
NEXT_NUMBER = Statement(
    lambda: (
        RegisteredModel.update(last_version=RegisteredModel.last_version + 1, last_updated_time=arg("now"))
        .where(RegisteredModel.id == arg("id"))
        .returning(RegisteredModel.last_version)
    )
)
BUMP_NUMBER = Statement(
    lambda: RegisteredModel.update(
        last_version=RegisteredModel.last_version + 1, last_updated_time=arg("now")
    ).where(RegisteredModel.id == arg("id"))
)
LAST_NUMBER = Statement(
    lambda: RegisteredModel.select(RegisteredModel.last_version).where(RegisteredModel.id == arg("id"))
)

# ---- versions ---------------------------------------------------------------------------------
VERSION = Statement(
    lambda: ModelVersion.select(*VERSION_COLUMNS).where(
        (ModelVersion.model == arg("model")) & (ModelVersion.version == arg("version"))
    )
)
VERSION_BY_REQUEST_ID = Statement(
    lambda: ModelVersion.select(*VERSION_COLUMNS).where(
        (ModelVersion.model == arg("model")) & (ModelVersion.request_id == arg("request_id"))
    )
)
INSERT_VERSION = Statement(
    lambda: returning_id(
        ModelVersion.insert({field: arg(field.name) for field in VERSION_COLUMNS if not field.primary_key}),
        ModelVersion.id,
    )
)
SET_STATUS = Statement(
    lambda: ModelVersion.update(
        status=arg("status"), status_message=arg("status_message"), last_updated_time=arg("now")
    ).where(ModelVersion.id == arg("id"))
)
SET_STAGE = Statement(
    lambda: ModelVersion.update(current_stage=arg("stage"), last_updated_time=arg("now")).where(
        ModelVersion.id == arg("id")
    )
)
VERSION_TAGS = Statement(
    lambda: (
        ModelVersionTag.select(ModelVersionTag.key, ModelVersionTag.value)
        .where(ModelVersionTag.model_version == arg("id"))
        .order_by(ModelVersionTag.key)
    )
)
VERSION_ALIASES = Statement(
    lambda: (
        RegisteredModelAlias.select(RegisteredModelAlias.alias)
        .where(
            (RegisteredModelAlias.model == arg("model")) & (RegisteredModelAlias.version == arg("version"))
        )
        .order_by(RegisteredModelAlias.alias)
    )
)

# ---- aliases and history ------------------------------------------------------------------
ALIAS_VERSION = Statement(
    lambda: RegisteredModelAlias.select(RegisteredModelAlias.version).where(
        (RegisteredModelAlias.model == arg("model")) & (RegisteredModelAlias.alias == arg("alias"))
    )
)
DELETE_ALIAS = Statement(
    lambda: RegisteredModelAlias.delete().where(
        (RegisteredModelAlias.model == arg("model")) & (RegisteredModelAlias.alias == arg("alias"))
    )
)
INSERT_ALIAS = Statement(
    lambda: RegisteredModelAlias.insert(model=arg("model"), alias=arg("alias"), version=arg("version"))
)
MOVE_ALIAS = Statement(
    lambda: RegisteredModelAlias.update(version=arg("version")).where(
        (RegisteredModelAlias.model == arg("model")) & (RegisteredModelAlias.alias == arg("alias"))
    )
)
# What an event row holds when the caller names no value (the fields' constant defaults).
EVENT_DEFAULTS = {
    field.name: field.default
    for field in columns(ModelHistoryEvent)
    if not field.primary_key and not callable(field.default)
}
INSERT_EVENT = Statement(
    lambda: returning_id(
        ModelHistoryEvent.insert(
            {field: arg(field.name) for field in columns(ModelHistoryEvent) if not field.primary_key}
        ),
        ModelHistoryEvent.id,
    )
)
