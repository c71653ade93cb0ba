"""Run the training entrypoint locally: in this process, or as N processes under torchrun.

Every launcher runs the same entrypoint, ``python -m l2vol.training --config FILE [--algorithm A]``, which reads
its rank and rendezvous from the environment (DESIGN §6). :func:`torchrun_command` builds the torchrun command
line for one node; the Kubernetes builders in :mod:`l2vol.training.k8s` reuse it, so a pod runs exactly what a
laptop runs. :func:`launch` starts a run, streams its logs with a rank prefix, bounds it by a timeout, and turns
a failed rank into an error that names the rank and shows the end of its log.

Importing this module imports no torch: the in-process launcher imports the harness when it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

ENTRYPOINT_MODULE = "l2vol.training"
METRICS_JSON = "metrics.json"  # written last by the harness on rank 0: its presence means the run finished
LOG_TAIL_LINES = 40

# torchrun's tee prefixes a worker's lines with "[default<local_rank>]:" (torch.distributed.elastic).
_TEE_PREFIX = re.compile(r"^\[default(\d+)\]:")
# torchrun's failure summary ("Root Cause (first observed failure)") names the failing rank like this.
_ROOT_CAUSE_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)")
_ROOT_CAUSE_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


class LaunchError(RuntimeError):
    """A launched run failed or timed out. ``rank`` is the failing global rank when known; ``log_tail`` the end of
    its log (or of the launcher's output when no rank could be blamed)."""

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        log_tail: str = "",
        returncode: int | None = None,
        log_dir: str | None = None,
    ):
        super().__init__(message)
        self.rank = rank
        self.log_tail = log_tail
        self.returncode = returncode
        self.log_dir = log_dir  # per-rank log files of a failed torchrun run, kept for inspection


