"""Defect injection: known numbers of defects per cleaning rule, drawn from their own random stream.

The clean day is simulated first and never depends on this module, so the clean content of a run with
``inject_defects=True`` is identical to the same seed without it. Each defect breaks exactly one rule of
:data:`l2vol.data.rules.INJECTABLE` and no rule before it in :data:`l2vol.data.rules.RULES` order:

=====================  ==========  ============================================================================
rule                   tables      how
=====================  ==========  ============================================================================
duplicate              both        an exact copy of a clean row, inserted later in the file but before the
                                   symbol's next row (snapshots: inside the same timestamp block; trades: right
                                   after the original, same seq), so it is not also out of order
out_of_session         both        an added row stamped in the lunch break (snapshots, phase BREAK) or after the
                                   close (snapshots 15:00:03+, phase CLOSED; trades 15:00:30+ with a new seq
                                   above the symbol's last, placed after its last trade)
out_of_order           both        a clean row moved after the same symbol's row 1-5 snapshots (trades: seqs)
                                   later, so its ts (seq) is below one already received
non_positive_price     trades      price set to 0 or to -price; amount = price * qty (no mismatch)
price_outside_limits   trades      price set 1-5 ticks above the upper or below the lower limit (symbols with
                                   limits only); amount = price * qty
crossed_book           snapshots   bid_px_1 and ask_px_1 swapped in a continuous-trading snapshot with both sides
amount_mismatch        trades      amount = price * qty + delta, 1 <= |delta| <= 100 CNY (a repair rule: the
                                   cleaner's price * qty restores the clean value exactly)
=====================  ==========  ============================================================================

Defects of one symbol are at least 10 snapshots (trades) apart, so they never interact. Per date and
table each applicable rule gets 1-3 defects (fewer only when the day has too few candidate rows).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data.sim.universe import DEFECTS, stream

SNAPSHOT_RULES = ("duplicate", "out_of_session", "out_of_order", "crossed_book")
TRADE_RULES = (
    "duplicate",
    "out_of_session",
    "out_of_order",
    "non_positive_price",
    "price_outside_limits",
    "amount_mismatch",
)
_TABLE_ID = {"snapshots": 0, "trades": 1}
_BLOCK = 40


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


@dataclass
class _Plan:
    """Edits of one partition: clean rows keep sort key 4*pos, added rows get 4*pos + 2/3 (after pos),
    moved rows 4*target + 1; the raw file is everything sorted by key (stable)."""

    n: int
    keys: np.ndarray
    edits: dict[str, tuple[list[int], list]] = field(default_factory=dict)
    extra_src: list[int] = field(default_factory=list)  # clean row each added row copies
    extra_key: list[int] = field(default_factory=list)
    extra_set: list[dict] = field(default_factory=list)  # column overrides of added rows
    records: list[tuple[str, int, int | None, int | None]] = field(default_factory=list)
    # (rule, source index in concat(clean, extras), clean row corrupted or None, clean row copied or None)

    def edit(self, col: str, row: int, value) -> None:
        rows, vals = self.edits.setdefault(col, ([], []))
        rows.append(row)
        vals.append(value)

    def add(self, rule: str, src: int, key: int, overrides: dict) -> None:
        self.records.append((rule, self.n + len(self.extra_src), None, src))
        self.extra_src.append(src)
        self.extra_key.append(key)
        self.extra_set.append(overrides)

    def corrupt(self, rule: str, row: int) -> None:
        self.records.append((rule, row, row, None))


def _cells(rng, sym_code: np.ndarray, pos_in_sym: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    """Pick ``count`` rows among ``ok`` in distinct (symbol, block of _BLOCK) cells, near the cell's start,
    so that two picks of one symbol are >= 10 rows apart. Returns clean row indices."""
    idx = np.flatnonzero(ok & (pos_in_sym % _BLOCK >= 5) & (pos_in_sym % _BLOCK < 30))
    if len(idx) == 0 or count == 0:
        return np.zeros(0, dtype=np.int64)
    cell = sym_code[idx].astype(np.int64) * (1 << 32) + pos_in_sym[idx] // _BLOCK
    uniq, first = np.unique(cell, return_index=True)
    pick = rng.choice(len(uniq), size=min(count, len(uniq)), replace=False)
    # a random row of each chosen cell
    out = []
    for p in pick:
        rows = idx[cell == uniq[p]]
        out.append(int(rows[rng.integers(0, len(rows))]))
    return np.array(out, dtype=np.int64)


def _apply(clean: pa.Table, plan: _Plan) -> tuple[pa.Table, np.ndarray]:
    cols = {}
    for name in clean.column_names:
        col = clean.column(name)
        if name in plan.edits:
            rows, vals = plan.edits[name]
            arr = col.to_numpy(zero_copy_only=False).copy()
            mask = col.is_null().to_numpy(zero_copy_only=False).copy() if col.null_count else None
            arr[np.array(rows)] = np.array(vals, dtype=arr.dtype)
            if mask is not None:
                mask[np.array(rows)] = False
            col = pa.array(arr, type=col.type, mask=mask)
        cols[name] = col
    modified = pa.Table.from_pydict(cols, schema=clean.schema)
    if plan.extra_src:
        extra = clean.take(pa.array(plan.extra_src))
        for name in sorted({k for o in plan.extra_set for k in o}):
            col = extra.column(name)
            if pa.types.is_timestamp(col.type):
                base = col.cast(pa.int64()).to_numpy().copy()
            else:
                base = np.array(col.to_pylist(), dtype=object)
            for i, o in enumerate(plan.extra_set):
                if name in o:
                    base[i] = o[name]
            new = pa.array(base if pa.types.is_timestamp(col.type) else base.tolist(), type=col.type)
            i = extra.schema.get_field_index(name)
            extra = extra.set_column(i, extra.schema.field(i), new)
        table = pa.concat_tables([modified, extra])
        keys = np.concatenate([plan.keys, np.array(plan.extra_key, dtype=np.int64)])
    else:
        table, keys = modified, plan.keys
    order = np.argsort(keys, kind="stable")
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return table.take(pa.array(order)), position


def _counts(rng, rules: tuple[str, ...]) -> dict[str, int]:
    return {r: int(rng.integers(1, 4)) for r in rules}


def _symbol_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    enc = pc.dictionary_encode(table.column("symbol")).combine_chunks()
    return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_pylist()


def _pos_in_symbol(code: np.ndarray) -> np.ndarray:
    order = np.argsort(code, kind="stable")
    sorted_code = code[order]
    first = np.searchsorted(sorted_code, sorted_code, side="left")
    pos = np.empty(len(code), dtype=np.int64)
    pos[order] = np.arange(len(code)) - first
    return pos


def inject_snapshots(clean: pa.Table, day: dt.date, seed: int, d: int) -> tuple[pa.Table, list[dict]]:
    """Snapshots sorted by (ts, symbol): returns the raw partition and the defect records."""
    rng = stream(seed, DEFECTS, d, _TABLE_ID["snapshots"])
    want = _counts(rng, SNAPSHOT_RULES)
    n = clean.num_rows
    plan = _Plan(n, 4 * np.arange(n, dtype=np.int64))
    code, names = _symbol_codes(clean)
    ts = clean.column("ts").cast(pa.int64()).to_numpy()
    phase = clean.column("phase").to_numpy(zero_copy_only=False)
    bid = clean.column("bid_px_1").to_numpy(zero_copy_only=False)
    ask = clean.column("ask_px_1").to_numpy(zero_copy_only=False)
    pos = _pos_in_symbol(code)
    n_sym = len(names)
    trade = (phase == "TRADE") & ~np.isnan(bid) & ~np.isnan(ask)
    # same symbol's row m snapshots later (rows are one per listed symbol per time)
    later_ok = np.zeros(n, dtype=bool)
    m_later = rng.integers(1, 6, size=n)
    tgt = np.arange(n) + m_later * n_sym
    inside = tgt < n
    later_ok[inside] = trade[tgt[inside]] & (code[tgt[inside]] == code[inside])
    chosen = np.zeros(n, dtype=bool)

    def pick(rule: str, ok: np.ndarray) -> np.ndarray:
        rows = _cells(rng, code, pos, ok & ~chosen, want[rule])
        chosen[rows] = True
        for r in rows:  # keep other defects of the symbol away
            chosen[(code == code[r]) & (np.abs(pos - pos[r]) < 10)] = True
        return rows

    for r in pick("crossed_book", trade):
        plan.edit("bid_px_1", int(r), float(ask[r]))
        plan.edit("ask_px_1", int(r), float(bid[r]))
        plan.corrupt("crossed_book", int(r))
    for r in pick("out_of_order", trade & later_ok):
        plan.keys[r] = 4 * int(tgt[r]) + 1
        plan.corrupt("out_of_order", int(r))
    for r in pick("duplicate", trade):
        block_end = int(np.searchsorted(ts, ts[r], side="right")) - 1
        p = int(rng.integers(r, block_end + 1))
        plan.add("duplicate", int(r), 4 * p + 2, {})
    # Out of session: copies of a symbol's last morning snapshot stamped in the lunch break, or of its
    # 15:00:00 snapshot stamped after the close.
    t_local = pd.DatetimeIndex(ts, tz="UTC").tz_convert("Asia/Shanghai")
    tod = (t_local.hour * 3600 + t_local.minute * 60 + t_local.second).to_numpy()
    last_morning = np.flatnonzero((tod == tod[(tod < 11 * 3600 + 30 * 60)].max()) & (phase == "TRADE"))
    close_rows = np.flatnonzero((ts == ts.max()) & (phase != "HALT"))
    day_lunch = pd.Timestamp(dt.datetime.combine(day, dt.time(12, 0)), tz="Asia/Shanghai").value
    used: set[tuple[int, int]] = set()
    k = want["out_of_session"]
    for i in range(k):
        lunch = (i % 2 == 0 and len(last_morning)) or not len(close_rows)
        pool = last_morning if lunch else close_rows
        if not len(pool):
            break
        src = int(pool[rng.integers(0, len(pool))])
        if lunch:
            new_ts = day_lunch + int(rng.integers(0, 3600)) * 1_000_000_000
            key = 4 * int(last_morning.max()) + 3
            new_phase = "BREAK"
        else:
            new_ts = int(ts.max()) + 3 * int(rng.integers(1, 100)) * 1_000_000_000
            key = 4 * n + 3
            new_phase = "CLOSED"
        if (code[src], new_ts) in used:
            continue
        used.add((code[src], new_ts))
        plan.add("out_of_session", src, key, {"ts": new_ts, "phase": new_phase})
    raw, position = _apply(clean, plan)
    return raw, _records(plan, position, names, code, ts, None, "snapshots", day)


def inject_trades(
    clean: pa.Table, day: dt.date, seed: int, d: int, limits: dict[str, tuple[float, float]]
) -> tuple[pa.Table, list[dict]]:
    """Trades sorted by (symbol, seq); ``limits``: symbol -> (lower, upper) for symbols with limits."""
    rng = stream(seed, DEFECTS, d, _TABLE_ID["trades"])
    want = _counts(rng, TRADE_RULES)
    n = clean.num_rows
    plan = _Plan(n, 4 * np.arange(n, dtype=np.int64))
    if n == 0:
        return clean, []
    code, names = _symbol_codes(clean)
    ts = clean.column("ts").cast(pa.int64()).to_numpy()
    seq = clean.column("seq").to_numpy()
    price = clean.column("price").to_numpy()
    qty = clean.column("qty").to_numpy()
    side = clean.column("side").to_numpy(zero_copy_only=False)
    pos = _pos_in_symbol(code)
    cont = side != "N"
    m_later = rng.integers(1, 6, size=n)
    tgt = np.minimum(np.arange(n) + m_later, n - 1)
    later_ok = (code[tgt] == code) & (tgt > np.arange(n))
    has_lim = np.array([names[c] in limits for c in code]) if len(names) else np.zeros(n, bool)
    chosen = np.zeros(n, dtype=bool)

    def pick(rule: str, ok: np.ndarray) -> np.ndarray:
        rows = _cells(rng, code, pos, ok & ~chosen, want[rule])
        chosen[rows] = True
        for r in rows:
            chosen[(code == code[r]) & (np.abs(pos - pos[r]) < 10)] = True
        return rows

    for r in pick("out_of_order", cont & later_ok):
        plan.keys[r] = 4 * int(tgt[r]) + 1
        plan.corrupt("out_of_order", int(r))
    for r in pick("non_positive_price", cont):
        new = 0.0 if rng.random() < 0.5 else -float(price[r])
        plan.edit("price", int(r), new)
        plan.edit("amount", int(r), new * float(qty[r]))
        plan.corrupt("non_positive_price", int(r))
    for r in pick("price_outside_limits", cont & has_lim):
        lo, up = limits[names[code[r]]]
        j = int(rng.integers(1, 6))
        below = rng.random() < 0.5 and round(lo * 100) - j >= 1
        new = (round(lo * 100) - j) / 100.0 if below else (round(up * 100) + j) / 100.0
        plan.edit("price", int(r), new)
        plan.edit("amount", int(r), new * float(qty[r]))
        plan.corrupt("price_outside_limits", int(r))
    for r in pick("amount_mismatch", cont):
        delta = round(float(rng.uniform(1.0, 100.0)), 2) * (1 if rng.random() < 0.5 else -1)
        plan.edit("amount", int(r), float(price[r]) * float(qty[r]) + delta)
        plan.corrupt("amount_mismatch", int(r))
    for r in pick("duplicate", cont):
        plan.add("duplicate", int(r), 4 * int(r) + 2, {})
    # Out of session: a trade after the close, with the next unused seq of its symbol, after its last row.
    last_of = np.flatnonzero(np.diff(np.append(code, -1)) != 0)
    extra_seq: dict[int, int] = {}
    for _ in range(want["out_of_session"]):
        src = int(last_of[rng.integers(0, len(last_of))])
        c = int(code[src])
        extra_seq[c] = extra_seq.get(c, int(seq[src])) + 1
        new_ts = int(ts[src]) + (30 + extra_seq[c] - int(seq[src])) * 1_000_000_000
        plan.add("out_of_session", src, 4 * src + 3, {"ts": new_ts, "seq": extra_seq[c]})
    raw, position = _apply(clean, plan)
    return raw, _records(plan, position, names, code, ts, seq, "trades", day)


def _records(plan: _Plan, position, names, code, ts, seq, table: str, day: dt.date) -> list[dict]:
    out = []
    for rule, src, corrupted, copied in plan.records:
        clean_row = corrupted if corrupted is not None else copied
        ident = {"clean_row": int(clean_row), "ts": _iso(ts[clean_row])}
        if seq is not None:
            ident["seq"] = int(seq[clean_row])
        out.append(
            {
                "table": table,
                "date": day.isoformat(),
                "rule": rule,
                "symbol": names[code[clean_row]],
                "row": int(position[src]),
                "original": ident if corrupted is not None else None,
                "copy_of": ident if copied is not None else None,
            }
        )
    out.sort(key=lambda r: r["row"])
    return out
