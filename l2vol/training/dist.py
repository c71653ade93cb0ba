"""The process group of a training run, read from the environment (DESIGN §6).

The same command runs as one process, under ``torchrun``, in a PyTorchJob pod (``RANK`` = pod index,
``MASTER_ADDR``/``MASTER_PORT`` set, no ``LOCAL_RANK``: one process per pod) and in a Kubeflow Trainer
TrainJob (torchrun turns the ``PET_*`` variables into the ones read here):

================  ===========================================================================
``RANK``          global rank of this process, ``0 <= RANK < WORLD_SIZE``
``WORLD_SIZE``    number of processes; absent (with ``RANK``) means a single process
``LOCAL_RANK``    rank on this node, selects ``cuda:LOCAL_RANK``; absent means 0 (one process per pod)
``MASTER_ADDR``   host of rank 0's rendezvous store (required when ``WORLD_SIZE > 1``)
``MASTER_PORT``   its port, 1..65535 (required when ``WORLD_SIZE > 1``)
================  ===========================================================================

Backend: NCCL on CUDA, gloo on CPU. Every collective is bounded by the group's timeout, so a dead
or stuck peer becomes an error (:class:`PeerFailure`) instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistConfigError(ValueError):
    """The distributed environment variables are missing, half-set or invalid."""


class PeerFailure(RuntimeError):
    """A collective failed or timed out: another rank died, was killed or stopped responding."""

    def __init__(self, *args: object):
        super().__init__(*args)
        global _peer_failed
        _peer_failed = True


#: Set once a collective of this process failed: its process group is broken from then on.
_peer_failed = False


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run. ``backend`` is None for a single process (no process group)."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    backend: str | None

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(env: dict[str, str], name: str, *, low: int, high: int | None = None) -> int:
    raw = env[name]
    try:
        value = int(raw.strip())
    except ValueError:
        raise DistConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise DistConfigError(f"environment variable {name}={value} is out of range (must be {bound})")
    return value


def read_env(env: dict[str, str] | None = None) -> dict[str, int | str] | None:
    """Validate the distributed variables; None when the process runs alone.

    Absent ``RANK`` and ``WORLD_SIZE`` mean a single process; setting only one of them, a rank outside
    ``0..WORLD_SIZE-1``, or a multi-process world without ``MASTER_ADDR``/``MASTER_PORT`` is an error
    naming the variable, because silently training alone would waste a whole cluster job.
    """
    env = dict(os.environ if env is None else env)
    present = {k for k in _ENV if env.get(k, "").strip() != ""}
    if not present & {"RANK", "WORLD_SIZE"}:
        return None  # MASTER_* alone (e.g. left in a shell) is harmless: without RANK/WORLD_SIZE we run alone
    for name in ("RANK", "WORLD_SIZE"):
        if name not in present:
            other = "WORLD_SIZE" if name == "RANK" else "RANK"
            raise DistConfigError(
                f"environment variable {other} is set but {name} is not: set both (torchrun and the training "
                "operators do) or neither (single process)"
            )
    world = _int_env(env, "WORLD_SIZE", low=1)
    rank = _int_env(env, "RANK", low=0, high=world - 1)
    local_rank = _int_env(env, "LOCAL_RANK", low=0) if "LOCAL_RANK" in present else 0
    out: dict[str, int | str] = {"rank": rank, "world_size": world, "local_rank": local_rank}
    if world > 1:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in present:
                raise DistConfigError(
                    f"environment variable {name} is not set but WORLD_SIZE={world}: every rank needs the "
                    "rendezvous address of rank 0 (MASTER_ADDR and MASTER_PORT)"
                )
        out["master_addr"] = env["MASTER_ADDR"].strip()
        out["master_port"] = _int_env(env, "MASTER_PORT", low=1, high=65535)
    return out


def _resolve_device(device: str, local_rank: int) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistConfigError(f"device={device!r} requested but CUDA is not available on this machine")
        if device == "cuda":
            device = f"cuda:{local_rank}"
        index = int(device.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DistConfigError(
                f"LOCAL_RANK={local_rank} selects {device} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        torch.cuda.set_device(index)
        return device
    if device != "cpu":
        raise DistConfigError(f"device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def init_distributed(*, timeout_s: float = 120.0, device: str = "auto") -> DistContext:
    """Join the process group described by the environment (see the module docstring).

    ``timeout_s`` bounds the rendezvous and every collective of the group: a dead peer becomes an
    error on the surviving ranks within it. A single process (no ``RANK``/``WORLD_SIZE``, or
    ``WORLD_SIZE=1``) creates no process group.
    """
    if timeout_s <= 0:
        raise DistConfigError(f"timeout_s={timeout_s} must be > 0")
    info = read_env()
    if info is None or info["world_size"] == 1:
        local_rank = 0 if info is None else int(info["local_rank"])
        return DistContext(0, 1, local_rank, _resolve_device(device, local_rank), None)
    import torch.distributed as dist

    rank, world, local_rank = int(info["rank"]), int(info["world_size"]), int(info["local_rank"])
    dev = _resolve_device(device, local_rank)
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if dist.is_initialized():
        raise DistConfigError("a torch.distributed process group is already initialized in this process")
    kwargs = {}
    if backend == "nccl":
        import torch

        kwargs["device_id"] = torch.device(dev)
    try:
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{info['master_addr']}:{info['master_port']}",
            rank=rank,
            world_size=world,
            timeout=dt.timedelta(seconds=timeout_s),
            **kwargs,
        )
    except Exception as exc:
        raise PeerFailure(
            f"rank {rank}/{world}: could not join the process group at "
            f"{info['master_addr']}:{info['master_port']} ({backend}) within {timeout_s:g}s: {exc}"
        ) from exc
    return DistContext(rank, world, local_rank, dev, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process). Safe to call after a collective failed: then the group
    is left as it is (tearing down a gloo group whose peer hangs can block or abort the process); the process should
    end through :func:`exit_process`."""
    if not ctx.is_distributed or _peer_failed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):  # the group may be broken by the failure being reported
            dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End the process with ``code``. After a peer failure the exit skips the interpreter's teardown (``os._exit``
    after flushing): destroying a gloo process group with a collective still waiting on a hung peer aborts with
    "terminate called without an active exception" (SIGABRT) instead of the exit code the launcher should see."""
    if _peer_failed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def guarded(what: str, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
    """Run the collective ``fn``; turn any backend failure into a :class:`PeerFailure` naming ``what``."""
    start = time.monotonic()
    try:
        return fn()
    except PeerFailure:
        raise
    except Exception as exc:  # gloo raises RuntimeError, NCCL DistBackendError; both mean a peer is gone
        limit = f" (collective timeout {timeout_s:g}s)" if timeout_s is not None else ""
        raise PeerFailure(
            f"{what}: failed after {time.monotonic() - start:.1f}s{limit} - a peer rank failed, was killed "
            f"or stopped responding: {type(exc).__name__}: {exc}"
        ) from exc


def all_gather_flat(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Gather an equally shaped tensor from every rank: result ``(world_size, *tensor.shape)``, rank order."""
    import torch

    if not ctx.is_distributed:
        return tensor.unsqueeze(0).clone()
    import torch.distributed as dist

    tensor = tensor.contiguous()
    out = torch.empty((ctx.world_size, *tensor.shape), dtype=tensor.dtype, device=tensor.device)
    dist.all_gather(list(out.unbind(0)), tensor)  # rows of one contiguous buffer: no extra copy
    return out


def all_reduce_max(ctx: DistContext, value: float) -> float:
    """The maximum of ``value`` over all ranks (e.g. "any rank wants to stop" as 0/1)."""
    if not ctx.is_distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_module_state(ctx: DistContext, module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s values, in place."""
    if not ctx.is_distributed:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.device.type != ctx.device.split(":")[0]:
                staged = tensor.to(ctx.device)
                dist.broadcast(staged, src=src)
                tensor.copy_(staged)
            else:
                dist.broadcast(tensor, src=src)


def barrier(ctx: DistContext, timeout_s: float) -> None:
    """Wait for every rank, at most ``timeout_s``; on gloo the error names the ranks that did not arrive."""
    if not ctx.is_distributed:
        return
    import torch.distributed as dist

    if ctx.backend == "gloo":
        dist.monitored_barrier(timeout=dt.timedelta(seconds=timeout_s), wait_all_ranks=True)
    else:  # NCCL: bounded by the group timeout given to init_process_group
        dist.barrier()
