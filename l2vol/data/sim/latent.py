"""The latent process: daily log-variance state, overnight moves and the intraday efficient price, plus
the level-1 quotes that follow from it (the observed mid). Shared by the full simulator and the fast
latent-only mode, so both produce the *same* efficient price, mid and close for a given seed.

Model (symbol i, day d; see ``docs/simulator.md`` for the parameter table):

* Daily log-variance ``h_{i,d} = mu_i + sum_c (m_{c,d} + g_{c,I(i),d} + x_{c,i,d}) + ipo(dsl)``, each
  component an AR(1) with ``phi_c = exp(-1/tau_c)``, tau = 1, 5, 22 days (long memory as a sum of
  AR components), at the market (m), industry (g) and idiosyncratic (x) level. Leverage: the
  idiosyncratic components also load ``psi_c * (-R_{i,d-1} / sigma_{i,d-1})`` where ``R`` is the
  previous day's open-to-close efficient log return. ``mu_i = log sigma_bar_i^2 - V_h / 2``.
  ``sigma_{i,d}^2 = exp(h_{i,d})`` is the expected open-to-close quadratic variation of the day.
* Intraday spot variance per second: ``sigma^2(tau) = sigma_d^2 (1 - pi_J) / T * s(tau) *
  exp(z(tau) - V_z / 2)``; ``z`` an Ornstein-Uhlenbeck process on the trading clock, exactly discretized,
  drawn fresh from N(0, V_z) at each open, its innovations correlated (rho < 0) with the price shock.
* Log efficient price on the tau grid: ``x_k = x_{k-1} + sqrt(v_k) eps_k + J_k`` with
  ``v_k = sigma_d^2 (1 - pi_J) / T * S_k * dt * exp(z_{k-1} - V_z / 2)`` (predictable),
  ``eps = b_m e_M + b_g e_G + sqrt(1 - b_m^2 - b_g^2) e_i`` (market, industry, own shocks) and compound
  Poisson jumps (idiosyncratic and market-wide) with intensity proportional to s(tau) and
  ``E[sum J^2] = pi_J sigma_d^2`` over the day.
* Overnight: ``x_open = log(exp(x_close) - dividend) + N(0, w_on sigma_d^2) + news gap``.
* Observed mid: the efficient price rounded to the half-tick grid after a *triangular dither*:
  ``M_k = round((p*_k + nu_k) / (tick/2))`` with ``nu_k = (tick/2)(U1 - U2)``. Non-subtractive
  triangular dither makes the rounding error ``e_k = M_k tick/2 - p*_k`` have mean 0 and variance exactly
  ``(tick/2)^2 / 4`` whatever p*_k, and independent across snapshots: bid-ask bounce and discreteness
  whose contribution to realized variance the oracle knows exactly. In call auctions the indicative
  price uses the tick grid (variance tick^2 / 4). The quoted spread is the integer number of ticks
  nearest to ``s* = theta (p*/tick) sqrt(60 s * spot var) exp(noise)`` whose parity puts bid and ask on
  the tick grid around the mid. Price limits turn the book one-sided (limit-locked) when the efficient
  price is at or beyond a limit, and clip quotes near it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from l2vol.data.calibration import Calibration
from l2vol.data.profiles import price_limits
from l2vol.data.sim import grid as G
from l2vol.data.sim.universe import DAILY, INTRADAY, Universe, replace_members, review_index, stream

TICK = 0.01
#: days_since_listing used for symbols listed long before the sample (no new-listing rule applies).
ESTABLISHED_DSL = 10_000
#: Upper-limit sentinel in ticks when a symbol has no limit.
NO_LIMIT_TICKS = 1 << 40


def ar1_paths(z0: np.ndarray, innov: np.ndarray, a: float) -> np.ndarray:
    """``z_0 = z0``, ``z_k = a z_{k-1} + innov[:, k-1]`` for k = 1..K, vectorized over rows.

    Blocked cumulative sums of ``a^-j innov_j`` (blocks short enough that ``a^-j`` stays below e^2),
    so there is no Python loop over time steps and no loss of precision.
    """
    n, k_steps = innov.shape
    out = np.empty((n, k_steps + 1))
    out[:, 0] = z0
    block = max(1, int(2.0 / max(-np.log(a), 1e-12)))
    k = 0
    while k < k_steps:
        b = min(block, k_steps - k)
        pw = a ** np.arange(1, b + 1)
        out[:, k + 1 : k + 1 + b] = (np.cumsum(innov[:, k : k + b] / pw, axis=1) + out[:, k : k + 1]) * pw
        k += b
    return out


def dithered_round(y: np.ndarray, q, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Round ``y`` to the nearest multiple of ``q`` after adding the triangular dither ``q (u1 - u2)``
    (u1, u2 independent uniforms on [0, 1)). The total error ``result - y`` has mean 0 and variance
    ``q^2 / 4`` for every ``y`` (non-subtractive dither: two moments independent of the input), and the
    errors of independent dithers are uncorrelated."""
    return (q * np.floor((y + (u1 - u2) * q) / q + 0.5)).astype(np.int64)


