"""The evaluation report in a real browser: headless Chromium opens the written file, the comparison table
and every image render, and the console has no errors.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium`` and
``chromium-driver`` packages; other paths through ``L2VOL_CHROMIUM`` / ``L2VOL_CHROMEDRIVER``) and the
``selenium`` package; skips without them, fails under ``L2VOL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import require_service

from l2vol.evaluation import evaluate_forecasts
from l2vol.evaluation.report import write_evaluation_report

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("L2VOL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("L2VOL_CHROMEDRIVER", "/usr/bin/chromedriver")
MODELS = ("lightgbm", "tabnet", "mlp")


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def _panel(seed: int = 1, symbols: int = 3, days: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = pd.timedelta_range("09:35:00", "11:30:00", freq="5min").append(
        pd.timedelta_range("13:05:00", "15:00:00", freq="5min")
    )
    dates = pd.bdate_range("2024-03-04", periods=days)
    ts = pd.DatetimeIndex([d + o for d in dates for o in offsets]).tz_localize("Asia/Shanghai")
    frames = []
    for s in range(symbols):
        latent = np.cumsum(0.1 * rng.normal(size=len(ts)))
        mu = -9.0 + 0.3 * s + latent
        y = np.exp(mu + 0.5 * rng.normal(size=len(ts)))
        y[rng.random(len(ts)) < 0.02] = 0.0
        cols = {"symbol": f"00000{s}.SZ", "ts": ts, "y": y, "har": np.exp(mu + 0.3 * rng.normal(size=len(ts)))}
        for k, m in enumerate(MODELS):
            cols[m] = np.exp(mu + 0.125 + (0.1 + 0.1 * k) * rng.normal(size=len(ts)))
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def driver() -> Iterator:
    require_service(
        importlib.util.find_spec("selenium") is not None, "selenium is not installed (pip install selenium)"
    )
    require_service(_executable(CHROMIUM), f"no Chromium binary at {CHROMIUM} (apt-get install chromium)")
    require_service(_executable(CHROMEDRIVER), f"no chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="l2vol-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_headless_chromium(driver, tmp_store, tmp_path):
    panel = _panel()
    evaluation = evaluate_forecasts(panel, benchmark="har")
    importance = pd.DataFrame(
        [
            {
                "factor": f"depth_imb_{i}",
                "method": "shap",
                "model": "lightgbm",
                "importance": 1 / (i + 1),
                "rank": i + 1,
            }
            for i in range(12)
        ]
    )
    location = write_evaluation_report(
        tmp_store, "runs/it/report.html", evaluation, panel, importance=importance, title="Browser check"
    )
    path = Path(location)
    assert path.is_file(), location

    driver.get(path.resolve().as_uri())
    assert driver.title == "Browser check"

    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#model-comparison tbody tr'))"
        ".map(r => [r.dataset.model, r.cells.length, r.getBoundingClientRect().height]);"
    )
    assert [r[0] for r in rows] == [row["model"] for row in evaluation["table"]]
    n_cols = driver.execute_script("return document.querySelectorAll('#model-comparison thead th').length;")
    assert all(r[1] == n_cols and r[2] > 0 for r in rows), rows
    p_lightgbm = driver.execute_script(
        "return document.querySelector('#model-comparison tr[data-model=lightgbm] td[data-col=dm_qlike_p]')"
        ".textContent;"
    )
    assert p_lightgbm == "<0.001"

    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,"
        " i.getBoundingClientRect().width]);"
    )
    assert len(images) == 5, images
    for alt, complete, width, height, shown in images:
        assert complete and width > 0 and height > 0 and shown > 0, (alt, complete, width, height, shown)

    logs = driver.get_log("browser")
    severe = [entry for entry in logs if entry.get("level") == "SEVERE"]
    assert not severe, severe
