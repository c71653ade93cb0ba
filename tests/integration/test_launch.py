"""The training entrypoint run as 2 "nodes" on loopback under the environment each operator injects, and by the
local launchers — all must reach the same result for the same seed.

- PyTorchJob: the exact container command of :func:`l2vol.training.k8s.pytorchjob_spec` (torchrun with
  ``--node-rank=$(RANK) --master-addr=$(MASTER_ADDR) --master-port=$(MASTER_PORT)``), ``$(VAR)`` expanded the way
  the kubelet does, in two processes given what the Training Operator sets in pods ``<job>-master-0`` and
  ``<job>-worker-0``; and the legacy form where the operator's RANK/WORLD_SIZE reach the entrypoint directly.
- TrainJob: the exact trainer command of :func:`l2vol.training.k8s.trainjob_spec` (torchrun, no topology arguments)
  in two processes given Kubeflow Trainer's ``PET_*`` variables.
- Local: :func:`l2vol.training.launch.launch` with torchrun and 2 processes; and one process (``launcher="none"``).

"Same result" is checked on the saved model's weights (bit-equal tensors) and on the per-generation history and
the validation/test metrics (exactly equal numbers; only timings may differ).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support import free_port
from training_data import training_panel

from l2vol.training import k8s
from l2vol.training.launch import LaunchError, launch, thread_env

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 120
JOB = "rv-mlp"
TIMING = re.compile(r"(_s|_seconds|elapsed.*)$")


def panel(seed: int) -> pd.DataFrame:
    return training_panel(seed)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("launch_data")
    for name, seed in (("train", 0), ("val", 1), ("test", 2)):
        panel(seed).to_parquet(d / f"{name}.parquet")
    return d


def write_config(data_dir: Path, path: Path, out: Path, **over) -> Path:
    cfg = {
        "model": "mlp",
        "model_params": {"hidden": [8]},
        "algorithm": "parallel_de",
        "data": {
            "train": str(data_dir / "train.parquet"),
            "val": str(data_dir / "val.parquet"),
            "test": str(data_dir / "test.parquet"),
            "val_subsample": 128,
        },
        "optim": {"lr": 3e-3, "batch_size": 32},
        "budget": {"steps": 8},  # 2 generations of 4 local steps
        "parallel_de": {"individuals_per_rank": 2, "local_steps": 4},  # population 4 over 2 ranks
        "seed": 7,
        "threads": 1,
        "timeout_s": 60,
        "resume": False,
        "out": str(out),
        **over,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_pods(nodes: list[tuple[dict[str, str], list[str]]], cwd: Path) -> None:
    """Start one process per "node" (its environment, its command) at once; wait for all, bounded; on failure,
    show each failed node's output."""
    procs = []
    for i, (extra, cmd) in enumerate(nodes):
        log = cwd / f"node{i}.log"
        env = {**thread_env(1), "OMP_NUM_THREADS": "1", **extra}
        with log.open("w") as fh:
            procs.append((subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT), log))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    for p, _ in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    failed = [(i, p.returncode, log.read_text()[-3000:]) for i, (p, log) in enumerate(procs) if p.returncode != 0]
    assert not failed, "\n".join(f"--- node {i} (exit {c}) ---\n{o}" for i, c, o in failed)


