"""The market simulator: schemas, sessions, tick grid and lots, cumulative fields, limits and locked
books, A-share events, the point-in-time universe, determinism, memory structure and defect injection.

One small market (20 symbols x 5 days in the June 2024 dividend season) is simulated once per module,
with defects and orders, together with its clean twin (same seed, no defects).
"""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from l2vol.config import SimulationConfig
from l2vol.data import schema
from l2vol.data.calibration import DEFAULT, get_calibration
from l2vol.data.profiles import ASHARE, board_of, price_limits
from l2vol.data.rules import INJECTABLE, RULE_ORDER
from l2vol.data.sim.latent import ar1_paths, round_half_up_cents
from l2vol.data.simulator import simulate_latent, simulate_market, simulation_universe
from l2vol.storage import DatasetStore

CFG = SimulationConfig(symbols=20, days=5, seed=11, start=dt.date(2024, 6, 12), inject_defects=True, with_orders=True)
TZ = "Asia/Shanghai"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    raw = DatasetStore(str(tmp_path_factory.mktemp("raw")))
    clean = DatasetStore(str(tmp_path_factory.mktemp("clean")))
    s_raw = simulate_market(CFG, raw)
    s_clean = simulate_market(CFG.model_copy(update={"inject_defects": False}), clean)
    dates = [dt.date.fromisoformat(d) for d in s_clean["dates"]]
    snaps = clean.read("snapshots")
    trades = clean.read("trades")
    return SimpleNamespace(raw=raw, clean=clean, s_raw=s_raw, s_clean=s_clean, dates=dates, snaps=snaps, trades=trades)


def _col(t: pa.Table, name: str) -> np.ndarray:
    c = t.column(name)
    if pa.types.is_timestamp(c.type):
        return c.cast(pa.int64()).to_numpy()
    return c.to_numpy(zero_copy_only=False)


def _local_seconds(ts_ns: np.ndarray) -> np.ndarray:
    t = pd.DatetimeIndex(ts_ns, tz="UTC").tz_convert(TZ)
    return (t.hour * 3600 + t.minute * 60 + t.second).to_numpy() + t.microsecond.to_numpy() / 1e6


def _on_tick(x: np.ndarray) -> bool:
    x = x[~np.isnan(x)]
    return bool(np.all(np.abs(x * 100 - np.round(x * 100)) < 1e-6))


# ------------------------------------------------------------------------------------------ schemas
def test_every_table_matches_its_canonical_schema(sim):
    tables = set(sim.clean.list_tables())
    assert {"snapshots", "trades", "orders", "universe", "truth"} <= tables
    assert "bars_1d" not in tables  # derived by l2vol.data.bars, not by the simulator
    for name in ("snapshots", "trades", "orders", "universe", "truth"):
        for d in sim.dates:
            t = sim.clean.read_partition(name, d)
            assert t.schema.equals(schema.TABLES[name], check_metadata=False), (name, d)
            man = sim.clean.read_manifest(name, d)
            assert man["metadata"]["seed"] == CFG.seed
            assert man["metadata"]["calibration"] == "default"
            assert man["metadata"]["calibration_version"] == DEFAULT.version


def test_config_json_records_calibration_and_summary_counts_rows(sim):
    conf = sim.clean.read_json("simulation/config.json")
    assert conf["calibration"]["name"] == "default" and conf["calibration"]["version"] == "1"
    assert conf["calibration"]["params"] == json.loads(json.dumps(DEFAULT.to_dict()))
    assert conf["config"]["seed"] == CFG.seed
    for table, n in sim.s_clean["rows"].items():
        assert n == sum(sim.clean.read_manifest(table, d)["rows"] for d in sim.dates)
    assert sim.s_clean["defects"] == {}
    assert sim.s_clean["dates"] == [d.isoformat() for d in ASHARE.next_trading_days(CFG.start, CFG.days)]


def test_unknown_calibration_and_bad_interval_are_refused(tmp_path):
    with pytest.raises(KeyError, match="known: default"):
        get_calibration("nope")
    with pytest.raises(ValueError, match="divisor of 60"):
        simulate_market(SimulationConfig(symbols=2, days=1, snapshot_interval_s=7), DatasetStore(str(tmp_path)))


