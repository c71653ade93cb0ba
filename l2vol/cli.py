"""The ``l2vol`` command. Thin: parse arguments, call one library function, print the result.

Heavy libraries (torch, feast, kfp, lightgbm, captum, pyarrow-heavy modules) are imported inside the
command that needs them, so ``l2vol --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="l2vol",
    help="High-frequency volatility factors and forecasts from China A-share Level2 data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Level2 data: simulate a market, ingest vendor files, clean and validate, derive daily bars.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
factors_app = typer.Typer(
    help="High-frequency volatility factors: build factor and target tables, mine them (IC, decay, redundancy).",
    no_args_is_help=True,
)
app.add_typer(factors_app, name="factors")
features_app = typer.Typer(
    help="Feast feature store: apply definitions, materialize, point-in-time training sets, online reads. "
    "L2VOL_FEAST_ENV=local (SQLite, default) or cluster (PostgreSQL registry, Redis online store).",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")
from l2vol.training.cli import tune_app  # noqa: E402

app.add_typer(tune_app, name="tune")
RepoOpt = Annotated[Path, typer.Option("--repo", help="The Feast feature repo directory.")]

console = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]


@contextmanager
def _progress(enabled: bool = True):
    from l2vol.progress import rich_progress

    with rich_progress(console, enabled=enabled) as p:
        yield p


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors():
    """Turn expected failures (bad input, storage, config) into one clear line and exit code 2."""
    from l2vol.storage import StoreError

    try:
        yield
    except (ValueError, KeyError, StoreError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _fail(str(msg))


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _store(uri: str):
    from l2vol.storage import DatasetStore

    return DatasetStore(uri)


def _counts_table(title: str, rows: dict[str, int]) -> Table:
    t = Table(title=title)
    t.add_column("table")
    t.add_column("rows", justify="right")
    for k, v in rows.items():
        t.add_row(k, f"{v:,}")
    return t


# --------------------------------------------------------------------------------------- data simulate
@data_app.command("simulate")
def data_simulate(
    out_uri: Annotated[str, typer.Option("--out", help="Store URI to write to (path, file:// or s3://).")],
    symbols: Annotated[int, typer.Option(help="Number of instruments.")] = 20,
    days: Annotated[int, typer.Option(help="Number of trading days (XSHG calendar).")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same market, byte for byte.")] = 0,
    start: Annotated[str, typer.Option(help="First trading date on or after this date (YYYY-MM-DD).")] = "2024-01-02",
    calibration: Annotated[str, typer.Option(help="Named calibration of the latent process.")] = "default",
    inject_defects: Annotated[
        bool, typer.Option("--inject-defects", help="Inject known defects per cleaning rule (recorded).")
    ] = False,
    with_orders: Annotated[bool, typer.Option("--with-orders", help="Also write tick-by-tick orders.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a realistic A-share Level2 market (snapshots, trades, universe, latent truth).

    Deterministic per seed. Writes one date partition at a time, so memory stays bounded as days grow.
    With --inject-defects, known numbers of defects per cleaning rule are written and listed in
    simulation/defects.json.
    """
    import datetime as dt

    from l2vol.config import SimulationConfig
    from l2vol.data.simulator import simulate_market

    with _user_errors():
        cfg = SimulationConfig(
            symbols=symbols,
            days=days,
            seed=seed,
            start=dt.date.fromisoformat(start),
            calibration=calibration,
            inject_defects=inject_defects,
            with_orders=with_orders,
        )
        store = _store(out_uri)
        with _progress(not as_json) as prog:
            summary = simulate_market(cfg, store, progress=prog)
    if as_json:
        _emit_json(summary)
        return
    out.print(_counts_table(f"simulated market → {store.location()}", summary.get("rows", {})))
    if summary.get("defects"):
        out.print(f"injected defects: {summary['defects']}")


