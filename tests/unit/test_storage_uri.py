"""Store URIs and S3 settings from the environment (no server needed; see tests/integration for S3 I/O)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from l2vol.storage import DatasetStore, StoreError, open_filesystem
from l2vol.storage.uri import s3_options_from_env

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_local_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, root = open_filesystem("relative/store")
    assert isinstance(fs, pafs.LocalFileSystem) and root == str(tmp_path / "relative/store")
    assert open_filesystem(f"file://{tmp_path}/a")[1] == f"{tmp_path}/a"
    assert open_filesystem(f"file://localhost{tmp_path}/a")[1] == f"{tmp_path}/a"
    assert open_filesystem((tmp_path / "with space").as_uri())[1] == f"{tmp_path}/with space"


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("file://otherhost/data", "file:// URIs must be local"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3:///prefix", "s3 URIs need a bucket"),
    ],
)
def test_bad_uris(uri, match):
    with pytest.raises(StoreError, match=match):
        open_filesystem(uri)


def test_a_percent_encoded_file_uri_names_the_decoded_directory(tmp_path):
    target = tmp_path / "my store"
    store = DatasetStore(target.as_uri())
    store.write_partition("trades", "2024-01-02", pa.table({"symbol": ["600519.SH"]}))
    assert (target / "table=trades" / "date=2024-01-02" / "_manifest.json").exists()


def test_s3_options_from_env():
    opts = s3_options_from_env({"L2VOL_S3_ENDPOINT": "http://minio.l2vol.svc:9000", **KEYS})
    assert opts["endpoint_override"] == "minio.l2vol.svc:9000" and opts["scheme"] == "http"
    assert opts["force_virtual_addressing"] is False  # MinIO and friends use path-style buckets
    assert (opts["access_key"], opts["secret_key"], opts["region"]) == ("AKIAEXAMPLE", "secret", "us-east-1")
    assert "session_token" not in opts and "tls_ca_file_path" not in opts

    aws = s3_options_from_env({"AWS_ENDPOINT_URL": "https://s3.example.com", "AWS_DEFAULT_REGION": "cn-north-1"})
    assert aws["scheme"] == "https" and aws["region"] == "cn-north-1" and "access_key" not in aws
    both = s3_options_from_env({"L2VOL_S3_ENDPOINT": "http://a:1", "AWS_ENDPOINT_URL": "http://b:2"})
    assert both["endpoint_override"] == "a:1"
    plain = s3_options_from_env({"AWS_REGION": "eu-west-1", "AWS_SESSION_TOKEN": "t", **KEYS})
    assert "endpoint_override" not in plain and plain["region"] == "eu-west-1" and plain["session_token"] == "t"
    timeouts = s3_options_from_env({"L2VOL_S3_CONNECT_TIMEOUT": "1.5", "L2VOL_S3_REQUEST_TIMEOUT": "9"})
    assert (timeouts["connect_timeout"], timeouts["request_timeout"]) == (1.5, 9.0)


def test_endpoint_must_be_a_url():
    with pytest.raises(StoreError, match=r"L2VOL_S3_ENDPOINT='minio:9000' is not a URL"):
        s3_options_from_env({"L2VOL_S3_ENDPOINT": "minio:9000"})


def test_ca_bundle(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    opts = s3_options_from_env({"L2VOL_S3_ENDPOINT": "https://minio:9000", "L2VOL_S3_CA_BUNDLE": str(ca)})
    assert opts["tls_ca_file_path"] == str(ca)
    with pytest.raises(StoreError, match=r"L2VOL_S3_CA_BUNDLE='/nonexistent/ca.pem': no such file"):
        s3_options_from_env({"L2VOL_S3_CA_BUNDLE": "/nonexistent/ca.pem"})


@pytest.mark.parametrize("value", ["0", "false", "NO"])
def test_turning_tls_verification_off_is_refused_with_the_alternative(value):
    with pytest.raises(StoreError, match=r"L2VOL_S3_VERIFY_TLS=0 is not supported.*L2VOL_S3_CA_BUNDLE"):
        s3_options_from_env({"L2VOL_S3_ENDPOINT": "https://minio:9000", "L2VOL_S3_VERIFY_TLS": value})


@pytest.mark.parametrize(
    "env",
    [
        {"L2VOL_S3_ENDPOINT": "http://127.0.0.1:9", **KEYS},
        {"AWS_ENDPOINT_URL": "https://127.0.0.1:9", "L2VOL_S3_VERIFY_TLS": "1", "AWS_SESSION_TOKEN": "t", **KEYS},
        {"L2VOL_S3_ENDPOINT": "https://127.0.0.1:9", "L2VOL_S3_CA_BUNDLE": "CA", **KEYS},
    ],
    ids=["http", "https-session-token", "https-ca-bundle"],
)
def test_options_are_accepted_by_pyarrow(env, tmp_path):
    """Every option we set is a real S3FileSystem argument (constructing one makes no request)."""
    if env.get("L2VOL_S3_CA_BUNDLE") == "CA":
        (tmp_path / "ca.pem").write_text("")
        env = {**env, "L2VOL_S3_CA_BUNDLE": str(tmp_path / "ca.pem")}
    fs = pafs.S3FileSystem(**s3_options_from_env(env))
    assert fs.region == "us-east-1"


def test_environment_is_read_at_open(monkeypatch):
    monkeypatch.setenv("L2VOL_S3_ENDPOINT", "not a url")
    with pytest.raises(StoreError, match="is not a URL"):
        DatasetStore("s3://bucket/prefix")
    assert os.environ["L2VOL_S3_ENDPOINT"] == "not a url"
