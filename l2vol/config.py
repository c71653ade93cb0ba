"""Typed configuration (pydantic, ``extra="forbid"``): a typo in a config file is an error, not a default.

Environment variables are used only for endpoints and credentials (see :mod:`l2vol.storage.uri`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SimulationConfig(StrictModel):
    """What ``l2vol data simulate`` produces."""

    symbols: int = Field(20, ge=1, le=5000, description="number of instruments")
    days: int = Field(5, ge=1, le=2000, description="number of trading days (XSHG calendar)")
    start: dt.date = Field(dt.date(2024, 1, 2), description="first trading date on or after this date")
    seed: int = Field(0, description="random seed; the output is a pure function of config + seed")
    calibration: str = Field("default", description="named, versioned calibration of the latent process")
    inject_defects: bool = Field(False, description="inject known defects per cleaning rule")
    snapshot_interval_s: int = Field(3, ge=1, le=60, description="snapshot cadence in seconds")
    with_orders: bool = Field(False, description="also write the optional tick-by-tick orders table")


class DemoConfig(StrictModel):
    """The embedded default pipeline run by ``make demo`` / ``l2vol demo``."""

    out: str = Field("demo_out", description="root URI of the demo run")
    simulation: SimulationConfig = Field(
        default_factory=lambda: SimulationConfig(symbols=12, days=6, seed=7, inject_defects=True)
    )


def load_yaml_config(path: str | Path, model: type[StrictModel]) -> Any:
    """Load ``path`` (YAML) into ``model``; errors name the file and the offending keys."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"{p}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML ({exc})") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{p}: {problems}") from exc
