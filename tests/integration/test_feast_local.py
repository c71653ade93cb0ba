"""The feature repo with the real Feast SDK on the local variant (file registry, SQLite online store,
DuckDB over the exported Parquet): apply, materialize (range, then incremental), online reads (SDK, the
batch path, ``feast serve`` over HTTP) and point-in-time correctness against a direct as-of join."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import free_port, stop_process

from l2vol import features
from l2vol.factors import FAMILIES, REGISTRY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
FEATURES = [n for fam in FAMILIES for n in REGISTRY.names(fam)]


def build_market(root: Path, *, symbols: int = 3, days: int = 3):
    from l2vol.config import SimulationConfig
    from l2vol.data.cleaning import clean_store
    from l2vol.data.simulator import simulate_market
    from l2vol.factors import build_factors
    from l2vol.storage import DatasetStore

    raw, clean, feat = (DatasetStore(f"file://{root / n}") for n in ("raw", "clean", "feat"))
    simulate_market(SimulationConfig(symbols=symbols, days=days, seed=11), raw)
    clean_store(raw, clean)
    build_factors(clean, feat)
    return feat


def latest_rows(factors: pd.DataFrame, upto: pd.Timestamp | None = None) -> pd.DataFrame:
    df = factors if upto is None else factors[factors["ts"] < upto]
    return df.sort_values("ts").groupby("symbol").tail(1).set_index("symbol").sort_index()


def assert_same_values(got: pd.DataFrame, want: pd.DataFrame, columns: list[str]) -> None:
    a = got[columns].astype("float64").to_numpy()
    b = want[columns].astype("float64").to_numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=0, atol=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny market's factor table, exported and applied to a copy of feature_repo/."""
    root = tmp_path_factory.mktemp("feast_local")
    feat = build_market(root)
    repo = root / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    old = {k: os.environ.pop(k, None) for k in ("L2VOL_FEAST_ENV", "L2VOL_FEAST_OFFLINE_ROOT")}
    summary = features.export_offline(feat, features.offline_root(repo))
    applied = features.apply(repo)
    factors = feat.read("factors").to_pandas()
    yield {"repo": repo, "feat": feat, "factors": factors, "export": summary, "apply": applied}
    for k, v in old.items():
        if v is not None:
            os.environ[k] = v


def test_apply_materialize_online_latest(world):
    repo, factors = world["repo"], world["factors"]
    assert world["apply"]["feature_views"] == sorted(f"{fam}_factors" for fam in FAMILIES)
    assert world["apply"]["feature_services"] == ["vol_forecast_v1"]
    dates = sorted(factors["ts"].dt.date.unique())
    symbols = sorted(factors["symbol"].unique())

    # A range materialization of the first two dates leaves each symbol's last row of date 2 online ...
    features.materialize(repo, dates[0], dates[1])
    day2_end = pd.Timestamp(dt.datetime.combine(dates[1] + dt.timedelta(days=1), dt.time()), tz="UTC")
    got = features.online(repo, symbols).set_index("symbol").sort_index()
    assert_same_values(got, latest_rows(factors, day2_end), FEATURES)

    # ... and an incremental one continues to the end: the latest row of the last date.
    out = features.materialize(repo, None, dates[-1], incremental=True)
    assert out["incremental"] and len(out["views"]) == 4
    got = features.online(repo, symbols).set_index("symbol").sort_index()
    assert_same_values(got, latest_rows(factors), FEATURES)

    # An unknown symbol reads as nulls, not an error.
    unknown = features.online(repo, ["999999.SH"])
    assert unknown[FEATURES].isna().all(axis=None)


def test_batch_path_equals_sdk(world):
    repo, factors = world["repo"], world["factors"]
    features.materialize(repo, None, factors["ts"].max().date(), incremental=True)
    first = sorted(factors["symbol"].unique())
    symbols = [*first, "999999.SH", first[0]]  # an unknown symbol and a repeated one
    sdk = features.online(repo, symbols)
    fast = features.online_batch(repo, symbols)
    assert list(fast["symbol"]) == symbols == list(sdk["symbol"])
    assert set(fast.columns) == set(sdk.columns)
    assert_same_values(fast, sdk, FEATURES)
    for name in FEATURES:  # integer factors keep an integer dtype
        assert (REGISTRY[name].dtype == "int64") == (str(fast[name].dtype) == "Int64"), name


def test_export_is_incremental(world):
    again = features.export_offline(world["feat"], features.offline_root(world["repo"]))
    assert again["written"] == [] and again["skipped"] == len(world["export"]["written"]) == 3


