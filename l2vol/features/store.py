"""Feast operations on ``feature_repo/``: apply, materialize, training sets, online reads.

Plain functions with typed arguments that return JSON-able summaries or DataFrames; the CLI and the
pipeline components wrap them. feast is imported inside the functions (DESIGN §1: ``import l2vol.cli``
must not pay for it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from l2vol.features.config import feast_env, offline_root, store_yaml

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from l2vol.storage import DatasetStore

DEFAULT_SERVICE = "vol_forecast_v1"
#: Name of the entity dataframe's timestamp column in our tables (bucket end, UTC).
TS = "ts"

_STORES: dict[tuple, FeatureStore] = {}


@contextlib.contextmanager
def _quiet_offline_engine():
    """ibis 12 calls a DuckDB method that DuckDB 2 deprecates, once per query: noise for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
        yield


def _store_key(repo_dir: str | Path, env: str | None) -> tuple:
    yaml_path = store_yaml(repo_dir, env)
    watched = ("L2VOL_FEAST_PROJECT", "L2VOL_FEAST_REGISTRY_URL", "L2VOL_FEAST_REDIS")
    return (str(yaml_path.resolve()), yaml_path.stat().st_mtime_ns, tuple(os.environ.get(v) for v in watched))


def open_store(repo_dir: str | Path, *, env: str | None = None, fresh: bool = False) -> FeatureStore:
    """The FeatureStore of ``repo_dir`` for the selected environment (cached per configuration, so a
    live loop does not reload the registry per call; ``fresh`` builds a new one)."""
    from feast import FeatureStore

    key = _store_key(repo_dir, env)
    if fresh or key not in _STORES:
        yaml_path = store_yaml(repo_dir, env)
        _STORES[key] = FeatureStore(repo_path=str(Path(repo_dir).resolve()), fs_yaml_file=yaml_path)
    return _STORES[key]


def _load_definitions(repo_dir: Path) -> list:
    """Feast objects declared by the repo's Python files, imported afresh (the declarations read the
    environment, e.g. the offline root, so a cached module from another configuration must not leak)."""
    from feast import Entity, FeatureService, FeatureView

    objects: list = []
    for py in sorted(repo_dir.glob("*.py")):
        if py.name.startswith(("_", ".")):
            continue
        name = f"_l2vol_feature_repo_{abs(hash(str(py.resolve())))}_{py.stem}"
        spec = importlib.util.spec_from_file_location(name, py)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        for obj in vars(module).values():
            if isinstance(obj, Entity | FeatureView | FeatureService) and not any(obj is o for o in objects):
                objects.append(obj)
    return objects


