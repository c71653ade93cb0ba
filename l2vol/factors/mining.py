"""Factor mining: which factors carry information about future realized variance.

:func:`factor_report` streams the ``factors`` and ``targets`` tables one date at a time and computes,
for every factor and target (``rv_<horizon>`` of :mod:`l2vol.factors.targets`):

* **Cross-sectional IC** (Pearson) and **RankIC** (Spearman, average ranks for ties) per
  (date, bucket): the correlation across symbols of the factor stamped ``t`` with the target over
  ``(t, t+h]``. A bucket counts when at least :data:`MIN_CROSS_SECTION` symbols have both values and
  neither side is constant. The day's IC is the mean over its buckets; the statistics are over the
  daily series: mean, standard deviation, ICIR = mean / std (daily, not annualised), the share of days
  with a positive IC and a Newey-West t-statistic (Bartlett kernel). Per-bucket cross-sections
  compare symbols at the same time of day, so the intraday volatility smile (common to all symbols)
  cannot make a factor look predictive; averaging per day gives a series of roughly independent
  observations for the t-statistic.
* **Intraday time-series IC/RankIC**: the correlation across the buckets of one (symbol, date), averaged
  over symbols per day. It complements the cross-section when the universe is small, and it does
  include time-of-day effects. It is undefined (null) where the factor or the target is constant
  within a day (daily HAR lags, the next-day target).
* **IC decay by horizon**: the mean IC/RankIC against next bucket, next 30 minutes, rest of day and next
  day.
* **Rank autocorrelation** at lag one bucket (within a day): the cross-sectional Spearman correlation of
  the factor at ``t`` and ``t - 1 bucket``; turnover = 1 - rank autocorrelation.
* **Correlation clustering**: a factor-factor rank-correlation matrix pooled over all (date, bucket)
  cross-sections, complete-linkage hierarchical clustering on 1 - |rho|, clusters cut at
  ``1 - corr_threshold`` (every pair inside a cluster has |rho| >= corr_threshold), and in each cluster the
  factor with the highest |mean RankIC| against the primary target is selected.

Rows whose target is exactly zero (``zero_<h>``: halted or limit-locked) are excluded and counted, as are
rows whose target is null (e.g. the day's last bucket). The next-day target of the last date in the
range is left out so that the statistics, and the factor set fit on them, use data of
``[start, end]`` only. Memory is bounded by one date: only per-date statistics are kept.

Outputs go to ``out`` (default: the factor store) under ``reports/factors/``: ``report.html``
(self-contained, embedded PNG figures), ``report.json`` (every number behind the figures and table) and
``factor_set.yaml`` (:class:`l2vol.factors.factor_set.FactorSet`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from l2vol.factors.factor_set import FactorSet, SelectionRule
from l2vol.factors.registry import FAMILIES, REGISTRY
from l2vol.factors.targets import HORIZONS
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

FACTORS_TABLE = "factors"
TARGETS_TABLE = "targets"
REPORT_DIR = "reports/factors"
KEY_COLUMNS = ("symbol", "ts", "bucket")
#: Fewest symbols with both values for a bucket's cross-sectional IC to count.
MIN_CROSS_SECTION = 5
#: Fewest buckets with both values for a (symbol, date) time-series IC to count.
MIN_TIME_SERIES = 10
HORIZON_LABELS = {
    "next_bucket": "next bucket",
    "next_30min": "next 30 min",
    "rest_of_day": "rest of day",
    "next_day": "next day",
}
#: The per-(factor, target) statistics, in table order.
STAT_KINDS = ("ic", "rank_ic", "ts_ic", "ts_rank_ic")


# ------------------------------------------------------------------------------------ statistics


def average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis; ties get the mean of their ranks, NaN stays NaN (unranked).

    Vectorized over the leading axes (each row ranked on its own non-NaN values).
    """
    a = np.asarray(a, dtype=np.float64)
    if a.shape[-1] == 0:
        return a.copy()
    flat = a.reshape(-1, a.shape[-1])
    n = flat.shape[1]
    order = np.argsort(flat, axis=1, kind="stable")  # NaN sorts last
    srt = np.take_along_axis(flat, order, axis=1)
    idx = np.broadcast_to(np.arange(n), srt.shape)
    starts = np.ones(srt.shape, dtype=bool)
    starts[:, 1:] = srt[:, 1:] != srt[:, :-1]  # NaN != NaN: every NaN is its own block
    ends = np.ones(srt.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    avg = (first + last) / 2.0 + 1.0
    avg[np.isnan(srt)] = np.nan
    out = np.empty_like(avg)
    np.put_along_axis(out, order, avg, axis=1)
    return out.reshape(a.shape)


def masked_corr(x: np.ndarray, y: np.ndarray, min_obs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation along the last axis over the positions where both are finite.

    Returns (corr, n): corr is NaN where fewer than ``min_obs`` pairs remain or either side is constant.
    """
    m = np.isfinite(x) & np.isfinite(y)
    n = m.sum(axis=-1)
    xs = np.where(m, x, 0.0)
    ys = np.where(m, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(axis=-1, keepdims=True) / n[..., None]
        my = ys.sum(axis=-1, keepdims=True) / n[..., None]
        dx = np.where(m, xs - mx, 0.0)
        dy = np.where(m, ys - my, 0.0)
        sxy = (dx * dy).sum(axis=-1)
        sxx = (dx * dx).sum(axis=-1)
        syy = (dy * dy).sum(axis=-1)
        r = sxy / np.sqrt(sxx * syy)
        # a spread this small relative to the values is rounding, not variation
        flat = (sxx <= (1e-12 * np.abs(mx[..., 0])) ** 2 * n) | (syy <= (1e-12 * np.abs(my[..., 0])) ** 2 * n)
    r = np.where((n >= min_obs) & (sxx > 0) & (syy > 0) & ~flat, np.clip(r, -1.0, 1.0), np.nan)
    return r, n


def masked_rank_corr(x: np.ndarray, y: np.ndarray, min_obs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation along the last axis: Pearson of average ranks taken over the pairs where both
    values are finite (so a value whose partner is missing does not shift the ranks)."""
    m = np.isfinite(x) & np.isfinite(y)
    return masked_corr(average_ranks(np.where(m, x, np.nan)), average_ranks(np.where(m, y, np.nan)), min_obs)


def newey_west_lags(n: int) -> int:
    """Bartlett-kernel truncation lag floor(4 (n/100)^(2/9)) (Newey and West 1994), at least 1."""
    return max(1, int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))) if n > 1 else 0