def asof_join(entity: pd.DataFrame, factors: pd.DataFrame, ttl: dict[str, pd.Timedelta]) -> pd.DataFrame:
    """The causal join computed directly: per family, the latest factor row with ts <= T and T - ts <= ttl."""
    out = entity.reset_index(drop=True).copy()
    out["_row"] = range(len(out))
    left = out.sort_values("ts")
    for fam in FAMILIES:
        cols = REGISTRY.names(fam)
        right = factors[["symbol", "ts", *cols]].rename(columns={"ts": "feature_ts"}).sort_values("feature_ts")
        joined = pd.merge_asof(
            left[["_row", "symbol", "ts"]],
            right,
            left_on="ts",
            right_on="feature_ts",
            by="symbol",
            direction="backward",
            allow_exact_matches=True,
            tolerance=ttl[fam],
        ).set_index("_row")
        for c in cols:
            out[c] = joined.loc[out["_row"], c].to_numpy()
    return out.drop(columns="_row")


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_training_set_is_point_in_time_correct(world, engine):
    repo, factors = world["repo"], world["factors"]
    store = features.open_store(repo)
    ttl = {fam: pd.Timedelta(store.get_feature_view(f"{fam}_factors").ttl) for fam in FAMILIES}
    ends = sorted(factors["ts"].unique())
    symbols = sorted(factors["symbol"].unique())
    day_first = [g.min() for _, g in factors.groupby(factors["ts"].dt.date)["ts"]]
    picks = [ends[0], ends[1], ends[10], day_first[1], day_first[2], ends[-1]]
    offsets = [
        pd.Timedelta(0),
        -pd.Timedelta(1, "ns"),
        -pd.Timedelta(1, "us"),
        -pd.Timedelta(1, "s"),
        pd.Timedelta(1, "s"),
    ]
    rows = [(s, t + o) for s in symbols for t in picks for o in offsets]
    rows += [(s, ends[-1] + pd.Timedelta(days=2)) for s in symbols]  # beyond the intraday TTL, within history's
    rows += [(s, ends[0] - pd.Timedelta(1, "s")) for s in symbols]  # before any feature row
    entity = pd.DataFrame(rows, columns=["symbol", "ts"])
    entity["ts"] = pd.to_datetime(entity["ts"], utc=True)
    entity["rv_next"] = np.arange(len(entity), dtype="float64")  # a target column passes through untouched

    got = features.training_set(repo, entity, engine=engine)
    want = asof_join(entity, factors, ttl)
    assert list(got["symbol"]) == list(entity["symbol"])
    assert (got["ts"] == entity["ts"]).all() and (got["rv_next"] == entity["rv_next"]).all()
    assert_same_values(got, want, FEATURES)
    # The join picked what the semantics say: exactly at a bucket end that bucket; just before it, the previous one.
    at = got[(got["ts"] == ends[10]) & (got["symbol"] == symbols[0])]
    before = got[(got["ts"] == ends[10] - pd.Timedelta(1, "ns")) & (got["symbol"] == symbols[0])]
    rows_ = factors[factors["symbol"] == symbols[0]].set_index("ts")
    assert at["rv"].iloc[0] == rows_.loc[ends[10], "rv"]
    assert before["rv"].iloc[0] == rows_.loc[ends[9], "rv"]
    late = got[got["ts"] > ends[-1] + pd.Timedelta(days=1)]
    assert late[REGISTRY.names("realized")].isna().all(axis=None)
    assert late["har_rv_d"].notna().all()
    early = got[got["ts"] < ends[0]]
    assert early[FEATURES].isna().all(axis=None)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_feast_serve_over_http(world):
    repo, factors = world["repo"], world["factors"]
    features.materialize(repo, None, factors["ts"].max().date(), incremental=True)
    symbols = sorted(factors["symbol"].unique())
    port = free_port()
    feast_bin = Path(sys.executable).parent / "feast"
    log = (repo / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(feast_bin), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "L2VOL_FEAST_ENV": "local"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, (repo / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "feast serve not ready in 60 s"
            time.sleep(0.25)
        body = _post(
            f"http://127.0.0.1:{port}/get-online-features",
            {"feature_service": "vol_forecast_v1", "entities": {"symbol": symbols}},
        )
    finally:
        stop_process(proc)
        log.close()
    names = body["metadata"]["feature_names"]
    got = pd.DataFrame({n: res["values"] for n, res in zip(names, body["results"], strict=True)})
    assert list(got["symbol"]) == symbols
    want = features.online_batch(repo, symbols)
    assert_same_values(got, want, FEATURES)


def test_apply_deletes_what_the_repo_no_longer_declares(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    assert "trades_factors" in features.apply(repo)["feature_views"]
    with (repo / "definitions.py").open("a") as f:
        f.write(
            "\nvol_forecast_v1 = FeatureService(name='vol_forecast_v1', "
            "features=[realized_factors, book_factors, history_factors])\ndel trades_factors\n"
        )
    out = features.apply(repo)
    assert out["deleted"] == ["trades_factors"]
    assert sorted(v.name for v in features.open_store(repo).list_feature_views()) == [
        "book_factors",
        "history_factors",
        "realized_factors",
    ]
