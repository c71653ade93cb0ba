"""Factor mining on hand-built panels: IC/RankIC against an independent pandas computation, Newey-West,
clustering and redundancy pruning, the written factor set and the HTML report."""

from __future__ import annotations

import base64
import datetime as dt
import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from l2vol.factors.factor_set import FactorSet
from l2vol.factors.mining import (
    MIN_T_DAYS,
    average_ranks,
    complete_linkage,
    cut_clusters,
    factor_report,
    masked_corr,
    masked_rank_corr,
    newey_west_lags,
    newey_west_tstat,
    select_factors,
)

DATES = [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6), dt.date(2024, 3, 7)]
SYMBOLS = [f"60000{i}.SH" for i in range(7)]
BUCKETS = 5
FACTORS = ["alpha", "alpha_dup", "alpha_near", "beta", "gamma", "tied"]


def _panel(seed: int = 0) -> pd.DataFrame:
    """One row per (date, symbol, bucket): factors with NaNs and ties, targets with zeros and nulls."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in DATES:
        level = rng.lognormal(0.0, 0.5, len(SYMBOLS))  # persistent symbol volatility
        for b in range(BUCKETS):
            ts = pd.Timestamp(f"{d} 01:30", tz="UTC") + pd.Timedelta(minutes=5 * (b + 1))
            for s, sym in enumerate(SYMBOLS):
                alpha = level[s] * rng.lognormal(0.0, 0.3)
                rows.append(
                    {
                        "date": d,
                        "symbol": sym,
                        "ts": ts,
                        "bucket": b,
                        "alpha": alpha,
                        "alpha_dup": alpha,
                        "alpha_near": alpha * (1.0 + 0.01 * rng.standard_normal()),
                        "beta": rng.standard_normal(),
                        "gamma": rng.standard_normal() + 0.3 * alpha,
                        "tied": float(rng.integers(0, 3)),  # three values: many ties
                        "rv_next_bucket": level[s] * rng.lognormal(0.0, 0.4),
                        "rv_next_day": level[s] * rng.lognormal(0.0, 0.2),
                    }
                )
    df = pd.DataFrame(rows)
    # NaNs in factors and targets, a zero target (halt) and a bucket that is almost empty
    df.loc[[3, 17, 40, 41, 90], "alpha"] = np.nan
    df.loc[[3, 17, 40, 41, 90], "alpha_dup"] = np.nan
    df.loc[[5, 60, 61], "gamma"] = np.nan
    df.loc[[8, 33, 100], "rv_next_bucket"] = np.nan
    df.loc[[12, 55], "rv_next_bucket"] = 0.0
    df.loc[[70], "rv_next_day"] = 0.0
    last_bucket = (df["date"] == DATES[1]) & (df["bucket"] == BUCKETS - 1)
    df.loc[last_bucket & (df["symbol"] != SYMBOLS[0]) & (df["symbol"] != SYMBOLS[1]), "rv_next_bucket"] = np.nan
    return df


def _write(store, df: pd.DataFrame) -> None:
    for d, day in df.groupby("date"):
        keys = {
            "symbol": pa.array(day["symbol"], pa.string()),
            "ts": pa.array(day["ts"], pa.timestamp("ns", tz="UTC")),
            "bucket": pa.array(day["bucket"], pa.int16()),
        }
        store.write_partition("factors", d, pa.table({**keys, **{f: pa.array(day[f], pa.float64()) for f in FACTORS}}))
        tg = dict(keys)
        for h in ("next_bucket", "next_day"):
            tg[f"rv_{h}"] = pa.array(day[f"rv_{h}"], pa.float64())
        for h in ("next_bucket", "next_day"):
            tg[f"zero_{h}"] = pa.array(day[f"rv_{h}"] == 0.0, pa.bool_())
        store.write_partition("targets", d, pa.table(tg))


def _reference_daily(df: pd.DataFrame, factor: str, target: str, method: str, last: dt.date) -> tuple[pd.Series, int]:
    """Daily mean over buckets of the cross-sectional correlation, computed by pandas on its own, and the
    number of buckets that gave one."""
    out, groups = {}, 0
    for d, day in df.groupby("date"):
        if target == "rv_next_day" and d == last:
            continue
        vals = []
        for _, g in day.groupby("bucket"):
            y = g[target].where(g[target] != 0.0)
            pair = pd.DataFrame({"x": g[factor], "y": y}).dropna()
            if len(pair) < 5 or pair["x"].nunique() < 2 or pair["y"].nunique() < 2:
                continue
            vals.append(pair.corr(method=method).iloc[0, 1])
        groups += len(vals)
        if vals:
            out[d] = float(np.mean(vals))
    return pd.Series(out, dtype=float), groups


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory):
    from l2vol.storage import DatasetStore

    store = DatasetStore(f"file://{tmp_path_factory.mktemp('mining') / 'feat'}")
    df = _panel()
    _write(store, df)
    report = factor_report(store, targets=["next_bucket", "rv_next_day"], corr_threshold=0.9)
    return store, df, report


# ------------------------------------------------------------------------------ primitives


def test_average_ranks_match_pandas_with_ties_and_nans():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(6, 9)).astype(float)
    a[rng.random(a.shape) < 0.25] = np.nan
    a[0] = np.nan  # a row with nothing to rank
    got = average_ranks(a)
    want = pd.DataFrame(a).rank(axis=1, method="average").to_numpy()
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert np.array_equal(
        average_ranks(np.array([2.0, 1.0, 2.0, np.nan, 0.5])), [3.5, 2.0, 3.5, np.nan, 1.0], equal_nan=True
    )


def test_masked_correlations_match_pandas_pairwise():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, size=(8, 12)).astype(float)
    y = x + rng.integers(-2, 3, size=x.shape)
    x[rng.random(x.shape) < 0.2] = np.nan
    y[rng.random(y.shape) < 0.2] = np.nan
    r, n = masked_corr(x, y, min_obs=3)
    rr, _ = masked_rank_corr(x, y, min_obs=3)
    for i in range(x.shape[0]):
        pair = pd.DataFrame({"x": x[i], "y": y[i]}).dropna()
        assert n[i] == len(pair)
        assert r[i] == pytest.approx(pair["x"].corr(pair["y"]), abs=1e-12)
        assert rr[i] == pytest.approx(pair.corr(method="spearman").iloc[0, 1], abs=1e-12)
    # constant side, too few pairs: undefined, not 0
    const, _ = masked_corr(np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 3.0, 4.0]]))
    few, _ = masked_corr(np.array([[1.0, 2.0, np.nan]]), np.array([[1.0, 2.0, 3.0]]), min_obs=3)
    assert np.isnan(const[0]) and np.isnan(few[0])


def test_newey_west_on_a_known_series():
    # x = 1, 2, 3, 4: mean 2.5, g0 = 1.25, g1 = 0.3125; L = 1: var = 1.25 + 2 * 0.5 * 0.3125 = 1.5625
    assert newey_west_tstat([1.0, 2.0, 3.0, 4.0], lags=1) == pytest.approx(2.5 / math.sqrt(1.5625 / 4))
    assert newey_west_tstat([1.0, 2.0, 3.0, 4.0], lags=1) == pytest.approx(4.0)
    # L = 0 is the classical t with the 1/n variance
    assert newey_west_tstat([1.0, 2.0, 3.0, 4.0], lags=0) == pytest.approx(2.5 / math.sqrt(1.25 / 4))
    # NaNs are dropped; a constant series has no variance
    assert newey_west_tstat([1.0, np.nan, 2.0, 3.0, 4.0], lags=1) == pytest.approx(4.0)
    assert math.isnan(newey_west_tstat([0.2, 0.2, 0.2]))
    assert math.isnan(newey_west_tstat([0.2]))
    assert [newey_west_lags(n) for n in (2, 10, 100, 250)] == [1, 2, 4, 4]


def test_newey_west_equals_a_direct_loop_on_an_autocorrelated_series():
    rng = np.random.default_rng(5)
    e = rng.standard_normal(200)
    x = np.empty(200)
    x[0] = e[0]
    for t in range(1, 200):
        x[t] = 0.1 + 0.6 * x[t - 1] + e[t]
    lags = 4
    m = x.mean()
    gam = [sum((x[t] - m) * (x[t - k] - m) for t in range(k, len(x))) / len(x) for k in range(lags + 1)]
    lrv = gam[0] + 2 * sum((1 - k / (lags + 1)) * gam[k] for k in range(1, lags + 1))
    assert newey_west_tstat(x, lags=lags) == pytest.approx(m / math.sqrt(lrv / len(x)), rel=1e-12)
    assert newey_west_tstat(x) == pytest.approx(newey_west_tstat(x, lags=newey_west_lags(200)))
    # positive autocorrelation widens the standard error
    assert abs(newey_west_tstat(x, lags=lags)) < abs(newey_west_tstat(x, lags=0))


def test_complete_linkage_on_points_on_a_line():
    pts = np.array([0.0, 1.0, 5.0, 6.5, 20.0])
    d = np.abs(pts[:, None] - pts[None, :])
    merges = complete_linkage(d)
    assert [(m.left, m.right, m.distance, m.size) for m in merges] == [
        (0, 1, 1.0, 2),
        (2, 3, 1.5, 2),
        (5, 6, 6.5, 4),  # complete linkage: max(|0-6.5|, ...) = 6.5
        (4, 7, 20.0, 5),
    ]
    assert cut_clusters(merges, 5, 1.5) == [0, 0, 1, 1, 2]
    assert cut_clusters(merges, 5, 0.5) == [0, 1, 2, 3, 4]
    assert cut_clusters(merges, 5, 100.0) == [0, 0, 0, 0, 0]


def test_pruning_keeps_one_of_duplicates_and_every_independent_factor():
    rng = np.random.default_rng(6)
    a = rng.standard_normal(400)
    data = {
        "a": a,
        "a_dup": a.copy(),  # exact duplicate
        "a_near": a + 0.05 * rng.standard_normal(400),  # near duplicate
        "a_neg": -a,  # perfectly anti-correlated: redundant too (|rho|)
        "b": rng.standard_normal(400),
        "c": rng.standard_normal(400),
    }
    names = list(data)
    rho = pd.DataFrame(data).corr(method="spearman").to_numpy()
    score = [0.10, 0.10, 0.12, 0.05, 0.02, 0.03]  # the near duplicate has the best |RankIC|
    labels, selected, order = select_factors(names, rho, score, corr_threshold=0.9)
    assert selected == ["a_near", "b", "c"]
    assert labels[0] == labels[1] == labels[2] == labels[3] != labels[4] != labels[5]
    assert sorted(order) == list(range(len(names)))
    # ties in the score go to the earlier name; a stricter threshold still merges the exact duplicate
    _, sel_strict, _ = select_factors(names, rho, [0.1] * 6, corr_threshold=0.9999)
    assert "a" in sel_strict and "a_dup" not in sel_strict and "a_neg" not in sel_strict
    assert {"a_near", "b", "c"} <= set(sel_strict)


# --------------------------------------------------------------------------- whole report


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("target", ["rv_next_bucket", "rv_next_day"])
def test_ic_and_rank_ic_equal_an_independent_computation(hand_report, factor, target):
    _, df, report = hand_report
    row = report.stats.to_pandas().set_index(["factor", "target"]).loc[(factor, target)]
    for kind, method in (("ic", "pearson"), ("rank_ic", "spearman")):
        daily, groups = _reference_daily(df, factor, target, method, DATES[-1])
        assert row[f"{kind}_n_days"] == len(daily)
        assert row[f"{kind}_groups"] == groups
        assert row[f"{kind}_mean"] == pytest.approx(daily.mean(), abs=1e-12)
        assert row[f"{kind}_std"] == pytest.approx(daily.std(ddof=1), abs=1e-12)
        if len(daily) >= MIN_T_DAYS:
            assert row[f"{kind}_t_nw"] == pytest.approx(newey_west_tstat(daily.to_numpy()), abs=1e-9)
        else:  # too few daily ICs for a long-run variance: no t is reported
            assert math.isnan(row[f"{kind}_t_nw"])
        got = [v for v in report.daily[target][f"{factor}:{kind}"] if v is not None]
        np.testing.assert_allclose(got, daily.to_numpy(), atol=1e-12)


def test_zero_and_null_targets_are_excluded_and_counted(hand_report):
    _, df, report = hand_report
    c = report.counts
    assert c["excluded_zero_target"] == {"rv_next_bucket": 2, "rv_next_day": 1}
    assert c["excluded_null_target"]["rv_next_bucket"] == int(df["rv_next_bucket"].isna().sum())
    # the last date's next-day target lies after the range: left out, counted
    n_last = int((df["date"] == DATES[-1]).sum())
    assert c["excluded_after_range"] == {"rv_next_bucket": 0, "rv_next_day": n_last}
    used = int((df["rv_next_day"].notna() & (df["rv_next_day"] != 0) & (df["date"] != DATES[-1])).sum())
    assert c["target_rows_used"]["rv_next_day"] == used
    for t in report.targets:  # every row is used or excluded for exactly one reason
        parts = ("target_rows_used", "excluded_zero_target", "excluded_null_target", "excluded_after_range")
        assert sum(c[k][t] for k in parts) == len(df) == c["rows"]


def test_rank_autocorrelation_equals_an_independent_computation(hand_report):
    _, df, report = hand_report
    per_day = []
    for _, day in df.groupby("date"):
        wide = day.pivot(index="bucket", columns="symbol", values="beta")
        vals = []
        for b in range(1, BUCKETS):
            pair = pd.DataFrame({"now": wide.loc[b], "before": wide.loc[b - 1]}).dropna()
            vals.append(pair.corr(method="spearman").iloc[0, 1])
        per_day.append(np.mean(vals))
    row = report.table().to_pandas().set_index("factor").loc["beta"]
    assert row["rank_autocorr"] == pytest.approx(np.mean(per_day), abs=1e-12)
    assert row["turnover"] == pytest.approx(1 - np.mean(per_day), abs=1e-12)
    assert report.table().to_pandas().set_index("factor").loc["alpha_dup", "rank_autocorr"] == pytest.approx(
        report.table().to_pandas().set_index("factor").loc["alpha", "rank_autocorr"]
    )


def test_report_prunes_duplicates_and_writes_the_factor_set(hand_report):
    store, _, report = hand_report
    c = report.clusters
    assert c["alpha"] == c["alpha_dup"] == c["alpha_near"]
    assert len({c["alpha"], c["beta"], c["gamma"], c["tied"]}) == 4
    kept = [f for f in ("alpha", "alpha_dup", "alpha_near") if f in report.selected]
    assert len(kept) == 1
    best = max(
        ("alpha", "alpha_dup", "alpha_near"), key=lambda f: abs(report._stat(f, "rv_next_bucket", "rank_ic_mean"))
    )
    assert kept == [best] or (best == "alpha_dup" and kept == ["alpha"])  # exact tie -> earlier name
    assert {"beta", "gamma", "tied"} <= set(report.selected)
    fs = FactorSet.from_yaml(store.read_bytes("reports/factors/factor_set.yaml").decode())
    assert fs == report.factor_set
    assert fs.factors == report.selected and fs.primary_target == "rv_next_bucket"
    assert (fs.fit_start, fs.fit_end) == (DATES[0], DATES[-1])
    assert set(fs.source_manifests) == {"factors", "targets"} and all(
        len(h) == 64 for h in fs.source_manifests.values()
    )
    assert fs.overlaps(DATES[-1], DATES[-1] + dt.timedelta(days=10))
    assert not fs.overlaps(DATES[-1] + dt.timedelta(days=1), DATES[-1] + dt.timedelta(days=10))


def test_fit_range_follows_start_and_end(hand_report, tmp_path):
    from l2vol.storage import DatasetStore

    store, _, full = hand_report
    out = DatasetStore(f"file://{tmp_path / 'out'}")
    part = factor_report(store, start=DATES[1], end=DATES[2], targets=["rv_next_bucket"], out=out)
    assert part.dates == DATES[1:3]
    assert (part.factor_set.fit_start, part.factor_set.fit_end) == (DATES[1], DATES[2])
    assert part.factor_set.source_manifests["factors"] != full.factor_set.source_manifests["factors"]
    assert out.exists("reports/factors/report.html") and out.exists("reports/factors/factor_set.yaml")
    with pytest.raises(ValueError, match="no committed factors partitions"):
        factor_report(store, start="2030-01-01", out=out)
    with pytest.raises(ValueError, match="unknown target 'rv_tomorrow'"):
        factor_report(store, targets=["rv_tomorrow"], out=out)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.rows, self.external = [], {}, 0, []
        self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = 0
        elif tag == "tr" and self._table is not None:
            self.tables[self._table] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def test_html_report_is_self_contained_with_table_and_figures(hand_report):
    store, _, report = hand_report
    html = store.read_bytes("reports/factors/report.html").decode()
    p = _Collect()
    p.feed(html)
    assert p.external == []
    assert p.tables["factor-stats"] == 1 + len(FACTORS)  # header + one row per factor
    ids = {img.get("id") for img in p.imgs}
    assert {"fig-ic-bars", "fig-ic-decay", "fig-heatmap"} <= ids
    for img in p.imgs:
        head, payload = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="factor-set"' in html and "alpha_near" in html
    js = store.read_json("reports/factors/report.json")
    assert set(js["figures"]) == {"ic_bars", "ic_decay", "rank_corr_heatmap", "daily_ic"}
    assert js["selected"] == report.selected and js["factor_set"]["fit_end"] == DATES[-1].isoformat()
    assert len(js["figures"]["rank_corr_heatmap"]["matrix"]) == len(report.order)


def test_factor_rank_correlation_is_pooled_over_bucket_cross_sections(hand_report):
    _, df, report = hand_report
    g = df.groupby(["date", "bucket"])
    # centred, count-scaled ranks within each cross-section (pandas ranks), summed over rows with both
    u = {f: (g[f].rank() - (g[f].transform("count") + 1) / 2) / g[f].transform("count") for f in ("beta", "gamma")}
    both = u["beta"].notna() & u["gamma"].notna()
    num = (u["beta"][both] * u["gamma"][both]).sum()
    den = np.sqrt((u["beta"][both] ** 2).sum() * (u["gamma"][both] ** 2).sum())
    i, j = report.factors.index("beta"), report.factors.index("gamma")
    assert report.rank_corr[i, j] == pytest.approx(num / den, abs=1e-12)
    assert report.rank_corr[i, j] == pytest.approx(report.rank_corr[j, i])
    # a factor with itself
    a = report.factors.index("alpha_near")
    assert report.rank_corr[a, a] == pytest.approx(1.0)


def test_t_stat_reported_from_five_days():
    from l2vol.factors.mining import _series_stats

    four = np.array([0.1, 0.3, 0.2, 0.25])
    assert math.isnan(_series_stats(four)["t_nw"])
    five = np.append(four, 0.15)
    assert _series_stats(five)["t_nw"] == pytest.approx(newey_west_tstat(five))
    assert MIN_T_DAYS == 5