def newey_west_tstat(x: Sequence[float] | np.ndarray, lags: int | None = None) -> float:
    """t-statistic of the mean of ``x`` with a Newey-West (Bartlett) long-run variance.

    ``var = g0 + 2 sum_{l=1..L} (1 - l/(L+1)) g_l`` with ``g_l = (1/n) sum_t (x_t - m)(x_{t-l} - m)``;
    ``t = m / sqrt(var / n)``. NaNs are dropped first; ``lags`` defaults to :func:`newey_west_lags`. NaN
    with fewer than 2 values or a non-positive long-run variance.
    """
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n < 2 or np.all(v == v[0]):  # a constant series has no variance (its rounding residue is not one)
        return float("nan")
    L = newey_west_lags(n) if lags is None else min(int(lags), n - 1)
    d = v - v.mean()
    var = float(d @ d) / n
    for lag in range(1, L + 1):
        var += 2.0 * (1.0 - lag / (L + 1.0)) * float(d[lag:] @ d[:-lag]) / n
    if var <= 0.0:
        return float("nan")
    return float(v.mean() / math.sqrt(var / n))


# ---------------------------------------------------------------------------------- clustering


@dataclass(frozen=True)
class Merge:
    """One step of agglomerative clustering: clusters ``left`` and ``right`` (ids as in scipy: leaves are
    0..n-1, the k-th merge creates id n+k) joined at ``distance``."""

    left: int
    right: int
    distance: float
    size: int


def complete_linkage(distance: np.ndarray) -> list[Merge]:
    """Agglomerative clustering with complete linkage (cluster distance = largest pairwise distance) on a
    symmetric distance matrix; ties go to the first pair in matrix order. O(n^3), meant for factor counts."""
    d = np.array(distance, dtype=np.float64)
    n = d.shape[0]
    if d.shape != (n, n):
        raise ValueError(f"distance matrix must be square, got {d.shape}")
    d[~np.isfinite(d)] = np.inf
    np.fill_diagonal(d, np.inf)
    ids = list(range(n))
    sizes = [1] * n
    active = np.ones(n, dtype=bool)
    merges: list[Merge] = []
    for k in range(n - 1):
        masked = np.where(active[:, None] & active[None, :], d, np.inf)
        if not np.isfinite(masked).any():  # the rest are infinitely far apart: join at the largest distance
            rest = np.flatnonzero(active)
            i, j = int(rest[0]), int(rest[1])
            dist = float("inf")
        else:
            flat = int(np.argmin(masked))
            i, j = divmod(flat, n)
            i, j = min(i, j), max(i, j)
            dist = float(masked[i, j])
        merges.append(Merge(min(ids[i], ids[j]), max(ids[i], ids[j]), dist, sizes[i] + sizes[j]))
        d[i, :] = np.maximum(d[i, :], d[j, :])
        d[:, i] = d[i, :]
        d[i, i] = np.inf
        active[j] = False
        ids[i] = n + k
        sizes[i] += sizes[j]
    return merges