def round_half_up_cents(x: np.ndarray | float) -> np.ndarray:
    """Round CNY amounts to the cent, half up (as exchanges round pre_close and limits)."""
    return np.floor(np.asarray(x, dtype=np.float64) * 100 + 0.5 + 1e-9) / 100


@dataclass(frozen=True)
class VolStructure:
    """Derived constants of the daily log-variance components (per scale c)."""

    phi: np.ndarray  # AR coefficients
    var: np.ndarray  # [level, scale] stationary variances
    innov_sd: np.ndarray  # [level, scale] innovation standard deviations
    psi: np.ndarray  # leverage loadings per scale

    @property
    def innov_var_total(self) -> float:
        return float((self.innov_sd**2).sum())


def vol_structure(cal: Calibration) -> VolStructure:
    p = cal.daily
    phi = np.exp(-1.0 / np.asarray(p.scale_days))
    var = p.log_var_var * np.outer(np.asarray(p.level_shares), np.asarray(p.scale_shares))
    return VolStructure(phi, var, np.sqrt(var * (1 - phi**2)), np.asarray(p.leverage, dtype=float))


@dataclass
class MarketState:
    """The compact per-symbol state carried from one day to the next (O(symbols) memory)."""

    listed: np.ndarray
    is_st: np.ndarray
    industry: np.ndarray
    in_index: np.ndarray
    dsl: np.ndarray  # trading days since listing (0 on the listing day)
    x_comp: np.ndarray  # [N, 3] idiosyncratic log-variance components
    m_comp: np.ndarray  # [3] market components
    g_comp: np.ndarray  # [n_industries, 3] industry components
    last_close: np.ndarray  # exchange close of the last trading day (CNY)
    eff_log_px: np.ndarray  # efficient log price at the last close
    last_ret: np.ndarray  # last day's open-to-close efficient log return (leverage)
    last_sigma: np.ndarray  # last day's sigma_d
    pending_div: np.ndarray  # dividend of an ex-date the symbol was suspended on (CNY/share)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


@dataclass
class LatentDay:
    """The latent state and level-1 quotes of one day, for the symbols that trade that day.

    Per traded symbol (arrays over ``sym``, index into the universe): daily variance ``sigma2``
    (sigma_d^2), limits, pre_close, and the oracle's next-day inputs. Per tau-grid point (``[n, K+1]``):
    log efficient price ``x``, intraday log-variance ``z``, ``spot_var`` (per second, the rate at
    tau_k), level-1 quotes in ticks (``bid_t``/``ask_t``, -1 = empty side, equal in call auctions),
    the dithered mid ``mid_ht`` in half ticks (before limits), ``locked`` (one-sided limit book) and
    ``distorted`` (quotes moved by a limit). Per step k = 1..K (``[n, K]``, index k-1): ``iv``
    (integrated variance over the step, jumps excluded) and ``jump``.
    """

    d: int
    day: dt.date
    step_s: int
    sym: np.ndarray
    grids: tuple[G.DayGrid, G.DayGrid]  # SSE, SZSE
    exch_idx: np.ndarray  # 0 SSE, 1 SZSE per traded symbol
    sigma2: np.ndarray
    pre_close: np.ndarray
    upper: np.ndarray  # NaN = no limit
    lower: np.ndarray
    dividend: np.ndarray  # cash dividend applied to pre_close today (CNY/share)
    x: np.ndarray
    z: np.ndarray
    spot_var: np.ndarray
    iv: np.ndarray
    jump: np.ndarray
    mid_ht: np.ndarray
    spread_t: np.ndarray
    bid_t: np.ndarray
    ask_t: np.ndarray
    locked_up: np.ndarray
    locked_down: np.ndarray
    distorted: np.ndarray
    close: np.ndarray  # exchange close (CNY)
    oracle: dict  # per traded symbol arrays: next-day inputs (see l2vol.data.oracle)

    @property
    def K(self) -> int:
        return self.x.shape[1] - 1

    def phase(self) -> np.ndarray:
        """[n, K+1] phase codes of the tau grid per symbol."""
        rows = np.stack([self.grids[0].tau_phase, self.grids[1].tau_phase])
        return rows[self.exch_idx]

    def mid(self) -> np.ndarray:
        """Observed mid (CNY) per tau-grid point: (bid + ask) / 2, the present side on a one-sided book."""
        b = np.where(self.bid_t >= 0, self.bid_t, self.ask_t)
        a = np.where(self.ask_t >= 0, self.ask_t, self.bid_t)
        return (b + a) / 2.0 * TICK


