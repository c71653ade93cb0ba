"""Feast declarations for l2vol: the ``symbol`` entity, one Parquet source and one feature view per factor
family, and the versioned feature service ``vol_forecast_v1``. Declarations only: no I/O, no logic beyond
reading the factor registry (names, dtypes, units, docs) to spell out the typed schemas.

The sources read the Feast-readable copy of the ``factors`` table that
:func:`l2vol.features.export_offline` writes (``<root>/<family>/<YYYY-MM-DD>.parquet``). ``<root>`` is
``$L2VOL_FEAST_OFFLINE_ROOT`` (``s3://...`` on the cluster, with ``$L2VOL_S3_ENDPOINT`` as the S3
endpoint; a relative path is taken from this directory) and defaults to ``data/offline`` here. Every feature row is stamped ``ts`` = bucket
end t and uses only records with ts < t; ``targets`` are never exposed here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from l2vol.factors import FAMILIES, REGISTRY
from l2vol.features.config import offline_root

# Absolute, because the DuckDB offline store resolves source paths against the working directory.
OFFLINE_ROOT = offline_root(Path(__file__).resolve().parent)
S3_ENDPOINT = os.environ.get("L2VOL_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None

# TTL = how far back the point-in-time join may look for a row (ts in (T - ttl, T]). Intraday families
# describe one 5-minute bucket: a row older than a day belongs to another session, and the engine stamps
# every bucket of every trading day (empty buckets included), so a fresh row always exists intraday.
# History factors are daily-level (HAR lags, seasonal RV, overnight return) and stay meaningful across
# closures: 14 days covers the longest A-share market closure (Spring Festival / National Day weeks).
TTL = {
    "realized": timedelta(days=1),
    "book": timedelta(days=1),
    "trades": timedelta(days=1),
    "history": timedelta(days=14),
}
_FEAST_TYPES = {"float64": Float64, "int64": Int64}

symbol = Entity(
    name="symbol",
    join_keys=["symbol"],
    value_type=ValueType.STRING,
    description="A-share instrument code, e.g. 600519.SH",
)


def _source(family: str) -> FileSource:
    return FileSource(
        name=f"{family}_factors_source",
        path=f"{OFFLINE_ROOT}/{family}/*.parquet",
        timestamp_field="ts",
        s3_endpoint_override=S3_ENDPOINT if OFFLINE_ROOT.startswith("s3://") else None,
        description=f"factors of family {family!r} ({FAMILIES[family]}), one Parquet file per trading date",
    )


def _view(family: str) -> FeatureView:
    return FeatureView(
        name=f"{family}_factors",
        entities=[symbol],
        ttl=TTL[family],
        schema=[
            Field(
                name=f.name,
                dtype=_FEAST_TYPES[f.dtype],
                description=f.description,
                tags={"unit": f.unit, "family": family},
            )
            for f in (REGISTRY[n] for n in REGISTRY.names(family))
        ],
        source=_source(family),
        online=True,
        description=FAMILIES[family],
        tags={"family": family, "ts": "bucket end; values use records with ts < bucket end only"},
    )


realized_factors = _view("realized")
book_factors = _view("book")
trades_factors = _view("trades")
history_factors = _view("history")

vol_forecast_v1 = FeatureService(
    name="vol_forecast_v1",
    features=[realized_factors, book_factors, trades_factors, history_factors],
    description="every registered factor of the four families, as the volatility forecasters read them",
    tags={"version": "1"},
)
