"""S3 for tests: moto's server on loopback, spoken to over real HTTP, and a bucket Django stores files in.

Fixtures (registered by the root ``conftest.py``):

- ``s3_server`` (session): a ``moto.server.ThreadedMotoServer`` on 127.0.0.1 and a free
  port. ``s3_server.endpoint_url``, ``s3_server.client()`` (boto3, s3v4, path addressing).
- ``s3_bucket`` (per test): a fresh bucket, and Django's default storage switched to it
  through django-storages' ``S3Storage`` (settings overridden, storage caches reset).
  ``s3_bucket.keys(prefix)`` lists the bucket, ``s3_bucket.get(key)`` reads an object,
  and ``s3_bucket.env`` holds the ``AWS_*`` variables that point another process (a
  worker started with ``subprocess``) at the same bucket.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config
from django.core.files.storage import default_storage, storages
from django.test import override_settings
from django.utils.functional import empty

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105  (moto accepts any credentials)


@dataclass
class S3Server:
    endpoint_url: str
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


@dataclass
class S3Bucket:
    name: str
    server: S3Server
    client: Any
    env: dict[str, str] = field(default_factory=dict)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under ``prefix``, sorted, read by listing the bucket."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            keys.extend(entry["Key"] for entry in page.get("Contents", ()))
        return sorted(keys)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def empty(self) -> None:
        keys = self.keys()
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.name, Delete={"Objects": batch, "Quiet": True})


def reset_storages() -> None:
    """Forget every storage Django built, so the next use reads the current settings."""
    storages._storages = {}  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError):
        del storages.backends
    default_storage._wrapped = empty  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    # One log line per S3 request drowns a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    name = f"rekindle-test-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    env = {
        "AWS_STORAGE_BUCKET_NAME": name,
        "AWS_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_S3_REGION_NAME": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_S3_ADDRESSING_STYLE": "path",
    }
    overrides = override_settings(
        AWS_STORAGE_BUCKET_NAME=name,
        AWS_S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_S3_REGION_NAME=s3_server.region,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_S3_ADDRESSING_STYLE="path",
        AWS_S3_SIGNATURE_VERSION="s3v4",
        STORAGES={
            "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"addressing_style": "path"}},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    )
    overrides.enable()
    reset_storages()
    bucket = S3Bucket(name=name, server=s3_server, client=client, env=env)
    try:
        yield bucket
    finally:
        overrides.disable()
        reset_storages()
        bucket.empty()
        client.delete_bucket(Bucket=name)
