"""The engine's output does not depend on how its input is laid out or how it splits the work.

The engine computes the row-level factors per block of whole symbols (``engine.BLOCK_ROWS`` valid
snapshots) and accepts partitions in any row order (time-major vendor files, symbol-major canonical ones,
anything else). These tests require *bit-identical* tables, not values within a tolerance: a factor of
one symbol must not pick up rounding from another symbol's rows, and a re-run on the same data laid out
differently must reproduce the stored numbers exactly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from factor_reference import synthetic_market

import l2vol.factors.engine as engine
from l2vol.data.schema import schema_for
from l2vol.factors import FACTORS_TABLE, REGISTRY, STATE_TABLE, TARGETS_TABLE, build_factors
from l2vol.factors.registry import FactorRegistry
from l2vol.storage import DatasetStore

TABLES = (FACTORS_TABLE, TARGETS_TABLE, STATE_TABLE)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """6 symbols x 5 dates of 15-second snapshots (a halt, a limit lock, an ex-dividend date), written
    symbol by symbol in a non-lexicographic symbol order, and the tables built from it."""
    root = tmp_path_factory.mktemp("blocks")
    src, dst = DatasetStore(str(root / "src")), DatasetStore(str(root / "dst"))
    info = synthetic_market(src, symbols=6, days=5, interval_s=15, seed=7)
    build_factors(src, dst)
    return root, src, dst, info


def _bits(col: pa.ChunkedArray) -> tuple:
    """A column's null mask and values, floats as their bit patterns (NaN-safe, -0.0 != 0.0)."""
    arr = col.combine_chunks()
    mask = arr.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(arr.type):
        values = arr.fill_null(0.0).to_numpy(zero_copy_only=False).view(np.uint64)
    else:
        values = np.asarray(arr.to_pylist(), dtype=object)
        values[mask] = None
    return mask, values


def _assert_bit_identical(got: DatasetStore, exp: DatasetStore) -> int:
    """Every partition of the factor, target and state tables of ``got`` equals ``exp``'s bit for bit
    (same rows in the same order, same schema with metadata); returns the number of values compared."""
    compared = 0
    for table in TABLES:
        dates = exp.list_dates(table)
        assert got.list_dates(table) == dates and dates, table
        for d in dates:
            a, b = got.read_partition(table, d), exp.read_partition(table, d)
            assert a.schema.equals(b.schema, check_metadata=True), (table, d)
            assert a.num_rows == b.num_rows, (table, d)
            for name in b.column_names:
                (ma, va), (mb, vb) = _bits(a[name]), _bits(b[name])
                assert np.array_equal(ma, mb), f"{table} {d} {name}: null pattern differs"
                same = va == vb
                assert np.all(same), (
                    f"{table} {d} {name}: {int((~same).sum())} values differ (first row {np.argmin(same)})"
                )
                compared += int((~ma).sum())
    return compared


def _copy(src: DatasetStore, out: DatasetStore, reorder) -> None:
    """``src``'s snapshots and trades with each partition's rows put in ``reorder(table, tbl)`` order."""
    for table in ("snapshots", "trades"):
        for d in src.list_dates(table):
            t = src.read_partition(table, d)
            out.write_partition(table, d, t.take(reorder(table, t)), schema=schema_for(table))


def test_any_row_order_gives_bit_identical_tables(market, tmp_path):
    _, src, dst, _ = market
    rng = np.random.default_rng(0)
    layouts = {
        "shuffled": lambda table, t: rng.permutation(t.num_rows),
        # time-major, as a vendor feed arrives (symbols within a time in reverse order)
        "time_major": lambda table, t: pc.sort_indices(
            t,
            sort_keys=[("ts", "ascending"), ("symbol", "descending"), *([("seq", "ascending")] * (table == "trades"))],
        ),
        # symbol-major, as canonical partitions are stored (the engine only checks the order then)
        "symbol_major": lambda table, t: pc.sort_indices(
            t, sort_keys=[("symbol", "ascending"), ("ts", "ascending"), *([("seq", "ascending")] * (table == "trades"))]
        ),
    }
    for name, reorder in layouts.items():
        copy = DatasetStore(str(tmp_path / name / "src"))
        _copy(src, copy, reorder)
        out = DatasetStore(str(tmp_path / name / "out"))
        build_factors(copy, out)
        assert _assert_bit_identical(out, dst) > 50_000, name


def test_symbol_blocks_give_bit_identical_tables(market, tmp_path, monkeypatch):
    """One block per symbol (and blocks of 2-3 symbols) reproduce the single-block run exactly."""
    _, src, dst, _ = market
    per_symbol = len(src.read_partition("snapshots", src.list_dates("snapshots")[0], columns=["symbol"])) // 6
    for rows in (1, 2 * per_symbol):
        monkeypatch.setattr(engine, "BLOCK_ROWS", rows)
        out = DatasetStore(str(tmp_path / f"blocks_{rows}"))
        build_factors(src, out)
        assert _assert_bit_identical(out, dst) > 50_000


def test_block_plan_covers_every_symbol_once(market, monkeypatch):
    _, src, _, _ = market
    d = src.list_dates("snapshots")[0]
    plan = engine.FactorPlan.make(["rv"])
    grid = engine.BucketGrid.for_date(d)
    default = engine.BLOCK_ROWS
    for rows in (1, 700, 2000, default):
        monkeypatch.setattr(engine, "BLOCK_ROWS", rows)
        tables = [src.read_partition("snapshots", d, columns=list(plan.snapshot_columns)), None]
        with engine.ThreadPoolExecutor(max_workers=1) as pool:
            day = engine._prepare_day(d, tables, grid, engine.DailyState(), plan, pool)
            blocks = day.blocks()
        assert blocks[0][0] == 0 and blocks[-1][1] == len(day.symbols) == 6
        assert all(a < b for a, b in blocks) and all(x[1] == y[0] for x, y in zip(blocks, blocks[1:], strict=False))
        if rows == 1:
            assert len(blocks) == 6  # one symbol per block
        if rows == default:
            assert len(blocks) == 1
        elif rows == 2000:
            assert 1 < len(blocks) < 6


def test_rows_flag_is_only_for_frame_factors():
    reg = FactorRegistry()
    with pytest.raises(ValueError, match="rows=True is for frame factors"):

        @reg.factor("x", family="realized", stage="returns", unit="u", inputs=["snapshots.ts"], rows=True)
        def x():
            """Doc."""

    assert REGISTRY["kyle_lambda"].rows and not REGISTRY["market_rv"].rows
    assert REGISTRY["kyle_lambda"].describe()["rows"] is True
