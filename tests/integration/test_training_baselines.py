"""The baselines of the training harness with 2 real processes on loopback (gloo, CPU): DDP ranks end identical,
local-SGD ranks are identical right after an averaging step (and differ before it), runs are repeatable, and the
entrypoint ``python -m l2vol.training`` writes the run's outputs from rank 0.

Each rank is this file run as a script (``python test_training_baselines.py CONFIG ALGORITHM RESULT_DIR``) with
RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT in its environment, as torchrun sets them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORLD = 2
TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parents[2]


def make_panel(seed: int):
    from training_data import training_panel

    return training_panel(seed)


def _worker(config_path: str, algorithm: str, result_dir: str) -> int:
    """One rank: train with ``algorithm`` and write the returned network's state and the history."""
    import torch

    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from l2vol.training.config import load_train_config
    from l2vol.training.dist import barrier, init_distributed, shutdown
    from l2vol.training.harness import algorithm_fn, seed_global_rng
    from l2vol.training.task import build_task

    config = load_train_config(config_path)
    ctx = init_distributed(timeout_s=config.timeout_s, device="cpu")
    try:
        seed_global_rng(config.seed, ctx.rank)
        task = build_task(config, device=ctx.device)
        module, history = algorithm_fn(algorithm)(config, task, ctx)
        out = Path(result_dir)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / f"rank{ctx.rank}.safetensors"))
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(history, default=str))
        barrier(ctx, config.timeout_s)  # no rank tears the group down while a peer still uses it
    finally:
        shutdown(ctx)
    return 0


def _launch(args: list[str], tmp: Path, name: str) -> None:
    """Start WORLD ranks of ``python ARGS`` with the torchrun environment; fail with a rank's log on error."""
    from support import free_port, stop_process
    from training_data import rank_env  # here, not at the top: the ranks run this file as a script

    port = free_port()
    procs, logs = [], []
    for rank in range(WORLD):
        env = rank_env(os.environ, rank, WORLD, port, PYTHONPATH=str(REPO))
        log = tmp / f"{name}.rank{rank}.log"
        logs.append(log)
        with log.open("wb") as fh:
            procs.append(
                subprocess.Popen([sys.executable, *args], env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
            )
    try:
        for rank, p in enumerate(procs):
            try:
                rc = p.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{name}: rank {rank} still running after {TIMEOUT_S:.0f}s:\n{logs[rank].read_text()[-2000:]}"
                )
            if rc != 0:
                pytest.fail(f"{name}: rank {rank} exited {rc}:\n{logs[rank].read_text()[-3000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                stop_process(p, timeout=5)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    import yaml

    d = tmp_path_factory.mktemp("baselines")
    for name, seed in (("train", 0), ("val", 1), ("test", 2)):
        make_panel(seed).to_parquet(d / f"{name}.parquet")
    cfg = {
        "model": "mlp",
        "model_params": {"hidden": [16], "dropout": 0.1},
        "data": {"train": str(d / "train.parquet"), "val": str(d / "val.parquet"), "test": str(d / "test.parquet")},
        "optim": {"lr": 3e-3, "batch_size": 32},
        "budget": {"steps": 24, "eval_every": 8},
        "local_sgd": {"sync_every": 8},
        "threads": 1,
        "timeout_s": 30,
        "out": str(d / "out"),
    }
    path = d / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _states(result_dir: Path) -> list[dict]:
    from safetensors.torch import load_file

    return [load_file(str(result_dir / f"rank{r}.safetensors")) for r in range(WORLD)]


def _equal(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run_worker(config_path: Path, algorithm: str, tmp: Path, name: str) -> Path:
    out = tmp / name
    out.mkdir()
    _launch([__file__, str(config_path), algorithm, str(out)], tmp, name)
    return out


@pytest.mark.integration
def test_ddp_ranks_stay_identical(config_path, tmp_path):
    first = _run_worker(config_path, "ddp", tmp_path, "ddp1")
    a0, a1 = _states(first)
    assert _equal(a0, a1)  # gradients all-reduced every step: one model on both ranks
    hist = json.loads((first / "rank0.json").read_text())
    assert [p["step"] for p in hist["points"]] == [0, 8, 16, 24]
    assert hist["timings"]["comm_s"] > 0 and hist["final_diversity"] == 0.0
    assert hist["points"][-1]["fitness"] < hist["points"][0]["fitness"]


@pytest.mark.integration
def test_local_sgd_ranks_identical_after_averaging_repeatable_and_the_entrypoint_writes_outputs(config_path, tmp_path):
    import torch

    out = _run_worker(config_path, "local_sgd", tmp_path, "lsgd")
    s0, s1 = _states(out)
    assert _equal(s0, s1)  # every history point is right after an averaging step
    h0 = json.loads((out / "rank0.json").read_text())
    assert h0["syncs"] == 3 and h0["final_diversity"] > 0  # the rank models differed before averaging
    assert all(p["diversity"] > 0 for p in h0["points"][1:])

    # the same run through the entrypoint: rank 0 writes model, metrics and plot
    import yaml

    cfg = yaml.safe_load(config_path.read_text())
    cfg["out"] = str(tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _launch(["-m", "l2vol.training", "--config", str(path), "--algorithm", "local_sgd"], tmp_path, "entry")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == "gloo" and metrics["algorithm"] == "local_sgd"
    assert (tmp_path / "run" / "history.png").exists()
    # the saved model is bit-identical to the network the worker launch returned: runs repeat exactly
    from l2vol.models import Estimator

    model = Estimator.load(str(tmp_path / "run" / "model"))
    assert all(torch.equal(v, s0[k]) for k, v in model.module_.state_dict().items())
    assert metrics["history"]["final_diversity"] == pytest.approx(h0["final_diversity"], rel=1e-12)


if __name__ == "__main__":
    sys.exit(_worker(*sys.argv[1:4]))