def cut_clusters(merges: list[Merge], n: int, max_distance: float) -> list[int]:
    """Cluster label (0..k-1, in order of first member) of each leaf when merges above ``max_distance``
    are undone."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    leaves: dict[int, list[int]] = {i: [i] for i in range(n)}
    for k, m in enumerate(merges):
        members = leaves.pop(m.left) + leaves.pop(m.right)
        leaves[n + k] = members
        if m.distance <= max_distance:
            root = find(members[0])
            for x in members[1:]:
                parent[find(x)] = root
    labels: dict[int, int] = {}
    out = []
    for i in range(n):
        out.append(labels.setdefault(find(i), len(labels)))
    return out


def leaf_order(merges: list[Merge], n: int) -> list[int]:
    """Leaves in dendrogram order (each merge lists its left subtree, then its right)."""
    if n == 0:
        return []
    children = {n + k: (m.left, m.right) for k, m in enumerate(merges)}
    roots = [n + len(merges) - 1] if merges else [0]
    out: list[int] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node < n:
            out.append(node)
        else:
            left, right = children[node]
            stack.extend([right, left])
    return out


def select_factors(
    names: Sequence[str], rank_corr: np.ndarray, score: Sequence[float], corr_threshold: float
) -> tuple[list[int], list[str], list[int]]:
    """Redundancy pruning: cluster ``names`` on 1 - |rank_corr| (complete linkage, cut at
    1 - corr_threshold) and keep, in each cluster, the factor with the highest ``score`` (|mean RankIC|;
    ties go to the earlier name).

    Returns (cluster label per factor, selected names in input order, dendrogram leaf order).
    """
    n = len(names)
    if n == 0:
        return [], [], []
    dist = 1.0 - np.abs(np.asarray(rank_corr, dtype=np.float64))
    dist[~np.isfinite(dist)] = 1.0  # never observed together: unrelated
    dist = np.clip((dist + dist.T) / 2.0, 0.0, 1.0)
    merges = complete_linkage(dist)
    # a hair of slack so that |rho| exactly at the threshold counts as redundant despite rounding
    labels = cut_clusters(merges, n, 1.0 - corr_threshold + 1e-12)
    best: dict[int, int] = {}
    for i, lab in enumerate(labels):
        j = best.get(lab)
        if j is None or score[i] > score[j]:
            best[lab] = i
    keep = sorted(best.values())
    return labels, [names[i] for i in keep], leaf_order(merges, n)


# ------------------------------------------------------------------------------------ streaming


def _target_names(targets: Sequence[str] | None) -> list[str]:
    if targets is None:
        return [f"rv_{h}" for h in HORIZONS]
    out = []
    for t in targets:
        name = t if t.startswith("rv_") else f"rv_{t}"
        if name[3:] not in HORIZONS:
            raise ValueError(f"unknown target {t!r}; known: {', '.join(f'rv_{h}' for h in HORIZONS)}")
        out.append(name)
    if not out:
        raise ValueError("no targets selected")
    return list(dict.fromkeys(out))


def _factor_columns(store: DatasetStore, date: dt.date) -> list[str]:
    man = store.read_manifest(FACTORS_TABLE, date) or {}
    numeric = ("double", "float", "int", "uint")
    return [
        name
        for name, typ in man.get("schema", [])
        if name not in KEY_COLUMNS and any(str(typ).startswith(p) for p in numeric)
    ]


def manifest_digest(store: DatasetStore, table: str, dates: Sequence[dt.date]) -> str:
    """sha256 over the committed partitions of ``table`` at ``dates`` (each date and its part hashes):
    changes when any part of the data the statistics were computed on changes."""
    h = hashlib.sha256()
    for d in dates:
        man = store.read_manifest(table, d) or {}
        parts = [f.get("sha256", "") for f in man.get("files", [])]
        h.update(json.dumps([d.isoformat(), parts]).encode())
    return h.hexdigest()


def _dense(df: pl.DataFrame, columns: Sequence[str], n_buckets: int, sym_idx: np.ndarray) -> np.ndarray:
    """(len(columns), n_buckets, n_symbols) float array, NaN where missing or non-finite."""
    n_sym = int(sym_idx.max()) + 1 if sym_idx.size else 0
    out = np.full((len(columns), n_buckets, n_sym), np.nan)
    b = df["bucket"].to_numpy().astype(np.int64)
    for k, c in enumerate(columns):
        v = df[c].cast(pl.Float64).to_numpy()
        out[k, b, sym_idx] = np.where(np.isfinite(v), v, np.nan)
    return out


def _day_mean(per_group: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (NaN when every group is NaN)."""
    ok = np.isfinite(per_group)
    cnt = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, per_group, 0.0).sum(axis=-1) / cnt, np.nan)