def _limits(pre_close: np.ndarray, uni: Universe, sym: np.ndarray, st: MarketState, day: dt.date):
    lo = np.full(len(sym), np.nan)
    up = np.full(len(sym), np.nan)
    for j, i in enumerate(sym):
        lower, upper = price_limits(float(pre_close[j]), uni.board[i], bool(st.is_st[i]), day, int(st.dsl[i]))
        if upper is not None:
            lo[j], up[j] = lower, upper
    return lo, up


def _ipo_boost(cal: Calibration, uni: Universe, dsl: np.ndarray) -> np.ndarray:
    ev = cal.events
    new = uni.listing_idx >= 0
    return np.where(new & (dsl >= 0), ev.ipo_log_var_boost * np.exp(-np.maximum(dsl, 0) / ev.ipo_boost_decay_days), 0.0)


def initial_state(uni: Universe, cal: Calibration, seed: int) -> MarketState:
    rng = stream(seed, DAILY, 1 << 20)  # the stationary draws of the first day's components
    vs = vol_structure(cal)
    n, n_ind = uni.n, len(cal.universe.industries)
    listed = uni.listing_idx < 0
    price = np.where(listed, uni.price0, uni.issue_price)
    return MarketState(
        listed=listed.copy(),
        is_st=uni.st0.copy(),
        industry=uni.industry0.copy(),
        in_index=uni.index0.copy(),
        dsl=np.where(listed, ESTABLISHED_DSL, -1).astype(np.int64),
        x_comp=rng.standard_normal((n, 3)) * np.sqrt(vs.var[2]),
        m_comp=rng.standard_normal(3) * np.sqrt(vs.var[0]),
        g_comp=rng.standard_normal((n_ind, 3)) * np.sqrt(vs.var[1]),
        last_close=price.copy(),
        eff_log_px=np.log(price),
        last_ret=np.zeros(n),
        last_sigma=np.ones(n),
        pending_div=np.zeros(n),
    )


def _log_sigma2(uni: Universe, cal: Calibration, st: MarketState, industry: np.ndarray, comps) -> np.ndarray:
    m, g, x = comps
    mu = np.log(uni.sigma_bar**2) - cal.daily.log_var_var / 2
    return mu + m.sum() + g[industry].sum(axis=1) + x.sum(axis=1)


def _update_universe(uni: Universe, cal: Calibration, st: MarketState, d: int) -> None:
    """Apply the day's scheduled events to the state (effective at the open)."""
    new = uni.listing_idx == d
    st.listed |= new
    st.dsl = np.where(new, 0, np.where(st.listed & (st.dsl >= 0) & (d > 0), st.dsl + 1, st.dsl))
    if d in uni.st_changes:
        s, v = uni.st_changes[d]
        st.is_st[s] = v
    if d in uni.reclass:
        s, v = uni.reclass[d]
        st.industry[s] = v
    cap = st.last_close * uni.shares
    up = cal.universe
    eligible = st.listed & ~st.is_st & ((uni.listing_idx < 0) | (st.dsl >= up.index_min_listing_days))
    if d in uni.review_days:
        st.in_index = review_index(st.in_index, cap, eligible, uni.index_size, up.index_stay_rank, up.index_enter_rank)
    elif (st.in_index & ~eligible).any():
        st.in_index = replace_members(st.in_index, cap, eligible, uni.index_size)


