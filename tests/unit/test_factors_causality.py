"""No look-ahead, tested for every registered factor by perturbing the future; targets only see (t, t + h].

For each cut time (after every factor's warm-up, one of them at a day boundary) every record at or
after the cut is perturbed (prices, sizes, aggressor sides, dropped rows; all later dates included),
factors are rebuilt from scratch, and every factor value stamped at or before the cut must be unchanged
while later values must move. For the targets the past is perturbed instead: a target stamped t must
not move when records at or before t change.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from factor_reference import synthetic_market

from l2vol.data.schema import conform, schema_for
from l2vol.factors import FACTORS_TABLE, HORIZONS, REGISTRY, TARGETS_TABLE, build_factors
from l2vol.storage import DatasetStore

TZ = "Asia/Shanghai"
PRICE_COLUMNS = ["last_px", "open_px", "high_px", "low_px", "pre_close", "upper_limit_px", "lower_limit_px"] + [
    f"{s}_px_{i}" for s in ("bid", "ask") for i in range(1, 11)
]
QTY_COLUMNS = [f"{s}_qty_{i}" for s in ("bid", "ask") for i in range(1, 11)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """4 symbols x 25 dates of 10-second snapshots: every factor is non-null at the cuts below."""
    root = tmp_path_factory.mktemp("causality")
    src, dst = DatasetStore(str(root / "src")), DatasetStore(str(root / "dst"))
    info = synthetic_market(src, symbols=4, days=25, interval_s=10, seed=5)
    build_factors(src, dst)
    return root, info, _read(dst, FACTORS_TABLE), _read(dst, TARGETS_TABLE)


def _read(store: DatasetStore, table: str) -> pd.DataFrame:
    return store.read(table).to_pandas().sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def _cut(day, hms: str) -> pd.Timestamp:
    return pd.Timestamp(f"{day} {hms}", tz=TZ).tz_convert("UTC")


def _perturb(root, name: str, cut: pd.Timestamp, *, future: bool, seed: int) -> DatasetStore:
    """A copy of the source store whose records at or after ``cut`` (``future``) or at or before it
    (not ``future``) have other prices, sizes and sides, and 10% of them dropped."""
    rng = np.random.default_rng(seed)
    shutil.copytree(root / "src", root / name)
    store = DatasetStore(str(root / name))
    for table in ("snapshots", "trades"):
        for d in store.list_dates(table):
            df = store.read_partition(table, d).to_pandas()
            hit = (df["ts"] >= cut) if future else (df["ts"] <= cut)
            if not hit.any():
                continue
            n = int(hit.sum())
            factor = np.exp(rng.normal(0.0, 0.02, n))
            if table == "snapshots":
                for c in PRICE_COLUMNS:  # one factor per row keeps each book ordered and uncrossed
                    df.loc[hit, c] = df.loc[hit, c].astype(float) * factor
                for c in QTY_COLUMNS:
                    df.loc[hit, c] = df.loc[hit, c] * rng.integers(1, 5, n)
            else:
                df.loc[hit, "price"] = df.loc[hit, "price"] * factor
                df.loc[hit, "qty"] = df.loc[hit, "qty"] * rng.integers(1, 5, n)
                df.loc[hit, "amount"] = df.loc[hit, "price"] * df.loc[hit, "qty"]
                cont = hit & df["side"].isin(["B", "S"])
                df.loc[cont, "side"] = rng.choice(["B", "S"], int(cont.sum()))
            drop = hit & (rng.random(len(df)) < 0.1)
            df = df[~drop]
            tbl = conform(pa.Table.from_pandas(df, preserve_index=False), table)
            store.write_partition(table, d, tbl, schema=schema_for(table))
    return store


def _rebuild(root, store: DatasetStore, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = DatasetStore(str(root / f"{name}_out"))
    build_factors(store, out)
    return _read(out, FACTORS_TABLE), _read(out, TARGETS_TABLE)


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    x, y = a.astype(float).to_numpy(), b.astype(float).to_numpy()
    return (x == y) | (np.isnan(x) & np.isnan(y))


CUTS = [  # (date index, local time, every factor must move after it)
    (23, "10:30:00", True),
    (23, "11:30:00", False),  # the next record after 11:30 is at 13:00
    (23, "14:57:00", False),  # day boundary: only the closing call and the next date are perturbed
    (24, "10:00:00", False),  # the store's last date
]


@pytest.mark.parametrize("day_index,hms,all_move", CUTS)
def test_no_factor_looks_ahead(base, day_index, hms, all_move):
    root, info, factors, _ = base
    cut = _cut(info["dates"][day_index], hms)
    at = factors["ts"] == cut
    assert at.sum() == len(info["symbols"])
    nulls = [n for n in REGISTRY.names() if factors.loc[at, n].isna().any()]
    assert not nulls, f"cut {cut} is inside the warm-up of {nulls}"
    name = f"after_{day_index}_{hms.replace(':', '')}"
    got, _ = _rebuild(root, _perturb(root, name, cut, future=True, seed=day_index), name)
    assert got[["symbol", "ts"]].equals(factors[["symbol", "ts"]])
    past, later = (factors["ts"] <= cut).to_numpy(), (factors["ts"] > cut).to_numpy()
    compared = changed = 0
    for n in REGISTRY.names():
        same = _same(got[n], factors[n])
        bad = past & ~same
        assert not bad.any(), (
            f"{n} at or before {cut} changed when only later records changed: {factors.loc[bad, ['symbol', 'ts']].head(3).to_dict('records')}"
        )
        compared += int(past.sum())
        moved = int((later & ~same).sum())
        changed += moved
        if all_move:
            assert moved > 0, f"perturbing the records after {cut} changed no later value of {n}"
    print(
        f"\ncut {hms} on {info['dates'][day_index]}: {compared} factor values at or before the cut unchanged, {changed} later values changed"
    )
    assert compared > 100_000 and changed > 1_000


def test_targets_use_only_the_window_after_t(base):
    root, info, _, targets = base
    cut = _cut(info["dates"][23], "10:30:00")
    # Perturb everything at or before the cut: targets stamped at or after it must not move.
    _, got = _rebuild(root, _perturb(root, "upto", cut, future=False, seed=99), "upto")
    at_or_after, before = (targets["ts"] >= cut).to_numpy(), (targets["ts"] < cut).to_numpy()
    compared = 0
    for h in HORIZONS:
        same = _same(got[f"rv_{h}"], targets[f"rv_{h}"])
        assert same[at_or_after].all(), f"rv_{h} at or after {cut} depends on records at or before it"
        assert not same[before & targets[f"rv_{h}"].notna().to_numpy()].all(), f"rv_{h}: perturbation had no effect"
        compared += int(at_or_after.sum())
    print(f"\ntargets: {compared} values stamped at or after the cut unchanged")
    # The window is closed on the right: perturbing records at or after the cut moves the next-bucket
    # target stamped 5 minutes before it (its window ends exactly at the cut) but none stamped earlier.
    _, fut = _rebuild(root, _perturb(root, "from_cut", cut, future=True, seed=7), "from_cut")
    five_before = (targets["ts"] == cut - pd.Timedelta(minutes=5)).to_numpy()
    earlier = (targets["ts"] < cut - pd.Timedelta(minutes=5)).to_numpy()
    same = _same(fut["rv_next_bucket"], targets["rv_next_bucket"])
    assert same[earlier & (targets["ts"].dt.tz_convert(TZ).dt.date == info["dates"][23]).to_numpy()].all()
    assert not same[five_before].any(), "the record exactly at t + h is not in the next-bucket window"
