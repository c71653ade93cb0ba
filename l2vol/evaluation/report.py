"""The HTML evaluation report: one self-contained page of plots and the model comparison table.

:func:`render_evaluation_report` turns the dict of :func:`~l2vol.evaluation.metrics.evaluate_forecasts`
and the forecast panel it scored into HTML with every figure embedded as a PNG data URI (no external
assets, scripts or network requests: it opens from a bucket, a KFP artifact or an e-mail). Figures are
drawn with matplotlib's Agg canvas, imported only when a report is rendered (no pyplot, no global
backend switch). :func:`write_evaluation_report` writes it into a :class:`~l2vol.storage.DatasetStore`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from l2vol.storage import DatasetStore

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
DPI = 90
#: Most recent observations per sample symbol in the forecast-vs-realized plot.
MAX_POINTS = 240
CALIBRATION_BINS = 20
TOP_FACTORS = 15
MAX_IMPORTANCE_PANELS = 6

#: The comparison table: (key in the flat table row, header, kind). Kinds pick the number format.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("n_used", "n used", "count"),
    ("n_zero_excluded", "zero-RV excluded", "count"),
    ("rmspe", "RMSPE", "loss"),
    ("qlike", "QLIKE", "loss"),
    ("mse", "MSE", "loss"),
    ("mae", "MAE", "loss"),
    ("r2_oos", "R²oos vs {b}", "signed"),
    ("dm_qlike_stat", "DM QLIKE stat", "stat"),
    ("dm_qlike_p", "DM QLIKE p", "p"),
    ("dm_mse_stat", "DM MSE stat", "stat"),
    ("dm_mse_p", "DM MSE p", "p"),
    ("mz_intercept", "MZ intercept", "signed"),
    ("mz_slope", "MZ slope", "stat"),
    ("mz_p", "MZ p (a=0, b=1)", "p"),
)
#: Columns where the smallest value is the best (bold in the table).
LOWER_IS_BETTER = ("rmspe", "qlike", "mse", "mae")

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_BENCHMARK_COLOR = "#555555"


# --------------------------------------------------------------------------- formatting
def format_value(value: Any, kind: str) -> str:
    """The text a table cell shows for ``value``: ``—`` for missing, else by ``kind``.

    ``count``: thousands separators; ``loss``: 4 significant digits (RV losses span many decades);
    ``signed``/``stat``: 4 significant digits with a sign for ``signed``; ``p``: 3 decimals, ``<0.001``
    below that.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "p":
        return "<0.001" if value < 0.001 else f"{value:.3f}"
    if kind == "signed":
        return f"{value:+.4g}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------- public API