# ------------------------------------------------------------------------------------ sessions & grid
def test_snapshot_grid_phases_and_lunch_break(sim):
    s = sim.snaps
    ts, sym, phase = _col(s, "ts"), _col(s, "symbol"), _col(s, "phase")
    secs = _local_seconds(ts)
    assert not np.any((secs >= 11.5 * 3600) & (secs < 13 * 3600)), "snapshot in the lunch break"
    assert secs.min() == 9.25 * 3600 and secs.max() == 15 * 3600
    assert np.all(np.diff(ts) >= 0), "snapshots are sorted by ts"
    day = pd.DatetimeIndex(ts, tz="UTC").tz_convert(TZ).date
    df = pd.DataFrame({"sym": sym, "day": day, "phase": phase, "secs": secs})
    traded = df[df.phase != "HALT"]
    counts = traded.groupby(["sym", "day"]).phase.value_counts().unstack(fill_value=0)
    assert (counts["OCALL"] == 200).all() and (counts["PREOPEN"] == 100).all()
    assert (counts["TRADE"] == 2400 + 2340).all() and (counts["CCALL"] == 61).all()
    # phases agree with the market profile's clock
    for d in sim.dates[:2]:
        sel = (traded.day == d).to_numpy()
        local = pd.DatetimeIndex(ts[traded.index[sel]], tz="UTC").tz_convert(TZ)
        assert np.array_equal(ASHARE.phase_of(local, d), traded.phase.to_numpy()[sel])
    # 3-second cadence per symbol and day
    assert set(
        np.unique(np.diff(traded[traded.phase == "TRADE"].groupby(["sym", "day"]).secs.apply(np.array).iloc[0]))
    ) <= {
        3.0,
        1.5 * 3600 + 3,
    }


def test_call_auctions_show_indicative_bid_equal_ask(sim):
    s = sim.snaps
    phase = _col(s, "phase")
    bid, ask = _col(s, "bid_px_1"), _col(s, "ask_px_1")
    call = np.isin(phase, ["OCALL", "CCALL"])
    present = call & ~np.isnan(bid)
    assert present.sum() > 0.9 * call.sum()  # only 09:15:00 has no indicative yet
    assert np.array_equal(bid[present], ask[present])
    assert np.all(np.isnan(_col(s, "bid_px_2")[call]))
    # the closing price is the 15:00:00 indicative price and the last trade
    close = call & (_local_seconds(_col(s, "ts")) == 15 * 3600)
    assert np.array_equal(_col(s, "last_px")[close], bid[close])


def test_trades_in_sessions_with_aggressor_side(sim):
    t = sim.trades
    secs = _local_seconds(_col(t, "ts"))
    side = _col(t, "side")
    auction = side == "N"
    assert set(np.unique(secs[auction])) <= {9 * 3600 + 25 * 60, 15 * 3600}
    cont = ~auction
    assert set(np.unique(side[cont])) == {"B", "S"}
    in_morning = (secs > 9.5 * 3600) & (secs < 11.5 * 3600)
    in_afternoon = (secs > 13 * 3600) & (secs < 14 * 3600 + 57 * 60)
    assert np.all(in_morning[cont] | in_afternoon[cont])


def test_tick_grid_and_lot_sizes(sim):
    s, t = sim.snaps, sim.trades
    for c in ["last_px", "open_px", "high_px", "low_px", "pre_close", "upper_limit_px", "lower_limit_px"] + [
        f"{side}_px_{i}" for side in ("bid", "ask") for i in range(1, 11)
    ]:
        assert _on_tick(_col(s, c)), c
    assert _on_tick(_col(t, "price"))
    board = np.array([board_of(x) for x in _col(t, "symbol")])
    qty = _col(t, "qty")
    star = board == "star"
    assert np.all(qty[~star] % 100 == 0) and np.all(qty[~star] >= 100)
    assert np.all(qty[star] >= 200)
    bq = _col(s, "bid_qty_1")
    sboard = np.array([board_of(x) for x in _col(s, "symbol")])
    assert np.all(bq[sboard != "star"] % 100 == 0)