def torchrun_command(
    config_path: str | os.PathLike,
    *,
    nproc: int,
    algorithm: str | None = None,
    nnodes: int = 1,
    node_rank: int | str = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | str | None = None,
    standalone: bool = True,
    python: str | None = None,
    topology_from_env: bool = False,
) -> list[str]:
    """The torchrun command line that runs the training entrypoint on one node.

    - ``nnodes == 1`` and ``standalone``: ``--standalone`` (torchrun picks a free local rendezvous port).
    - otherwise: a static rendezvous at ``master_addr:master_port`` with ``--nnodes``/``--node-rank``; every node
      must be given the same address and port. ``node_rank``/``master_addr``/``master_port`` may be strings such as
      ``$(RANK)``, which Kubernetes expands from the variables an operator injects into the container.
    - ``topology_from_env``: no topology arguments at all; torchrun reads ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
      ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` (what Kubeflow Trainer injects).

    ``python`` is the interpreter (default: this one, ``sys.executable``; ``"python"`` inside a container image).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nnodes < 1:
        raise ValueError(f"nnodes must be >= 1, got {nnodes}")
    if isinstance(node_rank, int) and not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in [0, {nnodes}), got {node_rank}")
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    if topology_from_env:
        pass
    elif nnodes == 1 and standalone:
        cmd += ["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}"]
    else:
        if master_port is None:
            if nnodes > 1:
                raise ValueError("master_port is required for a multi-node run: every node must use the same port")
            master_port = _free_port()
        cmd += [
            f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}",
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={master_port}",
            "--rdzv-backend=static",
        ]
    return cmd + entrypoint_args(config_path, algorithm=algorithm)


def entrypoint_args(config_path: str | os.PathLike, *, algorithm: str | None = None) -> list[str]:
    """``-m l2vol.training --config FILE [--algorithm A]``: the part after the interpreter or torchrun."""
    args = ["-m", ENTRYPOINT_MODULE, "--config", str(config_path)]
    if algorithm is not None:
        args += ["--algorithm", algorithm]
    return args


def thread_env(nproc: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with OMP_NUM_THREADS = cores ÷ processes unless it is already set, so N
    processes on one machine do not each start one thread per core."""
    out = dict(os.environ if env is None else env)
    if not out.get("OMP_NUM_THREADS"):
        out["OMP_NUM_THREADS"] = str(max(1, _cores() // max(1, nproc)))
    return out


def launch(
    config_path: str | os.PathLike,
    *,
    launcher: Literal["none", "torchrun"] = "none",
    nproc: int = 1,
    algorithm: str | None = None,
    timeout_s: float | None = None,
    log: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    progress=None,
) -> dict:
    """Run one training and return the metrics dict read from ``{out}/metrics.json``.

    ``launcher="none"``: a single process. Without ``timeout_s`` it runs in this process (the harness is called
    directly); with ``timeout_s`` it runs as a child process that is killed when the time is up.
    ``launcher="torchrun"``: ``nproc`` processes on this machine under torchrun; each line of their output goes to
    ``log`` (default: stderr) prefixed with ``[rank N]``. A non-zero exit raises :class:`LaunchError` naming the
    failing rank with the end of its log; exceeding ``timeout_s`` kills the whole process group and raises too.
    ``env`` replaces this process's environment for child processes; ``progress`` (an
    :class:`l2vol.progress.Progress`) receives the in-process run's progress (child processes print theirs).
    """
    if launcher not in ("none", "torchrun"):
        raise ValueError(f"launcher must be 'none' or 'torchrun', got {launcher!r}")
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if launcher == "none" and nproc != 1:
        raise ValueError(f"launcher 'none' runs one process; use launcher='torchrun' for nproc={nproc}")
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such config file")
    out_dir = _config_out(config_path)
    log = log or _print_stderr

    if launcher == "none" and timeout_s is None:
        returned = _run_in_process(config_path, algorithm, progress)
        return _read_metrics(out_dir, fallback=returned)

    if launcher == "none":
        cmd = [sys.executable, *entrypoint_args(config_path, algorithm=algorithm)]
        _run_logged(cmd, thread_env(1, env), timeout_s=timeout_s, log=log, log_dir=None, what="training process")
        return _read_metrics(out_dir)

    log_dir = tempfile.mkdtemp(prefix="l2vol-torchrun-")
    cmd = torchrun_command(config_path, nproc=nproc, algorithm=algorithm, standalone=True)
    # torchrun options go before the entrypoint: per-rank log files (to blame a failed rank) teed to our stdout.
    cmd[3:3] = ["--log-dir", log_dir, "--redirects", "3", "--tee", "3"]
    _run_logged(cmd, thread_env(nproc, env), timeout_s=timeout_s, log=log, log_dir=log_dir, what="torchrun")
    shutil.rmtree(log_dir, ignore_errors=True)
    return _read_metrics(out_dir)


# ---------------------------------------------------------------------------------------------------------------


def _run_in_process(config_path: Path, algorithm: str | None, progress) -> dict:
    from l2vol.training.config import TrainConfig, load_train_config
    from l2vol.training.harness import run

    config = load_train_config(config_path)
    if algorithm is not None:
        config = TrainConfig.model_validate({**config.model_dump(), "algorithm": algorithm})
    result = run(config, progress=progress)
    return result if isinstance(result, dict) else {}


def _config_out(config_path: Path) -> str:
    """The run's output directory/URI (``out`` of the config), validated by the harness's config loader."""
    from l2vol.training.config import load_train_config

    return load_train_config(config_path).out


def _read_metrics(out: str, fallback: dict | None = None) -> dict:
    """``{out}/metrics.json`` (a local path or a store URI), read through the store the harness writes with."""
    from l2vol.storage import DatasetStore

    store = DatasetStore(out)
    if not store.exists(METRICS_JSON):
        if fallback:
            return fallback
        raise LaunchError(f"{store.location(METRICS_JSON)}: not written by the run (it finished with exit code 0)")
    return json.loads(store.read_bytes(METRICS_JSON).decode())


def _run_logged(
    cmd: list[str],
    env: dict[str, str],
    *,
    timeout_s: float | None,
    log: Callable[[str], None],
    log_dir: str | None,
    what: str,
) -> None:
    """Run ``cmd`` in its own process group, stream its merged output to ``log`` (tee'd worker lines get a rank
    prefix), enforce ``timeout_s``, and raise :class:`LaunchError` on failure."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=env,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    per_rank: dict[int, deque[str]] = {}
    summary: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            m = _TEE_PREFIX.match(line)
            if m:
                rank = int(m.group(1))
                line = f"[rank {rank}] {line[m.end() :]}"
                per_rank.setdefault(rank, deque(maxlen=LOG_TAIL_LINES)).append(line)
            else:
                summary.append(line)
                del summary[:-200]
            tail.append(line)
            log(line)

    reader = threading.Thread(target=pump, name="l2vol-launch-log", daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        reader.join(timeout=5)
        keep = f" (all logs kept in {log_dir})" if log_dir else ""
        raise LaunchError(
            f"{what} did not finish within {timeout_s:g} s and was killed{keep}; last lines:\n" + "\n".join(tail),
            log_tail="\n".join(tail),
            log_dir=log_dir,
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    reader.join(timeout=10)
    if rc == 0:
        return
    rank, exitcode = _blamed_rank(summary)
    if rank is not None:
        rank_tail = _rank_log_tail(log_dir, rank) or "\n".join(per_rank.get(rank, ()))
        code = f" with exit code {exitcode}" if exitcode is not None else ""
        keep = f" (all logs kept in {log_dir})" if log_dir else ""
        raise LaunchError(
            f"{what} failed: rank {rank} exited{code}{keep}; last lines of its log:\n{rank_tail}",
            rank=rank,
            log_tail=rank_tail,
            returncode=rc,
            log_dir=log_dir,
        )
    text = "\n".join(tail)
    raise LaunchError(
        f"{what} exited with code {rc}; last lines:\n{text}", log_tail=text, returncode=rc, log_dir=log_dir
    )


def _blamed_rank(lines: list[str]) -> tuple[int | None, int | None]:
    """The rank to blame and its exit code, from torchrun's failure summary ("Failures:" and "Root Cause").

    A rank that exited with an error code is preferred over one that torchrun stopped with a signal after the first
    failure (the summary's "root cause" is sometimes such a signalled rank); the root cause breaks ties.
    """
    entries: list[tuple[int, int | None, bool]] = []  # (local rank, exit code, listed as root cause)
    in_root = False
    for line in lines:
        if line.startswith("Root Cause"):
            in_root = True
        m = _ROOT_CAUSE_RANK.match(line)
        if m:
            entries.append((int(m.group(2)), None, in_root))  # single node: local rank == global rank
            continue
        m = _ROOT_CAUSE_EXIT.match(line)
        if m and entries and entries[-1][1] is None:
            rank, _, root = entries[-1]
            entries[-1] = (rank, int(m.group(1)), root)
    if not entries:
        return None, None
    rank, code, _ = min(entries, key=lambda e: (not (e[1] or 0) > 0, not e[2]))
    return rank, code


def _rank_log_tail(log_dir: str | None, local_rank: int) -> str:
    """Last lines of the failed rank's stderr then stdout files that torchrun wrote under ``log_dir``."""
    if not log_dir:
        return ""
    parts = []
    for stream in ("stderr", "stdout"):
        files = sorted(Path(log_dir).glob(f"*/attempt_*/{local_rank}/{stream}.log"))
        if files:
            lines = files[-1].read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            if lines:
                parts.append(f"--- {stream} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _kill_group(proc: subprocess.Popen) -> None:
    """Terminate the launcher and every process it started (they share its session), then kill what is left."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stray workers of a launcher that already exited
            return


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