# ----------------------------------------------------------------------------------------- data ingest
@data_app.command("ingest")
def data_ingest(
    fmt: Annotated[str, typer.Option("--format", help="sse-l2, szse-l2, lobster, optiver or bars-csv.")],
    src: Annotated[Path, typer.Option(help="Source file or directory.")],
    out_uri: Annotated[str, typer.Option("--out", help="Store URI to write the raw canonical tables to.")],
    vendor: Annotated[
        str | None,
        typer.Option(
            help="Vendor profile: a name (e.g. sse-l2-int, szse-l2-int for prices x10000) or a YAML file "
            "mapping columns, units and encoding. Default: the format's own profile."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest vendor files into canonical raw tables (streamed; one date partition committed at a time).

    Malformed files (missing columns, wrong types, truncated, empty, wrong encoding) fail with the file,
    row and problem, and leave no partial partition. Accepted columns: docs/ingest.md.
    """
    from l2vol.data.loaders import ingest

    with _user_errors():
        store = _store(out_uri)
        with _progress(not as_json) as prog:
            summary = ingest(fmt, src, store, progress=prog, vendor=vendor)
    if as_json:
        _emit_json(summary)
        return
    out.print(_counts_table(f"ingested {fmt} from {src} → {store.location()}", summary.get("rows", {})))


# ------------------------------------------------------------------------------------ clean / validate
def _print_quality(summary, title: str) -> None:
    d = summary.to_dict()
    t = Table(title=title)
    for col in ("table", "rule", "action", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for row in d.get("by_rule", []):
        t.add_row(row["table"], row["rule"], row["action"], f"{row['rows']:,}")
    out.print(t)
    for table, tot in d.get("totals", {}).items():
        out.print(
            f"{table}: in {tot['rows_in']:,} = kept {tot['kept']:,} + quarantined {tot['quarantined']:,}"
            f" (repaired {tot.get('repaired', 0):,}, flagged {tot.get('flagged', 0):,})"
        )
    out.print(f"data-quality report: [bold]{d['report']}[/bold]")


@data_app.command("clean")
def data_clean(
    src: Annotated[str, typer.Option(help="Store URI holding the raw canonical tables.")],
    out_uri: Annotated[str, typer.Option("--out", help="Store URI for clean tables, quarantine and reports.")],
    profile: Annotated[str, typer.Option(help="Market profile: ashare, lobster or optiver.")] = "ashare",
    start: Annotated[str | None, typer.Option(help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (YYYY-MM-DD).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the cleaning rules (quarantine / repair / flag, fixed order) and write clean tables.

    Rejected rows go to the quarantine table with their rule; rows in = kept + quarantined per file and
    rule; a data-quality report (JSON + HTML) is written per date under reports/quality/.
    """
    from l2vol.data.cleaning import clean_store

    with _user_errors():
        src_store, dst_store = _store(src), _store(out_uri)
        with _progress(not as_json) as prog:
            summary = clean_store(src_store, dst_store, profile=profile, start=start, end=end, progress=prog)
    if as_json:
        _emit_json(summary.to_dict())
        return
    _print_quality(summary, f"cleaned {src_store.location()} → {dst_store.location()}")


@data_app.command("validate")
def data_validate(
    uri: Annotated[str, typer.Argument(help="Store URI to check.")],
    profile: Annotated[str, typer.Option(help="Market profile: ashare, lobster or optiver.")] = "ashare",
    start: Annotated[str | None, typer.Option(help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (YYYY-MM-DD).")] = None,
    report_uri: Annotated[
        str | None, typer.Option("--report", help="Store URI for the reports (default: the checked store).")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 1 if any row would be quarantined.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a store against the cleaning rules without changing it; write the data-quality report."""
    from l2vol.data.cleaning import validate_store

    with _user_errors():
        store = _store(uri)
        rstore = _store(report_uri) if report_uri else None
        with _progress(not as_json) as prog:
            summary = validate_store(store, profile=profile, start=start, end=end, report_store=rstore, progress=prog)
    if as_json:
        _emit_json(summary.to_dict())
    else:
        _print_quality(summary, f"validated {store.location()}")
    if strict and sum(summary.counts(action="quarantine").values()) > 0:
        raise typer.Exit(1)


@data_app.command("bars")
def data_bars(
    src: Annotated[str, typer.Option(help="Store URI with canonical snapshots and trades (clean).")],
    start: Annotated[str | None, typer.Option(help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (YYYY-MM-DD).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Derive daily bars (bars_1d) from Level2 snapshots and trades, one date at a time."""
    from l2vol.data.bars import derive_bars

    with _user_errors():
        store = _store(src)
        with _progress(not as_json) as prog:
            summary = derive_bars(store, start=start, end=end, progress=prog)
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"bars_1d written to {store.location()}: {summary}")


@data_app.command("ls")
def data_ls(
    uri: Annotated[str, typer.Argument(help="Store URI.")],
    as_json: JsonOpt = False,
) -> None:
    """List the committed tables of a store with their dates and row counts (from manifests)."""
    with _user_errors():
        store = _store(uri)
        listing = {}
        for table in store.list_tables():
            dates = store.list_dates(table)
            rows = sum(store.read_manifest(table, d)["rows"] for d in dates)
            listing[table] = {
                "dates": len(dates),
                "first": str(dates[0]) if dates else None,
                "last": str(dates[-1]) if dates else None,
                "rows": rows,
            }
    if as_json:
        _emit_json(listing)
        return
    t = Table(title=store.location())
    for col in ("table", "dates", "first", "last", "rows"):
        t.add_column(col)
    for k, v in listing.items():
        t.add_row(k, str(v["dates"]), str(v["first"]), str(v["last"]), f"{v['rows']:,}")
    out.print(t)


# ------------------------------------------------------------------------------------------- factors
@factors_app.command("build")
def factors_build(
    src: Annotated[str, typer.Option(help="Store URI with clean canonical snapshots and trades.")],
    out_uri: Annotated[str, typer.Option("--out", help="Store URI for the factors and targets tables.")],
    factors: Annotated[
        Path | None, typer.Option(help="Factor set YAML (from `l2vol factors report`); default: every factor.")
    ] = None,
    bucket: Annotated[str, typer.Option(help="Trading-clock bucket length, e.g. 5min.")] = "5min",
    start: Annotated[str | None, typer.Option(help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (YYYY-MM-DD).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute bucket-level factors (ts = bucket end, strictly causal) and the separate targets table.

    Streams one date at a time; multi-day factors (HAR lags, seasonal RV) come from a compact daily
    summary carried forward, so a date is never re-read.
    """
    from l2vol.factors.engine import build_factors
    from l2vol.factors.factor_set import FactorSet

    with _user_errors():
        names = FactorSet.load(factors).factors if factors else None
        src_store, dst_store = _store(src), _store(out_uri)
        with _progress(not as_json) as prog:
            summary = build_factors(
                src_store, dst_store, start=start, end=end, factors=names, bucket=bucket, progress=prog
            )
    if as_json:
        _emit_json(summary)
        return
    out.print(f"factors and targets written to {dst_store.location()}")
    out.print({k: v for k, v in summary.items() if k in ("dates", "rows", "factors", "seconds")})


def _top_table(frame, title: str) -> Table:
    t = Table(title=title)
    for c in frame.columns:
        t.add_column(c, justify="left" if c in ("factor", "family") else "right")
    for row in frame.iter_rows():
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    return t


@factors_app.command("report")
def factors_report(
    src: Annotated[str, typer.Option(help="Store URI holding the factors and targets tables.")],
    out_uri: Annotated[str | None, typer.Option("--out", help="Store URI for the report (default: --src).")] = None,
    start: Annotated[str | None, typer.Option(help="First date of the fit window (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date of the fit window (YYYY-MM-DD).")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Target(s), e.g. rv_next_bucket; first is primary. Default: all.")
    ] = None,
    corr_threshold: Annotated[float, typer.Option(help="|rank corr| above which factors are redundant.")] = 0.9,
    top: Annotated[int, typer.Option(help="How many top factors to print.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Factor mining: IC/RankIC per target (Newey-West t, ICIR), IC decay by horizon, turnover,
    correlation clustering with redundancy pruning → a factor set YAML recording its fit dates, and an
    HTML report with plots."""
    from l2vol.factors.mining import factor_report

    with _user_errors():
        store = _store(src)
        with _progress(not as_json) as prog:
            rep = factor_report(
                store,
                start=start,
                end=end,
                targets=target or None,
                out=_store(out_uri) if out_uri else None,
                corr_threshold=corr_threshold,
                progress=prog,
            )
    if as_json:
        _emit_json(rep.summary(n_top=top))
        return
    out.print(_top_table(rep.top(top), f"top factors by |RankIC| against {rep.primary_target}"))
    for k, v in rep.paths.items():
        out.print(f"{k}: [bold]{v}[/bold]")


# ------------------------------------------------------------------------------------------ features
@features_app.command("apply")
def features_apply(repo: RepoOpt = Path("feature_repo"), as_json: JsonOpt = False) -> None:
    """Register the repo's entities, sources, feature views and services (removes ones no longer declared)."""
    from l2vol.features import apply

    with _user_errors():
        summary = apply(repo)
    _emit_json(summary) if as_json else out.print(summary)


@features_app.command("materialize")
def features_materialize(
    start: Annotated[str, typer.Option(help="Start of the range (YYYY-MM-DD or ISO time, UTC).")],
    end: Annotated[str, typer.Option(help="End of the range (YYYY-MM-DD or ISO time, UTC).")],
    repo: RepoOpt = Path("feature_repo"),
    factors: Annotated[
        str | None, typer.Option(help="Store URI of the factors table: export it to the offline layout first.")
    ] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Only what is new since the last materialization.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load the latest feature values of a date range into the online store (SQLite or Redis)."""
    from l2vol.features import materialize, quiet_native_exit

    quiet_native_exit()
    with _user_errors():
        summary = materialize(repo, start, end, incremental=incremental, factors=factors)
    _emit_json(summary) if as_json else out.print(summary)


@features_app.command("training-set")
def features_training_set(
    output: Annotated[Path, typer.Option("--output", help="Parquet file to write the training set to.")],
    targets: Annotated[
        str | None, typer.Option(help="Store URI with the targets table: its (symbol, ts) rows are the entities.")
    ] = None,
    entities: Annotated[
        Path | None, typer.Option(help="Parquet/CSV entity file (symbol, ts, labels...) instead of --targets.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First date of the targets (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date of the targets (YYYY-MM-DD).")] = None,
    service: Annotated[str, typer.Option(help="Feature service.")] = "vol_forecast_v1",
    engine: Annotated[
        str, typer.Option(help="feast (get_historical_features) or asof (same join in DuckDB, faster).")
    ] = "feast",
    repo: RepoOpt = Path("feature_repo"),
    as_json: JsonOpt = False,
) -> None:
    """Point-in-time correct training set: for each entity (symbol, T) the latest feature row with ts <= T."""
    import pandas as pd

    from l2vol.features import entities_from_targets, quiet_native_exit, training_set, write_training_set

    quiet_native_exit()
    with _user_errors():
        if (targets is None) == (entities is None):
            raise ValueError("give exactly one of --targets URI or --entities FILE")
        if targets is not None:
            ent = entities_from_targets(_store(targets), start=start, end=end)
        elif entities.suffix == ".csv":
            ent = pd.read_csv(entities)
        else:
            ent = pd.read_parquet(entities)
        df = training_set(repo, ent, service, engine=engine)
        write_training_set(df, output)
    summary = {"rows": len(df), "columns": list(df.columns), "output": str(output), "service": service}
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"training set: {len(df):,} rows x {df.shape[1]} columns → {output}")


@features_app.command("online")
def features_online(
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. 600519.SH 000001.SZ.")],
    service: Annotated[str, typer.Option(help="Feature service.")] = "vol_forecast_v1",
    fast: Annotated[bool, typer.Option("--fast", help="Batch read straight from the online store.")] = False,
    repo: RepoOpt = Path("feature_repo"),
    as_json: JsonOpt = False,
) -> None:
    """Latest online feature values for a list of symbols (the SDK, or the fast batch path with --fast)."""
    from l2vol.features import online, online_batch

    with _user_errors():
        df = (online_batch if fast else online)(repo, symbols, service)
    if as_json:
        _emit_json(json.loads(df.to_json(orient="records", date_format="iso")))
        return
    t = Table(title=f"online features ({service})")
    t.add_column("feature")
    for s in df["symbol"]:
        t.add_column(str(s), justify="right")
    for col in [c for c in df.columns if c != "symbol"]:
        t.add_row(col, *[f"{v:.6g}" if isinstance(v, float) else str(v) for v in df[col]])
    out.print(t)


# ------------------------------------------------------------------------------ train / evaluate / predict
def _comparison_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    cols = [
        ("model", "model"),
        ("RMSPE", "rmspe"),
        ("QLIKE", "qlike"),
        ("R²oos", "r2_oos"),
        ("DM p (QLIKE)", "dm_qlike_p"),
    ]
    if rows and "oracle_gap_qlike" in rows[0]:
        cols.append(("oracle gap (QLIKE)", "oracle_gap_qlike"))
    cols.append(("n", "n_used"))
    for label, _ in cols:
        t.add_column(label, justify="left" if label == "model" else "right")
    for row in rows:
        cells = []
        for _, key in cols:
            v = row.get(key)
            cells.append("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        t.add_row(*cells)
    return t


@app.command("train")
def train(
    model: Annotated[
        list[str], typer.Option("--model", help="Model(s): naive, har, lightgbm, tabnet, mlp, lstm, ensemble.")
    ],
    config: Annotated[Path, typer.Option("--config", help="Run config YAML (docs/runs.md).")],
    run: Annotated[
        str | None, typer.Option("--run", help="Run URI (default: <root>/runs/<UTC time>-<config hash>).")
    ] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(help="Train the torch models with the distributed harness: single, ddp, local_sgd, parallel_de."),
    ] = None,
    launcher: Annotated[str, typer.Option(help="none (in-process) or torchrun (with --algorithm).")] = "none",
    nproc: Annotated[int, typer.Option(help="Processes per node for torchrun.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Train models on walk-forward folds of a Feast training set; write models, test forecasts and provenance.

    The HAR benchmark is always trained (its variant chosen per fold on validation QLIKE). A factor set whose fit
    dates reach past a fold's validation window is refused. See docs/runs.md.
    """
    from l2vol.features import quiet_native_exit
    from l2vol.runs import load_run_config, train_run

    quiet_native_exit()
    with _user_errors():
        if launcher not in ("none", "torchrun"):
            raise ValueError(f"--launcher {launcher!r}: expected none or torchrun")
        cfg = load_run_config(config)
        with _progress(not as_json) as prog:
            result = train_run(
                cfg, model, run_uri=run, progress=prog, algorithm=algorithm, launcher=launcher, nproc=nproc,
                argv=["l2vol", *sys.argv[1:]],
            )  # fmt: skip
    if as_json:
        _emit_json(result.to_dict())
        return
    for f in result.folds:
        out.print(f"{f['describe']}  rows {f['rows']}")
    out.print("HAR chosen on validation: " + ", ".join(f"fold {h['fold']}: {h['chosen']}" for h in result.har))
    out.print(f"run: [bold]{result.run_uri}[/bold] ({result.seconds:.1f} s)")


@app.command("evaluate")
def evaluate(
    run: Annotated[str, typer.Option("--run", help="Run URI written by `l2vol train`.")],
    as_json: JsonOpt = False,
) -> None:
    """Score a run's test forecasts vs HAR (DM, MZ, oracle gap on simulated data), factor importance, report."""
    from l2vol.runs import evaluate_run

    with _user_errors(), _progress(not as_json) as prog:
        result = evaluate_run(run, progress=prog)
    if as_json:
        _emit_json(result)
        return
    out.print(_comparison_table(result["table"], f"test-fold forecasts vs HAR ({run})"))
    out.print(f"metrics: {result['metrics']}")
    out.print(f"report: [bold]{result['report']}[/bold]")


@app.command("predict")
def predict(
    run: Annotated[str, typer.Option("--run", help="Run URI written by `l2vol train`.")],
    dates: Annotated[
        str | None, typer.Option("--dates", help="Batch over a date range START:END (YYYY-MM-DD).")
    ] = None,
    online: Annotated[
        str | None, typer.Option("--online", help="Live from the online store: comma-separated symbols.")
    ] = None,
    output: Annotated[str | None, typer.Option("--out", help="Also write the forecasts as Parquet here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Forecast with a run's last-fold models: a date range (with forecast-vs-realized monitoring) or live."""
    from l2vol.features import quiet_native_exit
    from l2vol.runs import predict_run

    quiet_native_exit()
    with _user_errors():
        if (dates is None) == (online is None):
            raise ValueError("give exactly one of --dates START:END or --online SYMBOLS")
        span = None
        if dates is not None:
            parts = dates.split(":")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"--dates {dates!r}: expected START:END, e.g. 2024-01-08:2024-01-09")
            span = (parts[0], parts[1])
        symbols = [s.strip() for s in online.split(",") if s.strip()] if online is not None else None
        df = predict_run(run, dates=span, online_symbols=symbols, out=output)
    models = [c for c in df.columns if c not in ("symbol", "ts", "y")]
    if as_json:
        # Exact floats (pandas' to_json rounds to a fixed number of decimals: tiny variances lose digits).
        frame = df.assign(ts=df["ts"].map(lambda t: t.isoformat())).astype(object)
        rows = frame.where(df.notna(), None).to_dict(orient="records")
        _emit_json({"run": df.attrs.get("run"), "fold": df.attrs.get("fold"), "models": models, "rows": rows,
                    "monitoring": df.attrs.get("monitoring")})  # fmt: skip
        return
    out.print(f"{len(df):,} forecasts from {len(models)} models (fold {df.attrs.get('fold')})" +
              (f" → {output}" if output else ""))  # fmt: skip
    mon = df.attrs.get("monitoring")
    if mon and mon.get("models"):
        t = Table(title=f"forecast vs realized ({mon['n_realized']:,} of {mon['n_rows']:,} rows realized)")
        for col in ("model", "QLIKE", "MSE", "mean forecast / realized"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for m, v in mon["models"].items():
            t.add_row(m, f"{v['qlike']:.4g}", f"{v['mse']:.4g}", f"{v['bias']:.3f}")
        out.print(t)
    elif online is not None:
        t = Table(title="live forecasts")
        for col in ["symbol", *models]:
            t.add_column(col, justify="left" if col == "symbol" else "right")
        for _, r in df.iterrows():
            t.add_row(str(r["symbol"]), *[f"{r[m]:.4g}" for m in models])
        out.print(t)


# ---------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    out_dir: Annotated[str, typer.Option("--out", help="Where the demo writes its stores and reports.")] = "demo_out",
    quick: Annotated[bool, typer.Option("--quick", help="A tiny market (for tests): seconds, not minutes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the embedded default pipeline on a simulated market and print where the report is.

    simulate (with injected defects) → validate/clean (quarantine + data-quality report) → daily bars →
    factors and factor report → Feast on SQLite → a training run (naive, HAR, LightGBM, TabNet) and its
    evaluation report.
    """
    from l2vol.demo import run_demo
    from l2vol.features import quiet_native_exit

    quiet_native_exit()
    with _user_errors(), _progress(not as_json) as prog:
        result = run_demo(out_dir, quick=quick, progress=prog)
    if as_json:
        _emit_json(result)
        return
    out.print(_counts_table(f"clean data in {result['clean']}", result["clean_rows"]))
    t = Table(title="quarantined / repaired / flagged rows by rule")
    for col in ("table", "rule", "action", "rows", "injected"):
        t.add_column(col)
    for row in result["by_rule"]:
        inj = result["injected"].get(row["table"], {}).get(row["rule"])
        t.add_row(row["table"], row["rule"], row["action"], f"{row['rows']:,}", "" if inj is None else str(inj))
    out.print(t)
    out.print(f"data-quality report: [bold]{result['report']}[/bold]")
    fr = result["factor_report"]
    t = Table(title=f"top factors by |RankIC| against {fr['primary_target']} ({fr['start']} .. {fr['end']})")
    for col in ("factor", "family", "IC", "RankIC", "t (NW)", "days"):
        t.add_column(col, justify="left" if col in ("factor", "family") else "right")
    for row in fr["top"]:
        t.add_row(
            row["factor"],
            row["family"],
            f"{row['ic_mean']:.3f}",
            f"{row['rank_ic_mean']:.3f}",
            "" if row["rank_ic_t_nw"] is None else f"{row['rank_ic_t_nw']:.1f}",
            str(row["rank_ic_n_days"]),  # the t-stat is over this many daily ICs: few days, fragile t
        )
    out.print(t)
    out.print(f"factor report: [bold]{fr['paths']['html']}[/bold]")
    fe = result["feast"]
    if "skipped" in fe:
        out.print(f"Feast stage skipped: {fe['skipped']}")
    else:
        out.print(
            f"Feast (SQLite) in {fe['repo']}: training set {fe['training_rows']:,} rows x "
            f"{fe['training_features']} features → {fe['training_set']}; online read of {fe['online_symbols']} "
            f"symbols (fast path = SDK: {fe['online_fast_equals_sdk']})"
        )
    tr = result.get("training", {})
    if "skipped" in tr:
        out.print(f"training stage skipped: {tr['skipped']}")
    elif tr:
        har = ", ".join(f"fold {h['fold']}: {h['chosen']}" for h in tr["har"])
        out.print(_comparison_table(tr["table"], f"test-fold forecasts vs HAR ({len(tr['folds'])} fold(s); HAR {har})"))
        out.print(f"run: {tr['run']}")
        out.print(f"evaluation report: [bold]{tr['report']}[/bold]")
        pde = tr.get("parallel_de")
        if pde:
            out.print(
                _comparison_table(pde["table"], f"TabNet trained by Parallel_DE over {pde['nproc']} processes vs HAR")
            )
            for t in pde["training"]:
                share = t["de_comm_share"]
                out.print(
                    f"fold {t['fold']}: {t['model']} {t['algorithm']} x{t['world_size']}: val loss {t['val_loss']:.4f}, "
                    f"final diversity {t['final_diversity']:.3g}"
                    + ("" if share is None else f", DE + communication {share:.1%} of wall time")
                )
            out.print(f"Parallel_DE report (convergence and diversity plots): [bold]{pde['report']}[/bold]")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
