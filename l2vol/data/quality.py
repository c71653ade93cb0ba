"""The data-quality report of cleaning and validation: counts per file, table and rule, as JSON and HTML.

Layout under the report store (see :func:`l2vol.data.cleaning.clean_store`)::

    reports/quality/date=YYYY-MM-DD/quality.json   one date: tables, rules, files, examples
    reports/quality/date=YYYY-MM-DD/quality.html   the same for a human
    reports/quality/summary.json                   totals over all dates (= QualitySummary.to_dict())
    reports/quality/index.html                     totals and one row per date, linking the date pages

Every count is a number of rows. A row is counted under exactly one rule: the first rule in
:data:`l2vol.data.rules.RULES` order that it breaks (quarantine rules first remove the row; a kept row is
then counted under its first repair or flag rule). ``share`` is that count divided by the rows in of the
table. ``unchecked`` counts rows that reached a rule (were not removed by an earlier quarantine rule) but
that the rule could not evaluate (e.g. no price limits known for the symbol that day).

The HTML pages are self-contained (inline CSS and SVG, no scripts, no external assets).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal

from jinja2 import Environment, PackageLoader, select_autoescape

from l2vol.data.profiles import get_profile
from l2vol.data.rules import RULES, RULES_BY_NAME

Mode = Literal["clean", "validate"]

REPORT_DIR = "reports/quality"
#: Number of example rows per rule kept in the per-date report.
MAX_EXAMPLES = 5


def rules_for(table: str) -> list[str]:
    """Names of the rules that apply to ``table``, in the fixed :data:`RULES` order."""
    return [r.name for r in RULES if table in r.tables]


def date_report_paths(date: dt.date) -> tuple[str, str]:
    """Relative paths (JSON, HTML) of the report of ``date`` under the report store."""
    base = f"{REPORT_DIR}/date={date.isoformat()}"
    return f"{base}/quality.json", f"{base}/quality.html"


@dataclass
class FileQuality:
    """Counts for one source part file (``table=…/date=…/part-….parquet``)."""

    source: str
    rows_in: int
    kept: int
    quarantined: int
    repaired: int
    flagged: int
    by_rule: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "repaired": self.repaired,
            "flagged": self.flagged,
            "by_rule": dict(self.by_rule),
        }


@dataclass
class TableQuality:
    """Counts for one table on one date. ``counts`` and ``unchecked`` list every rule of the table."""

    table: str
    rows_in: int
    kept: int
    quarantined: int
    repaired: int
    flagged: int
    counts: dict[str, int]
    unchecked: dict[str, int]
    files: list[FileQuality]
    examples: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check_invariant(self) -> None:
        """Raise ``RuntimeError`` unless rows in = kept + quarantined per file, per table and per rule."""
        problems = []
        for f in self.files:
            if f.rows_in != f.kept + f.quarantined:
                problems.append(f"{f.source}: rows in {f.rows_in} != kept {f.kept} + quarantined {f.quarantined}")
            q = sum(n for r, n in f.by_rule.items() if RULES_BY_NAME[r].action == "quarantine")
            if q != f.quarantined:
                problems.append(f"{f.source}: quarantined {f.quarantined} != sum over quarantine rules {q}")
        if self.rows_in != self.kept + self.quarantined:
            problems.append(
                f"table {self.table}: rows in {self.rows_in} != kept {self.kept} + quarantined {self.quarantined}"
            )
        for attr in ("rows_in", "kept", "quarantined", "repaired", "flagged"):
            total = sum(getattr(f, attr) for f in self.files)
            if total != getattr(self, attr):
                problems.append(f"table {self.table}: {attr} {getattr(self, attr)} != sum over files {total}")
        for action, attr in (("quarantine", "quarantined"), ("repair", "repaired"), ("flag", "flagged")):
            total = sum(n for r, n in self.counts.items() if RULES_BY_NAME[r].action == action)
            if total != getattr(self, attr):
                problems.append(f"table {self.table}: {attr} {getattr(self, attr)} != sum over {action} rules {total}")
        for rule, n in self.counts.items():
            by_files = sum(f.by_rule.get(rule, 0) for f in self.files)
            if by_files != n:
                problems.append(f"table {self.table}: rule {rule} counts {n} != sum over files {by_files}")
        if problems:
            raise RuntimeError("cleaning invariant violated: " + "; ".join(problems))

    def rule_rows(self) -> list[dict]:
        return [
            {
                "rule": r,
                "action": RULES_BY_NAME[r].action,
                "description": RULES_BY_NAME[r].description,
                "count": self.counts[r],
                "share": self.counts[r] / self.rows_in if self.rows_in else 0.0,
                "unchecked": self.unchecked.get(r, 0),
            }
            for r in self.counts
        ]

    def totals(self) -> dict[str, int]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "repaired": self.repaired,
            "flagged": self.flagged,
        }

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            **self.totals(),
            "rules": self.rule_rows(),
            "files": [f.to_dict() for f in self.files],
            "examples": self.examples,
            "notes": list(self.notes),
        }


@dataclass
class DateQuality:
    """The report of one date partition."""

    date: dt.date
    mode: Mode
    profile: str
    tables: dict[str, TableQuality] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def report_paths(self) -> tuple[str, str]:
        return date_report_paths(self.date)

    def to_dict(self) -> dict:
        json_path, html_path = self.report_paths
        return {
            "date": self.date.isoformat(),
            "mode": self.mode,
            "profile": self.profile,
            "invariant": "rows in = kept + quarantined, per file, per table and per rule (checked in code)",
            "tables": {t: q.to_dict() for t, q in self.tables.items()},
            "copied": dict(self.copied),
            "notes": list(self.notes),
            "report": {"json": json_path, "html": html_path},
        }


@dataclass
class QualitySummary:
    """Result of :func:`~l2vol.data.cleaning.clean_store` or :func:`~l2vol.data.cleaning.validate_store`.

    ``dates`` holds the per-date reports; ``index_location``/``summary_location`` say where the HTML
    index and ``summary.json`` were written. :meth:`counts` returns rows per rule summed over dates, which
    is what a test compares against a simulator's injected-defects manifest.
    """

    mode: Mode
    profile: str
    source: str
    destination: str | None
    report_store: str
    dates: list[DateQuality] = field(default_factory=list)
    index_location: str = ""
    summary_location: str = ""

    def _tables(self, table: str | None) -> list[TableQuality]:
        return [q for d in self.dates for t, q in d.tables.items() if table is None or t == table]

    def counts(self, table: str | None = None, action: str | None = None) -> dict[str, int]:
        """Rows per rule over all dates (and tables, unless ``table`` is given), in :data:`RULES` order.

        Every rule that applies to the selected table(s) and has the selected ``action`` (quarantine,
        repair or flag) is listed, with 0 when it never fired.
        """
        if action is not None and action not in ("quarantine", "repair", "flag"):
            raise ValueError(f"unknown action {action!r}; use quarantine, repair or flag")
        names = [
            r.name for r in RULES if (action is None or r.action == action) and (table is None or table in r.tables)
        ]
        out = dict.fromkeys(names, 0)
        for q in self._tables(table):
            for rule, n in q.counts.items():
                if rule in out:
                    out[rule] += n
        return out

    def unchecked(self, table: str | None = None) -> dict[str, int]:
        """Rows per rule that the rule could not evaluate (only rules that can be unchecked are listed)."""
        out: dict[str, int] = {}
        for q in self._tables(table):
            for rule, n in q.unchecked.items():
                out[rule] = out.get(rule, 0) + n
        return {r.name: out[r.name] for r in RULES if r.name in out}

    def totals(self, table: str | None = None) -> dict[str, int]:
        """rows_in, kept, quarantined, repaired and flagged over all dates (and tables)."""
        out = dict.fromkeys(("rows_in", "kept", "quarantined", "repaired", "flagged"), 0)
        for q in self._tables(table):
            for k, v in q.totals().items():
                out[k] += v
        return out

    def table_names(self) -> list[str]:
        seen: list[str] = []
        for d in self.dates:
            for t in d.tables:
                if t not in seen:
                    seen.append(t)
        return seen

    def table_totals(self, table: str) -> TableQuality:
        """One :class:`TableQuality` summing ``table`` over all dates (files of every date listed)."""
        parts = self._tables(table)
        names = rules_for(table)
        unchecked: dict[str, int] = {}
        for q in parts:
            for r, n in q.unchecked.items():
                unchecked[r] = unchecked.get(r, 0) + n
        return TableQuality(
            table=table,
            **self.totals(table),
            counts={r: sum(q.counts.get(r, 0) for q in parts) for r in names},
            unchecked=unchecked,
            files=[f for q in parts for f in q.files],
        )

    def to_dict(self) -> dict:
        """The content of ``summary.json``.

        ``totals``: rows in/kept/quarantined/repaired/flagged per table; ``overall``: the same summed over
        tables; ``by_rule``: one entry per table and rule (RULES order) with action, description, rows,
        share and unchecked; ``dates``: per-date totals and report paths; ``files``: every source part
        file with its counts; ``report``: where the HTML index is.
        """
        tables = [self.table_totals(t) for t in self.table_names()]
        return {
            "mode": self.mode,
            "profile": self.profile,
            "source": self.source,
            "destination": self.destination,
            "report_store": self.report_store,
            "report": self.index_location,
            "summary": self.summary_location,
            "invariant": "rows in = kept + quarantined, per file, per table and per rule (checked in code)",
            "overall": self.totals(),
            "totals": {tq.table: tq.totals() for tq in tables},
            "by_rule": [
                {
                    "table": tq.table,
                    "rule": r["rule"],
                    "action": r["action"],
                    "description": r["description"],
                    "rows": r["count"],
                    "share": r["share"],
                    "unchecked": r["unchecked"],
                }
                for tq in tables
                for r in tq.rule_rows()
            ],
            "dates": [
                {
                    "date": d.date.isoformat(),
                    "tables": {t: q.totals() for t, q in d.tables.items()},
                    "copied": dict(d.copied),
                    "notes": list(d.notes),
                    "report": {"json": d.report_paths[0], "html": d.report_paths[1]},
                }
                for d in self.dates
            ],
            "files": [
                {"table": t, "date": d.date.isoformat(), **f.to_dict()}
                for d in self.dates
                for t, q in d.tables.items()
                for f in q.files
            ],
        }


# ---------------------------------------------------------------------------------------------- HTML
_ACTION_COLOURS = {"quarantine": "#c0392b", "repair": "#d68910", "flag": "#2e86c1"}


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("l2vol.data", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["pct"] = _pct
    env.filters["rows"] = lambda n: f"{n:,} row" if n == 1 else f"{n:,} rows"
    env.globals["colours"] = _ACTION_COLOURS
    env.globals["bars"] = _bars
    return env


def _pct(share: float) -> str:
    if share == 0:
        return "0%"
    pct = 100.0 * share
    if pct >= 1:
        return f"{pct:.1f}%"
    return f"{pct:.2g}%" if pct >= 0.0001 else "<0.0001%"


def _bars(rows: list[dict], width: int = 360) -> list[dict]:
    """Bar geometry for the SVG chart: length ∝ log10(1 + count) so rare and common rules both show."""
    top = max((r["count"] for r in rows), default=0)
    scale = math.log10(1 + top) if top else 1.0
    return [
        {**r, "y": i * 22, "w": 0 if r["count"] == 0 else max(2, round(width * math.log10(1 + r["count"]) / scale))}
        for i, r in enumerate(rows)
    ]


def render_date_html(dq: DateQuality) -> str:
    """The per-date report page."""
    prof = get_profile(dq.profile)
    return (
        _env()
        .get_template("quality_date.html.j2")
        .render(
            d=dq,
            tables=list(dq.tables.values()),
            tz=prof.timezone,
            sessions=prof.sessions_for(dq.date),
            max_examples=MAX_EXAMPLES,
        )
    )


def render_index_html(summary: QualitySummary) -> str:
    """The index page: totals per table and rule over all dates, one row per date with its link."""
    totals = [summary.table_totals(t) for t in summary.table_names()]
    return _env().get_template("quality_index.html.j2").render(s=summary, totals=totals)


def write_date_report(store, dq: DateQuality) -> tuple[str, str]:
    """Write ``quality.json`` and ``quality.html`` of one date into ``store``; returns their locations."""
    json_path, html_path = dq.report_paths
    return (
        store.write_json(json_path, dq.to_dict()),
        store.write_bytes(html_path, render_date_html(dq).encode()),
    )


def write_index_report(store, summary: QualitySummary) -> QualitySummary:
    """Write ``summary.json`` and ``index.html`` into ``store`` and record their locations in ``summary``."""
    summary.index_location = store.location(f"{REPORT_DIR}/index.html")
    summary.summary_location = store.location(f"{REPORT_DIR}/summary.json")
    store.write_json(f"{REPORT_DIR}/summary.json", summary.to_dict())
    store.write_bytes(f"{REPORT_DIR}/index.html", render_index_html(summary).encode())
    return summary
