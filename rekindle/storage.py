"""Where a job's files live in storage, how clients get at them, and how they are removed.

The key layout is the original service's and must not change (files already stored use it)::

    processed/{job_id}.{ext}                        normalized original upload
    restored/{job_id}/{timestamp_id}.jpg            restored images
    animated/{job_id}/{timestamp_id}_preview.mp4    animation previews
    animated/{job_id}/{timestamp_id}_result.mp4     HD results
    thumbnails/{job_id}/{timestamp_id}.jpg          animation thumbnails

The database stores keys only. URLs are made on demand by :func:`url_for`: a presigned
GET that expires after ``AWS_QUERYSTRING_EXPIRE`` seconds on S3, or on local file storage a
media URL made absolute from the request, or left relative to the server's root when there is
no request (the admin's lists): either way it follows the server the page came from, whatever
its port, instead of pointing at ``SITE_URL``.

``{timestamp_id}`` is the attempt's (``jobs.attempts.attempt_timestamp_id``): UTC to the
microsecond, then four hex digits, so a job's outputs sort in creation order.

Everything here goes through Django's ``default_storage``, so switching ``STORAGES``
(as the tests do) switches this module too. It uses only public APIs: Django's
``Storage``, django-storages' ``S3Storage`` settings and its ``connection`` (a boto3
resource, whose ``meta.client`` makes the S3 calls), and boto3's. On S3 a small object
is written with one PutObject and read with one GetObject (the worker's latency depends
on it); listing is ListObjectsV2 page by page, deleting is DeleteObjects in batches.
"""

from __future__ import annotations

import mimetypes
import posixpath
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, default_storage
from django.http import HttpRequest

# S3 lists at most 1000 keys a page and deletes at most 1000 keys a request.
PAGE_SIZE = 1000
DELETE_BATCH_SIZE = 1000

JobId = uuid.UUID | str
_T = TypeVar("_T")


def is_transient_error(exc: BaseException) -> bool:
    """Whether a storage error is S3 failing for now (5xx, throttling, a connection error or timeout).

    Such an error is worth retrying; any other ``ClientError`` (access denied, no such key or
    bucket) is not.
    """
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    return isinstance(exc, BotoConnectionError | HTTPClientError)


_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "InternalError", "ServiceUnavailable"})


def storage() -> Storage:
    """The storage job files live in (Django's default storage)."""
    return default_storage


def is_s3(store: Storage | None = None) -> bool:
    from storages.backends.s3 import S3Storage

    target = store if store is not None else storage()
    # default_storage is a lazy proxy; isinstance sees through it once it is set up.
    return isinstance(target, S3Storage)


# --- Key layout -------------------------------------------------------------


def processed_key(job_id: JobId, ext: str) -> str:
    return f"processed/{job_id}.{ext.lstrip('.').lower()}"


def restored_key(job_id: JobId, ts: str) -> str:
    return f"restored/{job_id}/{ts}.jpg"


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


# --- S3 object names ----------------------------------------------------------


def _s3_root(store: Any) -> str:
    """What ``S3Storage`` puts before every key: its ``location`` (``AWS_LOCATION``) and a slash, or nothing."""
    location = (store.location or "").strip("/")
    return f"{location}/" if location else ""


def _s3_name(store: Any, key: str) -> str:
    """The S3 object name of ``key``, as ``S3Storage`` names it (under its ``location``).

    Our keys are already clean (the layout above, or names read back from a listing),
    so this only prefixes the location; anything that would need normalizing is refused
    rather than reinterpreted.
    """
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts[:-1]):
        raise ValueError(f"not a storage key: {key!r}")
    if parts[-1] in (".", ".."):
        raise ValueError(f"not a storage key: {key!r}")
    return _s3_root(store) + key


# --- Reading and writing ----------------------------------------------------


def put(key: str, content: bytes | IO[bytes], *, content_type: str | None = None) -> str:
    """Store ``content`` at exactly ``key`` (replacing what is there) and return the key.

    Both storages overwrite in place: ``S3Storage`` with ``AWS_S3_FILE_OVERWRITE`` (its
    default), ``FileSystemStorage`` with its ``allow_overwrite`` option (set in ``STORAGES``).
    """
    store = storage()
    if isinstance(content, bytes) and _s3_single_put(store, key, content, content_type):
        return key
    if isinstance(content, bytes):
        upload: File[Any] = ContentFile(content)
    else:
        upload = File(content)
    if content_type:
        upload.content_type = content_type  # type: ignore[attr-defined]  # S3Storage reads it for ContentType
    saved = store.save(key, upload)
    if saved != key:
        store.delete(saved)
        raise RuntimeError(
            f"storage saved {key!r} as {saved!r}: it must overwrite in place "
            "(FileSystemStorage: OPTIONS allow_overwrite=True; S3Storage: file_overwrite=True)"
        )
    return key


