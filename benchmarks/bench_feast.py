"""Feast online latency and historical retrieval, as ratios to bare store reads, in one run.

Feature data: a synthetic ``factors`` table with the engine's real schema (every registered factor,
float64/int64) for N symbols x D trading days x 48 five-minute buckets (simulating 300 symbols for a
month is too slow for a benchmark), exported with ``l2vol.features.export_offline`` into a temporary copy
of ``feature_repo/``, applied and materialized.

Online (SQLite, and Redis with the SQL registry on PostgreSQL when 127.0.0.1:5432/6379 answer), p50/p99
over repeated reads of 1 symbol and of all N symbols x every feature of ``vol_forecast_v1``:

* ``bare``: the same keys read straight from the store, values left serialized (SQLite: one
  ``SELECT ... WHERE entity_key IN (...)`` over the views' tables; Redis: one pipeline of HMGETs);
* ``sdk``: ``FeatureStore.get_online_features(...).to_df()`` in-process (target p99 < 10 ms for 1 symbol);
* ``batch``: ``l2vol.features.BatchOnlineReader.read`` (decoded DataFrame);
* ``serve``: ``feast serve`` on 127.0.0.1, HTTP POST /get-online-features (JSON), one keep-alive client.

Historical: ``training_set`` for every (symbol, bucket end) of the month (N x D x 48 entity rows), each
engine in a fresh subprocess (wall time and peak RSS): ``engine="asof"`` (one DuckDB ASOF join per view
over the exported Parquet), Feast's DuckDB offline store and Feast's file (dask) offline store.

    .venv/bin/python benchmarks/bench_feast.py [--quick] [--json PATH]
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _common
import numpy as np
import pandas as pd
import pyarrow as pa

from l2vol.factors import FactorPlan
from l2vol.factors.engine import factor_schema
from l2vol.storage import DatasetStore

REPO = _common.REPO / "feature_repo"
SERVICE = "vol_forecast_v1"
PG = "postgresql://postgres@127.0.0.1:5432/test"
#: Historical engines: l2vol's DuckDB ASOF join, Feast's DuckDB offline store, Feast's file (dask) store.
ENGINES = ("asof", "duckdb", "file")
FEAST_DAYS = 3


def bucket_ends(d: dt.date) -> list[pd.Timestamp]:
    """The 48 five-minute bucket ends of an A-share day (09:35-11:30, 13:05-15:00 Asia/Shanghai) in UTC."""
    local = [dt.datetime.combine(d, dt.time(9, 30)) + dt.timedelta(minutes=5 * (i + 1)) for i in range(24)]
    local += [dt.datetime.combine(d, dt.time(13, 0)) + dt.timedelta(minutes=5 * (i + 1)) for i in range(24)]
    return [pd.Timestamp(t, tz="Asia/Shanghai").tz_convert("UTC") for t in local]


def make_factors(store: DatasetStore, n_symbols: int, days: list[dt.date], seed: int = 0) -> int:
    schema = factor_schema(FactorPlan.make(None))
    rng = np.random.default_rng(seed)
    symbols = [f"{600000 + i:06d}.SH" for i in range(n_symbols)]
    rows = 0
    for d in days:
        ends = bucket_ends(d)
        n = n_symbols * len(ends)
        cols = {
            "symbol": np.repeat(symbols, len(ends)),
            "ts": pd.DatetimeIndex(ends * n_symbols),
            "bucket": np.tile(np.arange(len(ends), dtype=np.int16), n_symbols),
        }
        for f in schema:
            if f.name not in cols:
                cols[f.name] = rng.integers(0, 1000, n) if pa.types.is_integer(f.type) else rng.lognormal(-9, 1, n)
        store.write_partition("factors", d, pa.table(cols).cast(schema), schema=schema)
        rows += n
    return rows


def pct(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed(fn, reps: int) -> tuple[float, float]:
    fn()  # warm (connections, caches)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return pct(out)


def start_serve(repo: Path, env: dict) -> tuple[subprocess.Popen, int]:
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    feast = Path(sys.executable).parent / "feast"
    yaml = "feature_store.cluster.yaml" if env.get("L2VOL_FEAST_ENV") == "cluster" else "feature_store.yaml"
    proc = subprocess.Popen(
        [str(feast), "-c", str(repo), "-f", str(repo / yaml), "serve", "-h", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("feast serve did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def online_suite(label: str, repo: Path, symbols: list[str], reps: int, env: dict, figures: dict) -> None:
    from l2vol import features

    store = features.open_store(repo)
    reader = features.BatchOnlineReader(store, SERVICE)
    svc = store.get_feature_service(SERVICE)
    n_feat = len(reader.columns)

    def bare(syms):
        if reader.kind == "sqlite":
            keys = [reader.entity_key(s) for s in syms]
            marks = ",".join("?" * len(keys))
            sql = " UNION ALL ".join(
                f'SELECT entity_key, feature_name, value FROM "{t}" WHERE entity_key IN ({marks})'
                for t in reader._tables
            )
            return reader._conn.execute(sql, keys * len(reader._tables)).fetchall()
        keys = [reader.entity_key(s) + reader._project_bytes for s in syms]
        with reader._redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(k, reader._fields)
            return pipe.execute()

    def sdk(syms):
        return store.get_online_features(features=svc, entity_rows=[{"symbol": s} for s in syms]).to_df()

    # Same values through both paths (a benchmark of a wrong answer is worthless).
    a, b = reader.read(symbols[:20]), sdk(symbols[:20])
    x, y = a[reader.columns].astype("float64").to_numpy(), b[reader.columns].astype("float64").to_numpy()
    assert np.array_equal(np.isnan(x), np.isnan(y)) and np.allclose(np.nan_to_num(x), np.nan_to_num(y), rtol=0)

    proc, port = start_serve(repo, env)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def serve(syms):
        body = json.dumps({"feature_service": SERVICE, "entities": {"symbol": syms}})
        conn.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
        assert r.status == 200, payload[:300]
        return json.loads(payload)

    try:
        for n, syms in (("1", symbols[:1]), (str(len(symbols)), symbols)):
            r = reps if n == "1" else max(10, reps // 4)
            base50, base99 = timed(lambda syms=syms: bare(syms), r)
            figures[f"{label}_{n}sym_bare_p50_ms"], figures[f"{label}_{n}sym_bare_p99_ms"] = base50, base99
            for name, fn in (("sdk", sdk), ("batch", reader.read), ("serve", serve)):
                p50, p99 = timed(lambda fn=fn, syms=syms: fn(syms), r)
                figures[f"{label}_{n}sym_{name}_p50_ms"] = p50
                figures[f"{label}_{n}sym_{name}_p99_ms"] = p99
                figures[f"{label}_{n}sym_{name}_p50_x_bare"] = p50 / base50
        figures[f"{label}_features"] = n_feat
    finally:
        conn.close()
        stop(proc)


HIST_CHILD = r"""
import json, resource, sys, time
import pandas as pd
from l2vol import features
repo, engine, entity_path = sys.argv[1], sys.argv[2], sys.argv[3]
entity = pd.read_parquet(entity_path)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
out = features.training_set(repo, entity, engine=engine)
sec = time.perf_counter() - t0
print(json.dumps({"seconds": sec, "rows": len(out), "cols": out.shape[1], "nulls": int(out["rv"].isna().sum()),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": base}))
"""


def historical(repo: Path, entity_path: Path, engine: str, timeout_s: int) -> dict:
    """training_set over the whole month in a fresh process: ``asof`` (l2vol's DuckDB ASOF join) or Feast's
    get_historical_features with ``engine`` (duckdb, file) as the offline store."""
    yaml = repo / "feature_store.yaml"
    text = yaml.read_text()
    if engine != "asof":
        yaml.write_text(text.replace("type: duckdb", f"type: {engine}"))
    try:
        res = subprocess.run(
            [sys.executable, "-c", HIST_CHILD, str(repo), "asof" if engine == "asof" else "feast", str(entity_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "L2VOL_FEAST_ENV": "local"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf"), "error": f"timed out after {timeout_s} s"}
    finally:
        yaml.write_text(text)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [""])[-1][:300]
        return {"seconds": float("inf"), "error": f"exit status {res.returncode}: {last}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def cluster_env(repo: Path, offline: str) -> tuple[dict, callable] | None:
    import socket

    def up(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    if not (up(5432) and up(6379)):
        return None
    import psycopg
    import redis

    run = f"l2vol_b{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{run}"')
    env = {
        "L2VOL_FEAST_ENV": "cluster",
        "L2VOL_FEAST_PROJECT": run,
        "L2VOL_FEAST_REGISTRY_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{run}",
        "L2VOL_FEAST_REDIS": "127.0.0.1:6379",
        "L2VOL_FEAST_OFFLINE_ROOT": offline,
    }

    def cleanup():
        client = redis.Redis(host="127.0.0.1", port=6379)
        for k in client.scan_iter(match=f"*{run}".encode(), count=1000):
            client.delete(k)
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{run}" CASCADE')

    return env, cleanup


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    n_symbols, n_days, reps = (50, 5, 100) if args.quick else (300, 21, 300)
    from l2vol import features

    features.quiet_native_exit()  # the SUMMARY line stays the last line (DuckDB's exit-time leak report)
    figures: dict = {"symbols": n_symbols, "days": n_days, "buckets_per_day": 48}
    tmp = Path(tempfile.mkdtemp(prefix="bench_feast_"))
    saved = {
        k: os.environ.get(k)
        for k in (
            "L2VOL_FEAST_ENV",
            "L2VOL_FEAST_PROJECT",
            "L2VOL_FEAST_REGISTRY_URL",
            "L2VOL_FEAST_REDIS",
            "L2VOL_FEAST_OFFLINE_ROOT",
        )
    }
    try:
        for k in saved:
            os.environ.pop(k, None)
        days = [d.date() for d in pd.bdate_range("2024-03-01", periods=n_days)]
        feat = DatasetStore(f"file://{tmp / 'feat'}")
        with _common.Timer() as t:
            figures["factor_rows"] = make_factors(feat, n_symbols, days)
        figures["generate_s"] = t.seconds
        repo = tmp / "repo"
        shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
        with _common.Timer() as t:
            features.export_offline(feat, features.offline_root(repo))
        figures["export_s"] = t.seconds
        with _common.Timer() as t:
            features.export_offline(feat, features.offline_root(repo))
        figures["export_rerun_s"] = t.seconds
        features.apply(repo)
        with _common.Timer() as t:
            features.materialize(repo, days[-1], days[-1])
        figures["materialize_sqlite_1day_s"] = t.seconds
        symbols = [f"{600000 + i:06d}.SH" for i in range(n_symbols)]
        env = {**os.environ, "L2VOL_FEAST_ENV": "local"}
        online_suite("sqlite", repo, symbols, reps, env, figures)

        cl = cluster_env(repo, features.offline_root(repo))
        if cl is None:
            figures["redis"] = "skipped: PostgreSQL/Redis not on 127.0.0.1"
        else:
            cenv, cleanup = cl
            os.environ.update(cenv)
            try:
                features.apply(repo)
                with _common.Timer() as t:
                    features.materialize(repo, days[-1], days[-1])
                figures["materialize_redis_1day_s"] = t.seconds
                online_suite("redis", repo, symbols, reps, {**os.environ}, figures)
                features.open_store(repo).teardown()
            finally:
                cleanup()
                for k in cenv:
                    os.environ.pop(k, None)

        entity = feat.read("factors", columns=["symbol", "ts"]).to_pandas()
        entity["rv_next"] = 0.0
        # Feast's engines materialize the join in pandas/dask: on the whole month of 300 symbols its DuckDB
        # store took 101 s and 20 GiB peak RSS (measured alone), too much for a shared machine, so they run on
        # the first FEAST_DAYS dates and asof runs on both those dates and the whole month.
        month_path, sub_path = tmp / "entity_month.parquet", tmp / "entity_sub.parquet"
        entity.to_parquet(month_path)
        sub_days = days if args.quick else days[:FEAST_DAYS]
        entity[entity["ts"].dt.date <= sub_days[-1]].to_parquet(sub_path)
        figures["historical_month_entity_rows"] = len(entity)
        figures["historical_sub_entity_rows"] = int((entity["ts"].dt.date <= sub_days[-1]).sum())
        runs = [("asof", "month", month_path), ("asof", "sub", sub_path), ("duckdb", "sub", sub_path)]
        runs.append(("file", "sub", sub_path))
        for engine, span, path in runs:
            r = historical(repo, path, engine, timeout_s=60 if engine == "file" else 150)
            key = f"historical_{span}_{engine}"
            figures[f"{key}_s"] = r["seconds"]
            if "error" in r:
                figures[f"{key}_error"] = r["error"]
            else:
                figures[f"{key}_peak_rss_mib"] = r["peak_rss_mib"]
                figures[f"{key}_rss_before_mib"] = r["rss_before_mib"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v

    n = str(n_symbols)
    best = min(ENGINES, key=lambda e: figures[f"historical_sub_{e}_s"])
    summary = (
        f"1 symbol SDK p99 {figures['sqlite_1sym_sdk_p99_ms']:.2f} ms (SQLite, target < 10); "
        f"{n} symbols x {figures['sqlite_features']} features p50: SDK {figures[f'sqlite_{n}sym_sdk_p50_ms']:.1f} ms "
        f"({figures[f'sqlite_{n}sym_sdk_p50_x_bare']:.1f}x bare), batch {figures[f'sqlite_{n}sym_batch_p50_ms']:.1f} ms "
        f"({figures[f'sqlite_{n}sym_batch_p50_x_bare']:.1f}x bare), serve {figures[f'sqlite_{n}sym_serve_p50_ms']:.1f} ms"
    )
    if f"redis_{n}sym_batch_p50_x_bare" in figures:
        summary += (
            f"; Redis SDK {figures[f'redis_{n}sym_sdk_p50_x_bare']:.1f}x / batch "
            f"{figures[f'redis_{n}sym_batch_p50_x_bare']:.1f}x bare"
        )
    summary += (
        f"; historical {figures['historical_sub_entity_rows']} rows: "
        + ", ".join(f"{e} {figures[f'historical_sub_{e}_s']:.1f} s" for e in ENGINES)
        + f" -> {best}; month ({figures['historical_month_entity_rows']} rows) asof "
        f"{figures['historical_month_asof_s']:.1f} s, peak {figures.get('historical_month_asof_peak_rss_mib', 0):.0f} MiB"
    )
    _common.finish("bench_feast", figures, summary, args.json)


if __name__ == "__main__":
    main()
