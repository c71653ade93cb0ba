"""DatasetStore on s3:// against a real S3 server process (moto, auth on) on 127.0.0.1.

Endpoint and credentials reach the store only through the environment, as in a pod.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from l2vol.storage import MANIFEST, DatasetStore, StoreError

pytestmark = pytest.mark.integration

D1, D2, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)
SYMBOLS = ("600519.SH", "000001.SZ", "300750.SZ", "688981.SH")


def snapshots(day: dt.date, n: int, *, version: int = 0) -> pa.Table:
    return pa.table(
        {
            "symbol": [SYMBOLS[i % len(SYMBOLS)] for i in range(n)],
            "ts": pa.array([dt.datetime(day.year, day.month, day.day, 1, 30, i % 60, tzinfo=dt.UTC) for i in range(n)]),
            "last_px": [10.0 + 0.01 * i + version for i in range(n)],
            "bid_px_1": [9.99 + 0.01 * i for i in range(n)],
            "cum_volume": [100 * i for i in range(n)],
        }
    )


@pytest.fixture
def store(s3_env) -> DatasetStore:
    """A store under a fresh prefix of the test bucket, configured from the environment only."""
    return DatasetStore(f"s3://{s3_env.bucket}/runs/{uuid.uuid4().hex[:12]}")


def keys_under(server, prefix: str) -> dict[str, str]:
    """key -> ETag of every object under ``prefix`` (directory markers included)."""
    out = {}
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


def partition_keys(server, store: DatasetStore, table: str, day: dt.date) -> dict[str, str]:
    prefix = store.partition_path(table, day).split("/", 1)[1] + "/"
    return {k.rsplit("/", 1)[1]: v for k, v in keys_under(server, prefix).items() if not k.endswith("/")}


# ----------------------------------------------------------------------------------------- auth


def test_auth_is_on(s3_server):
    """Requests with an unknown key, a wrong secret or no signature are refused; the valid key works."""
    assert s3_server.bucket in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        s3_server.client(access_key="AKIABOGUSBOGUSBOGUS0", secret_key="bogus").list_buckets()
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3_server.client(secret_key="not-the-secret").list_objects_v2(Bucket=s3_server.bucket)
    import boto3

    anonymous = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, region_name=s3_server.region, config=Config(signature_version=UNSIGNED)
    )
    with pytest.raises(ClientError):
        anonymous.list_objects_v2(Bucket=s3_server.bucket)


@pytest.mark.parametrize(
    ("key", "secret"),
    [("AKIABOGUSBOGUSBOGUS0", "bogus"), (None, "not-the-secret")],
    ids=["unknown-key", "wrong-secret"],
)
def test_wrong_credentials_give_a_clear_error(s3_env, monkeypatch, key, secret):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key or s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(StoreError) as err:
        DatasetStore(f"s3://{s3_env.bucket}/prefix")
    msg = str(err.value)
    assert f"s3://{s3_env.bucket}" in msg and s3_env.endpoint in msg
    assert "access denied" in msg and "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in msg


def test_missing_bucket_gives_a_clear_error(s3_env):
    with pytest.raises(StoreError, match=rf"s3://no-such-bucket at {s3_env.endpoint}: bucket does not exist"):
        DatasetStore("s3://no-such-bucket/prefix")


def test_unreachable_endpoint_gives_a_clear_error(s3_env, monkeypatch, unused_port):
    endpoint = f"http://127.0.0.1:{unused_port}"  # nothing listens there
    monkeypatch.setenv("L2VOL_S3_ENDPOINT", endpoint)
    with pytest.raises(StoreError, match=rf"s3://{s3_env.bucket} at {endpoint}: "):
        DatasetStore(f"s3://{s3_env.bucket}/prefix")


# ------------------------------------------------------------------------------------ datasets


def test_write_list_read_back_with_projection_and_symbols(s3_env, store):
    for day in (D1, D2, D3):
        info = store.write_partition("snapshots", day, snapshots(day, 40), max_rows_per_file=15)
        assert len(info.files) == 3
    store.write_partition("trades", D2, snapshots(D2, 4))

    assert store.list_tables() == ["snapshots", "trades"]
    assert store.list_dates("snapshots") == [D1, D2, D3]
    assert store.list_dates("snapshots", D2, D3) == [D2, D3]
    assert store.read_partition("snapshots", D2).equals(snapshots(D2, 40))

    got = store.read("snapshots", D1, D2, columns=["last_px", "symbol"], symbols=["600519.SH", "688981.SH"])
    expected = pa.concat_tables([snapshots(d, 40) for d in (D1, D2)]).select(["last_px", "symbol"])
    expected = expected.filter(pc.is_in(expected["symbol"], pa.array(["600519.SH", "688981.SH"])))
    assert got.equals(expected)
    assert store.read_partition("snapshots", D3, columns=["cum_volume"], symbols=["000001.SZ"]).column_names == [
        "cum_volume"
    ]
    # Readers read what the manifest lists, and the manifest's hashes are those of the objects written.
    man = store.read_manifest("snapshots", D1)
    assert sorted(partition_keys(s3_env, store, "snapshots", D1)) == sorted(
        [MANIFEST, *(f["name"] for f in man["files"])]
    )
    assert store.location().startswith(f"s3://{s3_env.bucket}/runs/")


def test_idempotent_rewrite_and_overwrite_without_stale_parts(s3_env, store):
    first = store.write_partition("snapshots", D1, snapshots(D1, 50), max_rows_per_file=10)
    before = partition_keys(s3_env, store, "snapshots", D1)
    again = store.write_partition("snapshots", D1, snapshots(D1, 50), max_rows_per_file=10)
    assert again.manifest == first.manifest
    assert partition_keys(s3_env, store, "snapshots", D1) == before  # same keys, same content (ETags)

    new = store.write_partition("snapshots", D1, snapshots(D1, 12, version=1), max_rows_per_file=10)
    assert store.read_partition("snapshots", D1).equals(snapshots(D1, 12, version=1))
    after = partition_keys(s3_env, store, "snapshots", D1)
    assert set(after) == {MANIFEST, *new.files}
    assert not set(first.files) & set(after)


def test_failed_write_is_invisible_and_gc_cleans_orphans(s3_env, store):
    store.write_partition("snapshots", D1, snapshots(D1, 20))
    committed = partition_keys(s3_env, store, "snapshots", D1)

    def dies_mid_partition():
        yield snapshots(D2, 10)  # flushed as a part object
        yield snapshots(D2, 10)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="went away"):
        store.write_partition("snapshots", D2, dies_mid_partition(), max_rows_per_file=10)
    assert store.list_dates("snapshots") == [D1]
    assert partition_keys(s3_env, store, "snapshots", D2) == {}  # the attempt removed its parts

    # A killed writer cannot clean up: leave an orphan part as it would, without a manifest.
    orphan_key = store.partition_path("snapshots", D3).split("/", 1)[1] + "/part-0000-0123456789abcdef.parquet"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=orphan_key, Body=b"PAR1 partial")
    assert store.list_dates("snapshots") == [D1]
    with pytest.raises(StoreError, match="no committed partition"):
        store.read_partition("snapshots", D3)
    assert store.gc() == []  # younger than the grace period
    assert store.gc(older_than_s=0) == [f"s3://{s3_env.bucket}/{orphan_key}"]
    assert partition_keys(s3_env, store, "snapshots", D1) == committed
    assert store.read("snapshots").equals(snapshots(D1, 20))

    assert store.delete_partition("snapshots", D1) is True
    assert store.list_dates("snapshots") == [] and store.list_tables() == []


def test_damaged_part_names_the_object(s3_env, store):
    info = store.write_partition("snapshots", D1, snapshots(D1, 20), max_rows_per_file=10)
    key = store.partition_path("snapshots", D1).split("/", 1)[1] + "/" + info.files[0]
    s3_env.client().delete_object(Bucket=s3_env.bucket, Key=key)
    with pytest.raises(StoreError, match=f"s3://{s3_env.bucket}/{key}"):
        store.read_partition("snapshots", D1)


def test_json_and_bytes_artifacts(s3_env, store):
    loc = store.write_json("reports/dq/2024-01-02.json", {"rows_in": 10, "kept": 9, "day": D1})
    assert loc == f"{store.uri}/reports/dq/2024-01-02.json"
    assert store.read_json("reports/dq/2024-01-02.json") == {"rows_in": 10, "kept": 9, "day": "2024-01-02"}
    store.write_bytes("reports/dq/2024-01-02.html", b"<html>ok</html>")
    assert store.read_bytes("reports/dq/2024-01-02.html") == b"<html>ok</html>"
    assert store.exists("reports/dq/2024-01-02.json") and not store.exists("reports/dq/none.json")
    assert store.list_files("reports") == ["reports/dq/2024-01-02.html", "reports/dq/2024-01-02.json"]
    assert store.list_files("reports/none") == []
    with pytest.raises(StoreError, match=r"reports/dq/none.json: not found"):
        store.read_json("reports/dq/none.json")
    # Artifacts written with the store are plain objects that any S3 client can read.
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key=loc.split("/", 3)[3])["Body"].read()
    assert b'"kept": 9' in body
