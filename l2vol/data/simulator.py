"""A-share Level2 market simulator: the embedded default data source of l2vol.

:func:`simulate_market` writes, one trading date at a time, the canonical tables of
:mod:`l2vol.data.schema` — ``snapshots`` (3-second, 10-level books with call auctions), ``trades``
(tick by tick, aggressor side), ``orders`` (optional), ``universe`` (point in time) and ``truth`` (the
latent efficient price and variance, never read by factors) — plus ``simulation/config.json`` (config,
calibration name, version and every parameter), ``simulation/latent/date=YYYY-MM-DD.json`` (the daily
latent state the oracle of :mod:`l2vol.data.oracle` conditions on) and, with defects,
``simulation/defects.json``.

Memory is bounded by one date: the only thing carried across days is a compact per-symbol state
(:class:`l2vol.data.sim.latent.MarketState`, O(symbols)); the sparse event schedule grows with the
number of events. Output is a pure function of the config (seed included): every day and purpose
draws from its own random stream, so the same config gives byte-identical partitions, and the defect
stream never changes the clean rows.

Arrival order of the raw partitions: ``snapshots`` sorted by (ts, symbol); ``trades`` by (symbol,
seq); ``orders`` by (symbol, seq); ``truth`` by (ts, symbol); ``universe`` by symbol. With
``inject_defects`` the only departures from that order are the injected ``out_of_order`` rows (and the
added ``duplicate`` / ``out_of_session`` rows), listed in ``simulation/defects.json``.

The model, its parameters and their units are documented in ``docs/simulator.md`` and
:mod:`l2vol.data.sim.latent`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from l2vol.config import SimulationConfig
from l2vol.data import schema
from l2vol.data.calibration import Calibration, get_calibration
from l2vol.data.profiles import ASHARE
from l2vol.data.rules import INJECTABLE
from l2vol.data.sim import book, defects
from l2vol.data.sim.latent import LatentDay, MarketState, simulate_latent_days
from l2vol.data.sim.trades import simulate_trades
from l2vol.data.sim.universe import Universe, build_universe
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

__all__ = ["latent_record", "simulate_latent", "simulate_market", "simulation_universe"]

#: Rows buffered per Parquet part file (bounds the store's write buffer).
MAX_ROWS_PER_FILE = 1_000_000
CONFIG_PATH = "simulation/config.json"
DEFECTS_PATH = "simulation/defects.json"
FORMAT_VERSION = 1


def latent_path(day) -> str:
    return f"simulation/latent/date={day.isoformat()}.json"


def simulation_universe(cfg: SimulationConfig) -> tuple[Universe, Calibration]:
    """The cross-section and event schedule of ``cfg`` (trading dates from the XSHG calendar)."""
    cal = get_calibration(cfg.calibration)
    try:
        days = ASHARE.next_trading_days(cfg.start, cfg.days)
    except Exception as exc:  # exchange_calendars.errors.DateOutOfBounds: the calendar's range is finite
        raise ValueError(f"start={cfg.start}, days={cfg.days}: outside the XSHG calendar ({exc})") from exc
    return build_universe(cfg.symbols, days, cfg.seed, cal), cal


def simulate_latent(cfg: SimulationConfig, *, step_s: int | None = None) -> Iterator[tuple[LatentDay, Universe]]:
    """Fast latent-only mode: yield each day's latent state and level-1 quotes, no book, no trades.

    With ``step_s`` = ``cfg.snapshot_interval_s`` (the default) the efficient price, quotes and close
    are exactly those :func:`simulate_market` writes for the same config. A coarser ``step_s`` (e.g. 60)
    simulates the same continuous-time model on a coarser grid, for long samples in tests.
    """
    uni, cal = simulation_universe(cfg)
    for lat, _ in simulate_latent_days(uni, cal, cfg.seed, step_s or cfg.snapshot_interval_s):
        yield lat, uni


def latent_record(lat: LatentDay, uni: Universe) -> dict:
    """The daily latent state of ``lat`` as JSON-able lists (one entry per traded symbol)."""
    out = {
        "date": lat.day.isoformat(),
        "step_s": lat.step_s,
        "symbols": uni.symbols[lat.sym].tolist(),
        "exchange": uni.exchange[lat.sym].tolist(),
        "sigma2": lat.sigma2.tolist(),
        "limit_bound": (lat.distorted.any(axis=1)).tolist(),
    }
    for k, v in lat.oracle.items():
        out[k] = v.tolist()
    return out


def _metadata(cfg: SimulationConfig, cal: Calibration) -> dict:
    return {
        "generator": "l2vol.data.simulator",
        "seed": cfg.seed,
        "calibration": cal.name,
        "calibration_version": cal.version,
        "inject_defects": cfg.inject_defects,
    }


def simulate_market(cfg: SimulationConfig, store: DatasetStore, *, progress: Progress | None = None) -> dict:
    """Simulate ``cfg`` into ``store`` and return a JSON-able summary.

    Summary: ``dates`` (ISO), ``symbols``, ``rows`` per table, ``defects`` per rule (empty without
    injection), ``seconds``, ``seed``, ``calibration`` (name@version) and ``store``.
    """
    t0 = time.perf_counter()
    progress = ensure(progress)
    uni, cal = simulation_universe(cfg)
    store.write_json(
        CONFIG_PATH,
        {
            "format_version": FORMAT_VERSION,
            "generator": "l2vol.data.simulator",
            "config": cfg.model_dump(mode="json"),
            "calibration": {
                "name": cal.name,
                "version": cal.version,
                "description": cal.description,
                "params": cal.to_dict(),
            },
            "arrival_order": {
                "snapshots": ["ts", "symbol"],
                "trades": ["symbol", "seq"],
                "orders": ["symbol", "seq"],
                "truth": ["ts", "symbol"],
                "universe": ["symbol"],
            },
            "dates": [d.isoformat() for d in uni.days],
            "symbols": uni.symbols.tolist(),
        },
    )
    meta = _metadata(cfg, cal)
    rows: Counter = Counter()
    records: list[dict] = []
    progress.task("simulate", len(uni.days))
    for lat, st in simulate_latent_days(uni, cal, cfg.seed, cfg.snapshot_interval_s):
        day_rows, day_records = _write_day(lat, st, uni, cal, cfg, store, meta)
        rows.update(day_rows)
        records += day_records
        progress.advance(
            "simulate", 1, f"{lat.day}: {day_rows['snapshots']:,} snapshots, {day_rows['trades']:,} trades"
        )
    per_rule = {r: 0 for r in INJECTABLE}
    for rec in records:
        per_rule[rec["rule"]] += 1
    if cfg.inject_defects:
        by_table: dict[str, dict[str, int]] = {}
        for rec in records:
            t = by_table.setdefault(rec["table"], {})
            t[rec["rule"]] = t.get(rec["rule"], 0) + 1
        store.write_json(
            DEFECTS_PATH,
            {
                "format_version": FORMAT_VERSION,
                "seed": cfg.seed,
                "stream": "defects (independent of the clean data)",
                "counts": per_rule,
                "by_table": by_table,
                "defects": records,
            },
        )
    return {
        "dates": [d.isoformat() for d in uni.days],
        "symbols": uni.n,
        "rows": dict(rows),
        "defects": per_rule if cfg.inject_defects else {},
        "seconds": round(time.perf_counter() - t0, 3),
        "seed": cfg.seed,
        "calibration": cal.label,
        "store": store.location(),
    }


def _slices(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for a in range(0, table.num_rows, size):
        yield table.slice(a, size)


def _write_day(
    lat: LatentDay,
    st: MarketState,
    uni: Universe,
    cal: Calibration,
    cfg: SimulationConfig,
    store: DatasetStore,
    meta: dict,
) -> tuple[Counter, list[dict]]:
    day = lat.day
    rows: Counter = Counter()
    records: list[dict] = []
    trd = simulate_trades(lat, uni, cal, cfg.seed, cfg.with_orders)
    snaps = book.snapshot_batches(lat, trd, uni, st, cal, cfg.seed)
    trades = book.trades_table(lat, trd, uni)
    orders = trd.orders
    del trd
    if cfg.inject_defects:
        clean_snaps = pa.concat_tables(list(snaps))
        raw_snaps, rec_s = defects.inject_snapshots(clean_snaps, day, cfg.seed, lat.d)
        del clean_snaps
        limits = {
            uni.symbols[i]: (float(lo), float(up))
            for i, lo, up in zip(lat.sym, lat.lower, lat.upper, strict=True)
            if not np.isnan(up)
        }
        trades, rec_t = defects.inject_trades(trades, day, cfg.seed, lat.d, limits)
        records = rec_s + rec_t
        snaps = _slices(raw_snaps, 200_000)
    info = store.write_partition(
        "snapshots", day, snaps, schema=schema.SNAPSHOTS, metadata=meta, max_rows_per_file=MAX_ROWS_PER_FILE
    )
    rows["snapshots"] += info.rows
    info = store.write_partition(
        "trades", day, trades, schema=schema.TRADES, metadata=meta, max_rows_per_file=MAX_ROWS_PER_FILE
    )
    rows["trades"] += info.rows
    del trades
    if cfg.with_orders and orders is not None:
        info = store.write_partition(
            "orders", day, orders, schema=schema.ORDERS, metadata=meta, max_rows_per_file=MAX_ROWS_PER_FILE
        )
        rows["orders"] += info.rows
    del orders
    info = store.write_partition(
        "truth",
        day,
        book.truth_table(lat, uni),
        schema=schema.TRUTH,
        metadata=meta,
        max_rows_per_file=MAX_ROWS_PER_FILE,
    )
    rows["truth"] += info.rows
    info = store.write_partition(
        "universe", day, book.universe_table(lat, uni, st, cal), schema=schema.UNIVERSE, metadata=meta
    )
    rows["universe"] += info.rows
    store.write_json(latent_path(day), latent_record(lat, uni))
    return rows, records
