"""S3-compatible backend: objects in one bucket under a prefix, through boto3.

boto3 speaks the protocol (multipart uploads, ranged GETs, copies, presigned URLs). The
endpoint, credentials and region come from the environment as boto3 reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
profiles, instance roles). Nothing is kept on a node's disk: a writer holds at most a few
multipart parts in memory (the one being filled and PARTS_IN_FLIGHT being sent), or one
object of up to SINGLE_PUT_LIMIT sent as a single PUT.
"""

import contextlib
import io
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import BinaryIO

from django.utils.http import content_disposition_header

from .objects import Composer, ObjectStore, ObjectWriter

# S3 parts must be at least 5 MiB (but the last); 8 MiB x 10,000 parts covers 78 GiB.
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4  # per writer
COPY_LIMIT = 5 * 1024**3  # the largest object one CopyObject (or UploadPartCopy) can copy
MIN_PART_SIZE = 5 * 1024 * 1024  # every multipart part but the last
MAX_PARTS = 10_000
# An object known to be at most this big (a staged chunk: the CLI sends 16 MiB), or one whose
# name is not known yet, is sent as one PUT once complete: a multipart upload costs three
# more requests and a server-side concatenation (plus a copy, when it had no name).
SINGLE_PUT_LIMIT = PARTS_IN_FLIGHT * PART_SIZE  # no more memory than a writer's parts in flight


@cache
def _part_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-parts")


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _missing(exc) -> bool:
    return _code(exc) in {"404", "NoSuchKey", "NotFound"}


def _part_checksum(response: dict) -> dict:
    """A part's CRC32 as the server computed it, listed again at completion."""
    return {"ChecksumCRC32": response["ChecksumCRC32"]} if "ChecksumCRC32" in response else {}


def _exists_already(exc) -> bool:
    # If-None-Match: * lost the race, or the object was there already.
    return _code(exc) in {"412", "PreconditionFailed", "ConditionalRequestConflict"}


class _Body:
    """A ranged GET's streaming body as a closeable file-like object."""

    def __init__(self, body):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        return self._body.read(None if size is None or size < 0 else size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _S3Writer(ObjectWriter):
    def __init__(self, objects: "S3Objects", target: str | None, single_put: bool = False):
        self._objects, self._single_put = objects, single_put
        # Parts go straight to the expected name when there is one (a multipart upload is
        # invisible until completed), else to a temporary key copied at publish.
        self._key = objects.key(target or f"tmp/{secrets.token_hex(16)}")
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._sending: list[Future] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._size += len(data)
        self._buffer += data
        # Strictly more than a part: an object of exactly PART_SIZE (a staged 8 MiB chunk)
        # stays one PUT instead of a multipart upload of one part.
        if len(self._buffer) > (SINGLE_PUT_LIMIT if self._single_put else PART_SIZE):
            self._single_put = False  # more than announced after all: parts, as usual
            while len(self._buffer) > PART_SIZE:
                self._send_part()

    def _send_part(self) -> None:
        s3, bucket = self._objects.client, self._objects.bucket
        if self._upload_id is None:
            upload = s3.create_multipart_upload(
                Bucket=bucket, Key=self._key, **self._objects.checksum
            )
            self._upload_id = upload["UploadId"]
        number = len(self._parts) + len(self._sending) + 1
        with memoryview(self._buffer) as view:
            body = bytes(view[:PART_SIZE])
        del self._buffer[:PART_SIZE]
        # Parts travel in parallel, as boto3's own transfers do, but at most a few per
        # writer, so memory stays bounded (PARTS_IN_FLIGHT x PART_SIZE).
        self._sending.append(
            _part_pool().submit(
                s3.upload_part,
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                **self._objects.checksum,
            )
        )
        while len(self._sending) >= PARTS_IN_FLIGHT:
            self._collect_one()

    def _collect_one(self) -> None:
        sent = self._sending.pop(0).result()
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"], **_part_checksum(sent)})

    def _collect_all(self) -> None:
        while self._sending:
            self._collect_one()

    def publish(self, name: str, overwrite: bool = False) -> bool:
        from botocore.exceptions import ClientError

        s3, bucket, final = self._objects.client, self._objects.bucket, self._objects.key(name)
        condition = {} if overwrite else {"IfNoneMatch": "*"}
        if self._upload_id is None:  # small enough for one PUT, which is atomic too
            try:
                s3.put_object(Bucket=bucket, Key=final, Body=bytes(self._buffer), **condition)
            except ClientError as exc:
                if _exists_already(exc):
                    return False
                raise
            finally:
                self._buffer.clear()
            return True
        if self._buffer or not (self._parts or self._sending):
            self._send_part()
        try:
            self._collect_all()
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
                **(condition if self._key == final else {}),
            )
        except ClientError as exc:
            self.abort()
            if _exists_already(exc):
                return False
            raise
        self._upload_id = None
        if self._key == final:
            return True
        try:
            if not overwrite and self._objects.exists(name):
                return False
            source = {"Bucket": bucket, "Key": self._key}
            if self._size <= COPY_LIMIT:  # one server-side request, no part bookkeeping
                # The copy gets a whole-object checksum of its own: a copied composite
                # one is not kept alike by every server (moto drops its part count).
                s3.copy_object(
                    CopySource=source, Bucket=bucket, Key=final, **self._objects.checksum
                )
            else:
                s3.copy(source, bucket, final)  # a multipart copy, part by part
            return True
        finally:
            s3.delete_object(Bucket=bucket, Key=self._key)

    def abort(self) -> None:
        self._buffer.clear()
        _abort_multipart(self._objects, self._key, self._upload_id, self._sending)
        self._upload_id = None


