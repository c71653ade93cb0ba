"""Train, evaluate and predict with a run: the layer joining the feature store, the models and the evaluation.

A run lives under one URI (a local directory, ``file://`` or ``s3://``; every file is written atomically
through :class:`l2vol.storage.DatasetStore`)::

    config.json          the run config (paths resolved), models, algorithm
    data.json            date range, folds (+ leakage checks), row counts, factor set, feature service + features,
                         the HAR variant chosen per fold on validation QLIKE
    training_set.parquet the point-in-time training set the folds were cut from (Feast feature service)
    models/fold-<k>/<name>/   each fitted model (model.save)
    predictions.parquet  symbol, ts, fold, y (realized target), one column per model: the test folds
    provenance.json      code version, data manifest hashes, lock hash, library versions, command, time
    metrics.json         (evaluate) evaluate_forecasts vs HAR, oracle gap, factor importance
    report.html          (evaluate) the HTML evaluation report

See docs/runs.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2vol.progress import Progress, ensure
from l2vol.runs.config import RunConfig
from l2vol.runs.fit import ALGORITHMS, TORCH_MODELS, choose_har, fit_estimator, label_columns, split_xy
from l2vol.storage import DatasetStore

if TYPE_CHECKING:
    import pandas as pd

    from l2vol.evaluation import Fold
    from l2vol.factors.factor_set import FactorSet

BENCHMARK = "har"
#: Models whose forecasts read a window of earlier rows of the same symbol (given along at predict time).
SEQUENCE_MODELS = ("lstm",)
TRAINING_SET = "training_set.parquet"
PREDICTIONS = "predictions.parquet"


@dataclass
class RunResult:
    """What :func:`train_run` wrote: the run URI, folds, models, HAR choices and row counts."""

    run_uri: str
    models: list[str]
    folds: list[dict]
    har: list[dict]
    rows: dict[str, int]
    paths: dict[str, str]
    seconds: float
    fit_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------- helpers
def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _abs(uri: str | None) -> str | None:
    """Local paths made absolute (a run is read back from anywhere); URIs unchanged."""
    if uri is None or "://" in uri:
        return uri
    return str(Path(uri).resolve())


def resolved(config: RunConfig) -> RunConfig:
    """A copy of ``config`` with local paths absolute."""
    c = config.model_copy(deep=True)
    c.data.factors = _abs(c.data.factors)
    c.data.raw = _abs(c.data.raw)
    c.data.feature_repo = _abs(c.data.feature_repo)
    c.factor_set = _abs(c.factor_set)
    c.root = _abs(c.root)
    return c


def config_hash(config: RunConfig, models: list[str]) -> str:
    doc = json.dumps({"config": config.model_dump(mode="json"), "models": models}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:8]


def default_run_uri(config: RunConfig, models: list[str], now: dt.datetime | None = None) -> str:
    """``<root>/runs/<UTC timestamp>-<short hash of config and models>``."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{config.root.rstrip('/')}/runs/{stamp}-{config_hash(config, models)}"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _read_parquet(store: DatasetStore, relpath: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.read_bytes(relpath)))


def _row_dates(ts: pd.Series, tz: str) -> np.ndarray:
    import pandas as pd

    return pd.to_datetime(ts, utc=True).dt.tz_convert(tz).dt.date.to_numpy()


def _model_list(models: list[str]) -> list[str]:
    from l2vol.models import MODELS

    if not models:
        raise ValueError("no model given: pass --model NAME (one or more of " + ", ".join(sorted(MODELS)) + ")")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    # The HAR benchmark is always trained (every comparison is against it), first.
    return [BENCHMARK, *[m for m in dict.fromkeys(models) if m != BENCHMARK]]


