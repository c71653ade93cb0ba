"""The data-quality report: JSON layout, the summary API and HTML pages a human (and a parser) can read."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from l2vol.data import schema as S
from l2vol.data.cleaning import clean_store, validate_store
from l2vol.data.quality import render_date_html, rules_for
from l2vol.data.rules import RULES
from l2vol.storage import DatasetStore

DAY = dt.date(2024, 1, 2)
SH = ZoneInfo("Asia/Shanghai")


def at(hms: str) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time.fromisoformat(hms), SH).astimezone(dt.UTC)


@pytest.fixture
def stores(tmp_path):
    raw = DatasetStore(f"file://{tmp_path / 'raw'}")
    quote = {"symbol": "600519.SH", "phase": "TRADE", "bid_px_1": 10.0, "ask_px_1": 10.01, "upper_limit_px": 11.0}
    snaps = [
        {**quote, "ts": at("10:00:00")},
        {**quote, "ts": at("10:00:03"), "ask_px_1": 9.99},  # crossed
        {**quote, "ts": at("12:00:00"), "symbol": "000001.SZ"},  # lunch
        {**quote, "ts": at("10:00:06"), "phase": "HALT"},
    ]
    raw.write_partition("snapshots", DAY, S.conform(pa.Table.from_pylist(snaps), "snapshots"), schema=S.SNAPSHOTS)
    fills = [
        {"symbol": "600519.SH", "ts": at("10:00:01"), "price": 10.0, "qty": 100, "amount": 1000.0, "seq": 1},
        {"symbol": "600519.SH", "ts": at("10:00:02"), "price": 10.0, "qty": 100, "amount": 10.0, "seq": 2},
    ]
    raw.write_partition("trades", DAY, S.conform(pa.Table.from_pylist(fills), "trades"), schema=S.TRADES)
    return raw, DatasetStore(f"file://{tmp_path / 'clean'}")


class _Page(HTMLParser):
    """Collects table rows (as cell texts, with the row's data-rule), headings and external references."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str | None, list[str]]] = []
        self.headings: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self._row: list[str] | None = None
        self._rule: str | None = None
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "tr":
            self._row, self._rule = [], a.get("data-rule")
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._rule, self._row))
            self._row = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_date_page_lists_every_rule_of_every_table_with_counts(stores):
    raw, dst = stores
    clean_store(raw, dst)
    page = parse(dst.read_bytes("reports/quality/date=2024-01-02/quality.html").decode())
    assert "snapshots" in page.headings and "trades" in page.headings
    rule_rows = [(rule, cells) for rule, cells in page.rows if rule]
    expected = rules_for("snapshots") + rules_for("trades")
    assert [rule for rule, _ in rule_rows] == expected
    by_rule = {(rule, i): cells for i, (rule, cells) in enumerate(rule_rows)}
    crossed = next(c for (r, _), c in by_rule.items() if r == "crossed_book")
    assert crossed[:2] == ["crossed_book", "quarantine"]
    assert crossed[2] == next(r.description for r in RULES if r.name == "crossed_book")
    assert crossed[3:5] == ["1", "25.0%"]
    repair = next(c for (r, _), c in by_rule.items() if r == "amount_mismatch")
    assert repair[1:2] == ["repair"] and repair[3:5] == ["1", "50.0%"]
    # Files and examples name the part file, the row and the offending values.
    text = " ".join(" ".join(c) for _, c in page.rows)
    assert "ask_px_1 9.99 <= bid_px_1 10.0 (crossed book)" in text
    assert "table=snapshots/date=2024-01-02/part-0000-" in text
    assert "svg" in page.tags
    # Self-contained: no scripts, stylesheets or images from elsewhere; links stay inside the report.
    assert not ({"script", "link", "img", "iframe"} & page.tags)
    assert all(not r.startswith(("http:", "https:", "//")) for r in page.refs), page.refs