def apply(repo_dir: str | Path, *, env: str | None = None) -> dict:
    """Register the repo's entities, feature views and services (and create the online tables);
    objects of the project that the repo no longer declares are deleted, as ``feast apply`` does.
    Returns the project and the names applied/deleted."""
    from feast import Entity, FeatureService, FeatureView

    t0 = time.perf_counter()
    repo = Path(repo_dir).resolve()
    store = open_store(repo, env=env, fresh=True)
    objects = _load_definitions(repo)
    project = store.project
    reg = store.registry
    declared = {(type(o).__name__, o.name) for o in objects}
    existing = [
        *reg.list_entities(project, allow_cache=False),
        *reg.list_feature_views(project, allow_cache=False),
        *reg.list_feature_services(project, allow_cache=False),
    ]
    to_delete = [
        o
        for o in existing
        if (type(o).__name__, o.name) not in declared and not (isinstance(o, Entity) and o.name == "__dummy")
    ]
    store.apply(objects, objects_to_delete=to_delete, partial=False)
    kinds = {"entities": Entity, "feature_views": FeatureView, "feature_services": FeatureService}
    return {
        "project": project,
        "environment": feast_env(env),
        "offline_root": offline_root(repo),
        **{k: sorted(o.name for o in objects if type(o) is cls) for k, cls in kinds.items()},
        "deleted": sorted(o.name for o in to_delete),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _utc(x: dt.datetime | dt.date | str, *, end: bool) -> dt.datetime:
    """A datetime in UTC; a bare date means its start (``end=False``) or the start of the next day."""
    if isinstance(x, str):
        x = dt.datetime.fromisoformat(x) if ("T" in x or " " in x) else dt.date.fromisoformat(x)
    if not isinstance(x, dt.datetime):
        x = dt.datetime.combine(x + dt.timedelta(days=1) if end else x, dt.time(), tzinfo=dt.UTC)
    return x if x.tzinfo is not None else x.replace(tzinfo=dt.UTC)


def materialize(
    repo_dir: str | Path,
    start: dt.datetime | dt.date | str | None,
    end: dt.datetime | dt.date | str,
    incremental: bool = False,
    *,
    factors: DatasetStore | str | None = None,
    views: list[str] | None = None,
    env: str | None = None,
) -> dict:
    """Load the latest feature row per symbol with ts in [start, end] into the online store.

    A date for ``end`` includes that whole date (UTC). ``incremental`` continues each view from where
    its last materialization ended (``start`` is ignored; the first run looks back one TTL). Run
    :func:`l2vol.features.export_offline` first so the offline Parquet holds the dates, or pass the factor
    store as ``factors`` (a DatasetStore or its URI) to export the dates up to ``end`` (from ``start``)
    here; the export summary is then part of the result.
    """
    t0 = time.perf_counter()
    if not incremental and start is None:
        raise ValueError("materialize: start is required unless incremental=True")
    exported = None
    if factors is not None:
        from l2vol.features.export import export_offline
        from l2vol.storage import DatasetStore

        src = factors if isinstance(factors, DatasetStore) else DatasetStore(factors)
        lo = None if incremental else _utc(start, end=False).date()
        hi = (_utc(end, end=True) - dt.timedelta(microseconds=1)).date()
        exported = export_offline(src, offline_root(repo_dir), start=lo, end=hi)
    store = open_store(repo_dir, env=env)
    end_ts = _utc(end, end=True)
    start_ts = None if incremental else _utc(start, end=False)
    # Feast prints its progress to stdout; keep stdout for the caller's (e.g. the CLI's --json) output.
    with _quiet_offline_engine(), contextlib.redirect_stdout(sys.stderr):
        if start_ts is None:
            store.materialize_incremental(end_date=end_ts, feature_views=views)
        else:
            store.materialize(start_date=start_ts, end_date=end_ts, feature_views=views)
    names = views or sorted(v.name for v in store.list_feature_views())
    return {
        "project": store.project,
        "views": names,
        "start": start_ts.isoformat() if start_ts else None,
        "end": end_ts.isoformat(),
        "incremental": incremental,
        "export": exported,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def training_set(
    repo_dir: str | Path,
    entity_df: pd.DataFrame,
    service: str = DEFAULT_SERVICE,
    *,
    engine: str = "feast",
    env: str | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for every row of ``entity_df`` (columns ``symbol``, ``ts`` and any
    others, e.g. targets, passed through), in the rows' order.

    For a row (s, T) each feature view contributes its latest row with T - ttl <= ts <= T (Feast's
    semantics): a feature row stamped t (a bucket end) only uses records before t, so asking at T = t
    gets that bucket and asking at t - 1 ns gets the bucket before. Missing rows give nulls. ``ts`` is
    returned as given (UTC); the join itself compares at microsecond resolution (see the code).

    ``engine="feast"`` runs ``get_historical_features`` on the configured offline store; ``engine="asof"``
    runs the same join as one DuckDB ``ASOF LEFT JOIN`` per feature view over the exported Parquet (sources
    and TTLs read from the registry; local paths only), much faster on a month of buckets (see
    benchmarks/bench_feast.py); the tests hold both to the same values.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in ("symbol", TS) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"training_set: entity_df lacks column(s) {missing}; it needs symbol and {TS}")
    if engine not in ("feast", "asof"):
        raise ValueError(f"training_set: unknown engine {engine!r} (feast, asof)")
    store = open_store(repo_dir, env=env)
    ts = pd.to_datetime(entity_df[TS], utc=True)
    ent = entity_df.drop(columns=[TS]).copy()
    # Feature rows are stamped in whole microseconds (export) and the DuckDB engine compares in
    # microseconds, so T is floored to the microsecond: for such rows ts <= T iff ts <= floor(T)
    # (T = t - 1 ns still misses the bucket ending at t).
    ent["event_timestamp"] = ts.dt.floor("us")
    ent["_l2vol_row"] = np.arange(len(ent))
    if engine == "asof":
        out = _asof_join(store, service, ent)
    else:
        with _quiet_offline_engine():
            job = store.get_historical_features(
                entity_df=ent, features=store.get_feature_service(service), full_feature_names=False
            )
            out = job.to_df()
    out = out.sort_values("_l2vol_row").reset_index(drop=True)
    out = out.drop(columns=["_l2vol_row", "event_timestamp"])
    if len(out) != len(entity_df):
        raise RuntimeError(f"training_set: Feast returned {len(out)} rows for {len(entity_df)} entity rows")
    out.insert(0, TS, ts.reset_index(drop=True))
    first = [c for c in entity_df.columns if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]


def _asof_join(store: FeatureStore, service: str, ent: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join as DuckDB ASOF joins: per view, the latest row with ts <= T (per
    symbol), kept only when ts >= T - ttl."""
    import duckdb
    import pyarrow as pa
    from feast import FileSource

    svc = store.get_feature_service(service)
    select = ["e.*"]
    joins = []
    for i, proj in enumerate(svc.feature_view_projections):
        fv = store.get_feature_view(proj.name)
        src = fv.batch_source
        if not isinstance(src, FileSource) or "://" in src.path or list(fv.entities) != ["symbol"]:
            raise ValueError(
                f"training_set(engine='asof'): view {fv.name!r} needs a local Parquet source keyed by symbol"
            )
        path = src.path.replace("'", "''")
        ts = f'f{i}."{src.timestamp_field}"'
        fresh = (
            f"{ts} >= e.event_timestamp - to_microseconds({int(fv.ttl.total_seconds() * 1e6)}::BIGINT)"
            if fv.ttl
            else "TRUE"
        )
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{path}') f{i} ON e.symbol = f{i}.symbol AND e.event_timestamp >= {ts}"
        )
        select += [f'CASE WHEN {fresh} THEN f{i}."{f.name}" END AS "{f.name}"' for f in proj.features]
    table = pa.Table.from_pandas(ent, preserve_index=False)
    idx = table.schema.get_field_index("event_timestamp")
    table = table.set_column(idx, "event_timestamp", table["event_timestamp"].cast(pa.timestamp("us", tz="UTC")))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("e", table)
        return con.sql(f"SELECT {', '.join(select)} FROM e {' '.join(joins)} ORDER BY e._l2vol_row").df()
    finally:
        con.close()


def online(
    repo_dir: str | Path, symbols: list[str], service: str = DEFAULT_SERVICE, *, env: str | None = None
) -> pd.DataFrame:
    """Latest online features of ``service`` for ``symbols`` through the Feast SDK: one row per symbol, in
    the given order (nulls for a symbol never materialized)."""
    store = open_store(repo_dir, env=env)
    resp = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{"symbol": s} for s in symbols]
    )
    return resp.to_df()
