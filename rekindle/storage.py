"""Where a job's files live in storage, how clients get at them, and how they are removed.

The key layout is the original service's and must not change (files already stored use it)::

    processed/{job_id}.{ext}                        normalized original upload
    restored/{job_id}/{timestamp_id}.jpg            restored images
    animated/{job_id}/{timestamp_id}_preview.mp4    animation previews
    animated/{job_id}/{timestamp_id}_result.mp4     HD results
    thumbnails/{job_id}/{timestamp_id}.jpg          animation thumbnails

The database stores keys only. URLs are made on demand by :func:`url_for`: a presigned
GET that expires after ``AWS_QUERYSTRING_EXPIRE`` seconds on S3, or a media URL made
absolute (from the request, else ``SITE_URL``) on local file storage.

Everything here goes through Django's ``default_storage``, so switching ``STORAGES``
(as the tests do) switches this module too.
"""

from __future__ import annotations

import posixpath
import secrets
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, default_storage
from django.http import HttpRequest

# S3's DeleteObjects takes at most this many keys per request.
DELETE_BATCH_SIZE = 1000

JobId = uuid.UUID | str


def storage() -> Storage:
    """The storage job files live in (Django's default storage)."""
    return default_storage


def is_s3(store: Storage | None = None) -> bool:
    from storages.backends.s3 import S3Storage

    target = store if store is not None else storage()
    # default_storage is a lazy proxy; isinstance sees through it once it is set up.
    return isinstance(target, S3Storage)


# --- Key layout -------------------------------------------------------------


