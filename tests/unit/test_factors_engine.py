"""The factor engine against the pandas reference, and its streaming, incremental and layout contracts."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from factor_reference import SNAP_COLUMNS, TRADE_COLUMNS, reference_factors, synthetic_market

from l2vol.config import SimulationConfig
from l2vol.data.profiles import ASHARE
from l2vol.data.schema import schema_for
from l2vol.factors import (
    FACTORS_TABLE,
    HORIZONS,
    REGISTRY,
    STATE_TABLE,
    TARGETS_TABLE,
    BucketGrid,
    BucketSpec,
    Factor,
    FactorRegistry,
    build_factors,
)
from l2vol.storage import DatasetStore

KEYS = ["symbol", "ts"]


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """4 symbols x 25 dates of 15-second snapshots (a halt, a limit lock, an ex-dividend date), built once."""
    root = tmp_path_factory.mktemp("engine")
    src, dst = DatasetStore(str(root / "src")), DatasetStore(str(root / "dst"))
    info = synthetic_market(src, symbols=4, days=25, interval_s=15, seed=3)
    summary = build_factors(src, dst)
    return root, src, dst, info, summary


def _frame(store: DatasetStore, table: str) -> pd.DataFrame:
    return store.read(table).to_pandas().sort_values(KEYS, kind="stable").reset_index(drop=True)


def _assert_same_values(got: pd.Series, exp: pd.Series, name: str, rtol: float = 1e-9) -> int:
    a, b = got.astype(float).to_numpy(), exp.astype(float).to_numpy()
    na, nb = np.isnan(a), np.isnan(b)
    assert (na == nb).all(), f"{name}: null pattern differs at {np.flatnonzero(na != nb)[:5]}"
    both = ~na
    scale = np.nanmax(np.abs(b)) if both.any() else 0.0
    close = np.isclose(a[both], b[both], rtol=rtol, atol=1e-12 * scale)
    assert close.all(), (
        f"{name}: {int((~close).sum())} values differ, e.g. {a[both][~close][:3]} vs {b[both][~close][:3]}"
    )
    return int(both.sum())


def _compare_with_reference(src: DatasetStore, dst: DatasetStore) -> dict[str, int]:
    snaps = src.read("snapshots", columns=SNAP_COLUMNS).to_pandas()
    trades = src.read("trades", columns=TRADE_COLUMNS).to_pandas()
    ref, ref_targets = reference_factors(snaps, trades)
    eng = _frame(dst, FACTORS_TABLE)
    m = eng.merge(ref, on=KEYS, how="outer", suffixes=("", "_ref"), indicator=True)
    assert (m["_merge"] == "both").all(), "engine and reference rows differ"
    counts = {name: _assert_same_values(m[name], m[f"{name}_ref"], name) for name in REGISTRY.names()}
    tg = _frame(dst, TARGETS_TABLE).merge(ref_targets, on=KEYS, suffixes=("", "_ref"))
    assert len(tg) == len(eng)
    for h in HORIZONS:
        counts[f"rv_{h}"] = _assert_same_values(tg[f"rv_{h}"], tg[f"rv_{h}_ref"], f"rv_{h}")
        # zero flags from the reference's count of non-zero returns in the window (exact, no float noise)
        flag = tg[f"zero_{h}"].astype("boolean")
        ref_flag = (tg[f"nz_{h}"] == 0).astype("boolean").where(tg[f"nz_{h}"].notna())
        assert flag.isna().equals(ref_flag.isna()) and (flag.fillna(False) == ref_flag.fillna(False)).all(), h
    return counts


def test_engine_equals_pandas_reference(market):
    _, src, dst, info, summary = market
    counts = _compare_with_reference(src, dst)
    # every factor was compared on real numbers, not just on nulls
    assert min(counts.values()) > 0, {k: v for k, v in counts.items() if v == 0}
    assert summary["zero_rv_buckets"] == 12  # the 30-minute halt and the 30-minute lock
    assert summary["zero_rv_targets"]["next_bucket"] > 0
    assert summary["rows"] == 25 * 4 * 48 and summary["buckets_per_day"] == 48


def test_engine_equals_reference_on_the_simulator(tmp_path):
    from l2vol.data.simulator import simulate_market

    src, dst = DatasetStore(str(tmp_path / "sim")), DatasetStore(str(tmp_path / "out"))
    simulate_market(SimulationConfig(symbols=3, days=3, seed=11), src)
    build_factors(src, dst)
    counts = _compare_with_reference(src, dst)
    assert counts["rv"] == 3 * 3 * 48


def test_truth_table_is_never_read(market, tmp_path, monkeypatch):
    root, src, dst, _, _ = market
    copy = tmp_path / "no_truth"
    shutil.copytree(root / "src", copy)
    store = DatasetStore(str(copy))
    assert "truth" in store.list_tables()
    for d in store.list_dates("truth"):
        store.delete_partition("truth", d)
    read = DatasetStore.read_partition

    def spy(self, table, *args, **kwargs):
        assert table != "truth", "the factor engine read the truth table"
        return read(self, table, *args, **kwargs)

    monkeypatch.setattr(DatasetStore, "read_partition", spy)
    out = DatasetStore(str(tmp_path / "out"))
    build_factors(store, out)
    pd.testing.assert_frame_equal(_frame(out, FACTORS_TABLE), _frame(dst, FACTORS_TABLE))
    pd.testing.assert_frame_equal(_frame(out, TARGETS_TABLE), _frame(dst, TARGETS_TABLE))


def test_a_failed_background_write_is_raised_not_lost(market, tmp_path, monkeypatch):
    """Partitions are written by writer threads: a write that fails there must fail build_factors, naming the
    partition, and the other tables' writes still finish."""
    _, src, _, _, _ = market
    write = DatasetStore.write_partition

    def failing(self, table, date, *args, **kwargs):
        if table == TARGETS_TABLE:
            raise OSError(f"disk full writing table={table}/date={date}")
        return write(self, table, date, *args, **kwargs)

    monkeypatch.setattr(DatasetStore, "write_partition", failing)
    out = DatasetStore(str(tmp_path / "out"))
    dates = src.list_dates("snapshots")[:3]
    with pytest.raises(OSError, match=f"table={TARGETS_TABLE}/date="):
        build_factors(src, out, start=dates[0], end=dates[-1])
    assert out.list_dates(FACTORS_TABLE)  # the writes that did not fail landed


