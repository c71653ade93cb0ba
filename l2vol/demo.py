"""The embedded default pipeline behind ``make demo`` / ``l2vol demo``.

simulate a small A-share Level2 market with injected defects → clean and validate (quarantine +
data-quality report) → daily bars → factors and targets → factor mining (IC report, factor set) →
Feast on SQLite (apply, materialize, a point-in-time training set, an online read of the whole
universe) → a training run (naive, HAR, LightGBM, TabNet on walk-forward folds, l2vol.runs) → its
evaluation (metrics vs HAR with the simulator's oracle gap, the HTML report). Later stages (Parallel_DE,
KFP's local runner) plug in here as they land.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from l2vol.config import DemoConfig, SimulationConfig
from l2vol.progress import Progress, ensure


def demo_config(out: str, *, quick: bool = False) -> DemoConfig:
    # Days: one warm-up date (the daily HAR lag) + train | purge | val | purge + embargo | test (see
    # demo_run_config); the full demo has room for three walk-forward folds.
    if quick:
        sim = SimulationConfig(symbols=6, days=8, seed=7, inject_defects=True)
    else:
        sim = SimulationConfig(symbols=12, days=11, seed=7, inject_defects=True)
    return DemoConfig(out=out, simulation=sim)


def run_demo(out: str | Path, *, quick: bool = False, progress: Progress | None = None) -> dict:
    """Run the demo pipeline under ``out`` (``<out>/raw``, ``<out>/clean``) and return a summary."""
    from l2vol.data.bars import derive_bars
    from l2vol.data.cleaning import clean_store
    from l2vol.data.simulator import simulate_market
    from l2vol.factors.engine import build_factors
    from l2vol.factors.mining import factor_report
    from l2vol.storage import DatasetStore

    progress = ensure(progress)
    cfg = demo_config(str(out), quick=quick)
    root = Path(cfg.out).resolve() if "://" not in cfg.out else cfg.out
    raw_uri = f"{root}/raw" if isinstance(root, str) else f"file://{root / 'raw'}"
    clean_uri = f"{root}/clean" if isinstance(root, str) else f"file://{root / 'clean'}"
    feat_uri = f"{root}/features" if isinstance(root, str) else f"file://{root / 'features'}"
    if isinstance(root, Path):
        for sub in ("raw", "clean", "features"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    raw, clean, feat = DatasetStore(raw_uri), DatasetStore(clean_uri), DatasetStore(feat_uri)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sim = simulate_market(cfg.simulation, raw, progress=progress)
    timings["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    quality = clean_store(raw, clean, profile="ashare", progress=progress)
    timings["clean_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bars = derive_bars(clean, progress=progress)
    timings["bars_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    factors = build_factors(clean, feat, progress=progress)
    timings["factors_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    mining = factor_report(feat, progress=progress)
    timings["factor_report_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    feast = _feast_stage(Path(root) if isinstance(root, Path) else None, feat)
    timings["feast_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    training = _training_stage(Path(root) if isinstance(root, Path) else None, feat, raw, feast, quick=quick,
                               progress=progress)  # fmt: skip
    timings["train_evaluate_s"] = time.perf_counter() - t0

    q = quality.to_dict()
    clean_rows = {}
    for table in clean.list_tables():
        clean_rows[table] = sum(clean.read_manifest(table, d)["rows"] for d in clean.list_dates(table))
    return {
        "raw": raw.location(),
        "clean": clean.location(),
        "config": cfg.model_dump(mode="json"),
        "simulation": sim,
        "clean_rows": clean_rows,
        "by_rule": q.get("by_rule", []),
        "totals": q.get("totals", {}),
        "injected": _injected_by_table(raw),
        "bars": bars,
        "report": q["report"],
        "features": feat.location(),
        "factors": {k: v for k, v in factors.items() if k in ("dates", "rows", "factors")},
        "factor_report": mining.summary(n_top=10),
        "feast": feast,
        "training": training,
        "timings": timings,
    }


def _injected_by_table(raw) -> dict[str, dict[str, int]]:
    """Defects the simulator injected, per table and rule (empty when none were injected)."""
    if not raw.exists("simulation/defects.json"):
        return {}
    return raw.read_json("simulation/defects.json").get("by_table", {})


def _feature_repo_source() -> Path:
    """The project's feature_repo/ (declarations), next to the l2vol package in a checkout or image."""
    repo = Path(__file__).resolve().parents[1] / "feature_repo"
    if not (repo / "definitions.py").is_file():
        raise FileNotFoundError(f"{repo}: the Feast feature repo is missing (run from a checkout or the image)")
    return repo


def _feast_stage(root: Path | None, feat) -> dict:
    """Feast on SQLite over the demo's factors: a private copy of feature_repo/ under the demo directory."""
    import shutil

    import numpy as np

    from l2vol.features import (
        apply,
        entities_from_targets,
        materialize,
        online,
        online_batch,
        training_set,
        write_training_set,
    )

    if root is None:
        return {"skipped": "the Feast stage of the demo needs a local --out directory"}
    repo = root / "feature_repo"
    src = _feature_repo_source()
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy2(src / name, repo / name)
    dates = feat.list_dates("factors")
    start, end = dates[0].isoformat(), (dates[-1] + dt.timedelta(days=1)).isoformat()
    applied = apply(repo, env="local")
    mat = materialize(repo, start, end, factors=feat, env="local")
    entities = entities_from_targets(feat)
    train = training_set(repo, entities, env="local")
    train_path = write_training_set(train, root / "training_set.parquet")
    symbols = sorted(entities["symbol"].unique().tolist())
    sdk = online(repo, symbols, env="local")
    fast = online_batch(repo, symbols, env="local")
    cols = [c for c in sdk.columns if c != "symbol"]
    # Same values (the SDK returns int64/None where the batch path returns nullable Int64/NaN).
    a = sdk[cols].astype("float64").to_numpy()
    b = fast[cols].astype("float64").to_numpy()
    same = bool(a.shape == b.shape and np.array_equal(a, b, equal_nan=True))
    feature_cols = [c for c in train.columns if c not in entities.columns]
    return {
        "repo": str(repo),
        "views": applied.get("feature_views", applied.get("views")),
        "materialized": {"start": start, "end": end},
        "export": mat.get("export"),
        "training_set": str(train_path),
        "training_rows": len(train),
        "training_features": len(feature_cols),
        "training_null_share": float(train[feature_cols].isna().to_numpy().mean()) if feature_cols else None,
        "online_symbols": len(symbols),
        "online_fast_equals_sdk": same,
    }


