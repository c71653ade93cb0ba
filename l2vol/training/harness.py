"""One harness for every training algorithm (DESIGN §6): Parallel_DE and its baselines on the same task.

:func:`run` joins the process group described by the environment (:func:`l2vol.training.dist.init_distributed`:
one process, ``torchrun``, a PyTorchJob or a TrainJob), builds the :class:`~l2vol.training.task.Task`, runs the
configured algorithm (``single``, ``ddp``, ``local_sgd``, ``parallel_de``), scores the chosen model on the validation
and test rows, and on rank 0 writes::

    {out}/model/          the fitted l2vol.models estimator (Estimator.load reads it back)
    {out}/metrics.json    algorithm, world size, config, history, timings, val/test metrics, final diversity (atomic)
    {out}/history.png     validation fitness (and population diversity) per generation / history point

It returns the metrics dict on every rank.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from l2vol.progress import Progress, ensure

if TYPE_CHECKING:
    from l2vol.training.config import TrainConfig

METRICS_JSON = "metrics.json"
HISTORY_PNG = "history.png"
MODEL_DIR = "model"


def algorithm_fn(name: str):
    """The training function of algorithm ``name``: ``(config, task, ctx, *, progress) -> (module, history)``."""
    if name == "parallel_de":
        from l2vol.training.parallel_de import train_parallel_de

        return train_parallel_de
    from l2vol.training.baselines import ALGORITHMS

    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r} (known: single, ddp, local_sgd, parallel_de)")
    return ALGORITHMS[name]


def set_threads(config: TrainConfig) -> int:
    """Pin torch's intra-op threads: ``config.threads``, else ``OMP_NUM_THREADS`` when set; returns the count."""
    import torch

    n = config.threads
    if n is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    if n is not None and n >= 1:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def seed_global_rng(seed: int, rank: int) -> None:
    """Seed torch's global RNG (dropout masks) from (seed, rank): runs are repeatable and ranks draw different
    masks. Batches and initial weights have their own seeded generators (:class:`~l2vol.training.task.Task`)."""
    import numpy as np
    import torch

    torch.manual_seed(int(np.random.SeedSequence([seed, rank, 0xD20F]).generate_state(1, np.uint64)[0] >> 1))


def out_location(out: str, name: str) -> str:
    return f"{out.rstrip('/')}/{name}"