class _S3Composer(Composer):
    """A multipart upload of the final object whose parts are copied server-side from the
    staged ones (UploadPartCopy), each pinned to the ETag of the bytes the caller hashed."""

    def __init__(self, objects: "S3Objects", name: str, sources: list[str]):
        self._objects, self._key = objects, objects.key(name)
        self._sources = [objects.key(source) for source in sources]
        self._upload_id: str | None = objects.client.create_multipart_upload(
            Bucket=objects.bucket, Key=self._key
        )["UploadId"]
        self._copying: list[Future] = []

    def read_source(self, index: int) -> BinaryIO:
        from botocore.exceptions import ClientError

        if index != len(self._copying):
            raise ValueError("sources are read in order, once each")
        s3, bucket, source = self._objects.client, self._objects.bucket, self._sources[index]
        try:
            response = s3.get_object(Bucket=bucket, Key=source)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(source) from None
            raise
        # Callers serialize writers of an upload, so the parts do not change meanwhile; and
        # should one be replaced anyway, S3 fails the copy rather than publish bytes nobody
        # verified (moto ignores this condition).
        self._copying.append(
            _part_pool().submit(
                s3.upload_part_copy,
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=index + 1,
                CopySource={"Bucket": bucket, "Key": source},
                CopySourceIfMatch=response["ETag"],
            )
        )
        return _Body(response["Body"])  # type: ignore[return-value]

    def publish(self, name: str, overwrite: bool = False) -> bool:
        from botocore.exceptions import ClientError

        if len(self._copying) != len(self._sources) or self._upload_id is None:
            raise RuntimeError("every source must be read (and so verified) before publishing")
        try:  # a failed copy is an error, never "the object exists already"
            parts = [
                {"PartNumber": number, "ETag": future.result()["CopyPartResult"]["ETag"]}
                for number, future in enumerate(self._copying, 1)
            ]
        except BaseException:
            self.abort()
            raise
        try:
            self._objects.client.complete_multipart_upload(
                Bucket=self._objects.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                **({} if overwrite else {"IfNoneMatch": "*"}),
            )
        except ClientError as exc:
            self.abort()
            if _exists_already(exc):
                return False
            raise
        self._upload_id = None
        return True

    def abort(self) -> None:
        _abort_multipart(self._objects, self._key, self._upload_id, self._copying)
        self._upload_id = None