def _folds(config: RunConfig, dates: list[dt.date], factor_set: FactorSet | None) -> tuple[list[Fold], list[dict]]:
    from l2vol.evaluation import assert_fold_compatible, check_no_leakage, walk_forward_splits

    s = config.splits
    folds = walk_forward_splits(
        dates,
        train_days=s.train_days,
        val_days=s.val_days,
        test_days=s.test_days,
        purge_days=s.purge_days,
        embargo_days=s.embargo_days,
        step_days=s.step_days,
        mode=s.mode,
        horizon=config.target,
    )
    if s.max_folds is not None:
        folds = folds[-s.max_folds :]
    checks = []
    for fold in folds:
        checks.append(
            check_no_leakage(fold, feature_window_days=s.feature_window_days, target_horizon_days=config.target)
        )
        if factor_set is not None:
            assert_fold_compatible(factor_set.fit_start, factor_set.fit_end, fold)
    return folds, checks


def build_training_set(config: RunConfig, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Point-in-time training rows for the target's (symbol, ts) rows dated [start, end], from the run's
    feature service (``config.data.engine``: the DuckDB as-of join or Feast's get_historical_features)."""
    from l2vol.features import entities_from_targets, training_set

    d = config.data
    entities = entities_from_targets(DatasetStore(d.factors), start=start, end=end, targets=[config.target])
    return training_set(d.feature_repo, entities, d.feature_service, engine=d.engine, env=d.feast_env)


def _predict_rows(model, name: str, frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Forecasts of ``model`` for ``frame``'s ``rows``. Sequence models see every row of ``frame`` up to the
    last of ``rows`` (earlier buckets fill their windows; nothing later enters a causal window)."""
    if name in SEQUENCE_MODELS:
        X, _ = split_xy(frame, _target_of(frame))
        return model.predict(X)[rows]
    X, _ = split_xy(frame.iloc[rows], _target_of(frame))
    return model.predict(X)


def _target_of(frame: pd.DataFrame) -> str:
    return frame.attrs["target"]


@contextlib.contextmanager
def torch_threads(n: int | None, models: list[str]):
    """Run the block with ``n`` torch intra-op threads when a torch model is involved (restored afterwards);
    torch is not imported otherwise."""
    if n is None or not any(m in TORCH_MODELS for m in models):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- train
def train_run(
    config: RunConfig,
    models: list[str],
    *,
    run_uri: str | None = None,
    progress: Progress | None = None,
    algorithm: str | None = None,
    launcher: str = "none",
    nproc: int = 1,
    argv: list[str] | None = None,
    training_frame: pd.DataFrame | None = None,
) -> RunResult:
    """Train ``models`` (plus the HAR benchmark) on every walk-forward fold and write the run.

    Steps: resolve the folds over the target dates of the factor store (each checked by
    :func:`l2vol.evaluation.check_no_leakage`; a factor set fit on dates after a fold's validation window is
    refused by :func:`l2vol.evaluation.assert_fold_compatible` before anything is built); build the training
    set from the feature service; per fold, fit each model on the training dates with the validation dates
    as ``eval_set`` (HAR: the variant with the lowest validation QLIKE) and forecast the test dates.

    ``algorithm``/``launcher``/``nproc``: train the torch models (mlp, tabnet, lstm) through the distributed
    harness (:func:`l2vol.runs.fit.fit_estimator`); refused when no torch model is asked for.
    ``training_frame``: use this point-in-time training set instead of building one (tests, or a set built
    elsewhere); it must hold the run's target and the dates of the folds.
    """
    import pandas as pd

    from l2vol.factors.factor_set import FactorSet

    t_start = time.perf_counter()
    progress = ensure(progress)
    config = resolved(config)
    names = _model_list(models)
    if algorithm is None and (launcher != "none" or nproc != 1):
        raise ValueError("--launcher/--nproc apply with --algorithm (the distributed training harness)")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise ValueError(f"--algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    if algorithm is not None and not any(m in TORCH_MODELS for m in names):
        raise ValueError(
            f"--algorithm applies to torch models (mlp, tabnet, lstm); {', '.join(m for m in names if m != 'har')} "
            "train in-process (lightgbm with its own boosting)"
        )
    factor_set = FactorSet.load(config.factor_set) if config.factor_set else None
    fstore = DatasetStore(config.data.factors)
    dates = fstore.list_dates("targets", config.data.start, config.data.end)
    if not dates:
        raise ValueError(
            f"{fstore.location('table=targets')}: no committed targets in "
            f"[{config.data.start or '...'}, {config.data.end or '...'}] (run `l2vol factors build`)"
        )
    folds, checks = _folds(config, dates, factor_set)
    first, last = min(f.span[0] for f in folds), max(f.span[-1] for f in folds)

    progress.task("training set", 1)
    frame = build_training_set(config, first, last) if training_frame is None else training_frame.copy()
    progress.advance("training set", note=f"{len(frame):,} rows")
    if config.target not in frame.columns:
        raise ValueError(f"training set has no target column {config.target!r}")
    frame = frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    frame.attrs["target"] = config.target
    labels = set(label_columns(frame))
    features = [c for c in frame.columns if c not in labels and c not in ("symbol", "ts")]
    learner_features = None
    if factor_set is not None:
        missing = [f for f in factor_set.factors if f not in features]
        if missing:
            raise ValueError(
                f"factor set {factor_set.name!r}: factor(s) {missing} are not served by feature service "
                f"{config.data.feature_service!r}"
            )
        learner_features = list(factor_set.factors)

    uri = run_uri or default_run_uri(config, names)
    uri = _abs(uri)
    run = DatasetStore(uri)
    run.write_bytes(TRAINING_SET, _parquet_bytes(frame))

    row_dates = _row_dates(frame["ts"], config.data.timezone)
    has_target = frame[config.target].notna().to_numpy()
    progress.task("train", len(folds) * len(names))
    pred_parts, fold_docs, har_docs = [], [], []
    fit_seconds: dict[str, float] = {}
    with torch_threads(config.torch_threads, names):
        _fit_folds(
            config, names, frame, folds, checks, row_dates, has_target, learner_features, uri, progress,
            algorithm, launcher, nproc, pred_parts, fold_docs, har_docs, fit_seconds,
        )  # fmt: skip
    predictions = pd.concat(pred_parts, ignore_index=True)
    run.write_bytes(PREDICTIONS, _parquet_bytes(predictions))

    used_dates = [d for d in dates if first <= d <= last]
    data_doc = {
        "target": config.target,
        "date_range": {"start": first.isoformat(), "end": last.isoformat(), "dates": len(used_dates)},
        "factors": config.data.factors,
        "feature_service": {
            "name": config.data.feature_service,
            "repo": config.data.feature_repo,
            "engine": config.data.engine,
            "features": features,
        },
        "factor_set": None
        if factor_set is None
        else {
            "name": factor_set.name,
            "version": factor_set.version,
            "fit_start": factor_set.fit_start.isoformat(),
            "fit_end": factor_set.fit_end.isoformat(),
            "factors": factor_set.factors,
            "path": config.factor_set,
        },
        "training_set": {"rows": len(frame), "rows_with_target": int(has_target.sum()), "columns": frame.shape[1]},
        "folds": fold_docs,
        "har": har_docs,
        "models": names,
        "predictions": {"rows": len(predictions)},
    }
    run.write_json("data.json", data_doc)
    run.write_json(
        "config.json",
        {
            "config": config.model_dump(mode="json"),
            "models": names,
            "algorithm": algorithm,
            "launcher": launcher,
            "nproc": nproc,
        },
    )
    from l2vol.runs.provenance import manifest_hashes, provenance

    data_hashes = {t: manifest_hashes(fstore, t, used_dates) for t in ("factors", "targets")}
    run.write_json("provenance.json", provenance(data_hashes, argv=argv))
    return RunResult(
        run_uri=uri,
        models=names,
        folds=[{"index": d["index"], "describe": d["describe"], "rows": d["rows"]} for d in fold_docs],
        har=[{"fold": h["fold"], "chosen": h["chosen"], "columns": h["columns"]} for h in har_docs],
        rows={"training_set": len(frame), "predictions": len(predictions)},
        paths={k: run.location(k) for k in ("config.json", "data.json", PREDICTIONS, "provenance.json")},
        seconds=round(time.perf_counter() - t_start, 3),
        fit_seconds=fit_seconds,
    )


def _fit_folds(
    config: RunConfig,
    names: list[str],
    frame: pd.DataFrame,
    folds: list[Fold],
    checks: list[dict],
    row_dates: np.ndarray,
    has_target: np.ndarray,
    learner_features: list[str] | None,
    uri: str,
    progress: Progress,
    algorithm: str | None,
    launcher: str,
    nproc: int,
    pred_parts: list,
    fold_docs: list,
    har_docs: list,
    fit_seconds: dict,
) -> None:
    """The fold loop of :func:`train_run`: fit, save and forecast every model of every fold."""
    from l2vol.models import MODELS

    for fold, check in zip(folds, checks, strict=True):
        seg = fold.segment_of(row_dates)
        train = frame[(seg == "train") & has_target]
        val = frame[(seg == "val") & has_target]
        test_rows = np.flatnonzero(seg == "test")
        if len(train) == 0 or len(val) == 0 or len(test_rows) == 0:
            raise ValueError(
                f"{fold.describe()}: {len(train)} training, {len(val)} validation and {len(test_rows)} test rows "
                "with a target; every segment needs rows"
            )
        upto = frame.iloc[: test_rows.max() + 1]  # rows up to the end of the test window (sequence windows)
        upto.attrs["target"] = config.target
        pred = frame.iloc[test_rows][["symbol", "ts"]].copy()
        pred.insert(2, "fold", fold.index)
        pred.insert(3, "y", frame[config.target].to_numpy()[test_rows])
        for name in names:
            t0 = time.perf_counter()
            if name == BENCHMARK:
                model, record = choose_har(config.har_candidates(), train, val, target=config.target)
                har_docs.append({"fold": fold.index, **record})
            else:
                params = config.model_params(name)
                if learner_features is not None and "features" in MODELS[name]._param_names():
                    params.setdefault("features", learner_features)
                use_harness = algorithm is not None and name in TORCH_MODELS
                workdir = None
                if use_harness:
                    if not _is_local(uri):
                        raise ValueError("--algorithm needs a local run directory (the harness reads local Parquet)")
                    workdir = Path(uri.removeprefix("file://")) / "harness" / f"fold-{fold.index}" / name
                model = fit_estimator(
                    name,
                    params,
                    train,
                    val,
                    target=config.target,
                    algorithm=algorithm if use_harness else None,
                    launcher=launcher if use_harness else "none",
                    nproc=nproc if use_harness else 1,
                    workdir=workdir,
                    harness=config.harness if use_harness else None,
                )
            model.save(f"{uri.rstrip('/')}/models/fold-{fold.index}/{name}")
            pred[name] = _predict_rows(model, name, upto, test_rows)
            fit_seconds[f"fold-{fold.index}/{name}"] = round(time.perf_counter() - t0, 3)
            progress.advance("train", note=f"fold {fold.index} {name}")
        pred_parts.append(pred)
        fold_docs.append(
            {
                **fold.to_dict(),
                "describe": fold.describe(),
                "leakage_check": check,
                "rows": {"train": len(train), "val": len(val), "test": len(test_rows)},
            }
        )


# ---------------------------------------------------------------------------------------- read back
def load_run(run_uri: str) -> tuple[DatasetStore, RunConfig, dict, dict]:
    """The run's store, config, config.json document and data.json document."""
    run = DatasetStore(_abs(run_uri))
    if not run.exists("config.json") or not run.exists("data.json"):
        raise FileNotFoundError(f"{run.location()}: not a training run (no config.json/data.json; run `l2vol train`)")
    doc = run.read_json("config.json")
    return run, RunConfig.model_validate(doc["config"]), doc, run.read_json("data.json")


def load_models(run: DatasetStore, data: dict, fold: int | None = None) -> dict[str, Any]:
    """The fitted models of one fold (default: the last), by name."""
    from l2vol.models import Estimator

    k = data["folds"][-1]["index"] if fold is None else fold
    return {name: Estimator.load(run.location(f"models/fold-{k}/{name}")) for name in data["models"]}


def _horizon_periods(target: str, bucket_s: int, buckets_per_day: int) -> int:
    """The target horizon in periods of ``ts`` (bucket ends): how far apart two rows' target windows can
    still overlap, which the Newey-West lag must cover."""
    if target == "rv_next_bucket":
        return 1
    if target == "rv_next_30min":
        return max(1, math.ceil(1800 / bucket_s))
    if target == "rv_rest_of_day":
        return max(1, buckets_per_day)
    return max(1, 2 * buckets_per_day)  # next day: every bucket of a date shares the next date's RV


def _buckets(ts: pd.Series, tz: str) -> np.ndarray:
    import pandas as pd

    return pd.to_datetime(ts, utc=True).dt.tz_convert(tz).dt.strftime("%H:%M").to_numpy()


# ---------------------------------------------------------------------------------------- evaluate
def evaluate_run(run_uri: str, *, progress: Progress | None = None) -> dict:
    """Score the run's test-fold forecasts against HAR and write ``metrics.json`` and ``report.html``.

    :func:`l2vol.evaluation.evaluate_forecasts` with a Newey-West lag of at least the target horizon; the
    oracle gap when ``data.raw`` is a simulated store (oracle forecast of the same target from the latent
    state, :func:`l2vol.data.oracle.oracle_for_store`; scored on the rows where the oracle is defined);
    factor importance of the last fold's models on its test rows. Deterministic: re-running rewrites the
    same metrics. Returns the paths and the comparison table.
    """
    import pandas as pd

    from l2vol.evaluation import evaluate_forecasts
    from l2vol.evaluation.explain import factor_importance
    from l2vol.evaluation.report import write_evaluation_report

    progress = ensure(progress)
    progress.task("evaluate", 3)
    run, config, doc, data = load_run(run_uri)
    pred = _read_parquet(run, PREDICTIONS)
    models = [m for m in data["models"] if m in pred.columns]
    tz = config.data.timezone
    frame = pred.copy()
    frame["bucket"] = _buckets(frame["ts"], tz)
    per_day = frame.groupby([frame["symbol"], _row_dates(frame["ts"], tz)]).size()
    bpd = int(per_day.max()) if len(per_day) else 1
    h = _horizon_periods(config.target, config.data.bucket_s, bpd)
    oracle_col = None
    oracle_note = "no raw store configured (data.raw)"
    if config.data.raw:
        raw = DatasetStore(config.data.raw)
        if raw.exists("simulation/config.json"):
            from l2vol.data.oracle import oracle_for_store

            orc = oracle_for_store(raw, bucket_s=config.data.bucket_s).select(["symbol", "ts", config.target])
            orc = orc.to_pandas().rename(columns={config.target: "oracle"})
            orc["ts"] = pd.to_datetime(orc["ts"], utc=True)
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
            frame = frame.merge(orc, on=["symbol", "ts"], how="left")
            oracle_col = "oracle"
            oracle_note = f"oracle from the simulator's latent state ({raw.location()})"
            n_oracle = int(frame["oracle"].notna().sum())
            if n_oracle == 0:
                raise ValueError(f"{raw.location()}: the oracle matches none of the run's test rows (another market?)")
        else:
            oracle_note = f"{raw.location()}: not a simulated store (no simulation/config.json)"
    progress.advance("evaluate", note="metrics")
    cols = models + ([oracle_col] if oracle_col else [])
    evaluation = evaluate_forecasts(
        frame,
        benchmark=BENCHMARK,
        horizon_periods=h,
        forecast_columns=cols,
        oracle=oracle_col,
    )
    fitted = load_models(run, data)
    training = _read_parquet(run, TRAINING_SET)
    last = data["folds"][-1]
    dates = _row_dates(training["ts"], tz)
    lo, hi = dt.date.fromisoformat(last["test"]["start"]), dt.date.fromisoformat(last["test"]["end"])
    X = training[(dates >= lo) & (dates <= hi)]
    X = X.drop(columns=label_columns(X)).reset_index(drop=True)
    with torch_threads(config.torch_threads, list(fitted)):
        importance = factor_importance(fitted, X, n_steps=16, max_rows=512)
    progress.advance("evaluate", note="factor importance")
    imp_records = json.loads(importance.to_json(orient="records"))
    metrics = {
        "run": run.location(),
        "target": config.target,
        "benchmark": BENCHMARK,
        "horizon_periods": h,
        "oracle": oracle_note if oracle_col else None,
        "oracle_note": oracle_note,
        "har": [{"fold": r["fold"], "chosen": r["chosen"], "columns": r["columns"]} for r in data["har"]],
        "evaluation": evaluation,
        "importance": imp_records,
        "importance_skipped": importance.attrs.get("skipped", []),
    }
    training_runs, training_figures = _harness_outputs(run)
    if training_runs:
        metrics["training"] = training_runs
    metrics_loc = run.write_json("metrics.json", metrics)
    fs = data["feature_service"]
    chosen = ", ".join(sorted({r["chosen"] for r in data["har"]}))
    report_loc = write_evaluation_report(
        run,
        "report.html",
        evaluation,
        frame,
        importance=importance if len(importance) else None,
        title=f"{config.name}: {config.target} forecasts vs HAR",
        subtitle=(
            f"{len(data['folds'])} walk-forward fold(s), test {data['folds'][0]['test']['start']} .. {last['test']['end']}; "
            f"feature service {fs['name']} ({len(fs['features'])} features); HAR variant chosen on validation: {chosen}; "
            f"{oracle_note}"
        ),
        extra_figures=training_figures,
    )
    progress.advance("evaluate", note="report")
    return {
        "metrics": metrics_loc,
        "report": report_loc,
        "training": training_runs,
        "table": evaluation["table"],
        "oracle": oracle_col is not None,
    }


def _harness_outputs(run: DatasetStore) -> tuple[list[dict], list[dict]]:
    """What the distributed training harness left under ``harness/fold-<k>/<model>/out`` for models trained with
    ``--algorithm``: a summary per (fold, model) for metrics.json (algorithm, processes, steps, validation loss,
    final diversity, shares of wall time in training / communication / DE) and its convergence + diversity plot for
    the report. Runs without ``--algorithm`` have none."""
    import re

    runs: list[dict] = []
    figures: list[dict] = []
    paths = [p for p in run.list_files("harness") if p.endswith("/out/metrics.json")]
    for rel in paths:
        m = re.match(r"harness/fold-(\d+)/([^/]+)/out/metrics\.json$", rel)
        if not m:
            continue
        fold, model = int(m.group(1)), m.group(2)
        doc = run.read_json(rel)
        t = doc.get("timings", {})
        entry = {
            "fold": fold,
            "model": model,
            "algorithm": doc.get("algorithm"),
            "world_size": doc.get("world_size"),
            "val": doc.get("val"),
            "final_diversity": doc.get("final_diversity"),
            "timings": t,
        }
        runs.append(entry)
        png_rel = rel.rsplit("/", 1)[0] + "/history.png"
        if run.exists(png_rel):
            share = t.get("de_comm_share")
            share_note = f"; DE + communication {share:.1%} of wall time" if isinstance(share, float) else ""
            figures.append(
                {
                    "id": f"training-{model}-fold{fold}",
                    "title": f"{model}, fold {fold}: {doc.get('algorithm')} over {doc.get('world_size')} process(es)",
                    "caption": "Training history from the distributed harness: validation-subsample fitness per "
                    "generation/sync point and, for Parallel_DE, population diversity (mean pairwise parameter "
                    f"distance){share_note}.",
                    "alt": f"training history of {model} on fold {fold}",
                    "png": run.read_bytes(png_rel),
                }
            )
    return runs, figures


# ----------------------------------------------------------------------------------------- predict
def predict_run(
    run_uri: str,
    *,
    dates: tuple[dt.date | str, dt.date | str] | None = None,
    online_symbols: list[str] | None = None,
    out: str | None = None,
) -> pd.DataFrame:
    """Forecasts of the run's last-fold models.

    ``dates=(start, end)``: batch over the target rows of the factor store dated [start, end] (training
    set from the run's feature service, same engine), with the realized target ``y`` where known;
    ``df.attrs["monitoring"]`` then holds a forecast-vs-realized summary per model (QLIKE, MSE, bias on the
    rows realized so far). ``online_symbols``: live, from the online store (:func:`l2vol.features.online_batch`),
    one row per symbol stamped with the time of the read. ``out``: also write the frame as Parquet there.
    """

    if (dates is None) == (online_symbols is None):
        raise ValueError("predict: give exactly one of dates=(start, end) or online_symbols=[...]")
    run, config, doc, data = load_run(run_uri)
    fitted = load_models(run, data)
    with torch_threads(config.torch_threads, list(fitted)):
        result = _predict(run, config, data, fitted, dates, online_symbols)
    if out is not None:
        import posixpath

        target = _abs(out)
        DatasetStore(posixpath.dirname(target.rstrip("/")) or ".").write_bytes(
            posixpath.basename(target.rstrip("/")), _parquet_bytes(result)
        )
    return result


def _predict(run, config: RunConfig, data: dict, fitted: dict, dates, online_symbols) -> pd.DataFrame:
    import pandas as pd

    if dates is not None:
        start, end = (d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in dates)
        if end < start:
            raise ValueError(f"predict: end {end} is before start {start}")
        fstore = DatasetStore(config.data.factors)
        first = start
        if any(m in SEQUENCE_MODELS for m in fitted):  # one earlier date fills the sequence windows
            earlier = fstore.list_dates("targets", None, start - dt.timedelta(days=1))
            first = earlier[-1] if earlier else start
        frame = build_training_set(config, first, end)
        frame = frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
        frame.attrs["target"] = config.target
        rd = _row_dates(frame["ts"], config.data.timezone)
        rows = np.flatnonzero((rd >= start) & (rd <= end))
        if len(rows) == 0:
            raise ValueError(f"predict: no target rows dated {start}..{end} in {fstore.location()}")
        result = frame.iloc[rows][["symbol", "ts"]].reset_index(drop=True)
        result["y"] = frame[config.target].to_numpy()[rows]
        upto = frame.iloc[: rows.max() + 1]
        upto.attrs["target"] = config.target
        for name, model in fitted.items():
            result[name] = _predict_rows(model, name, upto, rows)
        result.attrs["monitoring"] = monitoring_summary(result, list(fitted))
    else:
        from l2vol.features import online_batch

        feats = online_batch(config.data.feature_repo, list(online_symbols), config.data.feature_service,
                             env=config.data.feast_env)  # fmt: skip
        feats = feats.reset_index(drop=True)
        if "ts" not in feats.columns:
            feats.insert(1, "ts", pd.Timestamp.now(tz="UTC"))
        served = [c for c in feats.columns if c not in ("symbol", "ts")]
        known = feats[served].notna().any(axis=1).to_numpy()  # a symbol never materialized has only nulls
        result = feats[["symbol", "ts"]].copy()
        for name, model in fitted.items():
            result[name] = np.where(known, model.predict(feats), np.nan)
        result.attrs["unknown_symbols"] = feats.loc[~known, "symbol"].astype(str).tolist()
    result.attrs["run"] = run.location()
    result.attrs["fold"] = data["folds"][-1]["index"]
    return result


def monitoring_summary(frame: pd.DataFrame, models: list[str]) -> dict:
    """Forecast vs realized so far: per model QLIKE, MSE and mean forecast / mean realized on the rows with a
    positive realized target and a forecast from every model (same rows for all)."""
    from l2vol.evaluation import mse, qlike

    y = frame["y"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(y) & (y > 0)
    for m in models:
        ok &= np.isfinite(frame[m].to_numpy(dtype=np.float64)) & (frame[m].to_numpy(dtype=np.float64) > 0)
    out: dict[str, Any] = {"n_rows": len(frame), "n_realized": int(ok.sum()), "models": {}}
    if not ok.any():
        return out
    for m in models:
        f = frame[m].to_numpy(dtype=np.float64)[ok]
        out["models"][m] = {
            "qlike": float(qlike(y[ok], f)),
            "mse": float(mse(y[ok], f)),
            "bias": float(f.mean() / y[ok].mean()),
        }
    return out
