"""Open a filesystem for a store URI. Endpoints and credentials come from the environment, never code.

``s3://bucket/prefix`` works with any S3-compatible endpoint (MinIO, SeaweedFS, AWS, moto):

=========================  ==================================================================
``L2VOL_S3_ENDPOINT``      endpoint URL, e.g. ``http://minio.l2vol.svc:9000`` (``AWS_ENDPOINT_URL``
                           is honoured too); unset means AWS
``AWS_ACCESS_KEY_ID``      access key (from a Kubernetes Secret in the cluster)
``AWS_SECRET_ACCESS_KEY``  secret key
``AWS_REGION``             region (default ``us-east-1``)
``L2VOL_S3_CA_BUNDLE``     path to a PEM CA bundle for the endpoint's certificate (self-signed MinIO)
``L2VOL_S3_VERIFY_TLS``    must stay on: ``0`` is refused with an error, because pyarrow's S3
                           client cannot skip certificate verification; use L2VOL_S3_CA_BUNDLE
=========================  ==================================================================

Errors name the bucket and endpoint: wrong credentials say access is denied, a missing bucket says
it does not exist.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

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
        ca = env["L2VOL_S3_CA_BUNDLE"]
        if not os.path.isfile(ca):
            raise StoreError(f"L2VOL_S3_CA_BUNDLE={ca!r}: no such file (a PEM bundle of the endpoint's CA)")
        opts["tls_ca_file_path"] = ca
    if env.get("L2VOL_S3_VERIFY_TLS", "1").lower() in ("0", "false", "no"):
        # pyarrow.fs.S3FileSystem has no switch to turn verification off (apache/arrow#40754 added
        # only tls_ca_file_path), and silently verifying anyway would hide the setting being ignored.
        raise StoreError(
            "L2VOL_S3_VERIFY_TLS=0 is not supported: certificates are always verified; point "
            "L2VOL_S3_CA_BUNDLE at the endpoint's CA certificate (PEM) instead"
        )
    opts["connect_timeout"] = float(env.get("L2VOL_S3_CONNECT_TIMEOUT", "5"))
    opts["request_timeout"] = float(env.get("L2VOL_S3_REQUEST_TIMEOUT", "30"))
    return opts


#: How the AWS SDK (through pyarrow) and S3 servers spell an authentication/authorization failure.
#: HEAD requests carry no error body, so pyarrow reports only ``AWS Error ACCESS_DENIED``.
_DENIED = ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch", "403")


def _check_bucket(fs: pafs.S3FileSystem, bucket: str, endpoint: str) -> None:
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        msg = str(exc)
        if any(d in msg.lower() for d in _DENIED):
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
        path = unquote(u.path) if u.scheme == "file" else uri  # file URIs are percent-encoded
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
