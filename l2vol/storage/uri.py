"""Open a filesystem for a store URI. Endpoints and credentials come from the environment, never code.

``s3://bucket/prefix`` works with any S3-compatible endpoint (MinIO, SeaweedFS, AWS, moto):

=========================  ==================================================================
``L2VOL_S3_ENDPOINT``      endpoint URL, e.g. ``http://minio.l2vol.svc:9000`` (``AWS_ENDPOINT_URL``
                           is honoured too); unset means AWS
``AWS_ACCESS_KEY_ID``      access key (from a Kubernetes Secret in the cluster)
``AWS_SECRET_ACCESS_KEY``  secret key
``AWS_REGION``             region (default ``us-east-1``)
``L2VOL_S3_VERIFY_TLS``    ``0`` to skip certificate verification for self-signed endpoints
``L2VOL_S3_CA_BUNDLE``     path to a CA bundle for the endpoint's certificate
=========================  ==================================================================
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StoreError(RuntimeError):
    """A storage failure with the location it happened at (bucket/key or path) in the message."""


def s3_options_from_env(env: dict[str, str] | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    endpoint = env.get("L2VOL_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL")
    opts: dict = {"region": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1"))}
    if endpoint:
        u = urlparse(endpoint)
        if not u.scheme or not u.netloc:
            raise StoreError(f"L2VOL_S3_ENDPOINT={endpoint!r} is not a URL like http://host:9000")
        opts["endpoint_override"] = u.netloc
        opts["scheme"] = u.scheme
        opts["force_virtual_addressing"] = False
    if env.get("AWS_ACCESS_KEY_ID"):
        opts["access_key"] = env["AWS_ACCESS_KEY_ID"]
        opts["secret_key"] = env.get("AWS_SECRET_ACCESS_KEY", "")
        if env.get("AWS_SESSION_TOKEN"):
            opts["session_token"] = env["AWS_SESSION_TOKEN"]
    if env.get("L2VOL_S3_CA_BUNDLE"):
        opts["tls_ca_file_path"] = env["L2VOL_S3_CA_BUNDLE"]
    if env.get("L2VOL_S3_VERIFY_TLS", "1").lower() in ("0", "false", "no"):
        opts["tls_verify_certificates"] = False
    opts["connect_timeout"] = float(env.get("L2VOL_S3_CONNECT_TIMEOUT", "5"))
    opts["request_timeout"] = float(env.get("L2VOL_S3_REQUEST_TIMEOUT", "30"))
    return opts


def _check_bucket(fs: pafs.S3FileSystem, bucket: str, endpoint: str) -> None:
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        msg = str(exc)
        if "AccessDenied" in msg or "InvalidAccessKeyId" in msg or "SignatureDoesNotMatch" in msg or "403" in msg:
            raise StoreError(
                f"s3://{bucket} at {endpoint}: access denied - check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY ({msg})"
            ) from exc
        raise StoreError(f"s3://{bucket} at {endpoint}: {msg}") from exc
    if info.type == pafs.FileType.NotFound:
        raise StoreError(f"s3://{bucket} at {endpoint}: bucket does not exist (create it first)")


def open_filesystem(uri: str, env: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, root path)`` for ``uri``. S3 stores are checked (bucket exists, key valid)."""
    u = urlparse(uri)
    if u.scheme in ("", "file"):
        path = u.path if u.scheme == "file" else uri
        if u.scheme == "file" and u.netloc not in ("", "localhost"):
            raise StoreError(f"{uri}: file:// URIs must be local (file:///abs/path)")
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if u.scheme == "s3":
        if not u.netloc:
            raise StoreError(f"{uri}: s3 URIs need a bucket (s3://bucket/prefix)")
        opts = s3_options_from_env(env)
        fs = pafs.S3FileSystem(**opts)
        endpoint = f"{opts.get('scheme', 'https')}://{opts.get('endpoint_override', 's3.amazonaws.com')}"
        _check_bucket(fs, u.netloc, endpoint)
        return fs, f"{u.netloc}{u.path}".rstrip("/")
    raise StoreError(f"{uri}: unsupported scheme {u.scheme!r} (use file:// or s3://)")