def timestamp_id(now: datetime | None = None) -> str:
    """A sortable, practically unique id for one output, e.g. ``20250314T092653123456Z-9f3a``.

    UTC to the microsecond, so keys sort in creation order, plus four hex digits so two
    outputs of one job made in the same microsecond by different workers still differ.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(2)}"


def processed_key(job_id: JobId, ext: str) -> str:
    return f"processed/{job_id}.{ext.lstrip('.').lower()}"


def restored_key(job_id: JobId, ts: str | None = None) -> str:
    return f"restored/{job_id}/{ts or timestamp_id()}.jpg"


def animation_preview_key(job_id: JobId, ts: str) -> str:
    return f"animated/{job_id}/{ts}_preview.mp4"


def animation_result_key(job_id: JobId, ts: str) -> str:
    return f"animated/{job_id}/{ts}_result.mp4"


def thumbnail_key(job_id: JobId, ts: str) -> str:
    return f"thumbnails/{job_id}/{ts}.jpg"


def job_prefixes(job_id: JobId) -> list[str]:
    """Every key prefix under which a job's files may live.

    ``processed/{job_id}.`` ends with the dot so that listing it cannot match another
    job whose id merely starts with this one (ids are fixed-length UUIDs, but the dot
    keeps the rule obvious).
    """
    return [
        f"processed/{job_id}.",
        f"restored/{job_id}/",
        f"animated/{job_id}/",
        f"thumbnails/{job_id}/",
    ]


# --- Reading and writing ----------------------------------------------------


def put(key: str, content: bytes | IO[bytes], *, content_type: str | None = None) -> str:
    """Store ``content`` at exactly ``key`` (replacing what is there) and return the key."""
    store = storage()
    if isinstance(content, bytes) and _s3_single_put(store, key, content, content_type):
        return key
    if isinstance(content, bytes):
        upload: File[Any] = ContentFile(content)
    else:
        upload = File(content)
    if content_type:
        upload.content_type = content_type  # type: ignore[attr-defined]  # S3Storage reads it for ContentType
    if not is_s3(store) and store.exists(key):
        # FileSystemStorage would otherwise pick a new name instead of overwriting.
        store.delete(key)
    saved = store.save(key, upload)
    if saved != key:
        store.delete(saved)
        raise RuntimeError(f"storage saved {key!r} as {saved!r}")
    return key


def read_bytes(key: str) -> bytes:
    """The stored bytes of ``key``; ``FileNotFoundError`` when there is no such object."""
    store = storage()
    if is_s3(store):
        from botocore.exceptions import ClientError
        from storages.backends.s3 import _filter_download_params
        from storages.utils import clean_name

        # One GET. Opening an S3File costs a HEAD on open and another HEAD (s3transfer
        # sizing the download) before the GET: three round trips per worker read.
        s3: Any = store
        name = s3._normalize_name(clean_name(key))
        try:
            response = s3.connection.meta.client.get_object(
                Bucket=s3.bucket_name, Key=name, **_filter_download_params(s3.get_object_parameters(name))
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"File does not exist: {name}") from exc
            raise
        body: bytes = response["Body"].read()
        return body
    with store.open(key, "rb") as handle:
        data: bytes = handle.read()
    return data


def _s3_single_put(store: Storage, key: str, content: bytes, content_type: str | None) -> bool:
    """Store small ``content`` with one PutObject on S3; False (nothing done) where ``Storage.save`` must.

    ``S3Storage.save`` goes through s3transfer, which starts a pool of upload threads for
    every object; for a result of a few hundred kilobytes that costs more than the PUT.
    Objects above the multipart threshold, and gzip-compressed storage, keep that path.
    """
    if not is_s3(store):
        return False
    from storages.utils import clean_name

    s3: Any = store
    if s3.gzip or len(content) >= s3.transfer_config.multipart_threshold:
        return False
    name = s3._normalize_name(clean_name(key))
    upload = ContentFile(content)
    if content_type:
        upload.content_type = content_type  # type: ignore[attr-defined]  # read by _get_write_parameters
    params = s3._get_write_parameters(name, upload)
    s3.connection.meta.client.put_object(Bucket=s3.bucket_name, Key=name, Body=content, **params)
    return True


def delete_key(key: str) -> None:
    """Remove one object; a key that is already gone is not an error."""
    storage().delete(key)


def url_for(key: str, request: HttpRequest | None = None) -> str:
    """A URL a client can fetch ``key`` from: presigned and short-lived on S3, absolute media URL locally."""
    store = storage()
    url = store.url(key)
    if url.startswith(("http://", "https://")):
        return url
    if request is not None:
        return request.build_absolute_uri(url)
    return f"{settings.SITE_URL}{url}"


def url_or_none(key: str, request: HttpRequest | None = None) -> str | None:
    return url_for(key, request) if key else None


# --- Listing and deleting by prefix -----------------------------------------


def _s3_full_prefix(store: Any, prefix: str) -> str:
    location = (store.location or "").strip("/")
    return f"{location}/{prefix}" if location else prefix


def _s3_key_pages(store: Any, prefix: str) -> Iterator[list[str]]:
    """Keys under ``prefix``, one page (at most 1000 keys) at a time."""
    client = store.connection.meta.client
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(
        Bucket=store.bucket_name,
        Prefix=_s3_full_prefix(store, prefix),
        PaginationConfig={"PageSize": DELETE_BATCH_SIZE},
    ):
        keys = [entry["Key"] for entry in page.get("Contents", ())]
        if keys:
            yield keys


def _walk(store: Storage, directory: str) -> Iterator[str]:
    try:
        dirs, files = store.listdir(directory)
    except FileNotFoundError:
        return
    for name in files:
        yield posixpath.join(directory, name) if directory else name
    for name in dirs:
        yield from _walk(store, posixpath.join(directory, name) if directory else name)


def list_keys(prefix: str) -> list[str]:
    """Every key that starts with ``prefix``, sorted (relative to the storage's root)."""
    store = storage()
    if is_s3(store):
        location = _s3_full_prefix(store, "")
        return sorted(key[len(location) :] for page in _s3_key_pages(store, prefix) for key in page)
    directory = prefix if prefix.endswith("/") else posixpath.dirname(prefix)
    return sorted(key for key in _walk(store, directory.rstrip("/")) if key.startswith(prefix))


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def delete_prefixes(prefixes: Iterable[str]) -> int:
    """Delete every object under each prefix and return how many were deleted.

    On S3 the keys are listed page by page and each page is removed with one
    DeleteObjects request of at most 1000 keys; a key that vanished meanwhile is fine,
    any other per-key error raises (so a retried task finishes the job). On local
    storage the files are deleted one by one. Running it again deletes nothing more:
    it is safe to retry.
    """
    store = storage()
    deleted = 0
    for prefix in prefixes:
        if not prefix:
            raise ValueError("refusing to delete an empty prefix (the whole bucket)")
        if is_s3(store):
            client: Any = store.connection.meta.client  # type: ignore[attr-defined]
            for page in _s3_key_pages(store, prefix):
                for batch in _batches(page, DELETE_BATCH_SIZE):
                    response = client.delete_objects(
                        Bucket=store.bucket_name,  # type: ignore[attr-defined]
                        Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                    )
                    errors = [e for e in response.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
                    if errors:
                        raise RuntimeError(f"S3 refused to delete {len(errors)} object(s): {errors[:3]}")
                    deleted += len(batch)
        else:
            for key in list_keys(prefix):
                store.delete(key)
                deleted += 1
    return deleted


def delete_job_files(job_id: JobId) -> int:
    """Delete every stored file of a job; see :func:`delete_prefixes`."""
    return delete_prefixes(job_prefixes(job_id))