def test_incremental_runs_equal_one_full_run(market, tmp_path):
    _, src, dst, info, _ = market
    dates = info["dates"]
    full_f, full_t = _frame(dst, FACTORS_TABLE), _frame(dst, TARGETS_TABLE)
    # (a) two runs into one store: the second resumes from the persisted factor_state
    two = DatasetStore(str(tmp_path / "two"))
    build_factors(src, two, end=dates[11])
    res = build_factors(src, two, start=dates[12])
    assert res["history_dates_replayed"] == 0
    pd.testing.assert_frame_equal(_frame(two, FACTORS_TABLE), full_f)
    pd.testing.assert_frame_equal(_frame(two, TARGETS_TABLE), full_t)
    # (b) a late start into an empty store replays the previous 22 dates from the source
    late = DatasetStore(str(tmp_path / "late"))
    res = build_factors(src, late, start=dates[23], end=dates[23])
    assert res["history_dates_replayed"] == 22 and late.list_dates(FACTORS_TABLE) == [dates[23]]
    on = full_f["ts"].dt.tz_convert("Asia/Shanghai").dt.date == dates[23]
    pd.testing.assert_frame_equal(_frame(late, FACTORS_TABLE), full_f[on].reset_index(drop=True))
    on_t = full_t["ts"].dt.tz_convert("Asia/Shanghai").dt.date == dates[23]
    # (zero_next_day is object-typed in the full table, whose last date has nulls)
    pd.testing.assert_frame_equal(_frame(late, TARGETS_TABLE), full_t[on_t].reset_index(drop=True), check_dtype=False)


