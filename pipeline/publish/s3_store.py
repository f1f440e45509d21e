"""The S3 backend (boto3): AWS, or any S3-compatible store through an endpoint URL.

Conditional writes use single-part ``put_object`` with ``IfNoneMatch='*'`` or
``IfMatch=<etag>``: stores enforce those race-free on single-part puts, but not all of
them on multipart completion, and boto3's managed transfer neither passes conditions
nor stays single-part above its threshold, so every object goes up in one request.
Credentials come the boto3 way (environment, shared config, instance role) and never
appear in a message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ..errors import InputError, WorkError
from .storage import Conflict, ObjectInfo, check_key, md5_hex, sha256_hex

SHA256_META = "sha256"
# Errors that mean the request was refused for who we are, not for what we asked.
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InputError(None, "DEST", f"an s3://bucket/prefix URL, not {url!r}")
        return cls(parts.netloc, parts.path.strip("/"))


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    # "path" for most S3-compatible stores on one host; "virtual" for AWS's default.
    addressing: str = "auto"
    # Passed through to every put: e.g. {"ServerSideEncryption": "aws:kms",
    # "SSEKMSKeyId": "…"}.
    extra_put_args: Mapping[str, str] = field(default_factory=dict)
    # Retries after the first try (botocore's "max_attempts" in its retries config).
    max_attempts: int = 5
    connect_timeout: float = 10
    read_timeout: float = 60
    # At least the number of parallel uploads, or connections get thrown away.
    max_pool_connections: int = 10


class S3Store:
    def __init__(self, location: S3Location, options: S3Options | None = None) -> None:
        self.location = location
        self.options = options or S3Options()
        o = self.options
        # A session of our own: boto3's default session resolves credentials once per
        # process and would keep using them after the environment changed.
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=o.endpoint_url,
            region_name=o.region or "us-east-1",
            config=BotoConfig(
                s3={"addressing_style": o.addressing},
                # botocore retries throttling, 5xx and connection errors with
                # exponential backoff and jitter ("standard" mode).
                retries={"max_attempts": o.max_attempts, "mode": "standard"},
                connect_timeout=o.connect_timeout,
                read_timeout=o.read_timeout,
                max_pool_connections=o.max_pool_connections,
            ),
        )

    def describe(self) -> str:
        where = f"s3://{self.location.bucket}/{self.location.prefix}".rstrip("/")
        return where + (f" at {self.options.endpoint_url}" if self.options.endpoint_url else "")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _fail(self, exc: Exception, key: str | None) -> Exception:
        """One clear error for what boto3 raised; never the credentials themselves."""
        where = self.describe() + (f": {key}" if key else "")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                return Conflict(f"{where}: changed or exists already (precondition failed)")
            if code in ("NoSuchBucket",):
                return InputError(None, "bucket", f"{self.location.bucket!r} does not exist")
            if code in _CREDENTIAL_CODES or status == 403:
                return InputError(
                    None, "credentials", f"{where}: refused ({code or status}); check the keys"
                )
            message = f"{code or status} {error.get('Message', '')}".strip()
            return WorkError(f"{where}: {message} ({self._tries})")
        if isinstance(exc, ReadTimeoutError):
            return WorkError(
                f"{where}: no answer within {self.options.read_timeout:g} s ({self._tries})"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return WorkError(f"{where}: endpoint unreachable ({self._tries})")
        return WorkError(f"{where}: {exc.__class__.__name__} ({self._tries})")

    @property
    def _tries(self) -> str:
        n = self.options.max_attempts + 1
        return f"{n} tries with backoff" if n > 1 else "1 try"

    def check_bucket(self) -> None:
        """Fail early and clearly on a missing bucket or refused credentials."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise InputError(
                    None, "bucket", f"{self.location.bucket!r} does not exist"
                ) from None
            raise self._fail(exc, None) from None
        except BotoCoreError as exc:
            raise self._fail(exc, None) from None

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        digest = sha256_hex(data)
        args: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Key": self._key(key),
            "Body": data,
            "ContentType": content_type,
            "CacheControl": cache_control,
            "Metadata": {SHA256_META: digest},
            **self.options.extra_put_args,
        }
        if create_only:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = if_match
        try:
            response = self.client.put_object(**args)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, key) from None
        etag = str(response["ETag"])
        # With SSE-KMS or SSE-C the ETag is not the MD5: then confirmed is False and the
        # publisher reads the object back instead.
        return ObjectInfo(key, len(data), etag, digest, confirmed=etag.strip('"') == md5_hex(data))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._fail(exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, key) from None
        meta = r.get("Metadata") or {}
        return ObjectInfo(key, int(r["ContentLength"]), str(r["ETag"]), meta.get(SHA256_META))

    def get(self, key: str) -> bytes | None:
        try:
            r = self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            data: bytes = r["Body"].read()
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._fail(exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, key) from None
        return data

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.location.prefix}/" if self.location.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(base) :]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, None) from None
