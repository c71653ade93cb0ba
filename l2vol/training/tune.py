"""Black-box tuning with the DE core (DESIGN §6): LightGBM hyperparameters and ensemble blend weights.

Both tuners minimize validation QLIKE (:func:`l2vol.evaluation.metrics.qlike`, on the RV scale) and never see test
data: their configs have no test field, and only rows whose trading date lies in the given train/validation ranges
are read into the objective.

* :func:`tune_lightgbm` — DE over a LightGBM search space (:data:`DEFAULT_SPACE`). Each candidate is a
  :class:`l2vol.models.LightGBMRegressor` fit on the *fit slice* of the train range with early stopping (and the
  bias factor) on the *early-stopping slice*: the last ``early_stopping_days`` trading dates of the train range,
  separated from the fit slice by ``purge_days``. The validation range is used only to score candidates, so its
  QLIKE is not flattered by early stopping. Candidates of one generation are evaluated in a thread pool
  (``workers``; LightGBM releases the GIL, each model uses ``num_threads=1`` and ``deterministic=True``), and the
  result does not depend on the worker count.
* :func:`tune_ensemble` — DE over convex blend weights of member forecasts (columns of a validation-predictions
  table), parametrized by a softmax of bounded logits; compared with :func:`l2vol.models.simplex_least_squares`.

Outputs go to a local ``out`` directory with atomic writes (temp file + rename): ``best_params.json`` /
``weights.json``, ``history.json`` and ``convergence.png``. Re-running with the same config rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from l2vol.config import StrictModel, load_yaml_config
from l2vol.models.base import require_nonnegative_target
from l2vol.progress import Progress, ensure
from l2vol.training.de import DEConfig

KEY_COLUMNS = ("symbol", "ts", "date", "bucket_start", "industry")
_HORIZONS = ("next_bucket", "next_30min", "rest_of_day", "next_day")
#: Target columns written by the factor engine: never features.
TARGET_COLUMNS = tuple(f"rv_{h}" for h in _HORIZONS) + tuple(f"zero_{h}" for h in _HORIZONS)


class DateRange(StrictModel):
    """Inclusive range of trading dates (in ``timezone`` of the tuning config)."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(f"date range {self.start}..{self.end} is empty (end before start)")
        return self


