"""Parallel_DE against its baselines at equal wall-clock time, on a simulated market (DESIGN §6, issue 5).

Data: :func:`l2vol.data.simulator.simulate_market` → :func:`l2vol.data.cleaning.clean_store` →
:func:`l2vol.factors.engine.build_factors`; the ``factors`` and ``targets`` tables are joined on (symbol, ts) (both
keyed by the bucket end; factors use data strictly before it, targets the window after it). The market is cached
under ``--cache`` keyed by its configuration. One walk-forward fold by trading date
(:func:`l2vol.evaluation.splits.walk_forward_splits`: train | purge | val | purge + embargo | test) is written as
train/val/test parquet; normalizers, DE fitness, bias correction and model choice see train/val only.

Runs: each model (TabNet, MLP) × algorithm (single, ddp, local_sgd, parallel_de) × processes (1, 2; ``single`` with
1 only), each for the same wall-clock budget (``budget.wall_clock_s``; every algorithm stops at its first
sync/history point after it), launched through :func:`l2vol.training.launch.launch` (torchrun for 2 processes) with
torch threads pinned to cores ÷ processes (``OMP_NUM_THREADS``, read by the harness). Printed per run: test QLIKE,
test RMSPE, test and validation loss, final diversity, wall seconds, the shares of wall time spent in DE +
communication (``tgtfit``: the part spent scoring the targets, which the baselines spend on their validation
points too) and in checkpoints, and the optimizer steps per worker (Parallel_DE: per individual). ``k``
(``--local-steps``) is Parallel_DE's generation length, local SGD's averaging period and single/DDP's history period.
With ``--seeds 0,1,...`` every run is repeated per seed and the verdicts compare means over the seeds (single-seed
differences in test QLIKE are of the order of the seed-to-seed spread).

Targets (full run): Parallel_DE's test loss <= DDP's and <= local SGD's at equal wall time (same process count);
DE + communication < 10% of wall time. The verdicts compare the mean test loss (the training objective on the test
fold, as the target says) and, beside it, the mean test QLIKE (the headline forecast loss). ``--quick``: MLP only, 2 processes, Parallel_DE vs DDP, a small market.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import Timer, finish, parser

QUICK_MARKET = {"symbols": 6, "days": 8, "seed": 11}
FULL_MARKET = {"symbols": 24, "days": 16, "seed": 11}
MODEL_PARAMS = {
    "mlp": {"hidden": [64, 32], "dropout": 0.1},
    "tabnet": {"n_d": 8, "n_a": 8, "n_steps": 3, "n_independent": 1, "n_shared": 1, "virtual_batch_size": 64},
}
OPTIM = {"mlp": {"lr": 2e-3, "batch_size": 256}, "tabnet": {"lr": 1e-2, "batch_size": 256}}
DE_SHARE_TARGET = 0.10
VAL_SUBSAMPLE = 2048
# Default k of Parallel_DE, local SGD's averaging period and single/DDP's history period. Each generation scores
# about 2.25 validation subsamples per individual (target, trial, the elite's share); on the 2-core build machine with
# the numpy-sorted entmax, k = 25 left TabNet on one process at 10.4 % DE + communication (60 s, seed 0), k = 30 at 9.0 %.
LOCAL_STEPS = 30


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_market(cache: Path, market: dict, target: str) -> tuple[Path, dict]:
    """Simulate, clean and compute factors (cached by the market config); returns the joined panel's parquet."""
    from l2vol.config import SimulationConfig

    cfg = SimulationConfig(**market)
    key = hashlib.sha256(json.dumps({"sim": cfg.model_dump(mode="json"), "bucket": "5min"}).encode()).hexdigest()[:16]
    root = cache / f"market-{key}"
    panel = root / "panel.parquet"
    info_path = root / "info.json"
    if panel.exists() and info_path.exists():
        return panel, json.loads(info_path.read_text())

    from l2vol.data.cleaning import clean_store
    from l2vol.data.simulator import simulate_market
    from l2vol.factors.engine import build_factors
    from l2vol.storage import DatasetStore

    timings = {}
    root.mkdir(parents=True, exist_ok=True)
    with Timer() as t:
        simulate_market(cfg, DatasetStore(str(root / "raw")))
    timings["simulate_s"] = t.seconds
    with Timer() as t:
        clean_store(DatasetStore(str(root / "raw")), DatasetStore(str(root / "clean")))
    timings["clean_s"] = t.seconds
    with Timer() as t:
        build_factors(DatasetStore(str(root / "clean")), DatasetStore(str(root / "feat")))
    timings["factors_s"] = t.seconds
    feat = DatasetStore(str(root / "feat"))
    factors = feat.read("factors").to_pandas()
    targets = feat.read("targets").to_pandas().drop(columns=["bucket"], errors="ignore")
    df = factors.merge(targets, on=["symbol", "ts"], how="inner", validate="one_to_one")
    df["date"] = df["ts"].dt.tz_convert("Asia/Shanghai").dt.date
    tmp = root / f".panel.{os.getpid()}.parquet"
    df.to_parquet(tmp)
    os.replace(tmp, panel)
    info = {"rows": len(df), "factor_rows": len(factors), "target_rows": len(targets), **timings}
    info_path.write_text(json.dumps(info))
    shutil.rmtree(root / "raw", ignore_errors=True)
    shutil.rmtree(root / "clean", ignore_errors=True)
    return panel, info