@dataclass
class _Accumulator:
    factors: list[str]
    targets: list[str]
    daily: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    groups: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    autocorr: list[np.ndarray] = field(default_factory=list)
    corr_num: np.ndarray | None = None
    corr_den: np.ndarray | None = None
    corr_pairs: np.ndarray | None = None
    rows: int = 0
    non_null: np.ndarray | None = None
    excluded_zero: dict[str, int] = field(default_factory=dict)
    null_target: dict[str, int] = field(default_factory=dict)
    beyond_range: dict[str, int] = field(default_factory=dict)
    used_rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = len(self.factors)
        self.corr_num = np.zeros((f, f))
        self.corr_den = np.zeros((f, f))
        self.corr_pairs = np.zeros((f, f))
        self.non_null = np.zeros(f, dtype=np.int64)
        for t in self.targets:
            for k in STAT_KINDS:
                self.daily[(t, k)] = []
                self.groups[(t, k)] = []
            for c in (self.excluded_zero, self.null_target, self.beyond_range, self.used_rows):
                c[t] = 0

    def add_day(self, df: pl.DataFrame, last_date: bool) -> None:
        """Add one date's joined factor + target rows."""
        self.rows += df.height
        sym = df["symbol"].cast(pl.String)
        uniq = np.unique(sym.to_numpy().astype(str))
        sym_idx = np.searchsorted(uniq, sym.to_numpy().astype(str))
        n_buckets = int(df["bucket"].max()) + 1 if df.height else 0
        X = _dense(df, self.factors, n_buckets, sym_idx)  # (F, G, S)
        for t in self.targets:
            horizon = t[3:]
            zero = df[f"zero_{horizon}"].fill_null(False).to_numpy()
            y_raw = df[t].cast(pl.Float64).to_numpy()
            null = ~np.isfinite(y_raw)
            self.null_target[t] += int(null.sum())
            if last_date and horizon == "next_day":
                # the next date lies outside [start, end]; the fit must not see it
                self.beyond_range[t] += int((~null).sum())
                y_raw = np.full_like(y_raw, np.nan)
            else:
                self.excluded_zero[t] += int((zero & ~null).sum())
            keep = np.isfinite(y_raw) & ~zero
            self.used_rows[t] += int(keep.sum())
            y = np.full((n_buckets, X.shape[2]), np.nan)
            y[df["bucket"].to_numpy().astype(np.int64), sym_idx] = np.where(keep, y_raw, np.nan)
            Y = np.broadcast_to(y, X.shape)
            for kind, fn, xs, ys, min_obs in (
                ("ic", masked_corr, X, Y, MIN_CROSS_SECTION),
                ("rank_ic", masked_rank_corr, X, Y, MIN_CROSS_SECTION),
                ("ts_ic", masked_corr, X.swapaxes(1, 2), Y.swapaxes(1, 2), MIN_TIME_SERIES),
                ("ts_rank_ic", masked_rank_corr, X.swapaxes(1, 2), Y.swapaxes(1, 2), MIN_TIME_SERIES),
            ):
                r, _ = fn(xs, ys, min_obs)
                self.daily[(t, kind)].append(_day_mean(r))
                self.groups[(t, kind)].append(np.isfinite(r).sum(axis=-1))
        # rank autocorrelation at lag one bucket (pairs inside the day)
        if n_buckets >= 2:
            r, _ = masked_rank_corr(X[:, 1:, :], X[:, :-1, :], MIN_CROSS_SECTION)
            self.autocorr.append(_day_mean(r))
        else:
            self.autocorr.append(np.full(len(self.factors), np.nan))
        # factor-factor rank correlation, pooled over the day's bucket cross-sections
        ok = np.isfinite(X)
        self.non_null += ok.reshape(len(self.factors), -1).sum(axis=1)
        ranks = average_ranks(X)
        cnt = ok.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(ok, (ranks - (cnt + 1) / 2.0) / np.maximum(cnt, 1), 0.0)
        u = u.reshape(len(self.factors), -1)
        m = ok.reshape(len(self.factors), -1).astype(np.float64)
        self.corr_num += u @ u.T
        self.corr_den += (u * u) @ m.T
        self.corr_pairs += m @ m.T

    def rank_corr_matrix(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.corr_num / np.sqrt(self.corr_den * self.corr_den.T)
        return np.where((self.corr_pairs >= MIN_CROSS_SECTION) & np.isfinite(r), np.clip(r, -1.0, 1.0), np.nan)


# --------------------------------------------------------------------------------------- report


@dataclass
class FactorReport:
    """The result of :func:`factor_report`. ``stats`` has one row per (factor, target); ``paths`` the
    written artifacts (html, json, factor_set)."""

    start: dt.date
    end: dt.date
    dates: list[dt.date]
    targets: list[str]
    primary_target: str
    factors: list[str]
    stats: pl.DataFrame
    daily: dict[str, dict[str, list[float | None]]]
    rank_corr: np.ndarray
    order: list[str]
    clusters: dict[str, int]
    selected: list[str]
    ineligible: dict[str, str]
    counts: dict
    factor_set: FactorSet | None
    paths: dict[str, str] = field(default_factory=dict)

    def table(self, target: str | None = None) -> pl.DataFrame:
        """Per-factor statistics against ``target`` (default: the primary), sorted by |mean RankIC|."""
        t = _target_names([target])[0] if target else self.primary_target
        return (
            self.stats.filter(pl.col("target") == t)
            .sort(pl.col("rank_ic_mean").abs(), descending=True, nulls_last=True)
            .drop("target")
        )

    def top(self, n: int = 10, target: str | None = None) -> pl.DataFrame:
        """The ``n`` factors with the highest |mean RankIC| against ``target`` (default: the primary)."""
        cols = [
            "factor",
            "family",
            "ic_mean",
            "ic_t_nw",
            "rank_ic_mean",
            "rank_ic_t_nw",
            "rank_ic_ir",
            "ts_rank_ic_mean",
            "rank_autocorr",
            "rank_ic_n_days",
        ]
        return self.table(target).select(cols).head(n)

    def summary(self, n_top: int = 10) -> dict:
        """A compact, JSON-ready summary (for the CLI's ``--json`` and pipeline metrics): range, counts, the
        top factors against the primary target, the selected set and the written files."""
        return _json_ready(
            {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "primary_target": self.primary_target,
                "counts": self.counts,
                "top": self.top(n_top).to_dicts(),
                "selected": self.selected,
                "paths": self.paths,
            }
        )

    def to_json(self) -> dict:
        return _json_ready(
            {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "dates": [d.isoformat() for d in self.dates],
                "targets": self.targets,
                "primary_target": self.primary_target,
                "method": _METHOD,
                "counts": self.counts,
                "factors": [_factor_info(f) for f in self.factors],
                "stats": self.stats.to_dicts(),
                "figures": {
                    "ic_bars": {
                        "target": self.primary_target,
                        "factors": self.table().select("factor", "family", "ic_mean", "rank_ic_mean").to_dicts(),
                    },
                    "ic_decay": {
                        "horizons": [t for t in self.targets],
                        "rank_ic_mean": {
                            f: [self._stat(f, t, "rank_ic_mean") for t in self.targets] for f in self.factors
                        },
                        "ic_mean": {f: [self._stat(f, t, "ic_mean") for t in self.targets] for f in self.factors},
                    },
                    "rank_corr_heatmap": {
                        "order": self.order,
                        "matrix": [
                            [_num(self.rank_corr[self.factors.index(a), self.factors.index(b)]) for b in self.order]
                            for a in self.order
                        ],
                    },
                    "daily_ic": self.daily,
                },
                "clusters": self.clusters,
                "selected": self.selected,
                "ineligible": self.ineligible,
                "factor_set": None if self.factor_set is None else self.factor_set.model_dump(mode="json"),
                "paths": self.paths,
            }
        )

    def _stat(self, factor: str, target: str, col: str) -> float | None:
        row = self.stats.filter((pl.col("factor") == factor) & (pl.col("target") == target))
        return _num(row[col][0]) if row.height else None


_METHOD = {
    "ic": "Pearson correlation across symbols per (date, bucket), mean over the day's buckets; "
    f"a bucket needs >= {MIN_CROSS_SECTION} symbols with both values",
    "rank_ic": "Spearman (average ranks for ties) across symbols per (date, bucket), mean over the day's buckets",
    "ts_ic": "Pearson across the buckets of one (symbol, date), mean over the day's symbols; "
    f"needs >= {MIN_TIME_SERIES} buckets",
    "ts_rank_ic": "Spearman across the buckets of one (symbol, date), mean over the day's symbols",
    "t_nw": "mean / Newey-West standard error of the daily series (Bartlett, lag floor(4 (n/100)^(2/9)) >= 1); "
    "blank with fewer than 5 days",
    "ir": "mean / standard deviation (ddof 1) of the daily series, not annualised",
    "autocorr": "Spearman across symbols of the factor at t and at t - 1 bucket (same day), mean over buckets "
    "and days; turnover = 1 - autocorr",
    "rank_corr": "factor-factor Spearman pooled over all (date, bucket) cross-sections (ranks within each "
    "factor's own valid symbols, summed over pairwise-complete rows)",
    "excluded": "rows with a zero target (halt, limit lock) or a null target are excluded; the next-day "
    "target of the last date is left out (its data lies after the range end)",
}


def _factor_info(name: str) -> dict:
    if name in REGISTRY:
        f = REGISTRY[name]
        return {"name": name, "family": f.family, "unit": f.unit, "description": f.description}
    return {"name": name, "family": "unregistered", "unit": "", "description": ""}


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _num(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


#: Fewest daily ICs for which the report gives a Newey-West t: a long-run variance from 2-4 daily values
#: is noise, and the t it yields (hundreds or thousands) means nothing.
MIN_T_DAYS = 5


def _series_stats(values: np.ndarray) -> dict[str, float | int | None]:
    v = values[np.isfinite(values)]
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    return {
        "mean": mean,
        "std": std,
        "ir": mean / std if n > 1 and std > 0 else float("nan"),
        "t_nw": newey_west_tstat(v) if n >= MIN_T_DAYS else float("nan"),
        "pos_share": float((v > 0).mean()) if n else float("nan"),
        "n_days": n,
    }


def factor_report(
    store: DatasetStore,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    targets: list[str] | None = None,
    out: DatasetStore | None = None,
    corr_threshold: float = 0.9,
    progress: Progress | None = None,
    min_days: int = 1,
    name: str = "vol_forecast",
    version: int = 1,
) -> FactorReport:
    """Mine the ``factors`` table of ``store`` against its ``targets`` over the dates in [start, end].

    ``targets``: target columns (``rv_next_bucket`` or ``next_bucket`` ...; default: all horizons in
    :data:`l2vol.factors.targets.HORIZONS` order); the first is the primary target the selection ranks on.
    ``corr_threshold``: factors whose cross-sectional |rank correlation| is at least this (every pair of a
    complete-linkage cluster) are redundant; one per cluster is kept. ``min_days``: a factor needs a daily
    cross-sectional RankIC against the primary target on at least this many dates to be selected; ``name``
    and ``version`` name the factor set. Writes ``report.html``,
    ``report.json`` and ``factor_set.yaml`` under ``reports/factors/`` of ``out`` (default ``store``);
    the factor set's fit range is the dates read. See the module docstring for every definition.
    """
    if not 0.0 < corr_threshold <= 1.0:
        raise ValueError(f"corr_threshold must be in (0, 1], got {corr_threshold}")
    if min_days < 1:
        raise ValueError(f"min_days must be >= 1, got {min_days}")
    target_cols = _target_names(targets)
    out = store if out is None else out
    dates = store.list_dates(FACTORS_TABLE, start, end)
    if not dates:
        raise ValueError(f"{store.location()}: no committed {FACTORS_TABLE} partitions in [{start}, {end}]")
    target_dates = set(store.list_dates(TARGETS_TABLE, start, end))
    missing = [d.isoformat() for d in dates if d not in target_dates]
    if missing:
        raise ValueError(
            f"{store.location(f'table={TARGETS_TABLE}')}: no committed partition for date(s) {', '.join(missing)} "
            f"that {FACTORS_TABLE} has; rebuild the factors for them"
        )
    factor_cols = _factor_columns(store, dates[0])
    if not factor_cols:
        raise ValueError(f"{store.location(f'table={FACTORS_TABLE}')}/date={dates[0]}: no numeric factor columns")
    prog = ensure(progress)
    prog.task("factor report", len(dates))
    acc = _Accumulator(factor_cols, target_cols)
    tcols = [*KEY_COLUMNS, *target_cols, *[f"zero_{t[3:]}" for t in target_cols]]
    bucket_label = ""
    for i, d in enumerate(dates):
        fac = pl.from_arrow(store.read_partition(FACTORS_TABLE, d, columns=[*KEY_COLUMNS, *factor_cols]))
        tgt = pl.from_arrow(store.read_partition(TARGETS_TABLE, d, columns=tcols))
        joined = fac.join(tgt.drop("ts"), on=["symbol", "bucket"], how="left")
        acc.add_day(joined, last_date=i == len(dates) - 1)
        if not bucket_label:
            bucket_label = str((store.read_manifest(FACTORS_TABLE, d) or {}).get("metadata", {}).get("bucket", ""))
        prog.advance("factor report", 1, note=d.isoformat())

    stats_rows = []
    daily: dict[str, dict[str, list[float | None]]] = {}
    autocorr = np.vstack(acc.autocorr)  # (days, F)
    for t in target_cols:
        per = {k: np.vstack(acc.daily[(t, k)]) for k in STAT_KINDS}  # (days, F)
        used = {k: np.vstack(acc.groups[(t, k)]).sum(axis=0) for k in STAT_KINDS}  # (F,)
        daily[t] = {}
        for j, f in enumerate(factor_cols):
            info = _factor_info(f)
            row: dict = {"factor": f, "family": info["family"], "target": t}
            for k in STAT_KINDS:
                s = _series_stats(per[k][:, j])
                for key, v in s.items():
                    row[f"{k}_{key}"] = v
                # cross-sections (buckets) or time series (symbol-days) that gave a correlation
                row[f"{k}_groups"] = int(used[k][j])
            ac = autocorr[:, j]
            ac = ac[np.isfinite(ac)]
            row["rank_autocorr"] = float(ac.mean()) if ac.size else float("nan")
            row["turnover"] = 1.0 - row["rank_autocorr"]
            stats_rows.append(row)
            daily[t][f"{f}:rank_ic"] = [_num(v) for v in per["rank_ic"][:, j]]
            daily[t][f"{f}:ic"] = [_num(v) for v in per["ic"][:, j]]
    stats = pl.DataFrame(stats_rows, infer_schema_length=None).with_columns(pl.col(pl.Float64).fill_nan(None))

    primary = target_cols[0]
    prim = stats.filter(pl.col("target") == primary)
    score = {r["factor"]: r["rank_ic_mean"] for r in prim.iter_rows(named=True)}
    ndays = {r["factor"]: r["rank_ic_n_days"] for r in prim.iter_rows(named=True)}
    rho = acc.rank_corr_matrix()
    ineligible: dict[str, str] = {}
    for j, f in enumerate(factor_cols):
        if not acc.non_null[j]:
            ineligible[f] = "null everywhere in the range (not warmed up?)"
        elif not ndays[f]:
            ineligible[f] = (
                f"no date with a cross-sectional RankIC against {primary}: the factor is constant across symbols "
                f"within a bucket (market-wide) or fewer than {MIN_CROSS_SECTION} symbols have it"
            )
        elif ndays[f] < min_days:
            ineligible[f] = f"a cross-sectional RankIC on {ndays[f]} date(s) only, fewer than min_days={min_days}"
        elif not np.isfinite(rho[j, j]):
            ineligible[f] = "too few non-null values for a rank correlation"
    eligible = [f for f in factor_cols if f not in ineligible]
    idx = [factor_cols.index(f) for f in eligible]
    labels, selected, order_idx = select_factors(
        eligible, rho[np.ix_(idx, idx)], [abs(score[f]) for f in eligible], corr_threshold
    )
    order = [eligible[i] for i in order_idx] + [f for f in factor_cols if f in ineligible]
    clusters = dict(zip(eligible, labels, strict=True))
    stats = stats.with_columns(
        pl.col("factor").replace_strict(clusters, default=None, return_dtype=pl.Int64).alias("cluster"),
        pl.col("factor").is_in(selected).alias("selected"),
    )

    counts = {
        "dates": len(dates),
        "rows": acc.rows,
        "factors": len(factor_cols),
        "eligible": len(eligible),
        "clusters": len(set(labels)),
        "selected": len(selected),
        "target_rows_used": acc.used_rows,
        "excluded_zero_target": acc.excluded_zero,
        "excluded_null_target": acc.null_target,
        "excluded_after_range": acc.beyond_range,
        "corr_threshold": corr_threshold,
    }
    factor_set = None
    if selected:
        factor_set = FactorSet(
            name=name,
            version=version,
            factors=selected,
            primary_target=primary,
            selection=SelectionRule(corr_threshold=corr_threshold, min_days=min_days),
            fit_start=dates[0],
            fit_end=dates[-1],
            bucket=bucket_label or "5min",
            source=store.location(),
            source_manifests={
                FACTORS_TABLE: manifest_digest(store, FACTORS_TABLE, dates),
                TARGETS_TABLE: manifest_digest(store, TARGETS_TABLE, dates),
            },
        )
    report = FactorReport(
        start=dates[0],
        end=dates[-1],
        dates=dates,
        targets=target_cols,
        primary_target=primary,
        factors=factor_cols,
        stats=stats,
        daily=daily,
        rank_corr=rho,
        order=order,
        clusters=clusters,
        selected=selected,
        ineligible=ineligible,
        counts=counts,
        factor_set=factor_set,
    )
    report.paths = {
        "html": out.location(f"{REPORT_DIR}/report.html"),
        "json": out.location(f"{REPORT_DIR}/report.json"),
    }
    if factor_set is not None:
        report.paths["factor_set"] = out.write_bytes(f"{REPORT_DIR}/factor_set.yaml", factor_set.to_yaml().encode())
    out.write_json(f"{REPORT_DIR}/report.json", report.to_json())
    out.write_bytes(f"{REPORT_DIR}/report.html", render_html(report).encode())
    return report


# ------------------------------------------------------------------------------------------ HTML

_FAMILY_COLOURS = {
    "realized": "#1f77b4",
    "book": "#2ca02c",
    "trades": "#d62728",
    "history": "#9467bd",
    "unregistered": "#7f7f7f",
}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: FactorReport) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figs: dict[str, str] = {}
    fam_order = {f: i for i, f in enumerate([*FAMILIES, "unregistered"])}
    prim = report.stats.filter(pl.col("target") == report.primary_target)
    rows = sorted(prim.iter_rows(named=True), key=lambda r: (fam_order.get(r["family"], 99), r["factor"]))
    # IC / RankIC bars, grouped by family
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.22 * len(rows) + 1)))
    ypos = np.arange(len(rows))
    ic = [r["ic_mean"] if r["ic_mean"] is not None else 0.0 for r in rows]
    ric = [r["rank_ic_mean"] if r["rank_ic_mean"] is not None else 0.0 for r in rows]
    colours = [_FAMILY_COLOURS.get(r["family"], "#7f7f7f") for r in rows]
    ax.barh(ypos - 0.2, ic, height=0.4, color=colours, alpha=0.45, label="IC (Pearson)")
    ax.barh(ypos + 0.2, ric, height=0.4, color=colours, label="RankIC (Spearman)")
    ax.set_yticks(ypos, [f"{r['factor']}  [{r['family']}]" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlabel(f"mean daily cross-sectional correlation with {report.primary_target}")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("IC (light) and RankIC (dark) by factor, coloured by family")
    figs["ic_bars"] = _png(fig)

    # IC decay by horizon for the strongest selected factors (one per cluster: the top of the raw ranking is
    # usually one cluster of near-identical lines)
    ranked = [r["factor"] for r in report.table().iter_rows(named=True) if r["rank_ic_mean"] is not None]
    top = [f for f in ranked if f in report.selected][:10] or ranked[:10]
    if len(report.targets) > 1 and top:
        fig, ax = plt.subplots(figsize=(7.5, 4.0))
        x = np.arange(len(report.targets))
        for f in top:
            ys = [report._stat(f, t, "rank_ic_mean") for t in report.targets]
            ax.plot(x, [np.nan if v is None else v for v in ys], marker="o", lw=1.2, label=f)
        ax.set_xticks(x, [HORIZON_LABELS.get(t[3:], t) for t in report.targets])
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_ylabel("mean RankIC")
        ax.set_title(f"RankIC decay by horizon (top {len(top)} selected by |RankIC| on {report.primary_target})")
        ax.legend(fontsize=6, ncol=2, loc="best")
        figs["ic_decay"] = _png(fig)

    # rank-correlation heatmap in dendrogram order
    order = [f for f in report.order if f in report.clusters]
    if len(order) >= 2:
        idx = [report.factors.index(f) for f in order]
        mat = report.rank_corr[np.ix_(idx, idx)]
        size = max(4.0, 0.18 * len(order) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        labels = [f"{f} *" if f in report.selected else f for f in order]
        ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(order)), labels, fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.7, label="rank correlation")
        # outline the clusters (contiguous in dendrogram order)
        start = 0
        for k in range(1, len(order) + 1):
            if k == len(order) or report.clusters[order[k]] != report.clusters[order[start]]:
                if k - start > 1:
                    ax.add_patch(
                        plt.Rectangle((start - 0.5, start - 0.5), k - start, k - start, fill=False, ec="black", lw=1)
                    )
                start = k
        ax.set_title("Factor rank correlation (clustered order; * = selected; boxes = clusters)")
        figs["rank_corr_heatmap"] = _png(fig)
    return figs


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("l2vol.factors", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def fmt(x, digits: int = 3) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "—"
        if isinstance(x, int):
            return f"{x:,}"
        return f"{x:.{digits}f}"

    env.filters["fmt"] = fmt
    return env


def render_html(report: FactorReport) -> str:
    """The self-contained HTML report (figures embedded as base64 PNG, no external resources)."""
    figs = _figures(report)
    table = report.table().to_dicts()
    decay = {r["factor"]: [report._stat(r["factor"], t, "rank_ic_mean") for t in report.targets] for r in table}
    return (
        _env()
        .get_template("factor_report.html.j2")
        .render(
            r=report,
            figs=figs,
            table=table,
            decay=decay,
            horizon_labels=[HORIZON_LABELS.get(t[3:], t) for t in report.targets],
            info={f: _factor_info(f) for f in report.factors},
            method=_METHOD,
            factor_set_yaml=None if report.factor_set is None else report.factor_set.to_yaml(),
        )
    )
