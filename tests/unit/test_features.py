"""l2vol.features without services: environment selection, the offline export (layout, atomicity,
idempotence, incremental by date) and the feature repo's declarations against the factor registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2vol.factors import FAMILIES, REGISTRY, FactorPlan
from l2vol.factors.engine import factor_schema, target_schema
from l2vol.features import export_offline, feast_env, offline_root, store_yaml
from l2vol.features.export import STATE_FILE, read_exported
from l2vol.storage import DatasetStore

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
DATES = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]
SYMBOLS = ["600000.SH", "000001.SZ"]


def factor_partition(d: dt.date, *, seed: int = 0, drop: str | None = None) -> tuple[pa.Table, pa.Schema]:
    """A factors partition with the engine's real schema and random values (2 symbols x 3 buckets)."""
    schema = factor_schema(FactorPlan.make(None))
    rng = np.random.default_rng(seed)
    ends = [dt.datetime.combine(d, dt.time(1, 35 + 5 * b), tzinfo=dt.UTC) for b in range(3)]
    cols: dict[str, list] = {
        "symbol": [s for s in SYMBOLS for _ in ends],
        "ts": [t for _ in SYMBOLS for t in ends],
        "bucket": [b for _ in SYMBOLS for b in range(3)],
    }
    for f in schema:
        if f.name not in cols:
            n = len(cols["symbol"])
            cols[f.name] = rng.integers(0, 9, n).tolist() if pa.types.is_integer(f.type) else rng.random(n).tolist()
    table = pa.table(cols).cast(schema)
    if drop:
        table = table.drop_columns([drop])
        schema = table.schema
    return table, schema


@pytest.fixture
def factors(tmp_path) -> DatasetStore:
    store = DatasetStore(f"file://{tmp_path / 'feat'}")
    for i, d in enumerate(DATES):
        t, s = factor_partition(d, seed=i)
        store.write_partition("factors", d, t, schema=s)
    return store


def test_environment_selection(monkeypatch):
    monkeypatch.delenv("L2VOL_FEAST_ENV", raising=False)
    assert feast_env() == "local"
    assert store_yaml(REPO).name == "feature_store.yaml"
    monkeypatch.setenv("L2VOL_FEAST_ENV", "cluster")
    for var in ("L2VOL_FEAST_PROJECT", "L2VOL_FEAST_REGISTRY_URL", "L2VOL_FEAST_REDIS", "L2VOL_FEAST_OFFLINE_ROOT"):
        monkeypatch.setenv(var, "x")
    assert store_yaml(REPO).name == "feature_store.cluster.yaml"
    assert feast_env("local") == "local"
    with pytest.raises(ValueError, match="unknown Feast environment"):
        feast_env("staging")


def test_offline_root_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("L2VOL_FEAST_OFFLINE_ROOT", raising=False)
    assert offline_root(tmp_path) == str(tmp_path.resolve() / "data" / "offline")
    monkeypatch.setenv("L2VOL_FEAST_OFFLINE_ROOT", "s3://bucket/feast/offline/")
    assert offline_root(tmp_path) == "s3://bucket/feast/offline"
    monkeypatch.setenv("L2VOL_FEAST_OFFLINE_ROOT", "elsewhere")
    assert offline_root(tmp_path) == str(tmp_path.resolve() / "elsewhere")