def render_evaluation_report(
    evaluation: dict,
    forecasts,
    *,
    importance=None,
    title: str,
    sample_symbols: int = 3,
    subtitle: str | None = None,
    generated_at: dt.datetime | None = None,
    extra_figures: Sequence[dict] | None = None,
) -> str:
    """A self-contained HTML page for one evaluation.

    ``evaluation``: the dict of :func:`~l2vol.evaluation.metrics.evaluate_forecasts` (with breakdowns
    for the time-of-day plot). ``forecasts``: the panel it scored (pandas or polars; ``symbol``, ``ts``,
    ``y`` and one column per model of ``evaluation["models"]``). ``importance``: optional factor
    importance (``factor``, ``method``, ``model``, ``importance``, ``rank``), drawn as bar charts.
    ``sample_symbols``: how many symbols the forecast-vs-realized plot shows (the ones with most rows).
    ``extra_figures``: figures made elsewhere, appended as given: dicts with ``id``, ``title``, ``caption``,
    ``alt`` and ``png`` (PNG bytes), e.g. the convergence and diversity plots of the distributed training harness.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    if "models" not in evaluation or "table" not in evaluation:
        raise ValueError("render_evaluation_report: 'evaluation' must be the dict of evaluate_forecasts()")
    benchmark = evaluation.get("benchmark") or "har"
    models = [row["model"] for row in evaluation["table"]]
    frame = _to_pandas(forecasts)
    for c in ("symbol", "ts", "y"):
        if c not in frame.columns:
            raise ValueError(f"render_evaluation_report: forecasts miss column {c!r} (have {list(frame.columns)})")
    plotted = [m for m in models if m in frame.columns]
    colors = _model_colors(models, benchmark)

    figures = []
    fvr = _plot_forecast_vs_realized(frame, plotted, colors, sample_symbols, benchmark)
    if fvr is not None:
        figures.append(fvr)
    tod = _plot_loss_by_time_of_day(evaluation, models, colors, benchmark)
    if tod is not None:
        figures.append(tod)
    cal = _plot_calibration(frame, plotted, colors, evaluation)
    if cal is not None:
        figures.append(cal)
    sym = _plot_symbol_differences(evaluation, models, colors, benchmark)
    if sym is not None:
        figures.append(sym)
    if importance is not None:
        imp = _plot_importance(_to_pandas(importance))
        if imp is not None:
            figures.append(imp)
    for extra in extra_figures or ():
        missing = [k for k in ("id", "title", "caption", "alt", "png") if k not in extra]
        if missing:
            raise ValueError(f"render_evaluation_report: an extra figure lacks {missing}")
        src = "data:image/png;base64," + base64.b64encode(extra["png"]).decode("ascii")
        figures.append({"id": extra["id"], "title": extra["title"], "caption": extra["caption"], "src": src,
                        "alt": extra["alt"]})  # fmt: skip

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    stamp = (generated_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(TEMPLATE).render(
        title=title,
        subtitle=subtitle,
        generated_at=stamp,
        benchmark=benchmark,
        summary=_summary(evaluation),
        table=_comparison_table(evaluation, benchmark),
        figures=figures,
        method=_method_note(evaluation),
        missing=_missing_notes(evaluation, models, plotted, importance),
    )


def write_evaluation_report(
    store: DatasetStore,
    relpath: str,
    evaluation: dict,
    forecasts,
    *,
    importance=None,
    title: str,
    sample_symbols: int = 3,
    subtitle: str | None = None,
    extra_figures: Sequence[dict] | None = None,
) -> str:
    """Render the report and write it at ``relpath`` under ``store`` (atomically); returns its location."""
    html = render_evaluation_report(
        evaluation,
        forecasts,
        importance=importance,
        title=title,
        sample_symbols=sample_symbols,
        subtitle=subtitle,
        extra_figures=extra_figures,
    )
    return store.write_bytes(relpath, html.encode("utf-8"))


# --------------------------------------------------------------------------- tables and notes
def _comparison_table(evaluation: dict, benchmark: str) -> dict:
    counts = {m: evaluation["models"].get(m, {}) for m in evaluation["models"]}
    columns = [(key, header.format(b=benchmark), kind) for key, header, kind in TABLE_COLUMNS]
    oracle = evaluation.get("oracle")
    if oracle:
        columns.append(("oracle_gap_qlike", "oracle gap QLIKE", "stat"))
    rows_raw = []
    for flat in evaluation["table"]:
        m = flat["model"]
        vals = dict(flat)
        vals.setdefault("n_zero_excluded", counts.get(m, {}).get("n_zero_excluded", evaluation.get("n_zero_excluded")))
        rows_raw.append((m, vals))
    best = {}
    for key in LOWER_IS_BETTER:
        cand = [v[key] for m, v in rows_raw if v.get(key) is not None and m != oracle]
        if cand:
            best[key] = min(cand)
    rows = []
    for m, vals in rows_raw:
        cells = []
        for key, _, kind in columns:
            v = vals.get(key)
            classes = ["num"]
            if key in best and v is not None and v == best[key] and m != oracle:
                classes.append("best")
            if kind == "p" and v is not None and key.startswith("dm_") and v < 0.05:
                better = (vals.get(key.replace("_p", "_stat")) or 0.0) < 0
                classes.append("sig-better" if better else "sig-worse")
            cells.append({"key": key, "text": format_value(v, kind), "cls": " ".join(classes)})
        role = "benchmark" if m == benchmark else ("oracle" if m == oracle else "model")
        rows.append({"model": m, "role": role, "cells": cells})
    return {"columns": [{"key": k, "header": h} for k, h, _ in columns], "rows": rows}


def _summary(evaluation: dict) -> list[tuple[str, str]]:
    items = [
        ("benchmark", str(evaluation.get("benchmark"))),
        ("rows", format_value(evaluation.get("n_rows"), "count")),
        ("rows used", format_value(evaluation.get("n_used"), "count")),
        ("zero-RV excluded", format_value(evaluation.get("n_zero_excluded"), "count")),
        ("missing target", format_value(evaluation.get("n_missing_target"), "count")),
        ("periods", format_value(evaluation.get("n_periods"), "count")),
        ("symbols", format_value(evaluation.get("n_symbols"), "count")),
        ("horizon (periods)", format_value(evaluation.get("horizon_periods"), "count")),
        ("Newey-West lag", format_value(evaluation.get("nw_lag"), "count")),
    ]
    if evaluation.get("oracle"):
        items.append(("oracle", str(evaluation["oracle"])))
    return items


def _method_note(evaluation: dict) -> dict:
    return {
        "benchmark": evaluation.get("benchmark") or "har",
        "lag": evaluation.get("nw_lag"),
        "horizon": evaluation.get("horizon_periods"),
        "periods": evaluation.get("n_periods"),
    }


def _missing_notes(evaluation: dict, models: list[str], plotted: list[str], importance) -> list[str]:
    notes = []
    absent = [m for m in models if m not in plotted]
    if absent:
        notes.append(f"No forecast column for {', '.join(absent)} in the panel: left out of the plots.")
    if not evaluation.get("by_time_of_day"):
        notes.append("The evaluation has no time-of-day breakdown (breakdowns=False): no loss-by-time-of-day plot.")
    if importance is None:
        notes.append("No factor importance was given.")
    return notes


# --------------------------------------------------------------------------- data helpers
def _to_pandas(df):
    import pandas as pd

    if isinstance(df, pd.DataFrame):
        out = df.copy()
    elif hasattr(df, "to_pandas"):
        out = df.to_pandas()
    else:
        out = pd.DataFrame(df)
    if "ts" in out.columns and getattr(out["ts"].dtype, "tz", None) is not None:
        out["ts"] = out["ts"].dt.tz_localize(None)  # wall-clock time of the market, as in evaluate_forecasts
    return out


def _model_colors(models: Sequence[str], benchmark: str) -> dict[str, str]:
    colors, i = {}, 0
    for m in models:
        if m == benchmark:
            colors[m] = _BENCHMARK_COLOR
        else:
            colors[m] = _COLORS[i % len(_COLORS)]
            i += 1
    return colors


def _scored_rows(frame, models: Sequence[str]):
    """Rows ``evaluate_forecasts`` scores: finite y > 0 and every forecast finite and > 0."""
    keep = np.isfinite(frame["y"].to_numpy(dtype=float)) & (frame["y"].to_numpy(dtype=float) > 0)
    for m in models:
        f = frame[m].to_numpy(dtype=float)
        keep &= np.isfinite(f) & (f > 0)
    return frame.loc[keep]


# --------------------------------------------------------------------------- figures
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fid: str, title: str, caption: str, fig, alt: str) -> dict:
    return {"id": fid, "title": title, "caption": caption, "src": _png_data_uri(fig), "alt": alt}


def _plot_forecast_vs_realized(frame, models, colors, n_symbols: int, benchmark: str) -> dict | None:
    if n_symbols <= 0 or frame.empty:
        return None
    counts = frame.groupby("symbol", sort=True).size()
    symbols = sorted(counts.sort_values(ascending=False, kind="stable").index[:n_symbols].tolist(), key=str)
    fig = _new_figure(9.0, 2.3 * len(symbols) + 0.4)
    axes = fig.subplots(len(symbols), 1, squeeze=False)[:, 0]
    for ax, sym in zip(axes, symbols, strict=True):
        sub = frame[frame["symbol"] == sym].sort_values("ts").tail(MAX_POINTS)
        x = np.arange(len(sub))
        y = sub["y"].to_numpy(dtype=float)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(x[ok], y[ok], color="black", lw=0.8, alpha=0.55, label="realized")
        for m in models:
            f = sub[m].to_numpy(dtype=float)
            fok = np.isfinite(f) & (f > 0)
            lw = 1.3 if m != benchmark else 1.1
            ls = "--" if m == benchmark else "-"
            ax.plot(x[fok], f[fok], color=colors[m], lw=lw, ls=ls, label=m)
        ax.set_yscale("log")
        ax.set_title(str(sym), fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        _day_ticks(ax, sub["ts"])
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=min(len(models) + 1, 6), loc="upper right", frameon=False)
    return _figure(
        "fig-forecast-vs-realized",
        "Forecast vs realized",
        f"The last {MAX_POINTS} observations (at most) of the {len(symbols)} symbol(s) with most rows, log scale; "
        "realized in black, the benchmark dashed. Zero-RV rows are not drawn.",
        fig,
        "forecast vs realized over time for sample symbols",
    )


def _day_ticks(ax, ts) -> None:
    import pandas as pd

    t = pd.to_datetime(pd.Series(ts).reset_index(drop=True), errors="coerce")
    if t.isna().all():
        return
    days = t.dt.normalize()
    starts = np.flatnonzero(days.ne(days.shift()).to_numpy())
    step = max(1, int(math.ceil(len(starts) / 8)))
    starts = starts[::step]
    ax.set_xticks(starts)
    ax.set_xticklabels([t.iloc[i].strftime("%m-%d") for i in starts])


def _plot_loss_by_time_of_day(evaluation, models, colors, benchmark) -> dict | None:
    rows = evaluation.get("by_time_of_day") or []
    if not rows:
        return None
    keys = sorted({r["bucket"] for r in rows}, key=lambda k: (str(type(k)), k))
    index = {k: i for i, k in enumerate(keys)}
    q = {m: np.full(len(keys), np.nan) for m in models}
    for r in rows:
        if r["model"] in q and r.get("qlike") is not None:
            q[r["model"]][index[r["bucket"]]] = r["qlike"]
    fig = _new_figure(9.0, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(keys))
    base = q.get(benchmark)
    for m in models:
        style = {"color": colors[m], "lw": 1.3, "ls": "--" if m == benchmark else "-", "label": m}
        if len(keys) == 1:
            ax1.bar(models.index(m), q[m][0], color=colors[m], label=m)
        else:
            ax1.plot(x, q[m], marker=".", ms=3, **style)
        if base is not None and m != benchmark:
            if len(keys) == 1:
                ax2.bar(models.index(m), q[m][0] - base[0], color=colors[m], label=m)
            else:
                ax2.plot(x, q[m] - base, marker=".", ms=3, **style)
    ax1.set_title("mean QLIKE", fontsize=9, loc="left")
    ax2.set_title(f"QLIKE minus {benchmark} (below 0: better)", fontsize=9, loc="left")
    ax2.axhline(0.0, color=_BENCHMARK_COLOR, lw=0.8, ls="--")
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            step = max(1, int(math.ceil(len(keys) / 8)))
            ax.set_xticks(x[::step])
            ax.set_xticklabels([_short_bucket(keys[i]) for i in x[::step]])
            ax.set_xlabel("time of day (bucket end)", fontsize=8)
        else:
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(models, fontsize=7, rotation=30)
    ax1.legend(fontsize=7, frameon=False)
    return _figure(
        "fig-loss-by-time-of-day",
        "Loss by time of day",
        "Mean QLIKE per time-of-day bucket over all symbols and days (left) and its difference to the "
        f"benchmark {benchmark} (right).",
        fig,
        "QLIKE loss by time of day per model",
    )


def _short_bucket(k) -> str:
    s = str(k)
    return s[:5] if len(s) == 8 and s[2] == ":" and s[5] == ":" else s


def _plot_calibration(frame, models, colors, evaluation) -> dict | None:
    if not models:
        return None
    scored = _scored_rows(frame, models)
    if len(scored) < 3:
        return None
    y = scored["y"].to_numpy(dtype=float)
    n_bins = min(CALIBRATION_BINS, max(2, len(scored) // 25))  # at least ~25 rows per bin
    fig = _new_figure(5.6, 4.6)
    ax = fig.subplots()
    lo, hi = math.inf, -math.inf
    for m in models:
        f = scored[m].to_numpy(dtype=float)
        order = np.argsort(f, kind="stable")
        bins = np.array_split(order, n_bins)
        mf = np.array([f[b].mean() for b in bins if len(b)])
        my = np.array([y[b].mean() for b in bins if len(b)])
        mz = (evaluation["models"].get(m) or {}).get("mz") or {}
        label = m
        if mz.get("slope") is not None:
            label = f"{m} (MZ b={mz['slope']:.2f})"
        ax.plot(mf, my, marker="o", ms=3.5, lw=1.0, color=colors[m], label=label)
        lo, hi = min(lo, mf.min(), my.min()), max(hi, mf.max(), my.max())
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.9, ls=":", label="45° line")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean forecast (bin)", fontsize=8)
    ax.set_ylabel("mean realized (bin)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return _figure(
        "fig-calibration",
        "Calibration (Mincer-Zarnowitz)",
        f"Rows scored by every model, split into {n_bins} equal-count bins of each model's forecast: "
        "mean realized against mean forecast, log-log. On the dotted 45° line a forecast is unbiased at that "
        "level; the legend gives the MZ slope (1 for an efficient forecast).",
        fig,
        "calibration: binned mean realized vs mean forecast with the 45 degree line",
    )


def _plot_symbol_differences(evaluation, models, colors, benchmark) -> dict | None:
    rows = evaluation.get("by_symbol") or []
    others = [m for m in models if m != benchmark]
    if not rows or not others:
        return None
    base = {r["symbol"]: r["qlike"] for r in rows if r["model"] == benchmark and r.get("qlike") is not None}
    diffs = {m: [] for m in others}
    for r in rows:
        if r["model"] in diffs and r.get("qlike") is not None and r["symbol"] in base:
            diffs[r["model"]].append(r["qlike"] - base[r["symbol"]])
    data = [np.asarray(diffs[m]) for m in others]
    if not any(len(d) for d in data):
        return None
    fig = _new_figure(max(4.0, 1.1 * len(others) + 2.0), 3.0)
    ax = fig.subplots()
    box = ax.boxplot(data, patch_artist=True, widths=0.55, showfliers=True, flierprops={"markersize": 2})
    for patch, m in zip(box["boxes"], others, strict=True):
        patch.set_facecolor(colors[m])
        patch.set_alpha(0.45)
    labels = [f"{m}\n{np.mean(d < 0):.0%} better" if len(d) else m for m, d in zip(others, data, strict=True)]
    ax.set_xticks(range(1, len(others) + 1))
    ax.set_xticklabels(labels, fontsize=7)
    ax.axhline(0.0, color=_BENCHMARK_COLOR, lw=0.8, ls="--")
    ax.set_ylabel(f"QLIKE minus {benchmark}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return _figure(
        "fig-by-symbol",
        "Loss by symbol",
        f"Per-symbol mean QLIKE minus the benchmark's ({benchmark}); below 0 the model is better for that "
        "symbol. The label gives the share of symbols where it is.",
        fig,
        "per-symbol QLIKE difference to the benchmark",
    )


def _plot_importance(imp) -> dict | None:
    need = {"factor", "importance"}
    if imp is None or imp.empty or not need <= set(imp.columns):
        return None
    imp = imp.copy()
    for c in ("method", "model"):
        if c not in imp.columns:
            imp[c] = ""
    groups = list(imp.groupby(["model", "method"], sort=True))[:MAX_IMPORTANCE_PANELS]
    n = len(groups)
    ncols = 1 if n == 1 else 2
    nrows = int(math.ceil(n / ncols))
    height = max(2.5, 0.19 * TOP_FACTORS + 0.8)
    fig = _new_figure(4.6 * ncols, height * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, ((model, method), g) in zip(axes, groups, strict=False):
        if "rank" in g.columns and g["rank"].notna().any():
            g = g.sort_values(["rank", "factor"])
        else:
            g = g.assign(_a=g["importance"].abs()).sort_values(["_a", "factor"], ascending=[False, True])
        g = g.head(TOP_FACTORS).iloc[::-1]
        vals = g["importance"].to_numpy(dtype=float)
        ax.barh(np.arange(len(g)), vals, color=np.where(vals >= 0, "#1f77b4", "#d62728"), height=0.7)
        ax.set_yticks(np.arange(len(g)))
        ax.set_yticklabels([str(f) for f in g["factor"]], fontsize=7)
        ax.set_title(" · ".join(str(s) for s in (model, method) if str(s)), fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _figure(
        "fig-importance",
        "Factor importance",
        f"Top {TOP_FACTORS} factors per model and method (by rank).",
        fig,
        "factor importance bar chart",
    )