def _s3_single_put(store: Storage, key: str, content: bytes, content_type: str | None) -> bool:
    """Store small ``content`` with one PutObject on S3; False (nothing done) where ``Storage.save`` must.

    ``S3Storage.save`` goes through a boto3 resource and s3transfer, which starts a pool
    of upload threads for every object; even without threads (``TransferConfig(use_threads=False)``)
    that is about 3 ms more than this PUT for a result of a few hundred kilobytes
    (bench/README.md). Objects at or above the multipart threshold (``transfer_config``)
    and gzip-compressing storage keep that path, with its threaded multipart uploads.

    The object gets the metadata ``S3Storage.save`` would give it, from the storage's
    public settings: ``get_object_parameters`` (``AWS_S3_OBJECT_PARAMETERS``, or a
    subclass's per-object override), then a ``ContentType`` (ours, else guessed from the
    name, else the storage's default) with the ``ContentEncoding`` the name implies, and
    ``default_acl``. ``test_storage`` checks that both ways give an object the same headers.
    """
    if not is_s3(store):
        return False
    s3: Any = store
    if s3.gzip or len(content) >= s3.transfer_config.multipart_threshold:
        return False
    name = _s3_name(s3, key)
    params: dict[str, Any] = s3.get_object_parameters(name)
    if "ContentType" not in params:
        guessed, encoding = mimetypes.guess_type(name)
        params["ContentType"] = content_type or guessed or s3.default_content_type
        if encoding:
            params["ContentEncoding"] = encoding
    if "ACL" not in params and s3.default_acl:
        params["ACL"] = s3.default_acl
    s3.connection.meta.client.put_object(Bucket=s3.bucket_name, Key=name, Body=content, **params)
    return True


def read_bytes(key: str) -> bytes:
    """The stored bytes of ``key``; ``FileNotFoundError`` when there is no such object."""
    store = storage()
    if is_s3(store):
        s3: Any = store
        if not s3.gzip:
            return _s3_single_get(s3, key)
    with store.open(key, "rb") as handle:
        data: bytes = handle.read()
    return data


def _s3_single_get(store: Any, key: str) -> bytes:
    """One GetObject. Opening an ``S3File`` costs a HEAD on open and another HEAD (s3transfer
    sizing the download) before the GET: three round trips per worker read.

    The request carries those of the storage's object parameters a download takes
    (SSE-C keys and the like), as ``S3File`` sends them.
    """
    from boto3.s3.transfer import S3Transfer
    from botocore.exceptions import ClientError

    name = _s3_name(store, key)
    download = {k: v for k, v in store.get_object_parameters(name).items() if k in S3Transfer.ALLOWED_DOWNLOAD_ARGS}
    try:
        response = store.connection.meta.client.get_object(Bucket=store.bucket_name, Key=name, **download)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise FileNotFoundError(f"File does not exist: {name}") from exc
        raise
    body: bytes = response["Body"].read()
    return body


def exists(key: str) -> bool:
    """Whether an object is stored at ``key`` (one HEAD on S3)."""
    return bool(storage().exists(key))


def delete_key(key: str) -> None:
    """Remove one object; a key that is already gone is not an error."""
    storage().delete(key)


class PresignedUrls:
    """Presigned URLs made in the last ``PRESIGNED_URL_REUSE_SECONDS``, handed out again instead of signing anew.

    Signing one is about a millisecond of CPU in botocore (request serialization, endpoint
    rules, SigV4), and a job's answer holds up to a URL per attempt output, read again by every
    poll of the job page. A URL handed out again still has at least ``PRESIGNED_URL_TTL``
    minus the reuse window to live, and a browser that polls sees the same address and keeps
    the image it already has instead of downloading it again. Per process, bounded, shared by
    its threads; keyed by everything the URL depends on, so new settings sign anew.
    """

    MAX_ENTRIES = 10_000
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._urls: OrderedDict[tuple[Any, ...], tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Any, key: str, reuse_seconds: float) -> str:
        cache_key = (store.bucket_name, store.endpoint_url, store.location, store.querystring_expire, key)
        now = self.clock()
        with self._lock:
            found = self._urls.get(cache_key)
        if found is not None and now - found[0] < reuse_seconds:
            return found[1]
        url: str = store.url(key)
        with self._lock:
            self._urls[cache_key] = (now, url)
            self._urls.move_to_end(cache_key)
            while len(self._urls) > self.MAX_ENTRIES:
                self._urls.popitem(last=False)
        return url

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()


presigned_urls = PresignedUrls()


