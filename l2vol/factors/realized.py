"""Realized measures of the observed mid-price path inside each bucket.

The observed price is the mid price ``(bid_px_1 + ask_px_1) / 2`` of *valid* snapshots: phase TRADE,
inside a continuous session, both best quotes present and positive and not crossed or locked
(``ask_px_1 > bid_px_1``). One-sided books (limit-locked) and halts give no price, so a return spans the
gap between the valid snapshots around them and a locked or halted bucket has no return (RV 0).

Returns ``r_i = ln m_i - ln m_{i-1}`` are taken between consecutive valid snapshots of the same symbol
and continuous session (never across the lunch break or the night) and belong to the bucket of their
*end* snapshot under the ``[start, end)`` rule. So the returns of the bucket stamped ``t`` tile the
price path from the last valid snapshot before the bucket start up to the last one before ``t``: every
value uses only snapshots with ``ts < t``. ``n`` below is the number of returns in the bucket.

All variances are in squared log-return per bucket (not annualised, not per second); the last
afternoon bucket is shorter (14:55-14:57 with 5-minute buckets).
"""

from __future__ import annotations

import math

import polars as pl

from l2vol.factors.registry import factor, in_bucket

#: Canonical columns behind the observed mid price.
MID_INPUTS = (
    "snapshots.symbol",
    "snapshots.ts",
    "snapshots.phase",
    "snapshots.bid_px_1",
    "snapshots.ask_px_1",
)

MU1 = math.sqrt(2.0 / math.pi)  # E|Z| for Z ~ N(0, 1)
MU43 = 2.0 ** (2.0 / 3.0) * math.gamma(7.0 / 6.0) / math.gamma(0.5)  # E|Z|^(4/3)
MEDRV_CONST = math.pi / (6.0 - 4.0 * math.sqrt(3.0) + math.pi)
#: Asymptotic variance factor of the BNS ratio statistic: mu1^-4 + 2 mu1^-2 - 5 = (pi/2)^2 + pi - 5.
BNS_THETA = (math.pi / 2.0) ** 2 + math.pi - 5.0
#: Sparse-sampling lag of the two-scale estimator, in snapshots (15 s on a 3-second grid).
TSRV_LAG = 5

_r = pl.col("r")
_n = pl.len().cast(pl.Float64)  # float: n - 2 must not wrap around as an unsigned count


@factor("n_returns", family="realized", stage="returns", unit="count", inputs=MID_INPUTS, dtype="int64", empty=0)
def n_returns() -> pl.Expr:
    """Number n of mid-price log returns in the bucket (returns whose end snapshot lies in
    [t - bucket, t)). 0 for a bucket without valid quotes (halted, limit-locked)."""
    return _n.cast(pl.Int64)


@factor("rv", family="realized", stage="returns", unit="log-return^2 per bucket", inputs=MID_INPUTS, empty=0.0)
def realized_variance() -> pl.Expr:
    """Realized variance RV = sum r_i^2 of the mid-price log returns of the bucket (0 when n = 0)."""
    return (_r * _r).sum()


@factor(
    "realized_vol",
    family="realized",
    stage="panel",
    unit="log-return per bucket",
    inputs=MID_INPUTS,
    depends=("rv",),
)
def realized_volatility() -> pl.Expr:
    """Realized volatility sqrt(RV) of the bucket."""
    return pl.col("rv").sqrt()


@factor("mid_return", family="realized", stage="returns", unit="log-return", inputs=MID_INPUTS, empty=0.0)
def mid_return() -> pl.Expr:
    """Mid-price log return over the bucket, sum r_i = ln(last mid before t / last mid before the bucket
    start) (the session's first mid when the bucket opens the session); 0 when n = 0."""
    return _r.sum()


@factor("rs_pos", family="realized", stage="returns", unit="log-return^2 per bucket", inputs=MID_INPUTS, empty=0.0)
def realized_semivariance_pos() -> pl.Expr:
    """Positive realized semivariance RS+ = sum r_i^2 1{r_i > 0} (Barndorff-Nielsen, Kinnebrock and
    Shephard 2010)."""
    return pl.when(_r > 0).then(_r * _r).otherwise(0.0).sum()


@factor("rs_neg", family="realized", stage="returns", unit="log-return^2 per bucket", inputs=MID_INPUTS, empty=0.0)
def realized_semivariance_neg() -> pl.Expr:
    """Negative realized semivariance RS- = sum r_i^2 1{r_i < 0}; RS+ + RS- = RV."""
    return pl.when(_r < 0).then(_r * _r).otherwise(0.0).sum()