#: Models the demo trains (the HAR benchmark is always added by the run).
DEMO_MODELS = ["naive", "har", "lightgbm", "tabnet"]


def demo_run_config(feat_uri: str, repo: Path, raw_uri: str, root: Path, first_date: dt.date, *, quick: bool):
    """The demo's run config: next-bucket RV, rows from the second date on (the first has no daily HAR lag),
    one walk-forward fold (quick: train 2 | purge 1 | val 1 | purge 1 + embargo 1 | test 1 dates) or three
    (full: train 3+ dates, step 1). Debug-sized LightGBM and TabNet; the full demo trains somewhat longer."""
    from l2vol.runs import DataSection, ModelSection, RunConfig, SplitsSection

    if quick:
        splits = SplitsSection(train_days=2, val_days=1, test_days=1, purge_days=1, embargo_days=1)
        models = {"lightgbm": ModelSection(debug=True), "tabnet": ModelSection(debug=True)}
    else:
        splits = SplitsSection(train_days=3, val_days=1, test_days=1, purge_days=1, embargo_days=1, step_days=1)
        models = {
            "lightgbm": ModelSection(debug=True, params={"n_estimators": 200, "early_stopping_rounds": 20}),
            "tabnet": ModelSection(debug=True, params={"max_epochs": 20}),
        }
    return RunConfig(
        name="demo",
        data=DataSection(factors=feat_uri, feature_repo=str(repo), raw=raw_uri, start=first_date),
        target="rv_next_bucket",
        splits=splits,
        models=models,
        seed=0,
        root=str(root),
    )


def _training_stage(root: Path | None, feat, raw, feast: dict, *, quick: bool, progress: Progress) -> dict:
    """Train naive, HAR, LightGBM and TabNet on the demo market (l2vol.runs), evaluate, write the report.

    Hook for the distributed harness: ``train_run(..., algorithm="parallel_de", launcher="torchrun",
    nproc=2)`` trains the torch models (TabNet) through :func:`l2vol.runs.fit_estimator` instead of in-process.
    """
    from l2vol.runs import evaluate_run, train_run

    if root is None or "skipped" in feast:
        return {"skipped": "the training stage of the demo needs the Feast stage (a local --out directory)"}
    dates = feat.list_dates("targets")
    cfg = demo_run_config(feat.location(), Path(feast["repo"]), raw.location(), root, dates[1], quick=quick)
    result = train_run(cfg, DEMO_MODELS, run_uri=str(root / "runs" / "demo"), progress=progress)
    ev = evaluate_run(result.run_uri, progress=progress)
    pde = _parallel_de_stage(cfg, root, quick=quick, progress=progress)
    return {
        "run": result.run_uri,
        "models": result.models,
        "folds": result.folds,
        "har": result.har,
        "table": ev["table"],
        "oracle": ev["oracle"],
        "metrics": ev["metrics"],
        "report": ev["report"],
        "parallel_de": pde,
    }


#: Parallel_DE settings of the demo: 2 local processes (torchrun, gloo on CPU), 2 individuals per rank (P = 4),
#: k = 25 local Adam steps (lr 0.01, as TabNet is usually trained) between generations.
DEMO_PDE_NPROC = 2


def _parallel_de_stage(cfg, root: Path, *, quick: bool, progress: Progress) -> dict:
    """TabNet trained by Parallel_DE over 2 local processes (torchrun) on the same folds, evaluated against HAR.

    The run's report shows the convergence and population-diversity plot of every fold's Parallel_DE training.
    """
    from l2vol.runs import evaluate_run, train_run

    harness = {
        "optim": {"lr": 0.01, "batch_size": 128},
        "budget": {"steps": 150 if quick else 300},
        "parallel_de": {"individuals_per_rank": 2, "local_steps": 25},
        "timeout_s": 120.0,
    }
    pde_cfg = cfg.model_copy(update={"name": "demo-parallel-de", "harness": harness})
    result = train_run(
        pde_cfg,
        ["tabnet"],
        run_uri=str(root / "runs" / "demo-parallel-de"),
        algorithm="parallel_de",
        launcher="torchrun",
        nproc=DEMO_PDE_NPROC,
        progress=progress,
    )
    ev = evaluate_run(result.run_uri, progress=progress)
    training = ev["training"]
    return {
        "run": result.run_uri,
        "nproc": DEMO_PDE_NPROC,
        "table": ev["table"],
        "report": ev["report"],
        "training": [
            {
                "fold": t["fold"],
                "model": t["model"],
                "algorithm": t["algorithm"],
                "world_size": t["world_size"],
                "val_loss": (t.get("val") or {}).get("loss"),
                "final_diversity": t.get("final_diversity"),
                "de_comm_share": (t.get("timings") or {}).get("de_comm_share"),
            }
            for t in training
        ],
    }
