"""Named, versioned calibrations of the market simulator (:mod:`l2vol.data.simulator`).

A calibration is every number of the latent volatility process, the event rates and the
microstructure model. ``default`` (version ``"1"``) is frozen: it is what ``l2vol data simulate`` and
the demo produce, and tests and benchmarks are stated against it. Later work may *add* named
calibrations; it must not retune ``default`` (a change of any number needs a new name or version).
``docs/simulator.md`` explains each parameter and the model equations.

Units: variances of log returns are per trading day unless the name says ``_s`` (seconds); the trading
day is the A-share trading clock of 14,400 s (09:30-11:30, 13:00-15:00, lunch skipped). Rates are per
symbol and trading day. Prices are CNY, quantities shares, ``lots`` are the board's buy lot (100 shares).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class UniverseParams:
    """Static cross-section: boards, prices, sizes, industries, index."""

    #: (board, exchange, share of symbols). Codes follow the board (600/601/603/605, 000/001/002/003,
    #: 300/301, 688), so :func:`l2vol.data.profiles.board_of` recovers the board from the symbol.
    board_mix: tuple[tuple[str, str, float], ...] = (
        ("main", "SSE", 0.55),
        ("main", "SZSE", 0.25),
        ("chinext", "SZSE", 0.12),
        ("star", "SSE", 0.08),
    )
    price_median: float = 22.0  # CNY, log-normal cross-section of initial prices
    price_log_sd: float = 0.75
    price_min: float = 2.5
    price_max: float = 1500.0
    shares_median: float = 1.5e9  # free-float shares (for the index ranking by capitalisation)
    shares_log_sd: float = 0.9
    industries: tuple[str, ...] = (
        "banks",
        "non_bank_finance",
        "food_beverage",
        "pharma",
        "electronics",
        "computers",
        "machinery",
        "chemicals",
        "non_ferrous",
        "autos",
        "utilities",
        "real_estate",
    )
    st_share: float = 0.03  # risk-warned (ST) share of established main/ChiNext symbols at the start
    index_fraction: float = 0.7  # index size K = round(fraction x eligible symbols) (CSI-300-like)
    index_stay_rank: float = 1.2  # a member stays while ranked <= 1.2 K at a review (buffer rule)
    index_enter_rank: float = 0.8  # a non-member enters when ranked <= 0.8 K
    index_min_listing_days: int = 60  # new listings are eligible after this many trading days
    index_initial_rank_noise: float = 0.5  # log-cap noise of the "last review" ranking before the sample


@dataclass(frozen=True)
class EventParams:
    """A-share events: listings, suspensions, dividends, ST changes, reclassifications, news gaps."""

    new_listing_share: float = 0.03  # share of the symbols that list during the sample
    ipo_issue_price_median: float = 20.0
    ipo_pop_mean: float = 0.7  # log first-day pop of the efficient price over the issue price
    ipo_pop_sd: float = 0.4
    ipo_log_var_boost: float = 1.386  # log(4): day-0 variance is 4x, decaying
    ipo_boost_decay_days: float = 3.0  # e-folding of the IPO variance boost in trading days
    suspension_rate: float = 0.002  # starts of suspension spells per symbol-day
    suspension_mean_days: float = 2.5  # mean spell length (1 + geometric)
    dividend_per_year: float = 1.0  # cash dividends per symbol and calendar year
    dividend_season_share: float = 0.7  # share of ex-dates between May 15 and Jul 31
    dividend_yield_min: float = 0.005
    dividend_yield_max: float = 0.04
    st_in_rate: float = 0.0003  # per non-ST symbol-day
    st_out_rate: float = 0.003  # per ST symbol-day
    reclass_rate: float = 0.0002  # industry reclassifications per symbol-day
    news_rate: float = 0.01  # overnight news gaps per symbol-day (move the open, often to a limit)
    news_size_min: float = 0.06  # |log gap| ~ U(min, max)
    news_size_max: float = 0.16
    news_up_prob: float = 0.55


@dataclass(frozen=True)
class DailyVolParams:
    """Daily log-variance h = log sigma_d^2: a sum of AR(1) components at three time scales for each
    of three levels (market, industry, idiosyncratic), plus leverage and the IPO boost."""

    vol_median: float = 0.020  # median sigma_bar: E[sigma_d^2] = sigma_bar^2 (open to close, trading clock)
    vol_board_mult: tuple[tuple[str, float], ...] = (("main", 1.0), ("chinext", 1.3), ("star", 1.45))
    vol_st_mult: float = 1.3
    vol_log_sd: float = 0.25  # cross-sectional dispersion of the symbol's vol level
    vol_size_elasticity: float = -0.10  # vol ~ (cap / median cap) ** elasticity
    log_var_var: float = 0.35  # stationary variance of h around its mean (std 0.59)
    level_shares: tuple[float, float, float] = (0.35, 0.15, 0.50)  # market, industry, idiosyncratic
    scale_days: tuple[float, float, float] = (1.0, 5.0, 22.0)  # AR(1) e-folding times (phi = exp(-1/days))
    scale_shares: tuple[float, float, float] = (0.10, 0.25, 0.65)
    leverage: tuple[float, float, float] = (0.04, 0.03, 0.0)  # loading of -R_d / sigma_d on each scale
    overnight_var_share: float = 0.20  # overnight variance as a share of sigma_d^2


@dataclass(frozen=True)
class IntradayParams:
    """Intraday spot variance, jumps and return factor structure on the trading clock."""

    # U-shaped seasonality s(tau) (normalized to mean 1 over the day), see sim.grid.seasonality.
    open_amp: float = 3.0
    open_decay_s: float = 900.0
    lunch_amp: float = 0.5
    lunch_decay_s: float = 600.0
    close_amp: float = 1.8
    close_decay_s: float = 1500.0
    call_level: float = 1.0  # extra level during the closing call (14:57-15:00)
    # Intraday log-variance z: Ornstein-Uhlenbeck on the trading clock, fresh N(0, z_var) each open.
    z_var: float = 0.25
    z_half_life_s: float = 1800.0
    z_price_corr: float = -0.5  # leverage: corr(dz, dW) < 0
    # Jumps (intensity proportional to s(tau)); shares of the expected daily variance sigma_d^2.
    jump_idio_rate: float = 0.5
    jump_idio_share: float = 0.10
    jump_mkt_rate: float = 0.1
    jump_mkt_share: float = 0.03
    # Return factor structure: eps_i = b_m e_M + b_g e_G(industry) + sqrt(1 - b_m^2 - b_g^2) e_i.
    beta_mkt_min: float = 0.45
    beta_mkt_max: float = 0.75
    beta_ind: float = 0.35


@dataclass(frozen=True)
class MicrostructureParams:
    """Quotes, depth, trades and auctions."""

    # Spread: s* = theta * (price / tick) * sqrt(spot_var * 60 s) * exp(noise), in ticks; the quoted spread
    # is the integer of s*'s nearest value whose parity fits the mid on the half-tick grid.
    spread_theta_median: float = 0.5
    spread_theta_log_sd: float = 0.3
    spread_noise_sd: float = 0.3
    spread_noise_half_life_s: float = 60.0
    # Depth: level-1 quantity in lots, median over symbols; responds to vol with this elasticity.
    depth_lots_median: float = 40.0
    depth_log_sd: float = 0.6
    depth_size_elasticity: float = 0.3
    depth_vol_elasticity: float = -0.5
    depth_slow_log_sd: float = 0.4  # persistent log-depth factor per side (AR(1))
    depth_slow_half_life_s: float = 300.0
    depth_snapshot_log_sd: float = 0.3  # fresh per level and snapshot
    depth_profile: tuple[float, ...] = (1.0, 1.25, 1.4, 1.5, 1.5, 1.45, 1.4, 1.35, 1.3, 1.25)
    depth_beyond_10: float = 3.0  # total book / 10-level book (mean)
    gap_prob_per_tick_spread: float = 0.06  # P(empty price level between levels) = min(0.6, this x s*)
    order_size_lots: float = 4.0  # mean resting order size (orders per level = 1 + qty / this, jittered)
    limit_wall_mult: float = 30.0  # queue at a locked limit, in multiples of the normal level-1 depth
    # Trades: count per continuous step ~ Poisson(lambda), lambda rising with vol and the seasonality.
    trades_per_day_median: float = 5000.0
    trades_log_sd: float = 0.6
    trades_size_elasticity: float = 0.35
    trades_vol_elasticity: float = 1.0  # intensity ~ (spot vol / typical vol) ** elasticity
    trades_seasonal_exponent: float = 0.8
    trades_locked_factor: float = 0.2  # intensity multiplier while the book is limit-locked
    trade_size_log_mean: float = (
        2.3  # fill size in lots ~ lognormal(mean, sd) rounded to >= 1 lot (STAR: shares >= 200)
    )
    trade_size_log_sd: float = 1.0
    side_tilt: float = 0.3  # P(buyer-initiated) = 0.5 + tilt * tanh(mid move in half ticks / 2)
    open_auction_share: float = 0.015  # opening call volume / expected daily volume
    close_auction_share: float = 0.05
    open_auction_fills: float = 40.0  # mean number of fills (1 + Poisson)
    close_auction_fills: float = 80.0
    resting_lag_mean_s: float = 60.0  # resting orders were submitted this long before the fill (mean)
    cancel_share: float = 0.4  # share of resting orders with an unfilled remainder that is cancelled


@dataclass(frozen=True)
class Calibration:
    """A complete, named and versioned parameter set of the simulator."""

    name: str
    version: str
    description: str
    universe: UniverseParams = field(default_factory=UniverseParams)
    events: EventParams = field(default_factory=EventParams)
    daily: DailyVolParams = field(default_factory=DailyVolParams)
    intraday: IntradayParams = field(default_factory=IntradayParams)
    micro: MicrostructureParams = field(default_factory=MicrostructureParams)

    def to_dict(self) -> dict:
        """All parameters as plain JSON-able data (tuples become lists)."""
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


DEFAULT = Calibration(
    name="default",
    version="1",
    description=(
        "CSI-300-like large and mid caps in a normal market: 2% typical daily vol, long-memory log-variance "
        "(1/5/22-day AR components, market/industry/idiosyncratic), U-shaped intraday seasonality, 13% of "
        "the variance from jumps, leverage, i.i.d. dithered quote rounding on the half-tick grid."
    ),
)

HIGH_VOL = Calibration(
    name="high_vol",
    version="1",
    description=(
        "A stressed market (2015-like): higher and more volatile variance, more jumps and news gaps, more "
        "suspensions; everything else as default@1."
    ),
    events=EventParams(suspension_rate=0.01, news_rate=0.03),
    daily=DailyVolParams(vol_median=0.035, log_var_var=0.45),
    intraday=IntradayParams(jump_idio_rate=1.0, jump_idio_share=0.15, jump_mkt_rate=0.3, jump_mkt_share=0.05),
)

CALIBRATIONS: dict[str, Calibration] = {c.name: c for c in (DEFAULT, HIGH_VOL)}


def get_calibration(name: str) -> Calibration:
    """The calibration called ``name`` (``KeyError`` naming the known ones otherwise)."""
    try:
        return CALIBRATIONS[name]
    except KeyError:
        raise KeyError(f"unknown calibration {name!r}; known: {', '.join(CALIBRATIONS)}") from None
