"""Factor engine throughput on one simulated trading day, as ratios measured in one run.

Simulates one day of 300 symbols (3-second snapshots, ~5,100 per symbol of which ~4,740 continuous)
into a temp store with :func:`l2vol.data.simulator.simulate_market` and cleans it with
:func:`l2vol.data.cleaning.clean_store` (the engine's input in the pipeline: ``make demo`` and
``l2vol factors build`` read the cleaned store, whose tables are grouped by symbol), then times,
interleaved and best of N:

* **scan**: a bare read of exactly the columns the engine reads (the same ``read_partition`` calls:
  the snapshot and trade columns of every registered factor);
* **engine**: ``build_factors`` for that day, every registered factor plus targets, reads and writes
  included;
* **pandas**: the vectorized pandas reference of the tests (``tests/unit/factor_reference.py``) on the
  same columns, read included.

Targets (DESIGN §8): engine <= 4x the scan, engine >= 20x faster than pandas. Wall-clock ratios are the
headline; CPU-time ratios are printed too because a shared machine makes wall time noisy.

``peak_rss_mib`` is the whole process's peak (the simulation's, cleaning's and the pandas reference's included);
``engine_peak_rss_mib`` is the peak over the scan and engine runs alone and ``pandas_peak_rss_mib`` over the
pandas reference alone (Linux: the peak is reset through ``/proc/self/clear_refs``; NaN where that is not
supported), both on top of ``rss_before_engine_mib`` that the process holds before them.
"""

from __future__ import annotations

import sys
import tempfile
import time

from _common import REPO, Timer, finish, parser, peak_rss_mib

sys.path.insert(0, str(REPO / "tests" / "unit"))

SCAN_TARGET = 4.0
PANDAS_TARGET = 20.0


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: writing 5 to /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB (VmHWM: peak RSS since the last reset, VmRSS: now); NaN
    where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _peak_rss_since_reset() -> float:
    """Peak RSS (MiB) since the last :func:`_reset_peak_rss`."""
    return _status_mib("VmHWM")


def _best(fn, n: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``n`` calls."""
    wall = cpu = float("inf")
    out = None
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    from factor_reference import reference_factors

    from l2vol.config import SimulationConfig
    from l2vol.data.cleaning import clean_store
    from l2vol.data.simulator import simulate_market
    from l2vol.factors import REGISTRY, FactorPlan, build_factors
    from l2vol.storage import DatasetStore

    symbols = 40 if args.quick else 300
    reps = 2 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="bench_factors_") as tmp:
        raw, src = DatasetStore(f"{tmp}/raw"), DatasetStore(f"{tmp}/src")
        with Timer() as sim:
            simulate_market(SimulationConfig(symbols=symbols, days=1, seed=20240102), raw)
        with Timer() as cleaning:
            clean_store(raw, src, profile="ashare")
        day = src.list_dates("snapshots")[0]
        plan = FactorPlan.make(None)
        snap_cols = list(plan.snapshot_columns)
        available = [c for c, _ in (src.read_manifest("trades", day) or {}).get("schema", [])]
        trade_cols = plan.trade_read_columns(available)

        def scan():
            s = src.read_partition("snapshots", day, columns=snap_cols)
            t = src.read_partition("trades", day, columns=trade_cols)
            return s.num_rows, t.num_rows

        def engine():
            return build_factors(src, DatasetStore(f"{tmp}/dst"), start=day, end=day)

        def pandas_reference():
            s = src.read_partition("snapshots", day, columns=snap_cols).to_pandas()
            t = src.read_partition("trades", day, columns=trade_cols).to_pandas()
            return reference_factors(s, t)

        sim_rss = peak_rss_mib()  # the simulation and cleaning peak, before any factor work
        can_reset = _reset_peak_rss()
        rss_before = _status_mib("VmRSS")  # what the process holds already (what simulation and cleaning left)
        engine()  # warm-up: imports, page cache, polars thread pool
        scan_w = scan_c = eng_w = eng_c = float("inf")
        for _ in range(reps):  # interleaved, so both see the same machine load
            w, c, (snap_rows, trade_rows) = _best(scan, 1)
            scan_w, scan_c = min(scan_w, w), min(scan_c, c)
            w, c, summary = _best(engine, 1)
            eng_w, eng_c = min(eng_w, w), min(eng_c, c)
        # peak of the scans and engine runs alone (the simulator's and the pandas reference's excluded)
        engine_rss = _peak_rss_since_reset() if can_reset else float("nan")
        _reset_peak_rss()
        pd_w, pd_c, (ref, _) = _best(pandas_reference, 1)
        pandas_rss = _peak_rss_since_reset() if can_reset else float("nan")
        assert len(ref) == summary["rows"], "reference and engine disagree on the rows"

    vs_scan, vs_pandas = eng_w / scan_w, pd_w / eng_w
    figures = {
        "symbols": symbols,
        "snapshot_rows": snap_rows,
        "trade_rows": trade_rows,
        "snapshots_per_symbol": round(snap_rows / symbols),
        "factors": len(REGISTRY),
        "factor_rows_written": summary["rows"],
        "simulate_s": sim.seconds,
        "clean_s": cleaning.seconds,
        "scan_s": scan_w,
        "engine_s": eng_w,
        "pandas_reference_s": pd_w,
        "engine_snapshot_rows_per_s": snap_rows / eng_w,
        "scan_snapshot_rows_per_s": snap_rows / scan_w,
        "engine_over_scan": vs_scan,
        "pandas_over_engine": vs_pandas,
        "scan_cpu_s": scan_c,
        "engine_cpu_s": eng_c,
        "pandas_cpu_s": pd_c,
        "engine_over_scan_cpu": eng_c / scan_c,
        "pandas_over_engine_cpu": pd_c / eng_c,
        "target_engine_over_scan_max": SCAN_TARGET,
        "target_pandas_over_engine_min": PANDAS_TARGET,
        "scan_target_met": vs_scan <= SCAN_TARGET,
        "pandas_target_met": vs_pandas >= PANDAS_TARGET,
        "peak_rss_mib": peak_rss_mib(),
        "simulate_peak_rss_mib": sim_rss,
        "rss_before_engine_mib": rss_before,
        "engine_peak_rss_mib": engine_rss,
        "pandas_peak_rss_mib": pandas_rss,
    }
    summary_line = (
        f"{symbols} symbols x {figures['snapshots_per_symbol']} snapshots: engine {eng_w:.2f}s "
        f"({snap_rows / eng_w / 1e6:.2f}M snapshot rows/s) = {vs_scan:.2f}x the bare scan (target <= {SCAN_TARGET:g}x: "
        f"{'met' if figures['scan_target_met'] else 'NOT met'}), {vs_pandas:.1f}x faster than pandas "
        f"(target >= {PANDAS_TARGET:g}x: {'met' if figures['pandas_target_met'] else 'NOT met'})"
    )
    finish("bench_factors", figures, summary_line, args.json)


if __name__ == "__main__":
    main()
