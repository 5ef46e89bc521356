"""The S3 store: recordings are spooled locally, then uploaded by the server (never by the browser).

Credentials come from the standard AWS chain (environment, profile, instance role). The old system's variable names
are accepted too: AMAZON_CLIENT_KEY, AMAZON_SECRET_CLIENT_KEY, AMAZON_REGION (and S3_BUCKET, read by the settings).
Any S3-compatible server works with an endpoint URL (MinIO, Ceph, moto).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from ..errors import StorageError

#: Files above this go up in parts (a 30-minute speech.wav is about 170 MB).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
TRANSFER = TransferConfig(
    multipart_threshold=MULTIPART_THRESHOLD,
    multipart_chunksize=MULTIPART_THRESHOLD,
    max_concurrency=4,
    use_threads=True,
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    rest = url[len("s3://") :] if url.startswith("s3://") else url
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"store URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class S3Location:
    """Where in S3, and how to reach it."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, region: str | None = None) -> S3Location:
        """The location an `s3://bucket/prefix` URL names; StorageError when it names no bucket."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, endpoint_url or None, region or None)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def make_client(loc: S3Location, connect_timeout: float = 5.0, retries: int = 2):
    """A boto3 S3 client; explicit old-style credentials win only when the standard ones are absent."""
    env = os.environ
    kwargs: dict = {}
    if not env.get("AWS_ACCESS_KEY_ID") and env.get("AMAZON_CLIENT_KEY"):
        kwargs["aws_access_key_id"] = env["AMAZON_CLIENT_KEY"]
        kwargs["aws_secret_access_key"] = env.get("AMAZON_SECRET_CLIENT_KEY", "")
    region = loc.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or env.get("AMAZON_REGION")
    config = Config(
        connect_timeout=connect_timeout, read_timeout=30, retries={"max_attempts": retries, "mode": "standard"}
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=loc.endpoint_url, region_name=region or "us-east-1", config=config, **kwargs
    )


def explain(exc: Exception, loc: S3Location) -> str:
    """A storage failure in words, naming the setting that fixes it."""
    where = f"{loc.url()}" + (f" at {loc.endpoint_url}" if loc.endpoint_url else "")
    if isinstance(exc, NoCredentialsError):
        return (
            f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AMAZON_CLIENT_KEY and AMAZON_SECRET_CLIENT_KEY), or AWS_PROFILE"
        )
    if isinstance(exc, EndpointConnectionError) or (isinstance(exc, BotoCoreError) and "connect" in str(exc).lower()):
        return (
            f"cannot reach S3 for {where}: check the network, or the endpoint setting "
            "(--s3-endpoint-url / S3_ENDPOINT_URL)"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return (
                f"bucket {loc.bucket!r} does not exist at {where}: create it, or fix the store setting "
                "(--store s3://BUCKET/PREFIX, STORE_URL or S3_BUCKET)"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken"):
            return (
                f"S3 rejected the credentials for {where} ({code}): fix AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or AMAZON_CLIENT_KEY / AMAZON_SECRET_CLIENT_KEY, or AWS_PROFILE)"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return (
                f"access denied to {where} ({code}): the credentials need s3:PutObject, s3:GetObject and "
                "s3:ListBucket on this bucket and prefix (see README, S3)"
            )
        return f"S3 error at {where}: {code}: {exc.response.get('Error', {}).get('Message', exc)}"
    return f"S3 failure at {where}: {exc}"


def check_writable(loc: S3Location) -> None:
    """Raise StorageError, in words, unless the bucket is reachable, listable and writable under the prefix."""
    client = make_client(loc, connect_timeout=3.0, retries=1)
    try:
        client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key(""), MaxKeys=1)
        client.put_object(Bucket=loc.bucket, Key=loc.key(".write-check"), Body=b"ok\n")
    except (BotoCoreError, ClientError) as e:
        raise StorageError(explain(e, loc)) from None


class S3Store:
    """Keys `<traj_id>/<file>` under `s3://bucket/prefix/`; reads go through a local cache."""

    def __init__(
        self,
        url: str,
        cache: str | Path = "./cache",
        endpoint_url: str | None = None,
        region: str | None = None,
        **_options,
    ) -> None:
        self.loc = S3Location.parse(url, endpoint_url, region)
        self.url = self.loc.url()
        self.cache = Path(cache).expanduser().resolve()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.loc)
        return self._client

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.loc.bucket, Key=self.loc.key(key), Body=data, ChecksumAlgorithm="SHA256")
        except (BotoCoreError, ClientError) as e:
            raise StorageError(explain(e, self.loc)) from None

    def _cached(self, key: str) -> Path:
        local = (self.cache / key).resolve()
        if self.cache not in local.parents:
            raise ValueError(f"key {key!r} is outside the store")
        return local

    def local_path(self, key: str) -> Path:
        """A local copy of the object (downloaded into the cache once; uploaded objects never change)."""
        local = self._cached(key)
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(local.name + ".part")
            try:
                self.client.download_file(self.loc.bucket, self.loc.key(key), str(tmp), Config=TRANSFER)
            except ClientError as e:
                tmp.unlink(missing_ok=True)
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise KeyError(key) from None
                raise StorageError(explain(e, self.loc)) from None
            except BotoCoreError as e:
                tmp.unlink(missing_ok=True)
                raise StorageError(explain(e, self.loc)) from None
            tmp.replace(local)
        return local

    def get(self, key: str) -> bytes:
        return self.local_path(key).read_bytes()

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        base = self.loc.key("")
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.loc.bucket, Prefix=base + prefix
            ):
                for obj in page.get("Contents", []):
                    keys.append(obj["Key"][len(base) :])
        except (BotoCoreError, ClientError) as e:
            raise StorageError(explain(e, self.loc)) from None
        return sorted(k for k in keys if not k.startswith("."))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.loc.bucket, Key=self.loc.key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(explain(e, self.loc)) from None
        except BotoCoreError as e:
            raise StorageError(explain(e, self.loc)) from None

    def delete(self, key: str) -> None:
        """Delete the object and its cached copy (needs s3:DeleteObject: a researcher's credentials, not the
        server's least-privilege ones)."""
        local = self._cached(key)
        try:
            self.client.delete_object(Bucket=self.loc.bucket, Key=self.loc.key(key))
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"{explain(e, self.loc)} (deleting needs s3:DeleteObject)") from None
        local.unlink(missing_ok=True)
        if local.parent != self.cache and local.parent.is_dir() and not any(local.parent.iterdir()):
            local.parent.rmdir()
