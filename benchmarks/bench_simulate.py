"""Market simulator throughput and memory.

1. A CSI-300-sized day (300 symbols, 5,101 snapshots each of which 4,801 on the trading clock, with
   trades) simulated and written to Parquet in a subprocess: snapshot rows per second (wall time of the
   whole simulate_market call, writes included) and the subprocess's peak RSS, which must stay < 4 GiB.
2. Memory is bounded by one date: peak RSS of 20 days / peak RSS of 2 days at a small symbol count,
   each in its own subprocess (target ~1).

``--quick`` shrinks the day to 60 symbols and the scaling runs to 8 symbols.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, finish, parser, peak_rss_mib

LIMIT_MIB = 4096.0


def child(symbols: int, days: int, out: str) -> None:
    """Run one simulation in this process and print its figures as JSON (the last stdout line)."""
    from l2vol.config import SimulationConfig
    from l2vol.data.simulator import simulate_market
    from l2vol.storage import DatasetStore

    store = DatasetStore(out)
    t0 = time.perf_counter()
    summary = simulate_market(SimulationConfig(symbols=symbols, days=days, seed=1), store)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))
    print(
        json.dumps({"seconds": seconds, "rows": summary["rows"], "peak_rss_mib": peak_rss_mib(), "parquet_bytes": size})
    )


def run_child(symbols: int, days: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        cmd = [sys.executable, __file__, "--child", str(symbols), str(days), tmp]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        if res.returncode != 0:
            raise SystemExit(f"child {symbols} symbols x {days} days failed:\n{res.stderr}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", nargs=3, metavar=("SYMBOLS", "DAYS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]), args.child[2])
        return
    day_symbols = 60 if args.quick else 300
    scale_symbols = 8 if args.quick else 20
    day = run_child(day_symbols, 1)
    snap_rows = day["rows"]["snapshots"]
    rate = snap_rows / day["seconds"]
    two = run_child(scale_symbols, 2)
    twenty = run_child(scale_symbols, 20)
    ratio = twenty["peak_rss_mib"] / two["peak_rss_mib"]
    figures = {
        "day_symbols": day_symbols,
        "day_snapshot_rows": snap_rows,
        "day_trade_rows": day["rows"]["trades"],
        "day_truth_rows": day["rows"]["truth"],
        "day_seconds": round(day["seconds"], 2),
        "snapshot_rows_per_s": round(rate),
        "trade_rows_per_s": round(day["rows"]["trades"] / day["seconds"]),
        "day_parquet_mib": round(day["parquet_bytes"] / 2**20, 1),
        "day_peak_rss_mib": round(day["peak_rss_mib"], 1),
        "day_peak_rss_under_4gib": day["peak_rss_mib"] < LIMIT_MIB,
        "scale_symbols": scale_symbols,
        "peak_rss_2_days_mib": round(two["peak_rss_mib"], 1),
        "peak_rss_20_days_mib": round(twenty["peak_rss_mib"], 1),
        "seconds_20_days": round(twenty["seconds"], 2),
        "rss_ratio_20_over_2_days": round(ratio, 3),
    }
    summary = (
        f"{snap_rows:,} snapshot rows ({day_symbols} symbols x 1 day) in {day['seconds']:.1f} s = {rate:,.0f} rows/s, "
        f"peak RSS {day['peak_rss_mib']:,.0f} MiB ({'<' if day['peak_rss_mib'] < LIMIT_MIB else '>='} 4 GiB); "
        f"peak RSS 20 days / 2 days = {ratio:.2f}"
    )
    finish("bench_simulate", figures, summary, args.json)


if __name__ == "__main__":
    main()