def _bv_columns() -> dict[str, pl.Expr]:
    a = pl.col("r").abs()
    return {"_bv": a * in_bucket(a, 1)}


@factor(
    "bipower_variation",
    family="realized",
    stage="returns",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    prepare=_bv_columns,
)
def bipower_variation() -> pl.Expr:
    """Bipower variation BV = mu1^-2 * n/(n-1) * sum_{i=2..n} |r_i| |r_{i-1}| with mu1 = sqrt(2/pi)
    (Barndorff-Nielsen and Shephard 2004), robust to jumps; pairs within the bucket; null when n < 2."""
    return pl.when(_n >= 2).then(MU1**-2 * _n / (_n - 1) * pl.col("_bv").sum())


def _medrv_columns() -> dict[str, pl.Expr]:
    a = pl.col("r").abs()
    lo, hi = in_bucket(a, 1), in_bucket(a, -1)
    # median of three = sum - max - min; null at the bucket's end points (a neighbour missing)
    hi2 = pl.when(lo > a).then(lo).otherwise(a)
    lo2 = pl.when(lo < a).then(lo).otherwise(a)
    mx = pl.when(hi2 > hi).then(hi2).otherwise(hi)
    mn = pl.when(lo2 < hi).then(lo2).otherwise(hi)
    med = lo + a + hi - mx - mn
    return {"_medrv": pl.when(lo.is_not_null() & hi.is_not_null()).then(med * med)}


@factor(
    "medrv",
    family="realized",
    stage="returns",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    prepare=_medrv_columns,
)
def median_realized_variance() -> pl.Expr:
    """MedRV = pi/(6 - 4 sqrt 3 + pi) * n/(n-2) * sum_{i=2..n-1} med(|r_{i-1}|, |r_i|, |r_{i+1}|)^2
    (Andersen, Dobrev and Schaumburg 2012), robust to jumps and zero returns; null when n < 3."""
    return pl.when(_n >= 3).then(MEDRV_CONST * _n / (_n - 2) * pl.col("_medrv").sum())


def _tq_columns() -> dict[str, pl.Expr]:
    a = pl.col("r").abs()
    a = a * a.cbrt()  # |r|^(4/3)
    return {"_tq": a * in_bucket(a, 1) * in_bucket(a, 2)}


@factor(
    "tripower_quarticity",
    family="realized",
    stage="returns",
    unit="log-return^4 per bucket^2",
    inputs=MID_INPUTS,
    prepare=_tq_columns,
)
def tripower_quarticity() -> pl.Expr:
    """Tripower quarticity TQ = n * mu_{4/3}^-3 * n/(n-2) * sum_{i=3..n} |r_i r_{i-1} r_{i-2}|^(4/3),
    a jump-robust estimate of integrated quarticity (n times the sum convention); null when n < 3."""
    return pl.when(_n >= 3).then(_n * MU43**-3 * _n / (_n - 2) * pl.col("_tq").sum())


@factor("realized_quarticity", family="realized", stage="returns", unit="log-return^4 per bucket^2", inputs=MID_INPUTS)
def realized_quarticity() -> pl.Expr:
    """Realized quarticity RQ = (n/3) * sum r_i^4 (n times the sum convention, comparable with TQ);
    null when n = 0."""
    return pl.when(_n >= 1).then(_n / 3.0 * _r.pow(4).sum())


@factor("realized_skewness", family="realized", stage="returns", unit="dimensionless", inputs=MID_INPUTS)
def realized_skewness() -> pl.Expr:
    """Realized skewness sqrt(n) * sum r_i^3 / RV^(3/2) (Amaya et al. 2015); null when RV = 0."""
    rv = (_r * _r).sum()
    return pl.when(rv > 0).then(_n.sqrt() * _r.pow(3).sum() / rv.pow(1.5))


@factor("realized_kurtosis", family="realized", stage="returns", unit="dimensionless", inputs=MID_INPUTS)
def realized_kurtosis() -> pl.Expr:
    """Realized kurtosis n * sum r_i^4 / RV^2 (Amaya et al. 2015; 3 for Gaussian returns); null when
    RV = 0."""
    rv = (_r * _r).sum()
    return pl.when(rv > 0).then(_n * _r.pow(4).sum() / (rv * rv))