# ------------------------------------------------------------------------------------- trades & volumes
def test_trade_amount_is_price_times_qty_and_seq_is_unique(sim):
    t = sim.trades
    price, qty, amount = _col(t, "price"), _col(t, "qty"), _col(t, "amount")
    assert np.array_equal(amount, price * qty)  # exact float64 product
    sym, seq, ts = _col(t, "symbol"), _col(t, "seq"), _col(t, "ts")
    day = pd.DatetimeIndex(ts, tz="UTC").tz_convert(TZ).date
    df = pd.DataFrame({"sym": sym, "day": day, "seq": seq, "ts": ts})
    assert not df.duplicated(["sym", "day", "seq"]).any()
    g = df.groupby(["sym", "day"])
    assert (g.seq.min() == 1).all() and (g.seq.max() == g.seq.size()).all()
    assert (g.ts.apply(lambda x: np.all(np.diff(x.to_numpy()) >= 0))).all()
    assert np.all(_col(t, "buy_order_no") != _col(t, "sell_order_no"))


def test_cumulative_volume_amount_and_count_equal_the_trades(sim):
    s, t = sim.snaps, sim.trades
    ssym, sts = _col(s, "symbol"), _col(s, "ts")
    tsym, tts, qty, amt = _col(t, "symbol"), _col(t, "ts"), _col(t, "qty"), _col(t, "amount")
    for sym in np.unique(tsym)[:8]:
        for d in sim.dates:
            lo = pd.Timestamp(dt.datetime.combine(d, dt.time(0)), tz=TZ).value
            hi = lo + 86_400 * 10**9
            ms = (ssym == sym) & (sts >= lo) & (sts < hi)
            mt = (tsym == sym) & (tts >= lo) & (tts < hi)
            if not mt.any():
                continue
            cv, ca, cn = _col(s, "cum_volume")[ms], _col(s, "cum_amount")[ms], _col(s, "num_trades")[ms]
            assert np.all(np.diff(cv) >= 0) and np.all(np.diff(cn) >= 0)
            tq, ta, tt = qty[mt], amt[mt], tts[mt]
            upto = np.searchsorted(tt, sts[ms], side="right")  # trades with ts <= snapshot ts
            cq = np.concatenate([[0], np.cumsum(tq)])
            assert np.array_equal(cv, cq[upto])
            assert np.array_equal(cn, upto)
            np.testing.assert_allclose(ca, np.concatenate([[0], np.cumsum(ta)])[upto], rtol=1e-9, atol=1e-6)
            assert cv[-1] == tq.sum()
            last = _col(s, "last_px")[ms]
            has = upto > 0
            assert np.array_equal(last[has], _col(t, "price")[mt][upto[has] - 1])


def test_continuous_fills_hit_the_standing_quote(sim):
    s, t = sim.snaps, sim.trades
    sym = np.unique(_col(t, "symbol"))[0]
    d = sim.dates[0]
    ss = s.filter(pc.equal(s.column("symbol"), sym))
    tt = t.filter(pc.equal(t.column("symbol"), sym))
    day_s = pd.DatetimeIndex(_col(ss, "ts"), tz="UTC").tz_convert(TZ).date == d
    day_t = pd.DatetimeIndex(_col(tt, "ts"), tz="UTC").tz_convert(TZ).date == d
    sts = _col(ss, "ts")[day_s]
    bid, ask = _col(ss, "bid_px_1")[day_s], _col(ss, "ask_px_1")[day_s]
    side, price, tts = _col(tt, "side")[day_t], _col(tt, "price")[day_t], _col(tt, "ts")[day_t]
    cont = side != "N"
    prev = np.searchsorted(sts, tts[cont], side="right") - 1  # the snapshot standing when the fill happened
    quote = np.where(side[cont] == "B", ask[prev], bid[prev])
    assert np.array_equal(price[cont], quote)


