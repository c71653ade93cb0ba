"""Vendor CSV -> canonical Parquet ingest throughput, as a ratio to a bare pyarrow baseline.

Generates one trading day of SSE Level2 snapshots (3-second cadence, 10 levels, the vendor's column
names, decimal CNY prices) for many symbols in a temporary directory, then times, best of 3 each in the
same run:

* baseline: ``pyarrow.csv.open_csv`` (streaming, inferred types) + ``pyarrow.parquet.ParquetWriter`` of
  the same file, batch by batch;
* ingest: ``l2vol.data.loaders.ingest("sse-l2", ...)`` into a fresh file:// store (parse, validate,
  convert units and time zone, spool by date, write the committed partition).

Ratio = ingest throughput / baseline throughput (target >= 0.5).

    .venv/bin/python benchmarks/bench_ingest.py [--quick] [--json PATH]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import _common
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from l2vol.data.loaders import ingest
from l2vol.storage import DatasetStore

TARGET = 0.5


def make_day(path: Path, n_symbols: int, seed: int = 0) -> int:
    """Write one day of SSE snapshots for ``n_symbols`` symbols (interleaved by time, as whole-market
    vendor files are) to ``path``; returns the number of rows."""
    rng = np.random.default_rng(seed)
    sessions = [(9 * 3600 + 30 * 60, 11 * 3600 + 30 * 60), (13 * 3600, 15 * 3600)]
    secs = np.concatenate([np.arange(a, b, 3) for a, b in sessions])
    codes = np.array([f"{600000 + i:06d}" for i in range(n_symbols)])
    base = rng.uniform(5, 200, n_symbols).round(2)
    hhmmss = (secs // 3600) * 10000 + (secs // 60 % 60) * 100 + secs % 60
    stamps = 20240102 * 10**9 + hhmmss * 1000
    first = True
    rows = 0
    with pacsv.CSVWriter(str(path), _schema(), write_options=pacsv.WriteOptions(quoting_style="none")) as w:
        for lo in range(0, len(secs), 200):
            t = stamps[lo : lo + 200]
            n = len(t) * n_symbols
            ts = np.repeat(t, n_symbols)
            sym = np.tile(codes, len(t))
            mid = np.tile(base, len(t)) * np.exp(rng.normal(0, 0.002, n))
            bid1 = np.floor(mid * 100) / 100
            cols: dict[str, np.ndarray] = {
                "SecurityID": sym,
                "TransactTime": ts,
                "TradingPhaseCode": np.full(n, "T111    "),
                "PreClosePx": np.tile(base, len(t)),
                "OpenPx": np.tile(base, len(t)),
                "HighPx": (bid1 + 0.05).round(2),
                "LowPx": (bid1 - 0.05).round(2),
                "LastPx": bid1,
                "TotalVolumeTrade": rng.integers(0, 10**7, n),
                "TotalValueTrade": rng.uniform(0, 1e9, n).round(2),
                "NumTrades": rng.integers(0, 10**5, n),
            }
            for side, sign in (("Bid", -1), ("Offer", 1)):
                for i in range(1, 11):
                    cols[f"{side}Price{i}"] = (bid1 + (0.01 if sign > 0 else 0) + sign * 0.01 * (i - 1)).round(2)
                for i in range(1, 11):
                    cols[f"{side}OrderQty{i}"] = rng.integers(1, 500, n) * 100
                for i in range(1, 11):
                    cols[f"{side}NumOrders{i}"] = rng.integers(1, 60, n)
            cols["TotalBidQty"] = rng.integers(10**5, 10**7, n)
            cols["TotalOfferQty"] = rng.integers(10**5, 10**7, n)
            w.write_table(pa.table(cols, schema=_schema()))
            rows += n
            first = False
    assert not first
    return rows


def _schema() -> pa.Schema:
    fields = [("SecurityID", pa.string()), ("TransactTime", pa.int64()), ("TradingPhaseCode", pa.string())]
    fields += [(c, pa.float64()) for c in ("PreClosePx", "OpenPx", "HighPx", "LowPx", "LastPx")]
    fields += [("TotalVolumeTrade", pa.int64()), ("TotalValueTrade", pa.float64()), ("NumTrades", pa.int64())]
    for side in ("Bid", "Offer"):
        fields += [(f"{side}Price{i}", pa.float64()) for i in range(1, 11)]
        fields += [(f"{side}OrderQty{i}", pa.int64()) for i in range(1, 11)]
        fields += [(f"{side}NumOrders{i}", pa.int64()) for i in range(1, 11)]
    fields += [("TotalBidQty", pa.int64()), ("TotalOfferQty", pa.int64())]
    return pa.schema(fields)


def baseline(src: Path, out: Path) -> float:
    t0 = time.perf_counter()
    reader = pacsv.open_csv(str(src))
    with pq.ParquetWriter(str(out), reader.schema) as w:
        for batch in reader:
            w.write_batch(batch)
    return time.perf_counter() - t0


def run_ingest(src: Path, store_dir: Path) -> tuple[float, dict]:
    shutil.rmtree(store_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = ingest("sse-l2", src, DatasetStore(str(store_dir)), spool_dir=store_dir.parent)
    return time.perf_counter() - t0, summary


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    n_symbols = 40 if args.quick else 200
    with tempfile.TemporaryDirectory(prefix="l2vol-bench-ingest-") as tmp:
        tmp = Path(tmp)
        src = tmp / "snapshot_20240102.csv"
        t0 = time.perf_counter()
        rows = make_day(src, n_symbols)
        gen_s = time.perf_counter() - t0
        mib = src.stat().st_size / 2**20
        base_times, ingest_times = [], []
        summary: dict = {}
        for _ in range(3):  # interleaved, so both see the same machine state
            base_times.append(baseline(src, tmp / "baseline.parquet"))
            s, summary = run_ingest(src, tmp / "store")
            ingest_times.append(s)
        base, ours = min(base_times), min(ingest_times)
        ratio = base / ours
        figures = {
            "symbols": n_symbols,
            "rows": rows,
            "csv_mib": round(mib, 1),
            "generate_s": round(gen_s, 2),
            "baseline_best_s": round(base, 3),
            "ingest_best_s": round(ours, 3),
            "baseline_rows_per_s": round(rows / base),
            "ingest_rows_per_s": round(rows / ours),
            "ingest_mib_per_s": round(mib / ours, 1),
            "ratio_ingest_to_baseline": round(ratio, 3),
            "target": TARGET,
            "spilled_mib": round(summary.get("spilled_bytes", 0) / 2**20, 1),
            "peak_rss_mib": round(_common.peak_rss_mib(), 1),
        }
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    _common.finish(
        "bench_ingest",
        figures,
        f"ingest {rows / ours:,.0f} rows/s = {ratio:.2f}x the bare pyarrow CSV->Parquet baseline "
        f"({rows:,} rows, {mib:.0f} MiB; target >= {TARGET}) {verdict}",
        args.json,
    )


if __name__ == "__main__":
    main()
