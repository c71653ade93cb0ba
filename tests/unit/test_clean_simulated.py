"""Cleaning against the simulator's injected defects: the cleaner finds exactly what was injected.

Same seed with and without ``inject_defects`` gives the same clean market (defects come from their own
random stream). Cleaning the defective market must quarantine, per table and rule, exactly the injected
numbers, repair the injected amount mismatches, and keep precisely the clean rows minus the originals
the defects corrupted, in order, value for value.
"""

from __future__ import annotations

import polars as pl
import pytest

from l2vol.config import SimulationConfig
from l2vol.data.cleaning import clean_store
from l2vol.data.rules import RULES_BY_NAME
from l2vol.data.simulator import simulate_market
from l2vol.storage import DatasetStore


@pytest.fixture(scope="module")
def markets(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects")
    base = dict(symbols=6, days=2, seed=11, start="2024-03-01")
    clean_sim = DatasetStore(f"file://{root / 'clean_sim'}")
    dirty_sim = DatasetStore(f"file://{root / 'dirty_sim'}")
    cleaned = DatasetStore(f"file://{root / 'cleaned'}")
    simulate_market(SimulationConfig(**base), clean_sim)
    simulate_market(SimulationConfig(**base, inject_defects=True), dirty_sim)
    summary = clean_store(dirty_sim, cleaned)
    defects = dirty_sim.read_json("simulation/defects.json")
    return clean_sim, dirty_sim, cleaned, summary, defects


def test_quarantined_per_rule_equals_injected_per_rule(markets):
    _, _, _, summary, defects = markets
    injected = defects["by_table"]
    assert sum(sum(v.values()) for v in injected.values()) >= 20, "too few defects to prove anything"
    for table, by_rule in injected.items():
        found = summary.counts(table=table)
        for rule, n in by_rule.items():
            assert found.get(rule, 0) == n, (table, rule, found.get(rule, 0), n)
        # No rule fires on the clean rows: every other quarantine count is zero.
        for rule, n in summary.counts(table=table, action="quarantine").items():
            assert n == by_rule.get(rule, 0), (table, rule, n)


def test_injected_amount_mismatches_are_repaired_not_removed(markets):
    _, _, _, summary, defects = markets
    n = defects["by_table"]["trades"].get("amount_mismatch", 0)
    assert n > 0
    assert RULES_BY_NAME["amount_mismatch"].action == "repair"
    assert summary.counts(table="trades", action="repair")["amount_mismatch"] == n


@pytest.mark.parametrize("table", ["snapshots", "trades"])
def test_kept_rows_equal_the_clean_simulation(markets, table):
    clean_sim, _, cleaned, _, defects = markets
    dates = clean_sim.list_dates(table)
    assert dates == cleaned.list_dates(table)
    compared = 0
    for d in dates:
        removed = {
            x["original"]["clean_row"]
            for x in defects["defects"]
            if x["table"] == table
            and x["date"] == d.isoformat()
            and x["original"] is not None
            and RULES_BY_NAME[x["rule"]].action == "quarantine"
        }
        expected = pl.from_arrow(clean_sim.read_partition(table, d))
        expected = expected.with_row_index("_i").filter(~pl.col("_i").is_in(sorted(removed))).drop("_i")
        # cleaned tables are grouped by symbol, each symbol's rows in arrival order
        expected = expected.sort("symbol", maintain_order=True)
        got = pl.from_arrow(cleaned.read_partition(table, d))
        assert got.height == expected.height, (d, got.height, expected.height)
        assert got.equals(expected, null_equal=True), d
        compared += got.height
    assert compared > 1000


def test_quarantine_holds_every_rejected_row_with_its_rule(markets):
    _, dirty_sim, cleaned, _, defects = markets
    q = pl.from_arrow(cleaned.read("quarantine"))
    injected_q = [x for x in defects["defects"] if RULES_BY_NAME[x["rule"]].action == "quarantine"]
    assert q.height == len(injected_q)
    got = sorted(zip(q["table"], q["rule"], q["row"], strict=True))
    want = sorted((x["table"], x["rule"], x["row"]) for x in injected_q)
    assert got == want
    # rows in = kept + quarantined, per table
    for table in ("snapshots", "trades"):
        rows_in = sum(dirty_sim.read_manifest(table, d)["rows"] for d in dirty_sim.list_dates(table))
        kept = sum(cleaned.read_manifest(table, d)["rows"] for d in cleaned.list_dates(table))
        assert rows_in == kept + q.filter(pl.col("table") == table).height