class ParamSpec(StrictModel):
    """One searched hyperparameter: ``[low, high]``, searched in log10 scale when ``log``, rounded when ``integer``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _valid(self) -> ParamSpec:
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be < high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self

    def decode(self, u: float) -> float | int:
        """Value of the searched coordinate ``u`` (log10 value when ``log``), clamped and rounded."""
        v = 10.0**u if self.log else u
        v = min(max(v, self.low), self.high)
        return int(round(v)) if self.integer else float(v)

    @property
    def box(self) -> tuple[float, float]:
        return (math.log10(self.low), math.log10(self.high)) if self.log else (self.low, self.high)


#: LightGBM parameter name -> keyword of :class:`l2vol.models.LightGBMRegressor`.
LGB_TO_REGRESSOR = {
    "num_leaves": "num_leaves",
    "learning_rate": "learning_rate",
    "min_data_in_leaf": "min_child_samples",
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "lambda_l2": "reg_lambda",
}

#: The default search space (LightGBM names).
DEFAULT_SPACE: dict[str, ParamSpec] = {
    "num_leaves": ParamSpec(low=4, high=128, log=True, integer=True),
    "learning_rate": ParamSpec(low=0.005, high=0.3, log=True),
    "min_data_in_leaf": ParamSpec(low=5, high=300, log=True, integer=True),
    "feature_fraction": ParamSpec(low=0.3, high=1.0),
    "bagging_fraction": ParamSpec(low=0.3, high=1.0),
    "lambda_l2": ParamSpec(low=1e-3, high=100.0, log=True),
}


class SearchConfig(StrictModel):
    """DE budget and settings shared by the tuners (``pop_size * (generations + 1)`` evaluations)."""

    pop_size: int = Field(12, ge=4, le=1000)
    generations: int = Field(10, ge=0, le=10000)
    seed: int = 0
    de: DEConfig = Field(default_factory=DEConfig)


class TuneLightGBMConfig(StrictModel):
    """``l2vol tune lightgbm``: tune LightGBM on train rows, score on validation rows (no test field by design)."""

    data: str = Field(description="training-set parquet: symbol, ts, factor columns, target columns")
    target: str = Field("rv_next_bucket", description="target column (realized variance, RV scale)")
    features: list[str] | None = Field(None, description="feature columns; default: numeric non-key, non-target")
    train: DateRange
    val: DateRange
    purge_days: int = Field(
        1,
        ge=0,
        description="trading dates required between train end and val start, and "
        "left out between the fit slice and the early-stopping slice",
    )
    early_stopping_days: int = Field(
        1, ge=1, description="last trading dates of the train range used for early stopping and the bias factor"
    )
    timezone: str = Field("Asia/Shanghai", description="zone whose calendar date is a row's trading date")
    space: dict[str, ParamSpec] = Field(default_factory=lambda: dict(DEFAULT_SPACE))
    n_estimators: int = Field(1000, ge=1, description="maximum boosting rounds of every candidate")
    early_stopping_rounds: int = Field(50, ge=1)
    model_seed: int = Field(0, description="LightGBM seed of every candidate (bagging, feature sampling)")
    search: SearchConfig = Field(default_factory=SearchConfig)
    workers: int = Field(1, ge=1, le=256, description="candidates evaluated concurrently (threads)")
    out: str = Field(description="output directory")

    @field_validator("space")
    @classmethod
    def _known(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        unknown = sorted(set(v) - set(LGB_TO_REGRESSOR))
        if unknown:
            raise ValueError(f"unknown LightGBM parameters {unknown}; searchable: {sorted(LGB_TO_REGRESSOR)}")
        if not v:
            raise ValueError("search space is empty")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> TuneLightGBMConfig:
        if self.val.start <= self.train.end:
            raise ValueError(
                f"train {self.train.start}..{self.train.end} and val {self.val.start}..{self.val.end} overlap or are "
                "out of order: validation must start after the last training date"
            )
        from l2vol.evaluation.splits import horizon_days

        try:
            need = horizon_days(self.target)
        except ValueError:  # not a factor-engine target name: the caller's purge_days stands
            return self
        if self.purge_days < need:
            raise ValueError(
                f"purge_days={self.purge_days} is shorter than the {need} trading day(s) the target {self.target} "
                "reaches ahead: training targets would overlap the validation/early-stopping rows"
            )
        return self


class TuneEnsembleConfig(StrictModel):
    """``l2vol tune ensemble``: convex blend weights of member forecasts on validation predictions."""

    data: str = Field(description="parquet of validation predictions: one column per member (RV scale) + target")
    members: list[str] = Field(min_length=2, description="member forecast columns")
    target: str = Field("rv_next_bucket", description="realized target column (RV scale)")
    blend: Literal["arithmetic", "geometric"] = Field(
        "arithmetic", description="arithmetic: f = sum w_i f_i; geometric: log f = sum w_i log f_i"
    )
    logit_bound: float = Field(6.0, gt=0, description="weights = softmax(logits), logits in [-b, b]")
    search: SearchConfig = Field(default_factory=lambda: SearchConfig(pop_size=20, generations=60))
    out: str = Field(description="output directory")

    @field_validator("members")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"members listed twice: {sorted({m for m in v if v.count(m) > 1})}")
        return v


def load_tune_lightgbm_config(path: str | Path) -> TuneLightGBMConfig:
    return load_yaml_config(path, TuneLightGBMConfig)


def load_tune_ensemble_config(path: str | Path) -> TuneEnsembleConfig:
    return load_yaml_config(path, TuneEnsembleConfig)


# ---------------------------------------------------------------------------------------------------- output
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n").encode())


def _plot_convergence(path: Path, history: list[dict[str, float]], title: str, refs: dict[str, float]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    gens = [h["generation"] for h in history]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.0, 6.0), sharex=True)
    ax.plot(gens, [h["best"] for h in history], marker="o", label="best")
    ax.plot(gens, [h["median"] for h in history], marker=".", alpha=0.7, label="median")
    for (name, v), style in zip(refs.items(), ("--", ":", "-."), strict=False):
        if v is not None and math.isfinite(v):
            ax.axhline(v, ls=style, color="grey", label=name)
    ax.set_ylabel("validation QLIKE")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax2.plot(gens, [h["diversity"] for h in history], color="tab:green", label="diversity")
    ax2.set_ylabel("mean pairwise distance")
    ax2.set_xlabel("generation")
    ax3 = ax2.twinx()
    ax3.plot(gens, [h["mean_F"] for h in history], color="tab:red", ls="--", label="mean F")
    ax3.plot(gens, [h["mean_CR"] for h in history], color="tab:purple", ls=":", label="mean CR")
    ax3.set_ylabel("F / CR")
    fig.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    _atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------- data
def _trading_dates(ts: pd.Series, tz: str, where: str) -> np.ndarray:
    t = pd.to_datetime(ts)
    if t.isna().any():
        raise ValueError(
            f"{where}: column ts has {int(t.isna().sum())} missing values (first at row "
            f"{int(np.flatnonzero(t.isna().to_numpy())[0])})"
        )
    t = t.dt.tz_localize("UTC") if t.dt.tz is None else t.dt.tz_convert("UTC")
    return t.dt.tz_convert(tz).dt.date.to_numpy()


def _default_features(frame: pd.DataFrame, target: str) -> list[str]:
    return [
        str(c)
        for c in frame.columns
        if c not in KEY_COLUMNS and c != target and c not in TARGET_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
    ]


def _scorable(y: np.ndarray) -> np.ndarray:
    return np.isfinite(y) & (y > 0)


class _Slices:
    """The fit, early-stopping and validation rows of a :class:`TuneLightGBMConfig`, and what they span."""

    def __init__(self, cfg: TuneLightGBMConfig):
        path = Path(cfg.data)
        if not path.exists():
            raise FileNotFoundError(f"{path}: training-set parquet not found")
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        for col in ("symbol", "ts", cfg.target):
            if col not in names:
                raise KeyError(f"{path}: column {col!r} missing (columns: {names})")
        keys = pd.read_parquet(path, columns=["ts"])
        dates = _trading_dates(keys["ts"], cfg.timezone, str(path))
        all_dates = np.array(sorted(set(dates)))
        train_d = all_dates[(all_dates >= cfg.train.start) & (all_dates <= cfg.train.end)]
        val_d = all_dates[(all_dates >= cfg.val.start) & (all_dates <= cfg.val.end)]
        gap = all_dates[(all_dates > cfg.train.end) & (all_dates < cfg.val.start)]
        if len(train_d) == 0 or len(val_d) == 0:
            raise ValueError(
                f"{path}: no rows in {'train' if len(train_d) == 0 else 'val'} range "
                f"(data covers {all_dates[0]}..{all_dates[-1]})"
            )
        if len(gap) < cfg.purge_days:
            raise ValueError(
                f"{path}: only {len(gap)} trading dates between train end {cfg.train.end} and val start "
                f"{cfg.val.start}; purge_days={cfg.purge_days} needs at least that many (end train earlier)"
            )
        need = cfg.early_stopping_days + cfg.purge_days + 1
        if len(train_d) < need:
            raise ValueError(
                f"{path}: train range has {len(train_d)} trading dates; early_stopping_days="
                f"{cfg.early_stopping_days} + purge_days={cfg.purge_days} + 1 fit date need {need}"
            )
        es_d = train_d[-cfg.early_stopping_days :]
        fit_d = train_d[: len(train_d) - cfg.early_stopping_days - cfg.purge_days]
        self.dates = {"fit": fit_d, "early_stopping": es_d, "val": val_d}
        frame = pd.read_parquet(path)
        if cfg.target not in frame.columns:
            raise KeyError(f"{path}: target column {cfg.target!r} missing (columns: {list(frame.columns)})")
        require_nonnegative_target(frame[cfg.target].to_numpy(dtype=np.float64, na_value=np.nan), str(path), cfg.target)
        self.features = list(cfg.features) if cfg.features is not None else _default_features(frame, cfg.target)
        if cfg.target in self.features:
            raise ValueError(f"target column {cfg.target!r} is listed as a feature")
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise KeyError(f"{path}: feature columns {missing} missing")
        if not self.features:
            raise ValueError(f"{path}: no numeric feature column")
        self.parts: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
        for name, ds in self.dates.items():
            mask = np.isin(dates, ds)
            sub = frame.loc[mask, ["symbol", "ts", *self.features, cfg.target]]
            sub = sub.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
            y = sub[cfg.target].to_numpy(dtype=np.float64)
            self.parts[name] = (sub[self.features], y)
        del frame
        Xv, yv = self.parts["val"]
        keep = _scorable(yv)
        if keep.sum() < 1:
            raise ValueError(f"{path}: validation range has no row with a positive finite {cfg.target}")
        self.parts["val"] = (Xv.loc[keep].reset_index(drop=True), yv[keep])
        self.n_val_excluded = int((~keep).sum())
        for name in ("fit", "early_stopping"):
            if _scorable(self.parts[name][1]).sum() < 2:
                raise ValueError(f"{path}: {name} slice has fewer than 2 rows with a positive finite {cfg.target}")

    def describe(self) -> dict[str, Any]:
        return {
            name: {
                "start": str(ds[0]),
                "end": str(ds[-1]),
                "days": len(ds),
                "rows": len(self.parts[name][1]),
            }
            for name, ds in self.dates.items()
        } | {"val_rows_excluded_nonpositive_target": self.n_val_excluded}


# ---------------------------------------------------------------------------------------------------- LightGBM
def _regressor_kwargs(cfg: TuneLightGBMConfig, params: dict[str, float | int]) -> dict[str, Any]:
    kw = {LGB_TO_REGRESSOR[k]: v for k, v in params.items()}
    return kw | {
        "n_estimators": cfg.n_estimators,
        "early_stopping_rounds": cfg.early_stopping_rounds,
        "num_threads": 1,
        "seed": cfg.model_seed,
    }


def _evaluate_lightgbm(cfg: TuneLightGBMConfig, data: _Slices, params: dict[str, Any]) -> tuple[float, int]:
    """Validation QLIKE and best iteration of one candidate (inf when its forecasts are unusable)."""
    from l2vol.evaluation.metrics import qlike
    from l2vol.models import LightGBMRegressor

    model = LightGBMRegressor(features=data.features, **_regressor_kwargs(cfg, params))
    Xf, yf = data.parts["fit"]
    Xe, ye = data.parts["early_stopping"]
    Xv, yv = data.parts["val"]
    model.fit(Xf, yf, eval_set=(Xe, ye))
    f = model.predict(Xv)
    if not (np.isfinite(f).all() and (f > 0).all()):
        return math.inf, int(model.best_iteration_)
    return qlike(yv, f), int(model.best_iteration_)


def default_lightgbm_params() -> dict[str, float | int]:
    """The defaults of :class:`l2vol.models.LightGBMRegressor` in LightGBM names (the tuner's reference)."""
    import inspect

    from l2vol.models import LightGBMRegressor

    sig = inspect.signature(LightGBMRegressor.__init__).parameters
    return {k: sig[v].default for k, v in LGB_TO_REGRESSOR.items()}


def tune_lightgbm(config: TuneLightGBMConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """DE over ``config.space`` minimizing validation QLIKE; writes ``best_params.json``, ``history.json`` and
    ``convergence.png`` to ``config.out`` and returns the ``best_params.json`` document."""
    import torch

    from l2vol.training.de import minimize

    progress = ensure(progress)
    data = _Slices(config)
    names = [n for n in LGB_TO_REGRESSOR if n in config.space]  # canonical order: YAML key order does not matter
    specs = [config.space[n] for n in names]
    lo = torch.tensor([s.box[0] for s in specs], dtype=torch.float64)
    hi = torch.tensor([s.box[1] for s in specs], dtype=torch.float64)
    cache: dict[tuple, tuple[float, int]] = {}
    evaluations: list[dict[str, Any]] = []

    def decode(u: torch.Tensor) -> dict[str, float | int]:
        return {n: s.decode(float(v)) for n, s, v in zip(names, specs, u.tolist(), strict=True)}

    def key(p: dict[str, Any]) -> tuple:
        return tuple(round(float(p[n]), 12) for n in names)

    pool = ThreadPoolExecutor(max_workers=config.workers) if config.workers > 1 else None

    def evaluate(_fn: Callable, X: torch.Tensor) -> torch.Tensor:
        cands = [decode(row) for row in X]
        todo: dict[tuple, dict[str, Any]] = {}
        for p in cands:
            if key(p) not in cache:
                todo.setdefault(key(p), p)
        jobs = list(todo.items())
        if pool is None:
            results = [_evaluate_lightgbm(config, data, p) for _, p in jobs]
        else:
            results = list(pool.map(lambda kp: _evaluate_lightgbm(config, data, kp[1]), jobs))
        for (k, _), r in zip(jobs, results, strict=True):
            cache[k] = r
        out = []
        for p in cands:
            q, it = cache[key(p)]
            evaluations.append({"params": p, "val_qlike": q, "best_iteration": it})
            out.append(q)
        return torch.tensor(out, dtype=torch.float64)

    total = config.search.generations + 1
    progress.task("tune lightgbm", total)

    def on_generation(h: dict[str, float]) -> None:
        progress.advance("tune lightgbm", 1, note=f"gen {h['generation']} best QLIKE {h['best']:.5f}")

    try:
        res = minimize(
            lambda x: x,  # unused: ``evaluate`` scores the rows
            dim=len(names),
            bounds=(lo, hi),
            pop_size=config.search.pop_size,
            generations=config.search.generations,
            config=config.search.de,
            seed=config.search.seed,
            evaluate=evaluate,
            dtype=torch.float64,
            callback=on_generation,
        )
        default = default_lightgbm_params()
        default_q, default_it = _evaluate_lightgbm(config, data, default)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    best = decode(res.x)
    best_q, best_it = cache[key(best)]
    doc = {
        "best_params": best,
        "regressor_params": _regressor_kwargs(config, best),
        "val_qlike_best": best_q,
        "val_qlike_default": default_q,
        "default_params": default,
        "improvement": default_q - best_q,
        "best_iteration": best_it,
        "default_best_iteration": default_it,
        "target": config.target,
        "features": data.features,
        "slices": data.describe(),
        "evaluations": len(evaluations),
        "distinct_evaluations": len(cache),
        "workers": config.workers,
        "config": config.model_dump(mode="json"),
    }
    out = Path(config.out)
    _write_json(out / "history.json", {"generations": res.history, "evaluations": evaluations})
    _plot_convergence(
        out / "convergence.png",
        res.history,
        f"LightGBM tuning ({config.target}): DE {config.search.de.strategy}, {config.search.de.adaptation}",
        {"default params": default_q},
    )
    _write_json(out / "best_params.json", doc)
    return doc


# ---------------------------------------------------------------------------------------------------- ensemble
def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _blend(P: np.ndarray, W: np.ndarray, how: str) -> np.ndarray:
    """Forecasts ``(K, N)`` for weight rows ``W (K, m)`` of member forecasts ``P (N, m)``."""
    if how == "arithmetic":
        return W @ P.T
    return np.exp(W @ np.log(P).T)


def _qlike_rows(y: np.ndarray, F: np.ndarray) -> np.ndarray:
    r = y[None, :] / F
    return (r - np.log(r) - 1.0).mean(axis=1)


def tune_ensemble(config: TuneEnsembleConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """DE over softmax-parametrized blend weights minimizing validation QLIKE; writes ``weights.json``,
    ``history.json`` and ``convergence.png`` to ``config.out`` and returns the ``weights.json`` document."""
    import torch

    from l2vol.evaluation.metrics import qlike
    from l2vol.models import simplex_least_squares
    from l2vol.training.de import minimize

    progress = ensure(progress)
    path = Path(config.data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions parquet not found")
    frame = pd.read_parquet(path)
    missing = [c for c in [*config.members, config.target] if c not in frame.columns]
    if missing:
        raise KeyError(f"{path}: columns {missing} missing (columns: {list(frame.columns)})")
    y_all = frame[config.target].to_numpy(dtype=np.float64, na_value=np.nan)
    require_nonnegative_target(y_all, str(path), config.target)
    keep = _scorable(y_all)
    P = frame.loc[keep, config.members].to_numpy(dtype=np.float64)
    y = y_all[keep]
    if len(y) == 0:
        raise ValueError(f"{path}: no row with a positive finite {config.target}")
    bad = ~(np.isfinite(P) & (P > 0))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        row = int(np.flatnonzero(keep)[i])
        raise ValueError(
            f"{path}: member {config.members[j]!r} has a non-positive or non-finite forecast at row "
            f"{row} ({P[i, j]!r}); QLIKE needs positive forecasts"
        )
    m = len(config.members)
    progress.task("tune ensemble", config.search.generations + 1)

    def fitness(X: torch.Tensor) -> torch.Tensor:
        W = _softmax(X.to(torch.float64).numpy())
        return torch.from_numpy(_qlike_rows(y, _blend(P, W, config.blend)))

    res = minimize(
        fitness,
        dim=m,
        bounds=(-config.logit_bound, config.logit_bound),
        pop_size=config.search.pop_size,
        generations=config.search.generations,
        config=config.search.de,
        seed=config.search.seed,
        dtype=torch.float64,
        callback=lambda h: progress.advance("tune ensemble", 1, note=f"gen {h['generation']} best {h['best']:.5f}"),
    )
    w_de = _softmax(res.x.numpy())
    if config.blend == "arithmetic":
        w_ls = simplex_least_squares(P, y)
    else:
        w_ls = simplex_least_squares(np.log(P), np.log(y))
    w_eq = np.full(m, 1.0 / m)

    def score(w: np.ndarray) -> float:
        return qlike(y, _blend(P, w[None, :], config.blend)[0])

    doc = {
        "members": config.members,
        "blend": config.blend,
        "weights_de": dict(zip(config.members, w_de.tolist(), strict=True)),
        "weights_least_squares": dict(zip(config.members, w_ls.tolist(), strict=True)),
        "val_qlike_de": score(w_de),
        "val_qlike_least_squares": score(w_ls),
        "val_qlike_equal": score(w_eq),
        "val_qlike_members": {c: qlike(y, P[:, j]) for j, c in enumerate(config.members)},
        "rows": int(len(y)),
        "rows_excluded_nonpositive_target": int((~keep).sum()),
        "config": config.model_dump(mode="json"),
    }
    out = Path(config.out)
    _write_json(out / "history.json", {"generations": res.history})
    _plot_convergence(
        out / "convergence.png",
        res.history,
        f"ensemble weights ({config.blend} blend of {m} members)",
        {"least squares": doc["val_qlike_least_squares"], "equal weights": doc["val_qlike_equal"]},
    )
    _write_json(out / "weights.json", doc)
    return doc
