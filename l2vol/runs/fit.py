"""Fitting one model on one fold: in-process (``model.fit``) or through the distributed training harness.

:func:`fit_estimator` is the one place a run fits a model, so a torch model can be trained by Parallel_DE,
DDP or local SGD (``algorithm=``) without the fold loop knowing. :func:`choose_har` fits the candidate HAR
benchmarks and keeps the one with the lowest validation QLIKE.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from l2vol.models import Estimator

#: Models the training harness (l2vol.training) can train with --algorithm.
TORCH_MODELS = ("mlp", "tabnet", "lstm")
ALGORITHMS = ("single", "ddp", "local_sgd", "parallel_de")
#: Columns of a training set that are never model inputs: labels and their zero flags.
LABEL_PREFIXES = ("rv_next", "rv_rest", "zero_")


def label_columns(frame: pd.DataFrame) -> list[str]:
    """Target and zero-flag columns of a training set (``rv_next_*``, ``rv_rest_of_day``, ``zero_*``)."""
    return [c for c in frame.columns if str(c).startswith(LABEL_PREFIXES)]


def split_xy(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Model inputs (every column but the labels; keys stay for the models that need them) and the target."""
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the training set (columns: {list(frame.columns)})")
    X = frame.drop(columns=label_columns(frame))
    return X, frame[target].to_numpy(dtype=np.float64, na_value=np.nan)


def fit_estimator(
    name: str,
    params: dict[str, Any],
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    *,
    target: str = "rv_next_bucket",
    algorithm: str | None = None,
    launcher: str = "none",
    nproc: int = 1,
    workdir: str | Path | None = None,
    harness: dict[str, Any] | None = None,
) -> Estimator:
    """Fit model ``name`` (of :data:`l2vol.models.MODELS`) with ``params`` on ``train_df``, validating on
    ``val_df`` (early stopping, bias correction, ensemble weights see only it).

    ``algorithm=None``: ``model.fit(X, y, eval_set=(X_val, y_val))`` in this process. ``algorithm`` set
    (``single``, ``ddp``, ``local_sgd``, ``parallel_de``; torch models only): the fold's train/val rows are
    written to Parquet under ``workdir``, with a :class:`l2vol.training.config.TrainConfig` YAML, and
    :func:`l2vol.training.launch.launch` runs the harness (``launcher="torchrun"`` with ``nproc`` processes);
    the model the harness saved under ``<workdir>/out/model`` is loaded and returned. The harness takes
    ``lr``/``batch_size``/``weight_decay`` (its ``optim``) and ``seed`` from ``params``; ``harness`` overrides
    other TrainConfig sections (``budget``, ``parallel_de``, ``local_sgd``, ``timeout_s``, ``device``).
    """
    from l2vol.models import MODELS

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if algorithm is None:
        if launcher != "none" or nproc != 1:
            raise ValueError("--launcher/--nproc apply with --algorithm (the distributed training harness)")
        X, y = split_xy(train_df, target)
        Xv, yv = split_xy(val_df, target)
        with warnings.catch_warnings():
            # A factor with no value on a short training window (e.g. a 22-day lag on the first days) is
            # standardized to 0 by the models; numpy's empty-slice warnings about it are noise here.
            for msg in ("All-NaN slice", "Mean of empty slice", "Degrees of freedom"):
                warnings.filterwarnings("ignore", message=msg, category=RuntimeWarning)
            return MODELS[name](**params).fit(X, y, eval_set=(Xv, yv))
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r}: expected one of {ALGORITHMS}")
    if name not in TORCH_MODELS:
        raise ValueError(
            f"--algorithm applies to torch models (mlp, tabnet, lstm); {name} trains in-process"
            + (" with its own boosting" if name == "lightgbm" else "")
        )
    if workdir is None:
        raise ValueError("fit_estimator(algorithm=...) needs a workdir for the harness's data, config and output")
    return _fit_with_harness(
        name, params, train_df, val_df, target=target, algorithm=algorithm, launcher=launcher, nproc=nproc,
        workdir=Path(workdir), harness=harness,
    )  # fmt: skip


