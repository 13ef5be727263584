"""The real backends the suite depends on answer as expected (through peewee and the minio SDK)."""

from __future__ import annotations

import io
from typing import Any

import peewee
import pytest
from playhouse.db_url import connect


def test_database_roundtrip(db_url: str) -> None:
    db = connect(db_url)

    class Item(peewee.Model):
        name = peewee.CharField(max_length=100, unique=True)
        value = peewee.FloatField()

        class Meta:
            database = db

    try:
        db.connect()
        db.create_tables([Item])
        with db.atomic():
            Item.create(name="a", value=1.5)
            Item.create(name="b", value=2.5)
        assert [(i.name, i.value) for i in Item.select().order_by(Item.name)] == [("a", 1.5), ("b", 2.5)]
        with pytest.raises(peewee.IntegrityError):
            with db.atomic():
                Item.create(name="a", value=3.0)
        assert Item.select().count() == 2
        db.drop_tables([Item])
    finally:
        db.close()


@pytest.mark.s3
def test_s3_roundtrip_and_auth(s3_settings: dict[str, Any]) -> None:
    from minio import Minio
    from minio.error import S3Error

    s3 = s3_settings
    client = Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"], secure=False)
    data = b"keel smoke test\n" * 1000
    client.put_object(s3["bucket"], "smoke/blob.bin", io.BytesIO(data), length=len(data))
    response = client.get_object(s3["bucket"], "smoke/blob.bin")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()

    wrong = Minio(s3["endpoint"], access_key=s3["access_key"], secret_key="not-the-secret", secure=False)
    with pytest.raises(S3Error) as excinfo:
        wrong.get_object(s3["bucket"], "smoke/blob.bin")
    assert excinfo.value.code == "SignatureDoesNotMatch"