def test_index_page_totals_and_links_every_date(stores):
    raw, dst = stores
    summary = clean_store(raw, dst)
    page = parse(dst.read_bytes("reports/quality/index.html").decode())
    assert "date=2024-01-02/quality.html" in page.refs
    totals = {
        cells[0]: cells[1:]
        for rule, cells in page.rows
        if rule is None and cells and cells[0] in ("snapshots", "trades")
    }
    assert totals["snapshots"][:5] == ["4", "2", "2", "0", "1"]
    assert totals["trades"][:5] == ["2", "2", "0", "1", "0"]
    assert {rule for rule, _ in page.rows if rule} == set(rules_for("snapshots")) | set(rules_for("trades"))
    assert summary.index_location.endswith("reports/quality/index.html")


def test_quality_json_and_summary(stores):
    raw, dst = stores
    summary = clean_store(raw, dst)
    day = dst.read_json("reports/quality/date=2024-01-02/quality.json")
    snaps = day["tables"]["snapshots"]
    assert [r["rule"] for r in snaps["rules"]] == rules_for("snapshots")  # fixed order kept in JSON
    assert {r["rule"]: r["count"] for r in snaps["rules"] if r["count"]} == {
        "out_of_session": 1,
        "crossed_book": 1,
        "halted": 1,
    }
    assert snaps["rows_in"] == snaps["kept"] + snaps["quarantined"]
    assert snaps["examples"]["crossed_book"][0]["row"] == 1
    assert snaps["examples"]["crossed_book"][0]["time"] == "2024-01-02 10:00:03.000"

    s = dst.read_json("reports/quality/summary.json")
    assert s["overall"] == {"rows_in": 6, "kept": 4, "quarantined": 2, "repaired": 1, "flagged": 1}
    assert s["totals"]["trades"] == {"rows_in": 2, "kept": 2, "quarantined": 0, "repaired": 1, "flagged": 0}
    assert [(r["table"], r["rule"]) for r in s["by_rule"]] == [("snapshots", r) for r in rules_for("snapshots")] + [
        ("trades", r) for r in rules_for("trades")
    ]
    assert {(r["table"], r["rule"]): r["rows"] for r in s["by_rule"] if r["rows"]} == {
        ("snapshots", "out_of_session"): 1,
        ("snapshots", "crossed_book"): 1,
        ("snapshots", "halted"): 1,
        ("trades", "amount_mismatch"): 1,
    }
    assert next(r for r in s["by_rule"] if r["rule"] == "price_outside_limits") == {
        "table": "trades",
        "rule": "price_outside_limits",
        "action": "quarantine",
        "description": next(r.description for r in RULES if r.name == "price_outside_limits"),
        "rows": 0,
        "share": 0.0,
        "unchecked": 0,
    }
    assert s["report"] == summary.index_location and s["summary"] == summary.summary_location
    assert s["dates"][0]["report"]["html"] == "reports/quality/date=2024-01-02/quality.html"
    assert [f["table"] for f in s["files"]] == ["snapshots", "trades"]

    assert summary.counts() == {r.name: summary.counts()[r.name] for r in RULES}  # every rule, RULES order
    assert summary.counts(table="trades", action="repair") == {"amount_mismatch": 1}
    assert summary.counts(action="flag") == {"limit_locked": 0, "auction_bid_eq_ask": 0, "halted": 1}
    assert summary.unchecked() == {"duplicate": 0, "out_of_order": 0, "price_outside_limits": 0}
    with pytest.raises(ValueError, match="unknown action 'drop'"):
        summary.counts(action="drop")


def test_validate_report_says_nothing_was_written(stores):
    raw, _ = stores
    summary = validate_store(raw)
    html = raw.read_bytes("reports/quality/date=2024-01-02/quality.html").decode()
    assert "Validation writes no data" in html and "(rules evaluated, no data written)" in html
    assert "(rules evaluated, no data written)" in raw.read_bytes("reports/quality/index.html").decode()
    assert summary.to_dict()["destination"] is None


def test_html_escapes_values(stores):
    raw, dst = stores
    summary = clean_store(raw, dst)
    dq = summary.dates[0]
    dq.tables["snapshots"].notes.append("<script>alert(1)</script>")
    html = render_date_html(dq)
    assert "<script>" not in html and "&lt;script&gt;" in html