# --------------------------------------------------------------------------------- books and limits
def test_books_are_ordered_within_limits_and_locked_books_exist(sim):
    s = sim.snaps
    phase = _col(s, "phase")
    up, lo = _col(s, "upper_limit_px"), _col(s, "lower_limit_px")
    bids = np.stack([_col(s, f"bid_px_{i}") for i in range(1, 11)])
    asks = np.stack([_col(s, f"ask_px_{i}") for i in range(1, 11)])
    trade = phase == "TRADE"
    both = trade & ~np.isnan(bids[0]) & ~np.isnan(asks[0])
    assert np.all(asks[0][both] > bids[0][both]), "crossed or locked continuous book"
    with np.errstate(invalid="ignore"):
        assert not np.any(np.diff(bids[:, trade], axis=0) >= 0), "bid levels must strictly decrease"
        assert not np.any(np.diff(asks[:, trade], axis=0) <= 0), "ask levels must strictly increase"
        lim = ~np.isnan(up)
        assert not np.any(bids[:, lim] > up[lim] + 1e-9) and not np.any(asks[:, lim] > up[lim] + 1e-9)
        assert not np.any(bids[:, lim] < lo[lim] - 1e-9) and not np.any(asks[:, lim] < lo[lim] - 1e-9)
    # limit-locked: bids only with the best bid at the upper limit, or asks only at the lower limit
    locked_up = trade & np.isnan(asks[0]) & (np.abs(bids[0] - up) < 1e-9)
    locked_dn = trade & np.isnan(bids[0]) & (np.abs(asks[0] - lo) < 1e-9)
    assert (locked_up | locked_dn).sum() > 0, "expected limit-locked books in this sample"
    assert np.all(~np.isnan(bids[0][trade]) | ~np.isnan(asks[0][trade]))
    # fills never outside the day's band
    t = sim.trades
    tsym, price = _col(t, "symbol"), _col(t, "price")
    band = pd.DataFrame(
        {
            "sym": _col(s, "symbol"),
            "up": up,
            "lo": lo,
            "day": pd.DatetimeIndex(_col(s, "ts"), tz="UTC").tz_convert(TZ).date,
        }
    )
    band = band.dropna().drop_duplicates(["sym", "day"]).set_index(["sym", "day"])
    tday = pd.DatetimeIndex(_col(t, "ts"), tz="UTC").tz_convert(TZ).date
    key = pd.MultiIndex.from_arrays([tsym, tday])
    b = band.reindex(key)
    ok = ~b.up.isna().to_numpy()
    assert np.all(price[ok] <= b.up.to_numpy()[ok] + 1e-9) and np.all(price[ok] >= b.lo.to_numpy()[ok] - 1e-9)


def test_limits_follow_the_dated_rule_table(sim):
    s = sim.snaps
    uni = sim.clean.read("universe").to_pandas()
    first = pd.DataFrame(
        {
            "symbol": _col(s, "symbol"),
            "date": pd.DatetimeIndex(_col(s, "ts"), tz="UTC").tz_convert(TZ).date,
            "phase": _col(s, "phase"),
            "pre_close": _col(s, "pre_close"),
            "up": _col(s, "upper_limit_px"),
            "lo": _col(s, "lower_limit_px"),
        }
    )
    first = first[first.phase != "HALT"].drop_duplicates(["symbol", "date"]).merge(uni, on=["symbol", "date"])
    days = sim.dates
    for r in first.itertuples():
        dsl = days.index(r.date) - days.index(r.listing_date) if r.listing_date >= days[0] else 10_000
        lo, up = price_limits(r.pre_close, r.board, r.is_st, r.date, dsl)
        if up is None:
            assert np.isnan(r.up) and np.isnan(r.lo)
        else:
            assert (r.lo, r.up) == (lo, up)


# ------------------------------------------------------------------------------------------ events
def test_universe_is_point_in_time_with_index_changes(sim):
    uni = sim.clean.read("universe").to_pandas()
    assert (uni.board == uni.symbol.map(board_of)).all()
    assert (uni.exchange == np.where(uni.symbol.str.endswith(".SH"), "SSE", "SZSE")).all()
    assert (uni.listing_date <= uni.date).all()
    assert not (uni.is_st & uni.in_index).any()
    assert set(uni.industry) <= set(DEFAULT.universe.industries)
    assert uni.in_index.any() and not uni.in_index.all()