def test_export_layout_and_values(factors, tmp_path):
    root = str(tmp_path / "offline")
    out = export_offline(factors, root)
    assert out["written"] == [d.isoformat() for d in DATES] and out["skipped"] == 0
    for fam in FAMILIES:
        files = sorted(p.name for p in (tmp_path / "offline" / fam).iterdir())
        assert files == [f"{d.isoformat()}.parquet" for d in DATES]  # nothing but whole Parquet files
        got = read_exported(root, fam)
        assert got.column_names == ["symbol", "ts", *REGISTRY.names(fam)]
        assert got.schema.field("ts").type == pa.timestamp("us", tz="UTC")
        want = factors.read("factors", columns=["symbol", "ts", *REGISTRY.names(fam)])
        want = want.sort_by([("ts", "ascending"), ("symbol", "ascending")])
        got = got.sort_by([("ts", "ascending"), ("symbol", "ascending")])
        for c in REGISTRY.names(fam) + ["symbol"]:
            assert got[c].equals(want[c]), c
        assert got["ts"].cast(pa.int64()).to_pylist() == [v // 1000 for v in want["ts"].cast(pa.int64()).to_pylist()]
    assert not list((tmp_path / "offline" / "_staging").iterdir())


def test_export_is_idempotent_and_incremental(factors, tmp_path):
    root = str(tmp_path / "offline")
    export_offline(factors, root)
    f = tmp_path / "offline" / "realized" / f"{DATES[1].isoformat()}.parquet"
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "offline").rglob("*.parquet")}

    again = export_offline(factors, root)
    assert again["written"] == [] and again["skipped"] == 3
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "offline").rglob("*.parquet")}

    # A rebuilt date is re-exported, alone.
    t, s = factor_partition(DATES[1], seed=99)
    factors.write_partition("factors", DATES[1], t, schema=s)
    out = export_offline(factors, root)
    assert out["written"] == [DATES[1].isoformat()] and out["skipped"] == 2
    assert (
        pq.read_table(f)["rv"].to_pylist()
        == t.sort_by([("symbol", "ascending"), ("ts", "ascending")])["rv"].to_pylist()
    )

    # A date gone from the source disappears from the export; dates outside the range are untouched.
    factors.delete_partition("factors", DATES[2])
    out = export_offline(factors, root, start=DATES[1], end=DATES[2])
    assert out["removed"] == [DATES[2].isoformat()] and out["skipped"] == 1
    assert not (tmp_path / "offline" / "book" / f"{DATES[2].isoformat()}.parquet").exists()
    assert (tmp_path / "offline" / STATE_FILE).exists()

    # A lost file is rewritten even though the state says the date is done; full=True rewrites all.
    f.unlink()
    assert export_offline(factors, root)["written"] == [DATES[1].isoformat()]
    assert len(export_offline(factors, root, full=True)["written"]) == 2


def test_export_refuses_a_partition_without_a_declared_factor(tmp_path):
    store = DatasetStore(f"file://{tmp_path / 'feat'}")
    t, s = factor_partition(DATES[0], drop="vpin")
    store.write_partition("factors", DATES[0], t, schema=s)
    with pytest.raises(ValueError, match=r"table=factors/date=2024-01-02.*\['vpin'\]"):
        export_offline(store, str(tmp_path / "offline"))


def test_repo_declarations_match_the_factor_registry():
    from feast import FeatureService, FeatureView

    from l2vol.features.store import _load_definitions

    objs = _load_definitions(REPO)
    views = {o.name: o for o in objs if isinstance(o, FeatureView)}
    assert set(views) == {f"{fam}_factors" for fam in FAMILIES}
    arrow = {f.name: f.type for f in factor_schema(FactorPlan.make(None))}
    targets = {f.name for f in target_schema()} - {"symbol", "ts", "bucket"}
    for fam in FAMILIES:
        v = views[f"{fam}_factors"]
        assert [f.name for f in v.features] == REGISTRY.names(fam)
        for f in v.features:
            assert str(f.dtype) == {pa.float64(): "Float64", pa.int64(): "Int64"}[arrow[f.name]], f.name
            assert f.tags["unit"] == REGISTRY[f.name].unit
            assert f.name not in targets
        assert v.entities == ["symbol"] and v.batch_source.timestamp_field == "ts"
        assert v.batch_source.path.endswith(f"/{fam}/*.parquet")
        assert v.ttl == (dt.timedelta(days=14) if fam == "history" else dt.timedelta(days=1))
    (svc,) = [o for o in objs if isinstance(o, FeatureService)]
    assert svc.name == "vol_forecast_v1"
    assert sorted(p.name for p in svc.feature_view_projections) == sorted(views)


def test_entities_from_targets_errors_are_clear(tmp_store):
    import pyarrow as pa

    from l2vol.features import entities_from_targets

    with pytest.raises(ValueError, match=r"no committed targets \(run `l2vol factors build`\)"):
        entities_from_targets(tmp_store)
    ts = pa.array([0, 300_000_000_000], type=pa.timestamp("ns", tz="UTC"))
    tmp_store.write_partition(
        "targets",
        "2024-01-02",
        pa.table(
            {"symbol": ["600000.SH"] * 2, "ts": ts, "rv_next_bucket": [1e-5, 0.0], "zero_next_bucket": [False, True]}
        ),
    )
    ent = entities_from_targets(tmp_store)
    assert list(ent.columns) == ["symbol", "ts", "rv_next_bucket", "zero_next_bucket"] and len(ent) == 2
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['rv_next_week'\]"):
        entities_from_targets(tmp_store, targets=["rv_next_week"])