def _tsrv_columns() -> dict[str, pl.Expr]:
    k = TSRV_LAG
    # P_i - P_{i-K}: the sum of the last K returns (oldest first), when all K lie in the bucket. Added
    # explicitly rather than with rolling_sum, which keeps a running total over the whole frame (its rounding
    # can carry over from earlier rows, i.e. other symbols); this sum depends on these K returns only.
    r = pl.col("r")
    window = r.shift(k - 1)
    for j in range(k - 2, -1, -1):
        window = window + r.shift(j)
    return {"_tsrv": pl.when(in_bucket(r, k - 1).is_not_null()).then(window.pow(2))}


@factor(
    "tsrv",
    family="realized",
    stage="returns",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    prepare=_tsrv_columns,
)
def two_scale_realized_variance() -> pl.Expr:
    """Two-scale realized variance (Zhang, Mykland and Ait-Sahalia 2005), robust to microstructure noise:
    TSRV = (1 - nbar/n)^-1 * (RV_K - nbar/n * RV) with RV_K = (1/K) sum_{i=K..n} (P_i - P_{i-K})^2 the
    average of the K offset sparse-grid RVs (K = 5 snapshots), P_0 the mid before the bucket and
    nbar = (n - K + 1)/K. Small-sample values can be negative. Null when n < 2K."""
    k = TSRV_LAG
    nbar = (_n - k + 1) / k
    rv_k = pl.col("_tsrv").sum() / k
    return pl.when(_n >= 2 * k).then((rv_k - nbar / _n * (_r * _r).sum()) / (1.0 - nbar / _n))


def _path_hlco() -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """High, low, close, open of the log mid path of the bucket: the mid before the bucket start (the
    start of the first return) and every mid in the bucket."""
    o = pl.col("p_prev").first()
    h = pl.max_horizontal(pl.col("p").max(), o)
    lo = pl.min_horizontal(pl.col("p").min(), o)
    return h, lo, pl.col("p").last(), o


@factor("parkinson", family="realized", stage="returns", unit="log-return^2 per bucket", inputs=MID_INPUTS)
def parkinson_variance() -> pl.Expr:
    """Parkinson (1980) range variance (ln H - ln L)^2 / (4 ln 2) of the mid path of the bucket (H, L:
    highest and lowest mid from the last mid before the bucket start to the last mid before t); null when
    n = 0."""
    h, lo, _, _ = _path_hlco()
    return pl.when(_n >= 1).then((h - lo).pow(2) / (4.0 * math.log(2.0)))


@factor("garman_klass", family="realized", stage="returns", unit="log-return^2 per bucket", inputs=MID_INPUTS)
def garman_klass_variance() -> pl.Expr:
    """Garman-Klass (1980) range variance 0.5 (ln H/L)^2 - (2 ln 2 - 1) (ln C/O)^2 of the mid path
    (O: last mid before the bucket start, C: last mid before t, H/L as for Parkinson); null when n = 0."""
    h, lo, c, o = _path_hlco()
    return pl.when(_n >= 1).then(0.5 * (h - lo).pow(2) - (2.0 * math.log(2.0) - 1.0) * (c - o).pow(2))


@factor(
    "jump_variation",
    family="realized",
    stage="panel",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    depends=("rv", "bipower_variation"),
)
def jump_variation() -> pl.Expr:
    """Jump variation max(RV - BV, 0): the part of RV that bipower variation attributes to jumps; null
    when BV is (n < 2)."""
    bv = pl.col("bipower_variation")
    return pl.when(bv.is_not_null()).then(pl.max_horizontal(pl.col("rv") - bv, pl.lit(0.0)))


@factor(
    "bns_jump_stat",
    family="realized",
    stage="panel",
    unit="z-score",
    inputs=MID_INPUTS,
    depends=("rv", "bipower_variation", "tripower_quarticity", "n_returns"),
)
def bns_jump_statistic() -> pl.Expr:
    """Barndorff-Nielsen-Shephard ratio jump statistic (Huang and Tauchen 2005):
    z = ((RV - BV)/RV) / sqrt(theta/n * max(1, TQ/BV^2)), theta = (pi/2)^2 + pi - 5; asymptotically N(0,1)
    without jumps, large and positive with jumps. Null when n < 3 or RV = 0 or BV = 0."""
    rv, bv, tq, n = pl.col("rv"), pl.col("bipower_variation"), pl.col("tripower_quarticity"), pl.col("n_returns")
    scale = pl.max_horizontal(pl.lit(1.0), tq / (bv * bv))
    z = ((rv - bv) / rv) / (BNS_THETA / n * scale).sqrt()
    return pl.when((n >= 3) & (rv > 0) & (bv > 0)).then(z)
