"""The HTML evaluation report: table numbers, embedded PNGs, no external references, store writes."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from l2vol.evaluation import evaluate_forecasts
from l2vol.evaluation.report import render_evaluation_report, write_evaluation_report

MODELS = ("lightgbm", "tabnet", "mlp")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_panel(*, seed: int = 0, symbols: int = 3, days: int = 4, models=MODELS) -> pd.DataFrame:
    """A few symbols x days x 48 five-minute buckets (A-share session, Asia/Shanghai), with some y = 0."""
    rng = np.random.default_rng(seed)
    offsets = pd.timedelta_range("09:35:00", "11:30:00", freq="5min").append(
        pd.timedelta_range("13:05:00", "15:00:00", freq="5min")
    )
    assert len(offsets) == 48
    dates = pd.bdate_range("2024-03-04", periods=days)
    ts = pd.DatetimeIndex([d + o for d in dates for o in offsets]).tz_localize("Asia/Shanghai")
    seasonal = np.tile(0.5 * np.cos(np.linspace(0.0, 2.0 * np.pi, 48)), days)
    frames = []
    for s in range(symbols):
        latent = np.zeros(len(ts))
        for i in range(1, len(ts)):
            latent[i] = 0.95 * latent[i - 1] + 0.2 * rng.normal()
        mu = -9.0 + 0.3 * s + seasonal + latent
        y = np.exp(mu + 0.5 * rng.normal(size=len(ts)))
        y[rng.random(len(ts)) < 0.02] = 0.0
        cols = {"symbol": f"60000{s}.SH", "ts": ts, "y": y, "har": np.exp(-8.9 + 0.3 * s + 0.6 * latent)}
        for k, m in enumerate(models):
            cols[m] = np.exp(mu + 0.125 + (0.1 + 0.15 * k) * rng.normal(size=len(ts)))
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def importance_frame() -> pd.DataFrame:
    rows = [
        {"factor": f"ofi_{i}", "method": method, "model": model, "importance": 1.0 / (i + 1), "rank": i + 1}
        for model, method in (("lightgbm", "shap"), ("tabnet", "mask"))
        for i in range(20)
    ]
    return pd.DataFrame(rows)


class _Page(HTMLParser):
    """Collects the comparison table (rows of cell texts, keyed by data-model), images and all URLs."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.headers: list[str] = []
        self.images: list[dict] = []
        self.urls: list[str] = []
        self.scripts = 0
        self.section_ids: list[str] = []
        self.title = ""
        self._in_table = False
        self._row: str | None = None
        self._col: str | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "action", "data", "poster"):
            if key in a:
                self.urls.append(a[key])
        if tag == "script":
            self.scripts += 1
        elif tag == "section":
            self.section_ids.append(a.get("id", ""))
        elif tag == "title":
            self._in_title = True
        elif tag == "table" and a.get("id") == "model-comparison":
            self._in_table = True
        elif tag == "tr" and self._in_table and "data-model" in a:
            self._row = a["data-model"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            self._col = a.get("data-col", "model")
            self.rows[self._row][self._col] = ""
        elif tag == "th" and self._in_table and "data-col" in a:
            self.headers.append(a["data-col"])
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "tr":
            self._row = None
        elif tag == "td":
            self._col = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._row is not None and self._col is not None:
            self.rows[self._row][self._col] += data
        if self._in_title:
            self.title += data


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel()


@pytest.fixture(scope="module")
def evaluation(panel) -> dict:
    return evaluate_forecasts(panel, benchmark="har")


@pytest.fixture(scope="module")
def html(panel, evaluation) -> str:
    return render_evaluation_report(evaluation, panel, importance=importance_frame(), title="Fold 0 <next bucket>")


def _sig(v: float) -> str:
    return f"{v:.4g}"


def _p(v: float) -> str:
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def test_comparison_table_has_one_row_per_model_with_formatted_numbers(html, evaluation):
    page = parse(html)
    assert list(page.rows) == [row["model"] for row in evaluation["table"]]
    assert set(page.rows) == {"har", *MODELS}
    assert page.headers[:6] == ["n_used", "n_zero_excluded", "rmspe", "qlike", "mse", "mae"]
    for flat in evaluation["table"]:
        cells = page.rows[flat["model"]]
        model = evaluation["models"][flat["model"]]
        assert cells["n_used"] == f"{flat['n_used']:,}"
        assert cells["n_zero_excluded"] == f"{model['n_zero_excluded']:,}"
        for key in ("rmspe", "qlike", "mse", "mae"):
            assert cells[key] == _sig(flat[key]), key
        assert cells["r2_oos"] == f"{flat['r2_oos']:+.4g}"
        assert cells["mz_intercept"] == f"{flat['mz_intercept']:+.4g}"
        assert cells["mz_slope"] == _sig(flat["mz_slope"])
        assert cells["mz_p"] == _p(flat["mz_p"])
        if flat["model"] == "har":
            assert cells["model"] == "har (benchmark)"
            assert cells["dm_qlike_stat"] == cells["dm_qlike_p"] == "—"
            assert cells["r2_oos"] == "+0"
        else:
            assert cells["model"] == flat["model"]
            for name in ("qlike", "mse"):
                assert cells[f"dm_{name}_stat"] == _sig(flat[f"dm_{name}_stat"])
                assert cells[f"dm_{name}_p"] == _p(flat[f"dm_{name}_p"])
    # the synthetic models are far better than this HAR: counts and p-values read as expected
    assert evaluation["n_zero_excluded"] > 0
    assert page.rows["lightgbm"]["dm_qlike_p"] == "<0.001"
    assert 'class="num sig-better" data-col="dm_qlike_p"' in html


def test_every_image_is_a_decodable_png_data_uri(html):
    from PIL import Image

    page = parse(html)
    # forecast vs realized, loss by time of day, calibration, by symbol, factor importance
    assert len(page.images) == 5
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
        assert img.get("alt")


def test_report_is_self_contained(html):
    page = parse(html)
    assert "http://" not in html.lower() and "https://" not in html.lower()
    assert page.scripts == 0
    assert all(u.startswith("data:") for u in page.urls), [u[:40] for u in page.urls if not u.startswith("data:")]
    assert "@import" not in html and "url(" not in html


def test_sections_title_escaping_and_method_note(html, evaluation):
    page = parse(html)
    assert page.title == "Fold 0 <next bucket>"  # parsed back from the escaped text
    assert "Fold 0 &lt;next bucket&gt;" in html and "<next bucket>" not in html
    for sid in (
        "comparison",
        "fig-forecast-vs-realized",
        "fig-loss-by-time-of-day",
        "fig-calibration",
        "fig-by-symbol",
        "fig-importance",
        "method",
    ):
        assert sid in page.section_ids
    assert f"lag\n  {evaluation['nw_lag']}" in html or f"lag {evaluation['nw_lag']}" in html
    for phrase in ("cross-sectional mean", "Newey-West", "Harvey-Leybourne-Newbold", "45°"):
        assert phrase in html


def test_without_importance_and_breakdowns(panel):
    ev = evaluate_forecasts(panel, benchmark="har", breakdowns=False)
    html = render_evaluation_report(ev, panel, title="t", sample_symbols=1)
    page = parse(html)
    assert "fig-importance" not in page.section_ids
    assert "fig-loss-by-time-of-day" not in page.section_ids
    assert len(page.images) == 2  # forecast vs realized, calibration
    assert "No factor importance was given." in html
    assert len(page.rows) == 4


def test_polars_input_and_five_models_stay_small():
    pl = pytest.importorskip("polars")
    models = ("lightgbm", "tabnet", "mlp", "lstm")
    df = synthetic_panel(seed=3, symbols=4, days=5, models=models)
    ev = evaluate_forecasts(df, benchmark="har")
    html = render_evaluation_report(ev, pl.from_pandas(df), importance=importance_frame(), title="five")
    page = parse(html)
    assert set(page.rows) == {"har", *models}
    assert len(html.encode()) < 2_000_000


def test_rejects_a_frame_that_is_not_an_evaluation(panel):
    with pytest.raises(ValueError, match="evaluate_forecasts"):
        render_evaluation_report({"rows": []}, panel, title="x")
    ev = evaluate_forecasts(panel, benchmark="har", breakdowns=False)
    with pytest.raises(ValueError, match="'y'"):
        render_evaluation_report(ev, panel.drop(columns="y"), title="x")


def test_extra_figures_are_embedded_and_checked(panel):
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    ev = evaluate_forecasts(panel, benchmark="har", breakdowns=False)
    extra = {
        "id": "training-mlp-fold0",
        "title": "mlp training",
        "caption": "history",
        "alt": "a",
        "png": buf.getvalue(),
    }
    page = render_evaluation_report(ev, panel, title="t", extra_figures=[extra])
    assert 'id="training-mlp-fold0"' in page
    assert base64.b64encode(buf.getvalue()).decode("ascii") in page
    with pytest.raises(ValueError, match=r"lacks \['png'\]"):
        render_evaluation_report(ev, panel, title="t", extra_figures=[{k: v for k, v in extra.items() if k != "png"}])


def test_write_evaluation_report_to_store(tmp_store, panel, evaluation):
    loc = write_evaluation_report(tmp_store, "runs/r1/report.html", evaluation, panel, title="stored")
    assert loc.endswith("runs/r1/report.html")
    raw = tmp_store.read_bytes("runs/r1/report.html")
    page = parse(raw.decode("utf-8"))
    assert page.title == "stored" and len(page.rows) == 4


def test_importing_the_module_loads_no_plotting_library():
    code = (
        "import sys, l2vol.evaluation.report; "
        "print([m for m in ('matplotlib', 'jinja2', 'matplotlib.pyplot') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_oracle_column_and_daily_rows():
    df = synthetic_panel(seed=5)
    df["oracle"] = df["lightgbm"] * 0.99
    ev = evaluate_forecasts(df, benchmark="har", oracle="oracle")
    page = parse(render_evaluation_report(ev, df, title="oracle"))
    assert page.headers[-1] == "oracle_gap_qlike"
    assert page.rows["oracle"]["model"] == "oracle (oracle)"
    assert page.rows["lightgbm"]["oracle_gap_qlike"] == _sig(ev["models"]["lightgbm"]["oracle_gap"]["qlike"])
    # one row per symbol and day: a single time-of-day bucket is drawn as bars
    daily = df[df["ts"].dt.hour.eq(15)].drop(columns="oracle")
    ev = evaluate_forecasts(daily, benchmark="har")
    page = parse(render_evaluation_report(ev, daily, title="daily"))
    assert "fig-loss-by-time-of-day" in page.section_ids and len(page.images) == 4
