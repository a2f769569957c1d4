"""S3-compatible object storage, the parts every use shares: `s3://bucket/prefix/` locations, a boto3 client
made from the `s3:` settings, and one-line descriptions of what went wrong.

Credentials come only from boto3's standard chain (environment, shared config and credentials files with
`s3.profile`, container or instance role); config.yaml never holds them. Transient errors (throttling, 5xx,
dropped connections) are retried by botocore's `standard` retry mode. boto3 is an optional dependency
(`pip install 'publisher[s3]'`): it is imported only when an `s3://` location is used.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from publisher.errors import ConfigError

if TYPE_CHECKING:
    from publisher.config import S3Config

logger = logging.getLogger(__name__)

SCHEME = "s3://"
RETRIES = 5  # attempts in all, botocore's standard mode (exponential back-off with jitter)
# Error codes that mean the credentials themselves were refused.
CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId",
                              "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed"})


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix: the prefix is empty or ends with "/"."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return self.prefix + name


def is_s3_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def parse_location(value: str) -> S3Location | None:
    """`s3://bucket/prefix/` as a location; None when it is not a valid one (the caller names the key).
    The trailing "/" of the prefix is implied: `s3://b/feeds` is the prefix `feeds/`."""
    if not is_s3_url(value):
        return None
    bucket, _, prefix = value[len(SCHEME):].partition("/")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in ".-" for c in bucket) or bucket != bucket.lower():
        return None
    if prefix.startswith("/") or "//" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        return None
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(bucket, prefix)


@functools.lru_cache(maxsize=4)
def client(settings: S3Config) -> Any:
    """A boto3 S3 client for `settings`, with the standard retry mode and a connection per worker thread.
    Raises ConfigError when boto3 is missing or the profile does not exist. One client per settings and
    process: making one loads the S3 service model (most of a second), and a client is thread-safe."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise ConfigError("s3:// locations need boto3: install it with `pip install 'publisher[s3]'`") from None
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"s3.profile: no profile {settings.profile!r} in the AWS config files") from None
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": RETRIES},
                                    max_pool_connections=max(10, settings.workers + 2),
                                    connect_timeout=10, read_timeout=60)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "PreconditionFailed"...), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    if code is None:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status) if status is not None else None
    return str(code)


def describe(exc: BaseException, where: S3Location | str) -> str:
    """One line for an error of boto3 or botocore, saying what the operator can do about it."""
    code = error_code(exc)
    message = " ".join(str(exc).split())
    if code in ("NoSuchBucket",):
        bucket = where.bucket if isinstance(where, S3Location) else where
        return f"{where}: bucket {bucket!r} does not exist"
    if code in CREDENTIAL_CODES:
        return (f"{where}: the credentials were refused ({code}); check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or s3.profile")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return f"{where}: access denied ({code}); the credentials need list, get, put and delete on this prefix"
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return (f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or s3.profile, or give the machine a role")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return f"{where}: cannot reach the S3 endpoint: {message}"
    if code is not None:
        return f"{where}: {code}: {message}"
    return f"{where}: {message}"


def s3_errors() -> tuple[type[BaseException], ...]:
    """The exception types boto3 raises for a failed request (boto3 is imported by client() first)."""
    import botocore.exceptions

    return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