def test_index_membership_changes_at_the_semiannual_review():
    from l2vol.data.sim.latent import simulate_latent_days

    uni, cal = simulation_universe(SimulationConfig(symbols=80, days=6, seed=3, start=dt.date(2024, 6, 12)))
    review = uni.days.index(dt.date(2024, 6, 17))  # first trading day after the second Friday of June
    assert uni.review_days == frozenset({review})
    members = []
    for _, st in simulate_latent_days(uni, cal, 3, 60):
        members.append(frozenset(np.flatnonzero(st.in_index)))
        assert not (st.in_index & st.is_st).any()
        assert st.in_index.sum() == uni.index_size
    assert members[review] != members[review - 1], "the review changes the membership"
    changed = len(members[review] - members[review - 1])
    assert changed < 0.3 * uni.index_size, "the buffer rule keeps most members"


def test_suspended_symbols_halt_all_day_without_trades(sim):
    uni = sim.clean.read("universe").to_pandas()
    susp = uni[uni.suspended]
    assert len(susp) > 0
    s, t = sim.snaps, sim.trades
    for r in susp.itertuples():
        lo = pd.Timestamp(dt.datetime.combine(r.date, dt.time(0)), tz=TZ).value
        m = (_col(s, "symbol") == r.symbol) & (_col(s, "ts") >= lo) & (_col(s, "ts") < lo + 86_400 * 10**9)
        assert m.sum() == 5101 and set(_col(s, "phase")[m]) == {"HALT"}
        assert np.all(_col(s, "cum_volume")[m] == 0) and np.all(np.isnan(_col(s, "bid_px_1")[m]))
        mt = (_col(t, "symbol") == r.symbol) & (_col(t, "ts") >= lo) & (_col(t, "ts") < lo + 86_400 * 10**9)
        assert not mt.any()


def test_new_listing_has_no_limit_in_its_first_days(sim):
    uni = sim.clean.read("universe").to_pandas()
    new = uni[uni.listing_date > sim.dates[0]]
    assert len(new) > 0
    sym = new.symbol.iloc[0]
    listing = new.listing_date.iloc[0]
    assert not ((uni.symbol == sym) & (uni.date < listing)).any(), "absent before its listing date"
    s = sim.snaps
    m = (_col(s, "symbol") == sym) & (_col(s, "phase") == "TRADE")
    up = _col(s, "upper_limit_px")[m]
    if board_of(sym) in ("star", "chinext") or listing >= dt.date(2023, 4, 10):
        assert np.all(np.isnan(up)), "no limit in the first 5 days of a registration-regime listing"
    uni_obj, _ = simulation_universe(CFG)
    i = list(uni_obj.symbols).index(sym)
    first_day = pd.DatetimeIndex(_col(s, "ts")[m], tz="UTC").tz_convert(TZ).date == listing
    pre = _col(s, "pre_close")[m][first_day]
    assert len(pre) == 4740
    assert np.all(pre == uni_obj.issue_price[i]), "the first day's pre_close is the issue price"


def test_pre_close_is_the_previous_close_less_any_dividend(sim):
    s = sim.snaps
    first = pd.DataFrame(
        {
            "symbol": _col(s, "symbol"),
            "date": pd.DatetimeIndex(_col(s, "ts"), tz="UTC").tz_convert(TZ).date,
            "phase": _col(s, "phase"),
            "pre_close": _col(s, "pre_close"),
            "last": _col(s, "last_px"),
        }
    )
    first = first[first.phase != "HALT"]
    pre = first.drop_duplicates(["symbol", "date"]).set_index(["symbol", "date"]).pre_close
    close = first.groupby(["symbol", "date"]).last()["last"]
    last_close: dict[str, float] = {}
    n_div = n_same = 0
    for lat, uni in simulate_latent(CFG.model_copy(update={"inject_defects": False})):
        names = uni.symbols[lat.sym]
        for i, sym in enumerate(names):
            assert close[(sym, lat.day)] == lat.close[i], "the 15:00:00 last price is the close"
            if sym not in last_close:
                continue
            p = pre[(sym, lat.day)]
            if lat.dividend[i] > 0:  # ex-dividend: the exchange's adjusted pre_close
                n_div += 1
                assert p == round_half_up_cents(last_close[sym] - lat.dividend[i]) and p < last_close[sym]
            else:
                n_same += 1
                assert p == last_close[sym]
        last_close.update(zip(names, lat.close, strict=True))
    assert n_div >= 1 and n_same > 50


