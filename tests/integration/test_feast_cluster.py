"""The cluster variant (feature_store.cluster.yaml) against this machine's real services: SQL registry on
PostgreSQL (127.0.0.1:5432, database ``test``, a schema unique to the run) and the Redis online store
(127.0.0.1:6379, a project name unique to the run). Both are cleaned up. The offline Parquet stays on a
local path here (the cluster reads it from S3; DuckDB's S3 reader is an extension fetched at runtime, not
available offline)."""

from __future__ import annotations

import shutil
import uuid

import pytest
from support import port_open, require_service
from test_feast_local import FEATURES, REPO, assert_same_values, build_market, latest_rows

from l2vol import features

pytestmark = pytest.mark.integration

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    require_service(port_open("127.0.0.1", 5432), "PostgreSQL not listening on 127.0.0.1:5432")
    require_service(port_open("127.0.0.1", 6379), "Redis not listening on 127.0.0.1:6379")
    import psycopg
    import redis

    run = f"l2vol_t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{run}"')
    client = redis.Redis(host="127.0.0.1", port=6379)
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    monkeypatch.setenv("L2VOL_FEAST_ENV", "cluster")
    monkeypatch.setenv("L2VOL_FEAST_PROJECT", run)
    monkeypatch.setenv(
        "L2VOL_FEAST_REGISTRY_URL", f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{run}"
    )
    monkeypatch.setenv("L2VOL_FEAST_REDIS", "127.0.0.1:6379")
    monkeypatch.setenv("L2VOL_FEAST_OFFLINE_ROOT", str(tmp_path / "offline"))
    try:
        yield {"repo": repo, "run": run, "redis": client, "root": tmp_path}
    finally:
        try:
            features.open_store(repo).teardown()
        finally:
            for key in client.scan_iter(match=f"*{run}".encode()):
                client.delete(key)
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{run}" CASCADE')


def test_cluster_variant_on_postgres_and_redis(cluster):
    repo, run = cluster["repo"], cluster["run"]
    feat = build_market(cluster["root"] / "market", symbols=3, days=2)
    factors = feat.read("factors").to_pandas()
    symbols = sorted(factors["symbol"].unique())

    applied = features.apply(repo)
    assert applied["project"] == run and applied["environment"] == "cluster"
    assert applied["offline_root"] == str(cluster["root"] / "offline")
    out = features.materialize(repo, factors["ts"].min().date(), factors["ts"].max().date(), factors=feat)
    assert len(out["export"]["written"]) == 2  # the factor dates were exported on the way

    # The registry lives in the run's PostgreSQL schema, the online rows in Redis under the run's project.
    import psycopg

    with psycopg.connect(PG) as conn:
        sql = f'SELECT feature_view_name FROM "{run}".feature_views WHERE project_id = %s'
        names = {r[0] for r in conn.execute(sql, [run])}
    assert names == {"realized_factors", "book_factors", "trades_factors", "history_factors"}
    assert len(list(cluster["redis"].scan_iter(match=f"*{run}".encode()))) == len(symbols)

    got = features.online(repo, symbols).set_index("symbol").sort_index()
    assert_same_values(got, latest_rows(factors), FEATURES)
    fast = features.online_batch(repo, [*symbols, "999999.SH"])
    sdk = features.online(repo, [*symbols, "999999.SH"])
    assert_same_values(fast, sdk, FEATURES)
    assert fast.iloc[-1][FEATURES].isna().all()


def test_cluster_variant_requires_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("L2VOL_FEAST_ENV", "cluster")
    monkeypatch.delenv("L2VOL_FEAST_REDIS", raising=False)
    with pytest.raises(ValueError, match="L2VOL_FEAST_REDIS"):
        features.store_yaml(REPO)


def test_cluster_yaml_keeps_secrets_out():
    text = (REPO / "feature_store.cluster.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for var in ("L2VOL_FEAST_PROJECT", "L2VOL_FEAST_REGISTRY_URL", "L2VOL_FEAST_REDIS"):
        assert "${" + var + "}" in body
    assert "password" not in body.lower() and "@" not in body


def test_export_to_s3_and_the_cluster_sources_point_there(s3_env, tmp_path, monkeypatch):
    """The cluster's offline half up to Feast: the export writes whole objects to S3 (moto, auth on),
    re-runs incrementally, and the declared sources read that prefix with the S3 endpoint override."""
    from l2vol.features.export import read_exported
    from l2vol.features.store import _load_definitions

    feat = build_market(tmp_path / "market", symbols=2, days=2)
    root = f"s3://{s3_env.bucket}/feast-{uuid.uuid4().hex[:8]}/offline"
    out = features.export_offline(feat, root)
    assert len(out["written"]) == 2
    again = features.export_offline(feat, root)
    assert again["written"] == [] and again["skipped"] == 2
    got = read_exported(root, "realized")
    assert got.num_rows == feat.read("factors", columns=["symbol"]).num_rows

    monkeypatch.setenv("L2VOL_FEAST_OFFLINE_ROOT", root)
    views = [o for o in _load_definitions(REPO) if hasattr(o, "batch_source")]
    for v in views:
        assert v.batch_source.path.startswith(root + "/")
        assert v.batch_source.s3_endpoint_override == s3_env.endpoint