def _abort_multipart(objects, key: str, upload_id: str | None, in_flight: list) -> None:
    """Let the parts in flight end, then abort the multipart upload (if one was started)."""
    for future in in_flight:
        with contextlib.suppress(Exception):
            future.result()
    in_flight.clear()
    if upload_id is not None:
        objects.client.abort_multipart_upload(Bucket=objects.bucket, Key=key, UploadId=upload_id)


class S3Objects(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or make_client()
        # As boto3's upload_file does (unless told to send checksums only where required):
        # each part sent carries a CRC32 the server checks, and the object's checksum is
        # composed from the parts' at completion instead of computed over it all again.
        # (Parts copied server-side carry none: not every S3-compatible server returns one.)
        when = self.client.meta.config.request_checksum_calculation
        self.checksum = {"ChecksumAlgorithm": "CRC32"} if when == "when_supported" else {}

    def key(self, name: str) -> str:
        return self.prefix + name

    def writer(self, target: str | None = None) -> ObjectWriter:
        # Without a name to write to, a multipart upload goes to a temporary key copied into
        # place at publish; an object small enough for one PUT is sent under its name.
        return _S3Writer(self, target, single_put=target is None)

    def sized_writer(self, name: str, size: int) -> ObjectWriter:
        return _S3Writer(self, name, single_put=size <= SINGLE_PUT_LIMIT)

    def composer(self, name: str, sources: "list[tuple[str, int]]") -> Composer | None:
        sizes = [size for _, size in sources]
        if not sizes or len(sizes) > MAX_PARTS or max(sizes) > COPY_LIMIT:
            return None
        if min(sizes[:-1], default=MIN_PART_SIZE) < MIN_PART_SIZE:
            return None  # S3 refuses small parts but the last: stream them instead
        return _S3Composer(self, name, [source for source, _ in sources])

    def read(self, name: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        from botocore.exceptions import ClientError

        if length == 0:
            return io.BytesIO(b"")
        extra = {}
        if length is not None:
            extra["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            extra["Range"] = f"bytes={offset}-"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name), **extra)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from None
            if _code(exc) == "InvalidRange":  # at or past the end
                return io.BytesIO(b"")
            raise
        return _Body(response["Body"])  # type: ignore[return-value]

    def size(self, name: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(name))["ContentLength"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from None
            raise

    def modified(self, name: str) -> float:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from None
            raise
        return head["LastModified"].timestamp()

    def entries(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                yield name, item["Size"], item["LastModified"].timestamp()

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
            return True
        except FileNotFoundError:
            return False

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def delete_prefix(self, prefix: str) -> None:
        batch = []
        for name, _ in self.list(prefix):
            batch.append({"Key": self.key(name)})
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict]) -> None:
        self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def list(self, prefix: str, start_after: str = "") -> Iterator[tuple[str, int]]:
        extra = {"StartAfter": self.key(start_after)} if start_after else {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix), **extra
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :], item["Size"]

    def put_bytes(self, name: str, data: bytes, overwrite: bool = True) -> bool:
        from botocore.exceptions import ClientError

        condition = {} if overwrite else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **condition)
        except ClientError as exc:
            if _exists_already(exc):
                return False
            raise
        return True

    def presigned_url(self, name: str, filename: str, seconds: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(name),
                "ResponseContentDisposition": content_disposition_header(True, filename),
                "ResponseContentType": "application/octet-stream",
            },
            ExpiresIn=seconds,
        )


def make_client():
    import boto3
    from botocore.config import Config

    # S3-compatible servers (MinIO, Ceph, moto) are usually addressed by path, not by a
    # bucket subdomain; AWS itself accepts both.
    custom_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path"} if custom_endpoint else {},
    )
    return boto3.session.Session().client("s3", config=config)