# ------------------------------------------------------------------------------------ determinism
def test_same_config_gives_byte_identical_partitions(tmp_path):
    cfg = SimulationConfig(symbols=4, days=2, seed=5)
    a, b = DatasetStore(str(tmp_path / "a")), DatasetStore(str(tmp_path / "b"))
    simulate_market(cfg, a)
    simulate_market(cfg, b)
    for table in a.list_tables():
        for d in a.list_dates(table):
            assert a.read_manifest(table, d) == b.read_manifest(table, d), (table, d)
    assert a.read_bytes("simulation/config.json") == b.read_bytes("simulation/config.json")
    c = DatasetStore(str(tmp_path / "c"))
    simulate_market(cfg.model_copy(update={"seed": 6}), c)
    d0 = a.list_dates("snapshots")[0]
    assert a.read_manifest("snapshots", d0)["files"] != c.read_manifest("snapshots", d0)["files"]


def test_latent_mode_reproduces_the_written_quotes(sim):
    d = sim.dates[1]
    for lat, uni in simulate_latent(CFG.model_copy(update={"inject_defects": False})):
        if lat.day != d:
            continue
        snap = sim.clean.read_partition("snapshots", d, columns=["symbol", "ts", "phase", "bid_px_1", "ask_px_1"])
        grid_ts = lat.grids[0].tau_ts_ns
        names = list(uni.symbols[lat.sym])
        ts, sym = _col(snap, "ts"), _col(snap, "symbol")
        m = np.isin(ts, grid_ts) & np.isin(sym, names)
        bid = _col(snap, "bid_px_1")[m].reshape(len(grid_ts), len(names)).T
        want = np.where(lat.bid_t >= 0, lat.bid_t / 100.0, np.nan)
        np.testing.assert_array_equal(bid, want)
        truth = sim.clean.read_partition("truth", d)
        px = _col(truth, "efficient_px").reshape(len(grid_ts), len(names)).T
        np.testing.assert_allclose(px, np.exp(lat.x), rtol=1e-12)
        break


# ----------------------------------------------------------------------------------- memory bound
class _RecordingStore(DatasetStore):
    def __init__(self, uri):
        super().__init__(uri)
        self.calls: list[tuple[str, dt.date]] = []

    def write_partition(self, table, date, data, **kw):
        info = super().write_partition(table, date, data, **kw)
        self.calls.append((table, info.date))
        return info


def test_one_date_at_a_time_with_compact_carried_state(tmp_path):
    store = _RecordingStore(str(tmp_path))
    simulate_market(SimulationConfig(symbols=3, days=3, seed=2), store)
    dates = [d for _, d in store.calls]
    assert dates == sorted(dates), "every table of a date is written before the next date is simulated"
    per_date = {d: {t for t, dd in store.calls if dd == d} for d in set(dates)}
    assert all(v == {"snapshots", "trades", "truth", "universe"} for v in per_date.values())
    # the state carried across days does not grow with the number of days
    from l2vol.data.sim.latent import simulate_latent_days

    uni, cal = simulation_universe(SimulationConfig(symbols=30, days=8, seed=2))
    sizes = [st.nbytes() for _, st in simulate_latent_days(uni, cal, 2, 60)]
    assert len(set(sizes)) == 1 and sizes[0] < 30 * 200