def _expand(command: list[str], env: dict[str, str]) -> list[str]:
    """Kubelet's $(VAR) expansion of a container command from the container's environment."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in command]


def _local_python(command: list[str]) -> list[str]:
    """The image runs ``python``; here it is this interpreter (the project's venv)."""
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def comparable(metrics: dict) -> dict:
    """The metrics without timings, host and output locations: what must match across launchers."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not TIMING.search(k) and k not in _VOLATILE}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip({k: metrics[k] for k in ("algorithm", "world_size", "history", "val", "test", "final_diversity")})


_VOLATILE = {"timings", "host", "model_uri", "history_png", "out"}


def weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted((out / "model").glob("*.safetensors"))
    assert files, f"no weights under {out / 'model'}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def assert_same_run(out_a: Path, out_b: Path) -> None:
    ma = json.loads((out_a / "metrics.json").read_text())
    mb = json.loads((out_b / "metrics.json").read_text())
    assert ma["world_size"] == mb["world_size"] == 2
    assert len(ma["history"]["generations"]) == 2
    assert comparable(ma) == comparable(mb)
    wa, wb = weights(out_a), weights(out_b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), f"weights differ: {k}"


@pytest.fixture(scope="module")
def local_torchrun(data_dir, tmp_path_factory) -> Path:
    """Reference: the local launcher, torchrun with 2 processes."""
    d = tmp_path_factory.mktemp("local_torchrun")
    cfg = write_config(data_dir, d / "train.yaml", d / "out")
    lines: list[str] = []
    metrics = launch(cfg, launcher="torchrun", nproc=2, timeout_s=RUN_TIMEOUT_S, log=lines.append)
    assert metrics["world_size"] == 2 and metrics["algorithm"] == "parallel_de"
    assert metrics == json.loads((d / "out" / "metrics.json").read_text())
    # Worker lines carry a rank prefix; rank 0 prints the final summary line.
    assert any(line.startswith("[rank 0] done: mlp parallel_de x2") for line in lines), lines[-20:]
    return d / "out"


def test_pytorchjob_pods_reach_the_local_result(local_torchrun, data_dir, tmp_path):
    cfg = write_config(data_dir, tmp_path / "train.yaml", tmp_path / "out")
    job = k8s.pytorchjob_spec(name=JOB, image="l2vol:test", config=str(cfg), nnodes=2, nproc_per_node=1)
    port = str(free_port())
    nodes = []
    for replica, rank in (("Master", 0), ("Worker", 1)):
        (container,) = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
        # What the Training Operator (v1.9) sets in pod <job>-<replica>-<index>, with loopback for the master
        # service: MASTER_ADDR/PORT, WORLD_SIZE = replicas x nprocPerNode, RANK = PET_NODE_RANK = pod index,
        # PET_NNODES and PET_NPROC_PER_NODE.
        operator_env = {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "PET_NODE_RANK": str(rank),
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": job["spec"]["nprocPerNode"],
            "PYTHONUNBUFFERED": "0",
        }
        command = _local_python(_expand(container["command"], operator_env))
        assert f"--node-rank={rank}" in command and f"--master-port={port}" in command
        nodes.append((operator_env, command))
    assert nodes[0][1][:3] == [sys.executable, "-m", "torch.distributed.run"]
    run_pods(nodes, tmp_path)
    assert_same_run(local_torchrun, tmp_path / "out")


def test_legacy_pytorchjob_env_runs_the_entrypoint_directly(local_torchrun, data_dir, tmp_path):
    """An operator that runs a plain ``python -m l2vol.training`` command: the entrypoint reads RANK/WORLD_SIZE
    (the pod index and the number of pods) and MASTER_ADDR/PORT itself; no LOCAL_RANK is set."""
    cfg = write_config(data_dir, tmp_path / "train.yaml", tmp_path / "out")
    port = str(free_port())
    envs = [{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(r)} for r in (0, 1)]
    for e in envs:
        assert "LOCAL_RANK" not in e
    run_pods([(e, [sys.executable, "-m", "l2vol.training", "--config", str(cfg)]) for e in envs], tmp_path)
    assert_same_run(local_torchrun, tmp_path / "out")


def test_trainjob_nodes_reach_the_local_result(local_torchrun, data_dir, tmp_path):
    cfg = write_config(data_dir, tmp_path / "train.yaml", tmp_path / "out")
    job = k8s.trainjob_spec(name=JOB, image="l2vol:test", config=str(cfg), nnodes=2, nproc_per_node=1)
    trainer = job["spec"]["trainer"]
    command = _local_python(trainer["command"])
    port = str(free_port())
    # What Kubeflow Trainer's torch plugin sets in node pod i (PET_MASTER_ADDR is <job>-node-0-0.<job>; loopback
    # here). torchrun reads them as its --nnodes/--nproc-per-node/--node-rank/--master-addr/--master-port.
    envs = [
        {
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": str(i),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": port,
        }
        for i in range(2)
    ]
    run_pods([(e, command) for e in envs], tmp_path)
    assert_same_run(local_torchrun, tmp_path / "out")


def test_single_process_launcher_in_process_and_as_subprocess(data_dir, tmp_path):
    a = write_config(data_dir, tmp_path / "a.yaml", tmp_path / "out_a")
    b = write_config(data_dir, tmp_path / "b.yaml", tmp_path / "out_b")
    ma = launch(a, launcher="none", algorithm="ddp")  # in this process
    mb = launch(b, launcher="none", algorithm="ddp", timeout_s=RUN_TIMEOUT_S, log=lambda _line: None)  # child
    assert ma["world_size"] == mb["world_size"] == 1 and ma["algorithm"] == mb["algorithm"] == "ddp"
    assert comparable(ma) == comparable(mb)
    wa, wb = weights(tmp_path / "out_a"), weights(tmp_path / "out_b")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa) and wa.keys() == wb.keys()


def test_failed_rank_is_named_with_its_log_tail(data_dir, tmp_path):
    cfg = write_config(data_dir, tmp_path / "bad.yaml", tmp_path / "out")
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = str(tmp_path / "missing.parquet")
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(LaunchError) as info:
        launch(cfg, launcher="torchrun", nproc=2, timeout_s=RUN_TIMEOUT_S, log=lambda _line: None)
    err = info.value
    assert err.log_dir and Path(err.log_dir).is_dir()  # kept for inspection
    shutil.rmtree(err.log_dir)
    assert err.rank in (0, 1)
    assert f"rank {err.rank} exited with exit code 1" in str(err)
    assert f"error (rank {err.rank})" in err.log_tail and "missing.parquet" in err.log_tail


def test_timeout_kills_every_process_of_the_run(data_dir, tmp_path):
    cfg = write_config(data_dir, tmp_path / "slow.yaml", tmp_path / "out", budget={"steps": 4000})
    with pytest.raises(LaunchError, match="did not finish within 3 s") as info:
        launch(cfg, launcher="torchrun", nproc=2, timeout_s=3, log=lambda _line: None)
    shutil.rmtree(info.value.log_dir, ignore_errors=True)
    time.sleep(0.5)
    assert not _processes_mentioning(str(cfg)), "processes of the timed-out run are still alive"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "zombie" not in state and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
