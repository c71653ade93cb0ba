"""The cleaning rules, their actions and their fixed order.

This table is the contract between the cleaner (:mod:`l2vol.data.cleaning`), the simulator's defect
injection (``--inject-defects``) and the data-quality report. A row breaking several rules is counted
under the first rule in :data:`RULES` order that rejects it. ``quarantine`` rules remove the row (it goes
to the ``quarantine`` table with the rule name); ``repair`` rules fix the row in place and count it;
``flag`` rules only count (the row is kept unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["quarantine", "repair", "flag"]


@dataclass(frozen=True)
class Rule:
    name: str
    action: Action
    tables: tuple[str, ...]
    description: str


RULES: tuple[Rule, ...] = (
    Rule(
        "missing_key",
        "quarantine",
        ("snapshots", "trades", "orders"),
        "symbol or timestamp is null or unparsable",
    ),
    Rule(
        "duplicate",
        "quarantine",
        ("snapshots", "trades", "orders"),
        "exact repeat of an earlier record (snapshots: same symbol, ts and content; trades/orders: same "
        "symbol and seq); the first copy is kept",
    ),
    Rule(
        "out_of_session",
        "quarantine",
        ("snapshots", "trades", "orders"),
        "timestamp outside every session of the market profile (e.g. lunch break, after 15:00), or on a "
        "date other than the partition's trading date",
    ),
    Rule(
        "out_of_order",
        "quarantine",
        ("snapshots", "trades"),
        "a late record: its timestamp (trades: its seq) is earlier than one already received for the "
        "same symbol in arrival order",
    ),
    Rule(
        "non_positive_price",
        "quarantine",
        ("trades", "snapshots"),
        "a fill (or a snapshot's last price) at a price <= 0, or a fill with quantity <= 0",
    ),
    Rule(
        "price_outside_limits",
        "quarantine",
        ("trades",),
        "a fill outside the day's [lower_limit, upper_limit] band",
    ),
    Rule(
        "crossed_book",
        "quarantine",
        ("snapshots",),
        "best ask <= best bid during continuous trading (both sides present)",
    ),
    Rule(
        "amount_mismatch",
        "repair",
        ("trades",),
        "amount differs from price x qty by more than 0.5 CNY: amount is recomputed as price x qty",
    ),
    Rule(
        "limit_locked",
        "flag",
        ("snapshots",),
        "one-sided book with the best quote at the upper (bids only) or lower (asks only) limit",
    ),
    Rule(
        "auction_bid_eq_ask",
        "flag",
        ("snapshots",),
        "call-auction snapshot whose indicative bid equals the ask (normal during auctions)",
    ),
    Rule(
        "halted",
        "flag",
        ("snapshots",),
        "snapshot in phase HALT (suspended or halted symbol)",
    ),
)

RULE_ORDER: dict[str, int] = {r.name: i for i, r in enumerate(RULES)}
RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}

#: Defect kinds the simulator can inject, one per quarantine rule it exercises.
INJECTABLE = (
    "duplicate",
    "out_of_session",
    "out_of_order",
    "non_positive_price",
    "price_outside_limits",
    "crossed_book",
    "amount_mismatch",
)