def test_ar1_paths_matches_the_recursion():
    rng = np.random.default_rng(0)
    innov = rng.standard_normal((3, 5000))
    a = 0.999
    z = ar1_paths(np.array([0.5, -1.0, 2.0]), innov, a)
    ref = np.empty_like(z)
    ref[:, 0] = [0.5, -1.0, 2.0]
    for k in range(1, z.shape[1]):
        ref[:, k] = a * ref[:, k - 1] + innov[:, k - 1]
    np.testing.assert_allclose(z, ref, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- microstructure facts
def test_spreads_depth_and_trading_respond_to_volatility(sim):
    s = sim.snaps.select(["symbol", "ts", "phase", "bid_px_1", "ask_px_1", "bid_qty_1", "ask_qty_1", "num_trades"])
    truth = sim.clean.read("truth")
    sts = _col(s, "ts")
    t_ts, t_sym = _col(truth, "ts"), _col(truth, "symbol")
    key_s = pd.MultiIndex.from_arrays([_col(s, "symbol"), sts])
    spot = pd.Series(_col(truth, "spot_var"), index=pd.MultiIndex.from_arrays([t_sym, t_ts])).reindex(key_s).to_numpy()
    df = pd.DataFrame(
        {
            "sym": _col(s, "symbol"),
            "bucket": sts // (300 * 10**9),
            "phase": _col(s, "phase"),
            "rel_spread": (_col(s, "ask_px_1") - _col(s, "bid_px_1")) / _col(s, "bid_px_1"),
            "ticks": np.round((_col(s, "ask_px_1") - _col(s, "bid_px_1")) * 100),
            "depth": _col(s, "bid_qty_1") + _col(s, "ask_qty_1"),
            "n": _col(s, "num_trades"),
            "spot": spot,
        }
    )
    df = df[df.phase == "TRADE"].dropna()
    b = df.groupby(["sym", "bucket"]).agg(
        spread=("rel_spread", "mean"),
        ticks=("ticks", "mean"),
        depth=("depth", "mean"),
        vol=("spot", "mean"),
        n0=("n", "min"),
        n1=("n", "max"),
    )
    b["trades"] = b.n1 - b.n0
    corr = b.groupby(level=0).apply(
        lambda g: pd.Series(
            {
                "spread": np.corrcoef(np.log(g.spread), np.log(g.vol))[0, 1],
                "depth": np.corrcoef(np.log(g.depth), np.log(g.vol))[0, 1],
                "trades": np.corrcoef(np.log1p(g.trades), np.log(g.vol))[0, 1],
                "ticks": g.ticks.mean(),
            }
        )
    )
    # Where the tick does not bind, the spread widens with volatility. A tick-bound name quotes 1 or 2
    # ticks (the parity of its dithered mid decides), 1.5 ticks on average, whatever the volatility.
    wide = corr.ticks >= 1.6
    assert wide.sum() >= 3
    assert corr.spread[wide].median() > 0.3
    assert corr.spread.median() > 0
    assert corr.depth.median() < -0.1
    assert corr.trades.median() > 0.2


# --------------------------------------------------------------------------------- defect injection
def _reference_clean(table: str, raw: pa.Table, day: dt.date, limits: pd.DataFrame | None):
    """An independent implementation of the rules of l2vol.data.rules (first rule wins), for the test."""
    df = raw.to_pandas()
    df["_ts"] = _col(raw, "ts")
    rule = np.full(len(df), None, dtype=object)

    def mark(mask, name):
        m = np.asarray(mask) & (rule == None)  # noqa: E711
        rule[m] = name

    if table == "snapshots":
        h = pd.util.hash_pandas_object(df[raw.column_names], index=False)
        mark(h.duplicated().to_numpy(), "duplicate")
    else:
        mark(df.duplicated(["symbol", "seq"]).to_numpy(), "duplicate")
    local = pd.DatetimeIndex(df._ts, tz="UTC").tz_convert(TZ)
    secs = (local.hour * 3600 + local.minute * 60 + local.second).to_numpy() + local.microsecond.to_numpy() / 1e6
    ok = np.zeros(len(df), bool)
    for s in ASHARE.sessions_for(day):
        a = s.start.hour * 3600 + s.start.minute * 60 + s.start.second
        b = s.end.hour * 3600 + s.end.minute * 60 + s.end.second
        ok |= (secs >= a) & (secs < b)
    mark(~ok | (local.date != day), "out_of_session")
    key = pd.Series((df._ts if table == "snapshots" else df.seq).to_numpy(), dtype="float64")
    alive = pd.Series(rule == None)  # noqa: E711
    sym = df.symbol.reset_index(drop=True)
    seen = key.where(alive).groupby(sym).cummax().groupby(sym).ffill()
    prev = seen.groupby(sym).shift(1)
    mark((alive & (key < prev)).to_numpy(), "out_of_order")
    if table == "trades":
        mark((df.price <= 0) | (df.qty <= 0), "non_positive_price")
        lim = limits.reindex(df.symbol)
        mark(
            (df.price.to_numpy() > lim.up.to_numpy() + 1e-6) | (df.price.to_numpy() < lim.lo.to_numpy() - 1e-6),
            "price_outside_limits",
        )
        mark(np.abs(df.amount - df.price * df.qty) > 0.5, "amount_mismatch")
    else:
        mark((df.last_px <= 0).to_numpy(), "non_positive_price")
        both = df.bid_px_1.notna() & df.ask_px_1.notna()
        mark(((df.phase == "TRADE") & both & (df.ask_px_1 <= df.bid_px_1)).to_numpy(), "crossed_book")
    quarantined = np.isin(rule.astype(str), [r for r in INJECTABLE if r != "amount_mismatch"])
    kept = raw.filter(pa.array(~quarantined))
    if table == "trades":
        bad = pa.array((rule == "amount_mismatch")[~quarantined])
        fixed = pc.multiply(kept.column("price"), pc.cast(kept.column("qty"), pa.float64()))
        amount = pc.if_else(bad, fixed, kept.column("amount"))
        kept = kept.set_column(kept.schema.get_field_index("amount"), kept.schema.field("amount"), amount)
    return rule, kept


def test_injected_defects_are_recorded_and_break_only_their_rule(sim):
    defects = sim.raw.read_json("simulation/defects.json")
    assert defects["counts"] == sim.s_raw["defects"]
    assert set(defects["counts"]) == set(INJECTABLE) and all(v >= 1 for v in defects["counts"].values())
    assert sum(defects["counts"].values()) == len(defects["defects"])
    found = {r: 0 for r in INJECTABLE}
    for d in sim.dates:
        snaps_raw = sim.raw.read_partition("snapshots", d)
        lim = pd.DataFrame(
            {
                "symbol": _col(snaps_raw, "symbol"),
                "up": _col(snaps_raw, "upper_limit_px"),
                "lo": _col(snaps_raw, "lower_limit_px"),
            }
        )
        lim = lim.dropna().drop_duplicates("symbol").set_index("symbol")
        for table in ("snapshots", "trades"):
            raw = snaps_raw if table == "snapshots" else sim.raw.read_partition(table, d)
            clean = sim.clean.read_partition(table, d)
            rule, kept = _reference_clean(table, raw, d, lim)
            recs = [r for r in defects["defects"] if r["table"] == table and r["date"] == d.isoformat()]
            # every defect row breaks its own rule first, and no other row breaks any rule
            hit = {int(i): str(r) for i, r in enumerate(rule) if r is not None}
            assert hit == {r["row"]: r["rule"] for r in recs}, (table, d)
            for r in recs:
                found[r["rule"]] += 1
                assert RULE_ORDER[r["rule"]] >= 0
            # kept rows == clean rows minus the corrupted originals (amounts repaired)
            drop = sorted(r["original"]["clean_row"] for r in recs if r["original"] and r["rule"] != "amount_mismatch")
            keep = np.setdiff1d(np.arange(clean.num_rows), drop)
            expect = clean.take(pa.array(keep))
            assert kept.equals(expect), (table, d)
    assert found == defects["counts"]


def test_defects_do_not_change_the_clean_content(sim):
    for table in ("universe", "truth", "orders"):
        for d in sim.dates:
            a, b = sim.raw.read_manifest(table, d), sim.clean.read_manifest(table, d)
            assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]
