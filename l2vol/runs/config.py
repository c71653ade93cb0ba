"""The run configuration: one YAML file says which data, target, factor set, splits and models a run uses.

Unknown keys are errors (:class:`l2vol.config.StrictModel`); ``load_run_config`` names the file and the
offending key. The same file drives ``l2vol train`` and the demo's training stage; docs/runs.md has an example.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from l2vol.config import StrictModel, load_yaml_config

#: Targets of the ``targets`` table a run can forecast (DESIGN §3).
TARGETS = ("rv_next_bucket", "rv_next_30min", "rv_rest_of_day", "rv_next_day")
#: Candidate HAR benchmarks: regressors (daily HAR, or intraday HAR with the bucket RV and the seasonal
#: term) × OLS in logs or in levels.
HAR_VARIANTS = ("daily_log", "daily_levels", "intraday_log", "intraday_levels")


class DataSection(StrictModel):
    """Where the rows come from: the factor store (``factors`` + ``targets``), Feast and the raw store."""

    factors: str = Field(description="store URI holding the factors and targets tables (l2vol factors build)")
    feature_repo: str = Field("feature_repo", description="Feast feature repo directory (applied and materialized)")
    feast_env: Literal["local", "cluster"] | None = Field(
        None, description="Feast environment (default: L2VOL_FEAST_ENV, else local)"
    )
    feature_service: str = Field("vol_forecast_v1", description="versioned Feast feature service")
    engine: Literal["asof", "feast"] = Field(
        "asof", description="training-set join: asof (DuckDB, fast) or feast (get_historical_features)"
    )
    raw: str | None = Field(None, description="raw simulated store: its latent truth gives the oracle (optional)")
    start: dt.date | None = Field(None, description="first date of the run's rows (default: first target date)")
    end: dt.date | None = Field(None, description="last date of the run's rows (default: last target date)")
    timezone: str = Field("Asia/Shanghai", description="exchange time zone: time-of-day labels in the report")
    bucket_s: int = Field(300, ge=1, description="bucket length in seconds of the factor table (oracle windows)")

    @model_validator(mode="after")
    def _range(self) -> DataSection:
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class SplitsSection(StrictModel):
    """Walk-forward folds (:func:`l2vol.evaluation.walk_forward_splits`), in trading dates."""

    train_days: int = Field(ge=1)
    val_days: int = Field(ge=1)
    test_days: int = Field(ge=1)
    purge_days: int = Field(1, ge=1, description=">= the target horizon in trading days")
    embargo_days: int = Field(1, ge=1, description="extra dates between validation targets and test")
    step_days: int | None = Field(None, ge=1, description="default test_days: test windows tile the sample")
    mode: Literal["expanding", "rolling"] = "expanding"
    max_folds: int | None = Field(None, ge=1, description="keep only the last max_folds folds")
    feature_window_days: int = Field(22, ge=0, description="longest feature look-back (leakage check)")


class ModelSection(StrictModel):
    """Hyperparameters of one model of :data:`l2vol.models.MODELS`."""

    debug: bool = Field(False, description="start from the model's debug() parameters (trains in seconds)")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments (override debug ones)")


class RunConfig(StrictModel):
    """A training run: data, target, optional factor set, splits, models, seed and where runs go."""

    name: str = Field("run", min_length=1, description="label of the run (in the report title)")
    data: DataSection
    target: Literal["rv_next_bucket", "rv_next_30min", "rv_rest_of_day", "rv_next_day"] = "rv_next_bucket"
    factor_set: str | None = Field(
        None, description="factor set YAML: learners use its factors; its fit dates must precede every test fold"
    )
    splits: SplitsSection
    models: dict[str, ModelSection] = Field(default_factory=dict, description="per-model settings (by name)")
    har_variants: list[Literal["daily_log", "daily_levels", "intraday_log", "intraday_levels"]] | None = Field(
        None,
        description="HAR benchmarks to choose from on validation QLIKE (default: all four for intraday "
        "targets, daily_log and daily_levels for rv_next_day)",
    )
    harness: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig sections for --algorithm runs (budget, parallel_de, local_sgd, timeout_s, device)",
    )
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="intra-op threads of torch while a run fits/predicts its torch models (None: torch's default). "
        "Small tabular batches gain nothing from more threads, and on busy cores spinning threads slow them down "
        "many times over",
    )
    seed: int = 0
    root: str = Field(".", description="runs are written under <root>/runs/ unless a run URI is given")

    @model_validator(mode="after")
    def _models(self) -> RunConfig:
        from l2vol.models import MODELS

        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"models: unknown model(s) {unknown}; known: {sorted(MODELS)}")
        return self

    def model_params(self, name: str) -> dict[str, Any]:
        """Keyword arguments for model ``name``: its debug parameters when ``debug``, then ``params``; the
        run's seed for models that take one (unless given)."""
        from l2vol.models import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
        cls = MODELS[name]
        section = self.models.get(name, ModelSection())
        params = {**(cls.debug_params() if section.debug else {}), **section.params}
        if "seed" in cls._param_names() and "seed" not in params:
            params["seed"] = self.seed
        return params

    def har_candidates(self) -> list[str]:
        if self.har_variants:
            return list(dict.fromkeys(self.har_variants))
        if self.target == "rv_next_day":
            return ["daily_log", "daily_levels"]
        return list(HAR_VARIANTS)


def load_run_config(path: str | Path) -> RunConfig:
    """Load a run config YAML; errors name the file and the offending keys."""
    return load_yaml_config(path, RunConfig)