def test_row_order_does_not_matter(market, tmp_path):
    _, src, dst, info, _ = market
    shuffled = DatasetStore(str(tmp_path / "shuffled"))
    rng = np.random.default_rng(0)
    days = info["dates"][:3]
    for table in ("snapshots", "trades"):
        for d in days:
            t = src.read_partition(table, d)
            shuffled.write_partition(table, d, t.take(rng.permutation(t.num_rows)), schema=schema_for(table))
    out = DatasetStore(str(tmp_path / "out"))
    build_factors(shuffled, out)
    ref = _frame(dst, FACTORS_TABLE)
    ref = ref[ref["ts"].dt.tz_convert("Asia/Shanghai").dt.date <= days[-1]].reset_index(drop=True)
    got = _frame(out, FACTORS_TABLE)
    # next-day targets of the last shuffled date differ (the shuffled store ends there): compare factors
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12)


def test_factor_subset_and_table_layout(market, tmp_path):
    _, src, dst, _, _ = market
    out = DatasetStore(str(tmp_path / "subset"))
    res = build_factors(
        src, out, factors=["amihud", "har_rv_w", "vpin"], end=ASHARE.next_trading_days(dt.date(2024, 1, 2), 8)[-1]
    )
    tbl = out.read_partition(FACTORS_TABLE, out.list_dates(FACTORS_TABLE)[-1])
    assert res["factors"] == ["amihud", "vpin", "har_rv_w"]  # registry order, dependencies not written
    assert tbl.column_names == ["symbol", "ts", "bucket", *res["factors"]]
    assert tbl.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    meta = tbl.schema.field("amihud").metadata
    assert meta[b"unit"] == b"log-return per CNY million" and meta[b"family"] == b"trades"
    full = _frame(dst, FACTORS_TABLE)
    got = _frame(out, FACTORS_TABLE)
    merged = got.merge(full, on=KEYS, suffixes=("", "_full"))
    for name in res["factors"]:
        _assert_same_values(merged[name], merged[f"{name}_full"], name, rtol=1e-12)
    man = out.read_manifest(FACTORS_TABLE, out.list_dates(FACTORS_TABLE)[0])
    assert man["metadata"]["bucket"] == "5min" and man["metadata"]["factors"] == res["factors"]
    assert set(out.list_tables()) == {FACTORS_TABLE, TARGETS_TABLE, STATE_TABLE}
    with pytest.raises(KeyError, match="unknown factor 'nope'"):
        build_factors(src, out, factors=["nope"])


def test_other_bucket_lengths(market, tmp_path):
    _, src, dst, info, _ = market
    out = DatasetStore(str(tmp_path / "b10"))
    res = build_factors(src, out, factors=["rv"], bucket="10min", start=info["dates"][0], end=info["dates"][1])
    assert res["buckets_per_day"] == 24 and res["bucket"] == "10min"
    ten = _frame(out, FACTORS_TABLE)
    assert len(ten) == 2 * 4 * 24
    five = _frame(dst, FACTORS_TABLE)[["symbol", "ts", "rv"]]
    # a 10-minute RV is the sum of its two 5-minute RVs (same returns, same [start, end) rule)
    first = five.assign(ts=five["ts"] + pd.Timedelta(minutes=5)).rename(columns={"rv": "rv_first"})
    m = ten.merge(first, on=KEYS).merge(five.rename(columns={"rv": "rv_second"}), on=KEYS)
    m = m[m["bucket"] != 23]  # 14:50-14:57 is 5 + 2 minutes
    assert len(m) == 2 * 4 * 23
    assert np.allclose(m["rv"], m["rv_first"] + m["rv_second"], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="must divide 30 minutes"):
        build_factors(src, out, bucket="7min")


# ------------------------------------------------------------------ buckets and registry