def _fit_with_harness(
    name: str,
    params: dict[str, Any],
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    *,
    target: str,
    algorithm: str,
    launcher: str,
    nproc: int,
    workdir: Path,
    harness: dict[str, Any] | None,
) -> Estimator:
    import yaml

    try:
        from l2vol.training.config import TrainConfig
        from l2vol.training.launch import launch
    except ImportError as exc:  # the harness is optional at this layer; say what is missing
        raise RuntimeError(
            f"--algorithm {algorithm} needs the training harness (l2vol.training.config / l2vol.training.launch): {exc}"
        ) from exc
    from l2vol.models import Estimator

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, frame in (("train", train_df), ("val", val_df)):
        p = workdir / f"{split}.parquet"
        tmp = p.with_name(p.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(p)
        paths[split] = str(p)
    # The harness owns the training hyperparameters (optim: lr, batch size, weight decay; the seed; the
    # device); the model class keeps the architecture. ``harness`` overrides sections of the TrainConfig.
    model_params = dict(params)
    seed = int(model_params.pop("seed", 0))
    features = model_params.pop("features", None)
    model_params.pop("device", None)
    optim = {k: model_params.pop(k) for k in ("lr", "batch_size", "weight_decay") if k in model_params}
    if name == "tabnet":
        optim.pop("weight_decay", None)
    doc: dict[str, Any] = {
        "model": name,
        "model_params": model_params,
        "algorithm": algorithm,
        "data": {"train": paths["train"], "val": paths["val"], "target": target, "features": features},
        "optim": optim,
        "seed": seed,
        "out": str(workdir / "out"),
    }
    for key, value in (harness or {}).items():
        if key in ("model", "model_params", "algorithm", "data", "out"):
            raise ValueError(f"harness.{key}: set by the run (fold data, model, --algorithm), not by harness")
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    cfg = TrainConfig.model_validate(doc)
    cfg_path = workdir / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    launch(cfg_path, launcher=launcher, nproc=nproc, algorithm=algorithm)
    return Estimator.load(str(workdir / "out" / "model"))


# ------------------------------------------------------------------------------------------- HAR
def har_params(variant: str, available: set[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """HAR keyword arguments of a named variant, and the regressors it drops.

    ``available``: regressors with at least one value in the training rows. A regressor the history is
    too short for (``har_rv_m`` needs 22 dates, ``rv_seasonal_next`` 22, ``har_rv_w`` 5) has none; it is
    dropped, and the drop is recorded with the choice, so a short sample still has a (shorter) HAR
    benchmark rather than none.
    """
    from l2vol.models import DAILY_HAR, INTRADAY_HAR

    regressors, transform = variant.split("_", 1)
    if regressors not in ("daily", "intraday") or transform not in ("log", "levels"):
        raise ValueError(f"HAR variant {variant!r}: expected daily_log, daily_levels, intraday_log or intraday_levels")
    columns = list(DAILY_HAR if regressors == "daily" else INTRADAY_HAR)
    dropped = [c for c in columns if available is not None and c not in available]
    kept = [c for c in columns if c not in dropped]
    if not kept:
        raise ValueError(f"HAR variant {variant!r}: none of its regressors {columns} has a value in the training rows")
    return {"columns": kept, "log": transform == "log"}, dropped


def choose_har(
    variants: list[str], train_df: pd.DataFrame, val_df: pd.DataFrame, *, target: str
) -> tuple[Estimator, dict[str, Any]]:
    """Fit each HAR variant on the training rows and keep the lowest validation QLIKE.

    Only ``train_df`` and ``val_df`` are seen: the choice cannot depend on the test fold. Variants are
    compared on the validation rows every variant forecasts. Returns the chosen fitted model and a record
    (``chosen``, per-variant ``val_qlike``, ``n_val``, dropped regressors, errors)."""
    from l2vol.evaluation import qlike

    X = train_df.drop(columns=label_columns(train_df))
    available = {c for c in X.columns if X[c].notna().any()}
    fitted: dict[str, Estimator] = {}
    record: dict[str, Any] = {"candidates": {}}
    for v in variants:
        entry: dict[str, Any] = {}
        try:
            params, dropped = har_params(v, available)
            entry |= {"columns": params["columns"], "log": params["log"], "dropped": dropped}
            fitted[v] = fit_estimator("har", params, train_df, val_df, target=target)
        except ValueError as exc:
            entry["error"] = str(exc)
        record["candidates"][v] = entry
    if not fitted:
        errors = "; ".join(f"{v}: {e.get('error')}" for v, e in record["candidates"].items())
        raise ValueError(f"no HAR benchmark could be fit on the training rows ({errors})")
    # Compare on the validation rows every fitted variant forecasts (same rows for all).
    Xv, yv = split_xy(val_df, target)
    preds = {v: m.predict(Xv) for v, m in fitted.items()}
    common = np.isfinite(yv) & (yv > 0)
    for f in preds.values():
        common &= np.isfinite(f) & (f > 0)
    scores = {v: (float(qlike(yv[common], f[common])) if common.any() else math.inf) for v, f in preds.items()}
    chosen = min(scores, key=lambda v: (scores[v], variants.index(v)))
    for v, s in scores.items():
        record["candidates"][v]["val_qlike"] = s if math.isfinite(s) else None
    record |= {"chosen": chosen, "n_val": int(common.sum()), "columns": fitted[chosen].columns}
    return fitted[chosen], record