def split_panel(panel: Path, out: Path, *, target: str, quick: bool) -> dict:
    """One walk-forward fold by trading date with purge and embargo → train/val/test parquet."""
    import pandas as pd

    from l2vol.evaluation.splits import walk_forward_splits

    df = pd.read_parquet(panel)
    dates = sorted(set(df["date"]))
    if quick:
        sizes = {"train_days": 3, "val_days": 1, "test_days": 1}
    else:
        n = len(dates) - 3  # purge + purge + embargo
        sizes = {"train_days": n - 2 * max(2, n // 5), "val_days": max(2, n // 5), "test_days": max(2, n // 5)}
    fold = walk_forward_splits(dates, **sizes, purge_days=1, embargo_days=1, horizon=target)[0]
    seg = fold.segment_of(df["date"].to_numpy())
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in ("train", "val", "test"):
        part = df[seg == name].drop(columns=["date"]).reset_index(drop=True)
        part.to_parquet(out / f"{name}.parquet")
        rows[name] = len(part)
    return {"fold": fold.describe(), "rows": rows}


def run_one(
    data: Path,
    work: Path,
    *,
    model: str,
    algorithm: str,
    nproc: int,
    wall_s: float,
    target: str,
    threads: int | None,
    seed: int = 0,
    local_steps: int = LOCAL_STEPS,
    val_subsample: int = VAL_SUBSAMPLE,
) -> dict:
    import yaml

    from l2vol.training.launch import launch

    name = f"{model}-{algorithm}-{nproc}-s{seed}"
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    ipr = 4 if nproc == 1 else 2  # population 4 either way
    cfg = {
        "model": model,
        "model_params": MODEL_PARAMS[model],
        "algorithm": algorithm,
        "data": {
            "train": str(data / "train.parquet"),
            "val": str(data / "val.parquet"),
            "test": str(data / "test.parquet"),
            "target": target,
            "val_subsample": val_subsample,
        },
        "optim": OPTIM[model],
        # History points of single/ddp every k steps (the harness default): each baseline picks its best point on
        # validation among as many candidates per step as Parallel_DE has generations.
        "budget": {"steps": 10**7, "wall_clock_s": wall_s, "eval_every": local_steps},
        "parallel_de": {"individuals_per_rank": ipr, "local_steps": local_steps},
        "local_sgd": {"sync_every": local_steps},
        "device": "cpu",
        "seed": seed,
        "resume": False,
        "timeout_s": 120,
        "out": str(out),
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or max(1, _cores() // nproc))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    logs: list[str] = []
    t0 = time.perf_counter()
    metrics = launch(
        path,
        launcher="torchrun" if nproc > 1 else "none",
        nproc=nproc,
        algorithm=algorithm,
        timeout_s=wall_s * 6 + 120,
        log=logs.append,
        env=env,
    )
    elapsed = time.perf_counter() - t0
    t = metrics["timings"]
    hist = metrics["history"]
    steps = hist.get("steps") or (len(hist.get("generations") or []) * hist.get("local_steps", 0))
    return {
        "model": model,
        "algorithm": algorithm,
        "nproc": nproc,
        "seed": seed,
        "test_qlike": metrics["test"]["qlike"],
        "test_rmspe": metrics["test"]["rmspe"],
        "test_loss": metrics["test"]["loss"],
        "val_loss": metrics["val"]["loss"],
        "final_diversity": metrics.get("final_diversity") or 0.0,
        "wall_s": t["wall_s"],
        "de_comm_share": t["de_comm_share"],
        "checkpoint_share": t.get("checkpoint_s", 0.0) / t["wall_s"] if t["wall_s"] > 0 else 0.0,
        # Parallel_DE's fitness of its targets (part of DE+comm): what the baselines spend on validation points
        "target_fitness_share": t.get("target_fitness_s", 0.0) / t["wall_s"] if t["wall_s"] > 0 else 0.0,
        "steps_per_worker": steps,
        "launch_s": elapsed,
    }


def _mean(rows: list[dict], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "l2vol-bench-cache"), help="market cache dir")
    p.add_argument("--wall", type=float, help="wall-clock budget per run in seconds (default 8 quick, 60 full)")
    p.add_argument("--target", default="rv_next_bucket")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: cores // processes; on a machine shared with other jobs use 1: "
        "oversubscribed intra-op threads slow every step many times over)",
    )
    p.add_argument("--models", default=None, help="comma-separated models (default: mlp quick; tabnet,mlp full)")
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds (initialization, batches, DE); the verdicts compare the mean test QLIKE over them",
    )
    p.add_argument(
        "--local-steps",
        type=int,
        default=LOCAL_STEPS,
        help="k: Parallel_DE's local steps per generation = local SGD's averaging period = single/DDP's history period",
    )
    p.add_argument(
        "--val-subsample",
        type=int,
        default=VAL_SUBSAMPLE,
        help="data.val_subsample: validation rows of Parallel_DE's fitness and of the baselines' validation points",
    )
    args = p.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    quick = args.quick
    wall = args.wall or (6.0 if quick else 60.0)
    cache = Path(args.cache)
    with Timer() as t_market:
        panel, info = build_market(cache, QUICK_MARKET if quick else FULL_MARKET, args.target)
    work = Path(tempfile.mkdtemp(prefix="l2vol-bench-pde-"))
    split = split_panel(panel, work / "data", target=args.target, quick=quick)
    print(
        f"market: {info['rows']} rows ({t_market.seconds:.1f}s, cache {cache}); {split['fold']}; rows {split['rows']}"
    )
    models = args.models.split(",") if args.models else (["mlp"] if quick else ["tabnet", "mlp"])
    if quick:
        runs = [(m, a, 2) for m in models for a in ("ddp", "parallel_de")]
    else:
        runs = [(m, "single", 1) for m in models]
        runs += [(m, a, n) for m in models for n in (1, 2) for a in ("ddp", "local_sgd", "parallel_de")]
    results = []
    print(
        f"{'model':<7} {'algorithm':<12} {'nproc':>5} {'seed':>4} {'test QLIKE':>10} {'test RMSPE':>10} "
        f"{'test loss':>9} {'val loss':>8} {'diversity':>10} {'wall s':>7} {'DE+comm':>8} {'tgtfit':>6} {'ckpt':>6} "
        f"{'steps':>6}"
    )
    for seed in seeds:
        for model, algorithm, nproc in runs:
            r = run_one(
                work / "data",
                work,
                model=model,
                algorithm=algorithm,
                nproc=nproc,
                wall_s=wall,
                target=args.target,
                threads=args.threads,
                seed=seed,
                local_steps=args.local_steps,
                val_subsample=args.val_subsample,
            )
            results.append(r)
            print(
                f"{model:<7} {algorithm:<12} {nproc:>5} {seed:>4} {r['test_qlike']:>10.4f} {r['test_rmspe']:>10.4f} "
                f"{r['test_loss']:>9.4f} {r['val_loss']:>8.4f} {r['final_diversity']:>10.4g} {r['wall_s']:>7.1f} "
                f"{100 * r['de_comm_share']:>7.1f}% {100 * r['target_fitness_share']:>5.1f}% "
                f"{100 * r['checkpoint_share']:>5.1f}% {r['steps_per_worker']:>6}",
                flush=True,
            )
    if len(seeds) > 1:
        print(f"mean over seeds {seeds}:")
        for model, algorithm, nproc in runs:
            rs = [r for r in results if (r["model"], r["algorithm"], r["nproc"]) == (model, algorithm, nproc)]
            print(
                f"{model:<7} {algorithm:<12} {nproc:>5} {'mean':>4} {_mean(rs, 'test_qlike'):>10.4f} "
                f"{_mean(rs, 'test_rmspe'):>10.4f} {_mean(rs, 'test_loss'):>9.4f} {_mean(rs, 'val_loss'):>8.4f} "
                f"{_mean(rs, 'final_diversity'):>10.4g} {_mean(rs, 'wall_s'):>7.1f} "
                f"{100 * _mean(rs, 'de_comm_share'):>7.1f}% {100 * _mean(rs, 'target_fitness_share'):>5.1f}% "
                f"{100 * _mean(rs, 'checkpoint_share'):>5.1f}% "
                f"{_mean(rs, 'steps_per_worker'):>6.0f}"
            )
    figures: dict = {
        "wall_budget_s": wall,
        "seeds": ",".join(map(str, seeds)),
        "local_steps": args.local_steps,
        "val_subsample": args.val_subsample,
        "cores": _cores(),
        "threads_per_process": args.threads or "cores/nproc",
        "market_rows": info["rows"],
        **split["rows"],
    }
    verdicts = []
    for model in models:
        for nproc in (1, 2):
            by = {}
            for r in results:
                if r["model"] == model and r["nproc"] == nproc:
                    by.setdefault(r["algorithm"], []).append(r)
            by = {a: {k: _mean(rs, k) for k in ("test_loss", "test_qlike", "de_comm_share")} for a, rs in by.items()}
            if "parallel_de" not in by:
                continue
            pde = by["parallel_de"]
            for rival in ("ddp", "local_sgd"):
                if rival in by:
                    ok = pde["test_loss"] <= by[rival]["test_loss"]
                    ok_q = pde["test_qlike"] <= by[rival]["test_qlike"]
                    for key in ("loss", "qlike"):
                        figures[f"{model}_{nproc}p_pde_vs_{rival}_{key}"] = (
                            f"{pde['test_' + key]:.4f} vs {by[rival]['test_' + key]:.4f}"
                        )
                    verdicts.append(
                        f"{model}/{nproc}p PDE<= {rival}: loss {'yes' if ok else 'NO'}, QLIKE {'yes' if ok_q else 'NO'}"
                    )
            figures[f"{model}_{nproc}p_pde_de_comm_share"] = pde["de_comm_share"]
            verdicts.append(
                f"{model}/{nproc}p DE+comm {100 * pde['de_comm_share']:.1f}% "
                f"({'<' if pde['de_comm_share'] < DE_SHARE_TARGET else '>='} 10%)"
            )
    figures["runs"] = results
    shutil.rmtree(work, ignore_errors=True)
    finish("bench_parallel_de", {k: v for k, v in figures.items() if k != "runs"}, "; ".join(verdicts), args.json)
    if args.json:  # the per-run rows too
        doc = json.loads(Path(args.json).read_text())
        doc["runs"] = results
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