def test_trading_clock_buckets():
    g = BucketGrid.for_date(dt.date(2024, 1, 2), "5min")
    local = pd.DatetimeIndex(g.end_ns, tz="UTC").tz_convert("Asia/Shanghai")
    assert g.n == 48 and local[0].strftime("%H:%M") == "09:35" and local[23].strftime("%H:%M") == "11:30"
    assert local[24].strftime("%H:%M") == "13:05" and local[-1].strftime("%H:%M:%S") == "14:57:00"
    assert list(g.tau_end[[0, 23, 24, 47]]) == [300, 7200, 7500, 14220]
    assert BucketGrid.for_date(dt.date(2024, 1, 2), "1min").n == 237
    assert BucketGrid.for_date(dt.date(2017, 1, 3), "5min").tau_end[-1] == 14400  # continuous close at 15:00

    def ns(hms):
        return pd.Timestamp(f"2024-01-02 {hms}", tz="Asia/Shanghai").value

    t = np.array(
        [
            ns("09:29:59"),
            ns("09:30:00"),
            ns("09:34:59.999"),
            ns("09:35:00"),
            ns("11:30:00"),
            ns("13:00:00"),
            ns("14:57:00"),
        ]
    )
    assert g.feature_bucket(t).tolist() == [-1, 0, 0, 1, -1, 24, -1]
    assert g.target_cell(t[1:]).tolist() == [-1, 0, 0, 23, 24, 47]  # (previous end, end]
    assert BucketSpec.parse("300s") == BucketSpec.parse("5min") == BucketSpec.parse(300)
    for bad in ("7min", "1h", "five minutes"):
        with pytest.raises(ValueError):
            BucketSpec.parse(bad)


@pytest.mark.parametrize("day", [dt.date(2024, 1, 2), dt.date(2017, 1, 3)])
@pytest.mark.parametrize("spec", ["30s", "1min", "5min", "15min", "30min"])
def test_feature_bucket_lookup_equals_the_binary_search(day, spec):
    """The slot table of ``feature_bucket`` gives the half-open [start, end) bucket of a binary search over
    the bucket starts, for random times and every boundary +-1 ns (before the open and after the close too)."""
    g = BucketGrid.for_date(day, spec)
    assert g._slots is not None  # the A-share grid has a slot table: the fast path is what is tested
    lo, hi = int(g.start_ns[0]) - 3_600 * 10**9, int(g.end_ns[-1]) + 3_600 * 10**9
    edges = np.concatenate([g.start_ns, g.end_ns])
    t = np.concatenate(
        [np.random.default_rng(0).integers(lo, hi, 50_000), edges - 1, edges, edges + 1, [lo - 10**15, hi + 10**15]]
    )
    idx = np.searchsorted(g.start_ns, t, side="right") - 1
    expected = np.where((idx >= 0) & (t < g.end_ns[np.maximum(idx, 0)]), idx, -1)
    got = g.feature_bucket(t)
    assert got.dtype == np.int16 and (got == expected).all()
    assert (got >= 0).sum() > 10_000 and (got == -1).sum() > 1_000  # both kinds of times were compared


def test_registry_refuses_duplicates_and_documents_every_factor():
    reg = FactorRegistry()

    @reg.factor("x", family="realized", stage="returns", unit="u", inputs=["snapshots.ts"])
    def x():
        """X."""

    with pytest.raises(ValueError, match="already registered"):

        @reg.factor("x", family="book", stage="snapshots", unit="u", inputs=["snapshots.ts"])
        def x2():
            """Another X."""

    with pytest.raises(ValueError, match="unknown family"):
        reg.register(Factor("y", "alpha", "returns", "u", "d", ("snapshots.ts",), fn=x))
    with pytest.raises(ValueError, match="description and unit"):
        reg.register(Factor("z", "realized", "returns", "u", " ", ("snapshots.ts",), fn=x))
    for f in REGISTRY:
        assert f.description and f.unit and f.family in ("realized", "book", "trades", "history")
        for i in f.inputs:
            table, column = i.split(".", 1)
            assert column in schema_for(table).names, f"{f.name}: unknown input {i}"
        for d in f.depends:
            assert d in REGISTRY
    assert len(REGISTRY) == len(set(REGISTRY.names())) >= 45
    order = [f.name for f in REGISTRY.resolve(["bns_jump_stat"])]
    assert order.index("bipower_variation") < order.index("bns_jump_stat")
