"""Factor mining on a small simulated market: the realized measures and HAR lags predict future RV.

This is a finding, not a fixture property: the simulator's latent variance is persistent within the day
and across days and differs between symbols, so RV measured up to t ranks symbols like RV after t. The
market is simulated without injected defects; the engine reads it directly (the cleaner passes such a
market through unchanged, which tests/unit/test_clean_simulated.py checks).
"""

from __future__ import annotations

import pytest

from l2vol.config import SimulationConfig
from l2vol.data.simulator import simulate_market
from l2vol.factors.engine import build_factors
from l2vol.factors.factor_set import FactorSet, assert_no_overlap
from l2vol.factors.mining import factor_report
from l2vol.storage import DatasetStore

REALIZED = ["rv", "realized_vol", "bipower_variation", "medrv", "rs_pos", "rs_neg"]
HAR = ["har_rv_d", "har_rv_w"]


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    root = tmp_path_factory.mktemp("mining_sim")
    raw = DatasetStore(f"file://{root / 'raw'}")
    feat = DatasetStore(f"file://{root / 'feat'}")
    simulate_market(SimulationConfig(symbols=8, days=12, seed=11), raw)
    build_factors(raw, feat)
    return feat, factor_report(feat)


@pytest.mark.parametrize("target", ["rv_next_bucket", "rv_next_day"])
@pytest.mark.parametrize("factor", REALIZED + HAR)
def test_realized_measures_and_har_lags_predict_future_rv(mined, factor, target):
    _, report = mined
    row = report.table(target).to_pandas().set_index("factor").loc[factor]
    assert row["ic_mean"] > 0.2, row
    assert row["rank_ic_mean"] > 0.2, row
    assert row["rank_ic_t_nw"] > 3.0, row  # Newey-West t over the daily series
    assert row["rank_ic_pos_share"] == 1.0, row  # positive on every day


def test_intraday_ic_and_decay(mined):
    _, report = mined
    t = report.stats.to_pandas().set_index(["factor", "target"])
    # within a (symbol, day), high-RV buckets are followed by high-RV buckets
    assert t.loc[("rv", "rv_next_bucket"), "ts_rank_ic_mean"] > 0.2
    # IC decays with the horizon for the intraday measure; the daily HAR lag is not intraday
    decay = [t.loc[("rv", h), "rank_ic_mean"] for h in report.targets]
    assert report.targets == ["rv_next_bucket", "rv_next_30min", "rv_rest_of_day", "rv_next_day"]
    assert decay[0] > decay[-1] > 0
    assert t.loc[("har_rv_d", "rv_next_bucket"), "rank_autocorr"] == pytest.approx(1.0)
    # pure direction measures carry (almost) no information about volatility
    assert abs(t.loc[("signed_volume_imbalance", "rv_next_bucket"), "rank_ic_mean"]) < 0.1


def test_selection_on_simulated_market(mined):
    feat, report = mined
    sel = set(report.selected)
    assert not {"rv", "realized_vol"} <= sel  # monotone transforms of each other: one is redundant
    assert sel & set(REALIZED) and sel & set(HAR)
    c = report.counts
    assert c["excluded_zero_target"]["rv_next_bucket"] > 0  # the market has halts
    for t in report.targets:
        parts = ("target_rows_used", "excluded_zero_target", "excluded_null_target", "excluded_after_range")
        assert sum(c[k][t] for k in parts) == c["rows"]
    assert "har_rv_m" in report.ineligible  # 22 days of history needed, 12 simulated
    fs = FactorSet.from_yaml(feat.read_bytes("reports/factors/factor_set.yaml").decode())
    assert (fs.fit_start, fs.fit_end) == (report.dates[0], report.dates[-1])
    with pytest.raises(ValueError, match="overlaps the test fold"):
        assert_no_overlap(fs, report.dates[-3], report.dates[-1])