def _next_day_info(uni: Universe, cal: Calibration, st: MarketState, d: int, vs: VolStructure, sigma: np.ndarray):
    """What the oracle needs at day d for E[sigma^2_{d+1} | F_t]: the conditional mean of h_{d+1} without
    its innovations and the leverage term, the innovation variance and the leverage coefficient."""
    industry = st.industry.copy()
    if d + 1 in uni.reclass:
        s, v = uni.reclass[d + 1]
        industry[s] = v
    comps = (vs.phi * st.m_comp, vs.phi * st.g_comp, vs.phi * st.x_comp)
    dsl_next = np.where(uni.listing_idx == d + 1, 0, np.where(st.dsl >= 0, st.dsl + 1, -1))
    mean = _log_sigma2(uni, cal, st, industry, comps) + _ipo_boost(cal, uni, dsl_next)
    in_sample = d + 1 < len(uni.days)
    trades_next = (
        (st.listed | (uni.listing_idx == d + 1)) & ~uni.suspended_on(d + 1) & (uni.listing_idx != d + 1)
        if in_sample
        else np.zeros(uni.n, dtype=bool)
    )
    div_next = np.zeros(uni.n)
    if d + 1 in uni.dividends:
        s, y = uni.dividends[d + 1]
        div_next[s] = y  # yield; the amount is fixed at tomorrow's open from today's close
    return {
        "log_sigma2_next_mean": mean,
        "innov_var_next": np.full(uni.n, vs.innov_var_total),
        "lev_coef": vs.psi.sum() / sigma,
        "trades_next": trades_next,
        "dividend_yield_next": div_next,
    }


def simulate_latent_days(
    uni: Universe, cal: Calibration, seed: int, step_s: int, st: MarketState | None = None
) -> Iterator[tuple[LatentDay, MarketState]]:
    """Yield the latent day for every sample date in order, carrying only :class:`MarketState`."""
    G.check_step(step_s)
    st = initial_state(uni, cal, seed) if st is None else st
    vs = vol_structure(cal)
    ev, dp = cal.events, cal.daily
    n, n_ind = uni.n, len(cal.universe.industries)
    seas = G.seasonality(cal, step_s)
    for d, day in enumerate(uni.days):
        rng = stream(seed, DAILY, d)
        _update_universe(uni, cal, st, d)
        # Daily log-variance (day 0 keeps the stationary initial draws).
        xi_m = rng.standard_normal(3)
        xi_g = rng.standard_normal((n_ind, 3))
        xi_x = rng.standard_normal((n, 3))
        if d > 0:
            lev = np.where(st.last_sigma > 0, -st.last_ret / st.last_sigma, 0.0)
            st.m_comp = vs.phi * st.m_comp + vs.innov_sd[0] * xi_m
            st.g_comp = vs.phi * st.g_comp + vs.innov_sd[1] * xi_g
            st.x_comp = vs.phi * st.x_comp + vs.innov_sd[2] * xi_x + np.outer(lev, vs.psi)
        h = _log_sigma2(uni, cal, st, st.industry, (st.m_comp, st.g_comp, st.x_comp)) + _ipo_boost(cal, uni, st.dsl)
        sigma2 = np.exp(h)
        sigma = np.sqrt(sigma2)
        # Overnight: dividends, diffusion, news gaps, IPO pops.
        e_on = rng.standard_normal(n)
        news_hit = rng.random(n) < ev.news_rate
        news_size = rng.uniform(ev.news_size_min, ev.news_size_max, size=n)
        news_up = rng.random(n) < ev.news_up_prob
        pop = ev.ipo_pop_mean + ev.ipo_pop_sd * rng.standard_normal(n)
        e_susp = rng.standard_normal(n)
        news = np.where(news_hit, np.where(news_up, news_size, -news_size), 0.0)
        div = np.zeros(n)
        if d in uni.dividends:
            s, y = uni.dividends[d]
            div[s] = np.maximum(np.round(y * st.last_close[s], 3), 0.001)
        eff_px = np.exp(st.eff_log_px)
        eff_after_div = np.log(np.maximum(eff_px - div, 0.5 * eff_px))
        x_open = eff_after_div + np.sqrt(dp.overnight_var_share * sigma2) * e_on + news
        listing_today = uni.listing_idx == d
        x_open = np.where(listing_today, np.log(uni.issue_price) + pop, x_open)
        suspended = uni.suspended_on(d) & st.listed
        traded = st.listed & ~suspended
        # Suspended symbols: no trading, the efficient price keeps moving; the dividend waits for the
        # next trading day's pre_close.
        st.pending_div = np.where(suspended, st.pending_div + div, st.pending_div)
        susp_move = np.sqrt((1 + dp.overnight_var_share) * sigma2) * e_susp + news
        st.eff_log_px = np.where(suspended, eff_after_div + susp_move, st.eff_log_px)
        st.last_ret = np.where(suspended, susp_move, st.last_ret)
        st.last_sigma = np.where(suspended, sigma, st.last_sigma)

        sym = np.flatnonzero(traded)
        div_total = div[sym] + st.pending_div[sym]
        pre_close = np.where(
            listing_today[sym],
            uni.issue_price[sym],
            np.maximum(round_half_up_cents(st.last_close[sym] - div_total), TICK),
        )
        lower, upper = _limits(pre_close, uni, sym, st, day)
        grids = (G.day_grid(day, "SSE", step_s), G.day_grid(day, "SZSE", step_s))
        exch_idx = (uni.exchange[sym] == "SZSE").astype(np.int64)
        paths = _intraday(
            stream(seed, INTRADAY, d),
            cal,
            seas,
            grids,
            exch_idx,
            sigma2[sym],
            x_open[sym],
            uni.beta_mkt[sym],
            st.industry[sym],
            n_ind,
            uni.theta[sym],
            lower,
            upper,
        )
        x = paths["x"]
        close = _close_price(paths)
        oracle = {k: v[sym] for k, v in _next_day_info(uni, cal, st, d, vs, sigma).items()}
        oracle["x_open"] = x[:, 0]
        latent = LatentDay(
            d=d,
            day=day,
            step_s=step_s,
            sym=sym,
            grids=grids,
            exch_idx=exch_idx,
            sigma2=sigma2[sym],
            pre_close=pre_close,
            upper=upper,
            lower=lower,
            dividend=div_total,
            close=close,
            oracle=oracle,
            **paths,
        )
        # Carry the state to the next day.
        st.pending_div[sym] = 0.0
        st.last_close[sym] = close
        st.eff_log_px[sym] = x[:, -1]
        st.last_ret[sym] = x[:, -1] - x[:, 0]
        st.last_sigma[sym] = sigma[sym]
        yield latent, st