def run(config: TrainConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Train ``config.model`` with ``config.algorithm`` in the process group of the environment; see the module
    docstring for what is written. Every rank returns the same metrics dict."""
    from l2vol.training.dist import barrier, init_distributed, shutdown
    from l2vol.training.task import build_task, parameter_count

    threads = set_threads(config)
    fn = algorithm_fn(config.algorithm)
    t_start = time.perf_counter()
    ctx = init_distributed(timeout_s=config.timeout_s, device=config.device)
    try:
        seed_global_rng(config.seed, ctx.rank)
        t0 = time.perf_counter()
        task = build_task(config, device=ctx.device)
        t_task = time.perf_counter() - t0
        t0 = time.perf_counter()
        module, history = fn(config, task, ctx, progress=progress if ctx.is_main else None)
        t_algo = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = {"val": task.evaluate(module, "val")}
        if "test" in task.splits:
            scores["test"] = task.evaluate(module, "test")
        t_eval = time.perf_counter() - t0
        metrics = {
            "algorithm": config.algorithm,
            "model": config.model,
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "device": ctx.device,
            "threads_per_process": threads,
            "host": platform.node(),
            "config": config.model_dump(mode="json"),
            "features": list(task.features),
            "n_parameters": parameter_count(module),
            "n_excluded": task.n_excluded,
            "history": history,
            "timings": timings(history, algorithm_s=t_algo, task_s=t_task, eval_s=t_eval),
            "final_diversity": final_diversity(history),
            "val": scores["val"],
            "test": scores.get("test"),
        }
        if ctx.is_main:
            ensure(progress).advance(config.algorithm, 0, "writing model and metrics")
            write_outputs(config, task, module, metrics, history)
        # every rank is done with the group before any tears it down: a gloo group destroyed while a peer still
        # uses it can abort that peer ("terminate called without an active exception") instead of a clean exit
        barrier(ctx, config.timeout_s)
        metrics["timings"]["total_s"] = time.perf_counter() - t_start
        return metrics
    finally:
        shutdown(ctx)


def final_diversity(history: dict[str, Any]) -> float | None:
    """The algorithm's final diversity: its own ``final_diversity``, else the last generation's ``diversity``."""
    if history.get("final_diversity") is not None:
        return float(history["final_diversity"])
    gens = history.get("generations") or []
    return float(gens[-1]["diversity"]) if gens and gens[-1].get("diversity") is not None else None


def timings(history: dict[str, Any], *, algorithm_s: float, task_s: float, eval_s: float) -> dict[str, float]:
    """Seconds and shares of wall time: ``wall_s`` is the algorithm's own wall time (the one its budget bounds);
    ``train_s``/``comm_s``/``de_s`` come from the algorithm's history (DE time counts trial evaluations)."""
    t = dict(history.get("timings") or {})
    wall = float(algorithm_s)  # the same clock for every algorithm: the call of its training function
    train, comm, de = (float(t.get(k) or 0.0) for k in ("train_s", "comm_s", "de_s"))
    share = (lambda x: x / wall) if wall > 0 else (lambda x: 0.0)
    return {
        **{k: v for k, v in t.items() if isinstance(v, int | float)},
        "wall_s": wall,
        "train_s": train,
        "comm_s": comm,
        "de_s": de,
        "train_share": share(train),
        "comm_share": share(comm),
        "de_share": share(de),
        "de_comm_share": share(de + comm),
        "algorithm_s": algorithm_s,
        "task_build_s": task_s,
        "final_eval_s": eval_s,
    }


def write_outputs(config: TrainConfig, task, module, metrics: dict[str, Any], history: dict[str, Any]) -> None:
    """Rank 0: the model, then the plot, then metrics.json last (atomic: its presence means the run finished)."""
    from l2vol.storage import DatasetStore

    steps = history.get("steps")
    est = task.to_estimator(module, steps=steps if isinstance(steps, int) else None)
    metrics["model_uri"] = est.save(out_location(config.out, MODEL_DIR)).rsplit("/", 1)[0]
    store = DatasetStore(config.out)
    try:
        png = history_png(history, title=f"{config.model} · {config.algorithm} · {metrics['world_size']} proc")
        metrics["history_png"] = store.write_bytes(HISTORY_PNG, png)
    except Exception as exc:  # a plot failure must not lose the run's metrics
        metrics["history_png_error"] = f"{type(exc).__name__}: {exc}"
    store.write_bytes(METRICS_JSON, json.dumps(_jsonable(metrics), indent=1, allow_nan=True).encode())


def history_png(history: dict[str, Any], *, title: str) -> bytes:
    """The convergence plot: Parallel_DE's own (``parallel_de.plot_history``) for its history, else validation
    fitness per history point (and diversity on a second axis when recorded)."""
    if history.get("algorithm") == "parallel_de" and history.get("generations"):
        import tempfile

        from l2vol.training.parallel_de import plot_history

        with tempfile.TemporaryDirectory() as d:
            path = plot_history(history, os.path.join(d, HISTORY_PNG))
            with open(path, "rb") as f:
                return f.read()
    return _baseline_png(history, title)


def _baseline_png(history: dict[str, Any], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = history.get("points") or []
    x = [p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(x, [p["fitness"] for p in points], marker="o", ms=3, label="validation fitness (MSE, std log RV)")
    ax.set_xlabel("optimizer steps per worker")
    ax.set_ylabel("validation fitness")
    ax.set_title(title)
    div = [(p["step"], p["diversity"]) for p in points if p.get("diversity") is not None]
    if div:
        ax2 = ax.twinx()
        ax2.plot([d[0] for d in div], [d[1] for d in div], color="tab:orange", ls="--", label="diversity")
        ax2.set_ylabel("mean pairwise distance")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return obj
    if isinstance(obj, int | float | str | bool) or obj is None:
        return obj
    return str(obj)


class PrintProgress:
    """Progress as plain lines on stdout (rank 0 of ``python -m l2vol.training``): one line per history point."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def task(self, name: str, total: int | None) -> None:
        self.totals[name], self.done[name] = total, 0

    def advance(self, name: str, n: int = 1, note: str = "") -> None:
        self.done[name] = self.done.get(name, 0) + n
        if note:
            total = self.totals.get(name)
            frac = f"{self.done[name]}/{total}" if total else f"{self.done[name]}"
            print(f"{self.prefix}[{time.perf_counter() - self.t0:7.1f}s] {name} {frac}: {note}", flush=True)