def url_for(key: str, request: HttpRequest | None = None) -> str:
    """A URL a client can fetch ``key`` from: presigned and short-lived on S3; locally the media URL,
    absolute from the request when there is one, else relative to the root (``/media/...``)."""
    store = storage()
    reuse = settings.PRESIGNED_URL_REUSE_SECONDS
    if reuse and is_s3(store):
        return presigned_urls.get(store, key, reuse)
    url = store.url(key)
    if url.startswith(("http://", "https://")):
        return url
    if request is not None:
        return request.build_absolute_uri(url)
    return url


def url_or_none(key: str, request: HttpRequest | None = None) -> str | None:
    return url_for(key, request) if key else None


# --- Listing and deleting ---------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: datetime


def stored_object_pages(prefix: str, *, page_size: int = PAGE_SIZE) -> Iterator[list[StoredObject]]:
    """Every stored object whose key starts with ``prefix``, with its last-modified time, a page at a time.

    Keys are relative to the storage's root, as everywhere in this module. On S3 each
    page is one ListObjectsV2 response (the modified times come with it: no request per
    object). Elsewhere the prefix's directory is walked through the storage's
    ``listdir`` and ``get_modified_time``, in name order, a directory's files before its
    subdirectories; a file deleted meanwhile is skipped. Deleting the objects of a page
    before asking for the next is fine on both.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    store = storage()
    if is_s3(store):
        yield from _s3_pages(store, prefix, page_size)
    else:
        yield from _batches(_walk_objects(store, prefix), page_size)


def _s3_pages(store: Any, prefix: str, page_size: int) -> Iterator[list[StoredObject]]:
    root = _s3_root(store)
    paginator = store.connection.meta.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(
        Bucket=store.bucket_name,
        Prefix=_s3_name(store, prefix) if prefix else root,
        PaginationConfig={"PageSize": page_size},
    ):
        objects = [StoredObject(entry["Key"][len(root) :], entry["LastModified"]) for entry in page.get("Contents", ())]
        if objects:
            yield objects


def _walk_objects(store: Storage, prefix: str) -> Iterator[StoredObject]:
    directory = prefix if prefix.endswith("/") else posixpath.dirname(prefix)
    for key in _walk(store, directory.rstrip("/")):
        if not key.startswith(prefix):
            continue
        try:
            modified = store.get_modified_time(key)
        except FileNotFoundError:
            continue  # deleted while we walked
        yield StoredObject(key, modified)


def _walk(store: Storage, directory: str) -> Iterator[str]:
    try:
        dirs, files = store.listdir(directory)
    except FileNotFoundError:
        return
    for name in sorted(files):
        yield posixpath.join(directory, name) if directory else name
    for name in sorted(dirs):
        yield from _walk(store, posixpath.join(directory, name) if directory else name)


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def list_keys(prefix: str) -> list[str]:
    """Every key that starts with ``prefix``, sorted (relative to the storage's root)."""
    return sorted(obj.key for page in stored_object_pages(prefix) for obj in page)


def delete_keys(keys: Sequence[str]) -> int:
    """Delete exactly these objects and return how many were asked for.

    On S3 one DeleteObjects request per 1000 keys; a key that is already gone is fine,
    any other per-key error raises (so a retried task finishes the job). Elsewhere the
    files are deleted one by one. Safe to run again.
    """
    if not keys:
        return 0
    store = storage()
    if not is_s3(store):
        for key in keys:
            store.delete(key)
        return len(keys)
    s3: Any = store
    client = s3.connection.meta.client
    for batch in _batches(keys, DELETE_BATCH_SIZE):
        response = client.delete_objects(
            Bucket=s3.bucket_name,
            Delete={"Objects": [{"Key": _s3_name(s3, key)} for key in batch], "Quiet": True},
        )
        errors = [e for e in response.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
        if errors:
            raise RuntimeError(f"S3 refused to delete {len(errors)} object(s): {errors[:3]}")
    return len(keys)


def delete_prefixes(prefixes: Iterable[str]) -> int:
    """Delete every object under each prefix and return how many were deleted.

    Each page of the listing (at most 1000 keys) is removed with :func:`delete_keys`
    before the next is asked for: one DeleteObjects request per page on S3. Running it
    again deletes nothing more: it is safe to retry.
    """
    prefixes = list(prefixes)
    if not all(prefixes):
        raise ValueError("refusing to delete an empty prefix (the whole bucket)")
    deleted = 0
    for prefix in prefixes:
        for page in stored_object_pages(prefix):
            deleted += delete_keys([obj.key for obj in page])
    return deleted


def delete_job_files(job_id: JobId) -> int:
    """Delete every stored file of a job; see :func:`delete_prefixes`."""
    return delete_prefixes(job_prefixes(job_id))