def _close_price(paths: dict) -> np.ndarray:
    """The exchange close: the closing-call price (bid = ask at 15:00:00), or, without a closing call
    (SSE before 2018-08-20), the last continuous mid rounded half up to the tick."""
    bid, ask = paths["bid_t"][:, -1], paths["ask_t"][:, -1]
    b = np.where(bid >= 0, bid, ask)
    a = np.where(ask >= 0, ask, bid)
    return np.floor((a + b) / 2.0 + 0.5) / 100.0


def _intraday(
    rng: np.random.Generator,
    cal: Calibration,
    seas: G.Seasonality,
    grids: tuple[G.DayGrid, G.DayGrid],
    exch_idx: np.ndarray,
    sigma2: np.ndarray,
    x_open: np.ndarray,
    beta_m: np.ndarray,
    industry: np.ndarray,
    n_ind: int,
    theta: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> dict[str, np.ndarray]:
    ip, mp = cal.intraday, cal.micro
    n = len(sigma2)
    step = grids[0].step_s
    k_steps = grids[0].K
    pi_j = ip.jump_idio_share + ip.jump_mkt_share
    # Draws, in a fixed order.
    e_m = rng.standard_normal(k_steps)
    e_g = rng.standard_normal((n_ind, k_steps))
    e_i = rng.standard_normal((n, k_steps))
    eta = rng.standard_normal((n, k_steps))
    z0 = rng.standard_normal(n)
    b_g = ip.beta_ind
    b_i = np.sqrt(np.maximum(1 - beta_m**2 - b_g**2, 0.0))
    eps = beta_m[:, None] * e_m[None, :] + b_g * e_g[industry] + b_i[:, None] * e_i
    del e_i
    a = np.exp(-np.log(2) * step / ip.z_half_life_s)
    rho = ip.z_price_corr
    z_innov = np.sqrt(ip.z_var * (1 - a * a)) * (rho * eps + np.sqrt(1 - rho * rho) * eta)
    del eta
    z = ar1_paths(np.sqrt(ip.z_var) * z0, z_innov, a)
    del z_innov
    base = sigma2 * (1 - pi_j) / G.T_DAY  # per second at s = 1, z = V_z / 2
    iv = base[:, None] * (seas.step_mean * step)[None, :] * np.exp(z[:, :-1] - ip.z_var / 2)
    spot_var = base[:, None] * seas.point[None, :] * np.exp(z - ip.z_var / 2)
    # Jumps: intensity proportional to s(tau); sizes scale with the day's vol.
    cdf = np.cumsum(seas.step_mean)
    cdf /= cdf[-1]
    jump = np.zeros((n, k_steps))
    cnt = rng.poisson(ip.jump_idio_rate, size=n)
    js = np.repeat(np.arange(n), cnt)
    jk = np.minimum(np.searchsorted(cdf, rng.random(len(js)), side="right"), k_steps - 1)
    jz = rng.standard_normal(len(js)) * np.sqrt(ip.jump_idio_share / ip.jump_idio_rate * sigma2[js])
    np.add.at(jump, (js, jk), jz)
    cm = rng.poisson(ip.jump_mkt_rate)
    mk = np.minimum(np.searchsorted(cdf, rng.random(cm), side="right"), k_steps - 1)
    mz = rng.standard_normal(cm)
    for kk, zz in zip(mk, mz, strict=True):
        jump[:, kk] += zz * np.sqrt(ip.jump_mkt_share / ip.jump_mkt_rate * sigma2)
    x = np.empty((n, k_steps + 1))
    x[:, 0] = x_open
    np.cumsum(np.sqrt(iv) * eps + jump, axis=1, out=x[:, 1:])
    x[:, 1:] += x_open[:, None]
    del eps
    p = np.exp(x)
    # Observed quotes: dithered rounding of the efficient price.
    phase = np.stack([grids[0].tau_phase, grids[1].tau_phase])[exch_idx]
    call = phase == G.CCALL
    q = np.where(call, 2, 1)  # grid step in half ticks
    u1 = rng.random((n, k_steps + 1))
    u2 = rng.random((n, k_steps + 1))
    mid_ht = dithered_round(p / (TICK / 2), q, u1, u2)
    del u1, u2
    phi_s = 0.5 ** (step / mp.spread_noise_half_life_s)
    sn = rng.standard_normal((n, k_steps + 1))
    u = ar1_paths(sn[:, 0], np.sqrt(1 - phi_s * phi_s) * sn[:, 1:], phi_s)
    del sn
    s_star = (
        theta[:, None]
        * (p / TICK)
        * np.sqrt(spot_var * 60.0)
        * np.exp(mp.spread_noise_sd * u - mp.spread_noise_sd**2 / 2)
    )
    del u
    odd = (mid_ht % 2) == 1
    spread_t = np.where(
        odd,
        np.maximum(2 * np.floor((s_star - 1) / 2 + 0.5) + 1, 1),
        2 * np.maximum(np.floor(s_star / 2 + 0.5), 1),
    ).astype(np.int64)
    spread_t[call] = 0
    del s_star
    bid = (mid_ht - spread_t) // 2
    ask = (mid_ht + spread_t) // 2
    has_lim = ~np.isnan(upper)
    up_t = np.where(has_lim, np.round(np.nan_to_num(upper) / TICK), NO_LIMIT_TICKS).astype(np.int64)[:, None]
    lo_t = np.where(has_lim, np.round(np.nan_to_num(lower) / TICK), 1).astype(np.int64)[:, None]
    locked_up = has_lim[:, None] & (p >= np.nan_to_num(upper)[:, None] - 1e-9)
    locked_down = has_lim[:, None] & (p <= np.nan_to_num(lower)[:, None] + 1e-9)
    b0, a0 = bid.copy(), ask.copy()
    # Continuous book: no quote beyond a limit, and bid < ask always.
    ask = np.maximum(np.minimum(ask, up_t), lo_t + 1)
    bid = np.minimum(np.maximum(bid, lo_t), up_t - 1)
    # Call auctions: the indicative price is clipped to the limits (bid = ask).
    ind = np.minimum(np.maximum(mid_ht // 2, lo_t), up_t)
    bid = np.where(call, ind, bid)
    ask = np.where(call, ind, ask)
    distorted = (bid != b0) | (ask != a0)
    cont = ~call
    bid = np.where(locked_up, up_t, np.where(locked_down & cont, -1, bid))
    ask = np.where(locked_down, lo_t, np.where(locked_up & cont, -1, ask))
    return {
        "x": x,
        "z": z,
        "spot_var": spot_var,
        "iv": iv,
        "jump": jump,
        "mid_ht": mid_ht,
        "spread_t": spread_t,
        "bid_t": bid,
        "ask_t": ask,
        "locked_up": locked_up,
        "locked_down": locked_down,
        "distorted": distorted | locked_up | locked_down,
    }
