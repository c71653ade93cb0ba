"""The simulated cross-section: symbols, static attributes, the event schedule and index membership.

Everything here is drawn once, up front, from the ``universe`` random stream, and held sparsely
(events are lists of (day, symbol, value)), so its size grows with the number of *events*, never with
symbols x days. Corporate events (listings, suspensions, ex-dividend dates, ST changes, industry
reclassifications) are announced in advance on the real market, so they are part of the latent state
the oracle may condition on. Random news (overnight gaps) is drawn day by day in
:mod:`l2vol.data.sim.latent`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from l2vol.data.calibration import Calibration
from l2vol.data.profiles import board_of, min_buy_qty

#: Random-stream identifiers (the first words of every SeedSequence after the seed).
UNIVERSE, DAILY, INTRADAY, BOOK, TRADES, AUCTION, ORDERS, DEFECTS = range(1, 9)


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``(seed, *key)``: each day and purpose has its own stream, so
    nothing drawn for one purpose shifts the draws of another (defects never change the clean data)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed % (1 << 63), *key])))


_PREFIXES = {
    ("main", "SSE"): ("600", "601", "603", "605"),
    ("main", "SZSE"): ("000", "001", "002", "003"),
    ("chinext", "SZSE"): ("300", "301"),
    ("star", "SSE"): ("688",),
}
_BOARD_SINCE = {"main": dt.date(1995, 1, 3), "chinext": dt.date(2009, 10, 30), "star": dt.date(2019, 7, 22)}
#: Symbols not listing during the sample were listed at least this many calendar days before it.
_ESTABLISHED_DAYS = 120


def _allocate(n: int, shares: list[float]) -> np.ndarray:
    """Largest-remainder split of n into integer counts proportional to ``shares``."""
    w = np.asarray(shares, dtype=float) / sum(shares)
    raw = w * n
    out = np.floor(raw).astype(int)
    rest = n - out.sum()
    out[np.argsort(-(raw - out), kind="stable")[:rest]] += 1
    return out


@dataclass
class Universe:
    """Static attributes (arrays over symbols, sorted by symbol) and the sparse event schedule."""

    days: list[dt.date]
    symbols: np.ndarray
    board: np.ndarray
    exchange: np.ndarray
    industry0: np.ndarray
    price0: np.ndarray
    shares: np.ndarray
    sigma_bar: np.ndarray  # typical daily vol of the symbol (open to close)
    theta: np.ndarray  # spread coefficient
    trades_per_day: np.ndarray
    depth_lots: np.ndarray
    beta_mkt: np.ndarray
    listing_date: np.ndarray  # datetime64[D]
    listing_idx: np.ndarray  # sample day index of the listing, -1 when listed before the sample
    issue_price: np.ndarray  # IPO issue price (new listings), NaN otherwise
    st0: np.ndarray
    lot_min: np.ndarray
    lot_step: np.ndarray
    index0: np.ndarray  # index membership on the first day
    index_size: int
    review_days: frozenset[int]
    suspended: dict[int, np.ndarray] = field(default_factory=dict)  # day -> symbol indices
    dividends: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # day -> (sym, yield)
    st_changes: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # day -> (sym, is_st)
    reclass: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # day -> (sym, industry)

    @property
    def n(self) -> int:
        return len(self.symbols)

    def suspended_on(self, d: int) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        if d in self.suspended:
            mask[self.suspended[d]] = True
        return mask


def _group(day: np.ndarray, *cols: np.ndarray) -> dict[int, tuple[np.ndarray, ...]]:
    order = np.argsort(day, kind="stable")
    day = day[order]
    cols = tuple(c[order] for c in cols)
    out: dict[int, tuple[np.ndarray, ...]] = {}
    for d in np.unique(day):
        sel = day == d
        out[int(d)] = tuple(c[sel] for c in cols)
    return out


def _review_days(days: list[dt.date]) -> frozenset[int]:
    """Index reviews take effect on the first trading day after the second Friday of June and December."""
    fridays = []
    for y in range(days[0].year, days[-1].year + 1):
        for m in (6, 12):
            first = dt.date(y, m, 1)
            fridays.append(first + dt.timedelta(days=(4 - first.weekday()) % 7 + 7))
    out = set()
    for f in fridays:
        for i in range(1, len(days)):
            if days[i - 1] <= f < days[i]:
                out.add(i)
    return frozenset(out)


def build_universe(n_symbols: int, days: list[dt.date], seed: int, cal: Calibration) -> Universe:
    """Draw the cross-section and the event schedule for ``days`` (the sample's trading dates)."""
    rng = stream(seed, UNIVERSE)
    up, ev, dp, mp = cal.universe, cal.events, cal.daily, cal.micro
    n, n_days = n_symbols, len(days)

    # Symbols by board, codes unique within their prefixes; only boards that existed before the sample.
    mix = [b for b in up.board_mix if _BOARD_SINCE[b[0]] <= days[0] - dt.timedelta(days=_ESTABLISHED_DAYS)]
    counts = _allocate(n, [s for _, _, s in mix])
    symbols, boards, exchanges = [], [], []
    for (board, exch, _), c in zip(mix, counts, strict=True):
        prefixes = _PREFIXES[(board, exch)]
        pool = np.array([f"{p}{i:03d}" for p in prefixes for i in range(1, 1000)])
        codes = rng.choice(pool, size=c, replace=False)
        suffix = "SH" if exch == "SSE" else "SZ"
        symbols += [f"{code}.{suffix}" for code in codes]
        boards += [board] * c
        exchanges += [exch] * c
    order = np.argsort(symbols, kind="stable")
    symbols_a = np.array(symbols, dtype=object)[order]
    board_a = np.array(boards, dtype=object)[order]
    exch_a = np.array(exchanges, dtype=object)[order]
    assert all(board_of(s) == b for s, b in zip(symbols_a, board_a, strict=True))

    n_ind = len(up.industries)
    industry0 = rng.integers(0, n_ind, size=n)
    price0 = np.clip(up.price_median * np.exp(up.price_log_sd * rng.standard_normal(n)), up.price_min, up.price_max)
    price0 = np.round(price0, 2)
    shares = up.shares_median * np.exp(up.shares_log_sd * rng.standard_normal(n))
    size = (price0 * shares) / np.median(price0 * shares)
    board_mult = dict(dp.vol_board_mult)
    sigma_bar = (
        dp.vol_median
        * np.array([board_mult[b] for b in board_a])
        * np.exp(dp.vol_log_sd * rng.standard_normal(n))
        * size**dp.vol_size_elasticity
    )
    theta = mp.spread_theta_median * np.exp(mp.spread_theta_log_sd * rng.standard_normal(n))
    trades_per_day = np.clip(
        mp.trades_per_day_median * np.exp(mp.trades_log_sd * rng.standard_normal(n)) * size**mp.trades_size_elasticity,
        200,
        100_000,
    )
    depth_lots = (
        mp.depth_lots_median * np.exp(mp.depth_log_sd * rng.standard_normal(n)) * size**mp.depth_size_elasticity
    )
    beta_mkt = rng.uniform(cal.intraday.beta_mkt_min, cal.intraday.beta_mkt_max, size=n)

    # Listings: most symbols listed long before the sample, a few list during it.
    start = days[0]
    listing_idx = np.full(n, -1, dtype=np.int64)
    n_new = int(round(ev.new_listing_share * n))
    if n >= 4 and n_days >= 2:
        n_new = max(1, n_new)
    n_new = min(n_new, n - 1) if n_days >= 2 else 0
    new = rng.choice(n, size=n_new, replace=False) if n_new else np.array([], dtype=np.int64)
    if n_new:
        listing_idx[new] = rng.integers(1, n_days, size=n_new)
    listing_date = np.empty(n, dtype="datetime64[D]")
    latest = np.datetime64(start - dt.timedelta(days=_ESTABLISHED_DAYS))
    for i in range(n):
        if listing_idx[i] >= 0:
            listing_date[i] = np.datetime64(days[listing_idx[i]])
        else:
            lo = np.datetime64(max(_BOARD_SINCE[board_a[i]], dt.date(2000, 1, 4)))
            span = max(1, int((latest - lo).astype(int)))
            listing_date[i] = np.busday_offset(lo + np.timedelta64(int(rng.integers(0, span)), "D"), 0, roll="forward")
    issue_price = np.full(n, np.nan)
    if n_new:
        issue_price[new] = np.round(
            np.clip(ev.ipo_issue_price_median * np.exp(0.5 * rng.standard_normal(n_new)), 3.0, 300.0), 2
        )
    lots = [min_buy_qty(b) for b in board_a]
    lot_min = np.array([a for a, _ in lots], dtype=np.int64)
    lot_step = np.array([b for _, b in lots], dtype=np.int64)

    established = listing_idx < 0
    st_eligible = established & np.isin(board_a, ["main", "chinext"])
    st0 = st_eligible & (rng.random(n) < up.st_share)
    sigma_bar = np.where(st0, sigma_bar * dp.vol_st_mult, sigma_bar)

    # Index: top K by a noisy "as of the last review" capitalisation among established, non-ST symbols.
    eligible0 = established & ~st0
    index_size = max(1, int(round(up.index_fraction * eligible0.sum()))) if eligible0.any() else 0
    cap_review = price0 * shares * np.exp(up.index_initial_rank_noise * rng.standard_normal(n))
    index0 = np.zeros(n, dtype=bool)
    if index_size:
        ranked = np.flatnonzero(eligible0)[np.argsort(-cap_review[eligible0], kind="stable")]
        index0[ranked[:index_size]] = True

    uni = Universe(
        days=list(days),
        symbols=symbols_a,
        board=board_a,
        exchange=exch_a,
        industry0=industry0,
        price0=price0,
        shares=shares,
        sigma_bar=sigma_bar,
        theta=theta,
        trades_per_day=trades_per_day,
        depth_lots=depth_lots,
        beta_mkt=beta_mkt,
        listing_date=listing_date,
        listing_idx=listing_idx,
        issue_price=issue_price,
        st0=st0,
        lot_min=lot_min,
        lot_step=lot_step,
        index0=index0,
        index_size=index_size,
        review_days=_review_days(days),
    )
    _schedule_events(uni, rng, cal)
    return uni


def _listed_on(uni: Universe, sym: np.ndarray, day: np.ndarray) -> np.ndarray:
    """True where the symbol is listed on (and not listing on) the sample day."""
    return day > uni.listing_idx[sym]


def _schedule_events(uni: Universe, rng: np.random.Generator, cal: Calibration) -> None:
    ev = cal.events
    n, n_days = uni.n, len(uni.days)
    guarantee = n >= 4 and n_days >= 3

    # Suspension spells.
    k = rng.poisson(ev.suspension_rate * n * n_days)
    sym = rng.integers(0, n, size=k)
    start = rng.integers(0, n_days, size=k)
    length = rng.geometric(1.0 / ev.suspension_mean_days, size=k)
    if guarantee and k == 0:
        sym = np.array([int(rng.choice(np.flatnonzero(uni.listing_idx < 0)))])
        start = np.array([int(rng.integers(1, n_days - 1))])
        length = np.array([1])
    rows_s, rows_d = [], []
    for s, a, m in zip(sym, start, length, strict=True):
        d = np.arange(a, min(a + m, n_days))
        rows_s.append(np.full(len(d), s))
        rows_d.append(d)
    if rows_s:
        ss, dd = np.concatenate(rows_s), np.concatenate(rows_d)
        ok = _listed_on(uni, ss, dd)  # never on or before the listing day
        ss, dd = ss[ok], dd[ok]
        pairs = np.unique(np.stack([dd, ss]), axis=1) if len(ss) else np.empty((2, 0), dtype=np.int64)
        uni.suspended = {d: s for d, (s,) in _group(pairs[0], pairs[1]).items()}

    # Ex-dividend dates: one per symbol and calendar year, mostly in the May-July season.
    days_np = np.array(uni.days, dtype="datetime64[D]")
    div_s, div_d, div_y = [], [], []
    for year in range(uni.days[0].year, uni.days[-1].year + 1):
        pays = rng.random(n) < ev.dividend_per_year
        season = rng.random(n) < ev.dividend_season_share
        lo_s, hi_s = np.datetime64(dt.date(year, 5, 15)), np.datetime64(dt.date(year, 7, 31))
        lo_y, hi_y = np.datetime64(dt.date(year, 1, 1)), np.datetime64(dt.date(year, 12, 31))
        off_s = rng.integers(0, int((hi_s - lo_s).astype(int)) + 1, size=n)
        off_y = rng.integers(0, int((hi_y - lo_y).astype(int)) + 1, size=n)
        when = np.where(season, lo_s + off_s.astype("timedelta64[D]"), lo_y + off_y.astype("timedelta64[D]"))
        yld = rng.uniform(ev.dividend_yield_min, ev.dividend_yield_max, size=n)
        idx = np.searchsorted(days_np, when, side="left")
        ok = pays & (idx < n_days)
        ok[ok] &= days_np[idx[ok]].astype("datetime64[Y]") == np.datetime64(str(year), "Y")
        ok[ok] &= idx[ok] >= 1
        s = np.flatnonzero(ok)
        ok2 = _listed_on(uni, s, idx[s])
        div_s.append(s[ok2])
        div_d.append(idx[s][ok2])
        div_y.append(yld[s][ok2])
    ds, dd, dy = np.concatenate(div_s), np.concatenate(div_d), np.concatenate(div_y)
    if guarantee and len(ds) == 0:
        cand = np.flatnonzero(uni.listing_idx < 0)
        ds = np.array([int(rng.choice(cand))])
        dd = np.array([int(rng.integers(1, n_days))])
        dy = np.array([rng.uniform(ev.dividend_yield_min, ev.dividend_yield_max)])
    uni.dividends = {d: (s, y) for d, (s, y) in _group(dd, ds, dy).items()}

    # ST changes (in: risk warning imposed; out: removed), effective at the open of the day.
    k_in = rng.poisson(ev.st_in_rate * n * n_days) if n_days > 1 else 0
    in_s, in_d = rng.integers(0, n, size=k_in), rng.integers(1, max(2, n_days), size=k_in)
    st_pool = np.flatnonzero(uni.st0)
    k_out = rng.poisson(ev.st_out_rate * len(st_pool) * n_days) if len(st_pool) and n_days > 1 else 0
    out_s = rng.choice(st_pool, size=k_out) if k_out else np.zeros(0, dtype=np.int64)
    out_d = rng.integers(1, max(2, n_days), size=k_out)
    cs = np.concatenate([in_s, out_s]).astype(np.int64)
    cd = np.concatenate([in_d, out_d]).astype(np.int64)
    cv = np.concatenate([np.ones(len(in_s), bool), np.zeros(len(out_s), bool)])
    ok = _listed_on(uni, cs, cd) & np.isin(uni.board[cs], ["main", "chinext"])
    uni.st_changes = {d: (s, v) for d, (s, v) in _group(cd[ok], cs[ok], cv[ok]).items()}

    # Industry reclassifications.
    k_rc = rng.poisson(ev.reclass_rate * n * n_days) if n_days > 1 else 0
    rs, rd = rng.integers(0, n, size=k_rc), rng.integers(1, max(2, n_days), size=k_rc)
    rnew = rng.integers(0, len(cal.universe.industries), size=k_rc)
    uni.reclass = {d: (s, v) for d, (s, v) in _group(rd, rs, rnew).items()}


def review_index(
    members: np.ndarray, cap: np.ndarray, eligible: np.ndarray, size: int, stay_rank: float, enter_rank: float
) -> np.ndarray:
    """Semi-annual review with a buffer: members ranked within ``stay_rank x size`` stay, non-members
    ranked within ``enter_rank x size`` enter, the best ranked fill the index to ``size``."""
    out = np.zeros_like(members)
    if size == 0 or not eligible.any():
        return out
    ranked = np.flatnonzero(eligible)[np.argsort(-cap[eligible], kind="stable")]
    rank = np.full(len(members), np.iinfo(np.int64).max)
    rank[ranked] = np.arange(1, len(ranked) + 1)
    cand = (members & (rank <= stay_rank * size)) | (~members & (rank <= enter_rank * size))
    chosen = [i for i in ranked if cand[i]][:size]
    if len(chosen) < size:
        chosen += [i for i in ranked if not cand[i]][: size - len(chosen)]
    out[np.array(chosen, dtype=np.int64)] = True
    return out


def replace_members(members: np.ndarray, cap: np.ndarray, eligible: np.ndarray, size: int) -> np.ndarray:
    """Ad hoc: drop members that are no longer eligible (e.g. became ST) and fill with the best ranked."""
    out = members & eligible
    need = min(size, int(eligible.sum())) - int(out.sum())
    if need > 0:
        pool = np.flatnonzero(eligible & ~out)
        out[pool[np.argsort(-cap[pool], kind="stable")[:need]]] = True
    return out
