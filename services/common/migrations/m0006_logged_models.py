"""MLflow 3 logged models: the models, their tags and their params."""

import peewee as pw

from keel_server.common.db import LOGGED_MODEL_TABLES

NUMBER = 6
DESCRIPTION = "logged models (MLflow 3): logged_model, logged_model_tag, logged_model_param"


def upgrade(database: pw.Database) -> None:
    database.create_tables(LOGGED_MODEL_TABLES, safe=True)
